//! Small dense linear algebra on row-major f32 matrices, on the `gemm` crate: products with
//! arbitrary strides (so a transpose is free), Gram matrices, and the matrix square root by
//! Newton-Schulz iteration; and the element-wise loops over whole layers, in parallel chunks
//! long enough to vectorize.

use std::sync::Mutex;

use gemm::Parallelism;
use rayon::prelude::*;

/// Elements per parallel task in the element-wise loops.
const CHUNK: usize = 1 << 14;

/// `n` copies of `value`, written in parallel: a layer-sized buffer would otherwise be filled,
/// and its pages touched, by one thread while the other waits.
pub fn filled<T: Copy + Send + Sync>(n: usize, value: T) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    v.spare_capacity_mut().par_chunks_mut(CHUNK).for_each(|c| c.iter_mut().for_each(|x| _ = x.write(value)));
    // SAFETY: the loop above initialised all n elements of the capacity.
    unsafe { v.set_len(n) };
    v
}

/// `n` zeros, written in parallel (see [`filled`]).
pub fn zeros(n: usize) -> Vec<f32> {
    filled(n, 0.0)
}

/// A copy of `a`, made in parallel.
pub fn copied(a: &[f32]) -> Vec<f32> {
    let mut v = Vec::with_capacity(a.len());
    v.spare_capacity_mut().par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).for_each(|(d, s)| {
        d.iter_mut().zip(s).for_each(|(d, s)| _ = d.write(*s));
    });
    // SAFETY: the loop above initialised all a.len() elements of the capacity.
    unsafe { v.set_len(a.len()) };
    v
}

/// Layer-sized buffers kept from one pass to the next, so that every iteration reuses the last
/// one's memory instead of asking the allocator (and the kernel) for fresh pages. It holds the
/// buffers of one image size (buffers given back from a pass at another size replace them), and
/// at most [`BufferPool::MAX_BUFFERS`].
#[derive(Default)]
pub struct BufferPool {
    free: Mutex<(usize, Vec<Vec<f32>>)>,
}

impl BufferPool {
    /// More than a pass of VGG19 uses at once; past it, the oldest buffers are let go.
    pub const MAX_BUFFERS: usize = 128;

    /// Lets go of the buffers unless they are for passes on images of `pixels` pixels (a pass
    /// calls this first, so that a run moving to a larger scale does not hold the smaller
    /// scale's buffers while it makes its own).
    pub fn size_for(&self, pixels: usize) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.0 != pixels {
            *free = (pixels, Vec::new());
        }
    }

    /// A buffer of `len` values whose contents are unspecified (for outputs written in full).
    pub fn take(&self, len: usize) -> Vec<f32> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        // The smallest free buffer that is large enough.
        let best = (free.1.iter().enumerate())
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                let mut b = free.1.swap_remove(i);
                drop(free);
                b.truncate(len);
                let have = b.len();
                b.extend(std::iter::repeat_n(0.0, len - have));
                b
            }
            None => {
                drop(free);
                zeros(len)
            }
        }
    }

    /// A copy of `a`.
    pub fn copied(&self, a: &[f32]) -> Vec<f32> {
        let mut b = self.take(a.len());
        zip_apply(&mut b, a, |d, s| *d = s);
        b
    }

    /// Gives buffers back for reuse by passes on an image of `pixels` pixels.
    pub fn give(&self, pixels: usize, buffers: impl IntoIterator<Item = Vec<f32>>) {
        self.size_for(pixels);
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.1.extend(buffers.into_iter().filter(|b| b.capacity() > 0));
        let excess = free.1.len().saturating_sub(Self::MAX_BUFFERS);
        free.1.drain(..excess);
    }
}

/// `f(a[i], b[i])` for every `i`, in parallel.
pub fn zip_apply(a: &mut [f32], b: &[f32], f: impl Fn(&mut f32, f32) + Sync) {
    assert_eq!(a.len(), b.len(), "zip_apply lengths");
    a.par_chunks_mut(CHUNK).zip(b.par_chunks(CHUNK)).for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(x, y)| f(x, *y)));
}

/// The gradient through a ReLU: `grad[i] = 0` where the ReLU's output `relu_out[i]` is not
/// positive, in parallel.
pub fn relu_mask(grad: &mut [f32], relu_out: &[f32]) {
    zip_apply(grad, relu_out, |g, a| {
        if a <= 0.0 {
            *g = 0.0
        }
    });
}

/// `f(a[i])` for every `i`, in parallel.
pub fn apply(a: &mut [f32], f: impl Fn(&mut f32) + Sync) {
    a.par_chunks_mut(CHUNK).for_each(|a| a.iter_mut().for_each(&f));
}

/// `sum(f(a[i], b[i]))` in f64, in parallel; the same sum on every run (the parts are added
/// in order).
pub fn zip_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f64 + Sync) -> f64 {
    assert_eq!(a.len(), b.len(), "zip_sum lengths");
    let parts: Vec<f64> = a
        .par_chunks(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| f(*x, *y)).sum())
        .collect();
    parts.iter().sum()
}

/// The dot product `sum(a[i] b[i])` in f64, in parallel, eight running sums per part so that it
/// vectorizes; the same sum on every run.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "dot lengths");
    let parts: Vec<f64> = a
        .par_chunks(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .map(|(a, b)| {
            let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
            let tail: f64 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| *x as f64 * *y as f64).sum();
            let mut acc = [0.0f64; 8];
            for (x, y) in a8.zip(b8) {
                for i in 0..8 {
                    acc[i] += x[i] as f64 * y[i] as f64;
                }
            }
            acc.iter().sum::<f64>() + tail
        })
        .collect();
    parts.iter().sum()
}

/// A read-only matrix view: data, row stride, column stride.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> View<'a> {
    /// A row-major `_ x cols` matrix.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        View { data, row_stride: cols, col_stride: 1 }
    }
    /// The transpose of a row-major `_ x cols` matrix.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        View { data, row_stride: 1, col_stride: cols }
    }
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }
}

/// `alpha * A B` for `A` `m x k` and `B` `k x n`, as a new row-major `m x n` matrix.
pub fn matmul(m: usize, n: usize, k: usize, a: View, b: View, alpha: f32) -> Vec<f32> {
    let threads = rayon::current_num_threads();
    product(m, n, k, a, b, alpha, if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None })
}

fn product(m: usize, n: usize, k: usize, a: View, b: View, alpha: f32, parallelism: Parallelism) -> Vec<f32> {
    assert!(a.fits(m, k) && b.fits(k, n), "matmul operand too small");
    let mut out = vec![0.0; m * n];
    // SAFETY: the asserts above keep every element read inside `a` and `b`; `out` is m x n
    // row-major (row stride n, column stride 1).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            0.0,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
    out
}

/// `F F^T / m` for `f` a row-major `c x m` matrix.
pub fn gram(f: &[f32], c: usize, m: usize) -> Vec<f32> {
    gram_scaled(f, c, m, 1.0 / m as f32)
}

/// Pixels (columns of a feature matrix) per task in [`gram_scaled`] and [`times_features`]: a
/// 64-channel block is 2 MiB, so one task's operands stay in cache.
const COLUMNS_PER_TASK: usize = 8192;

/// The column ranges `[a, b)` of an `m`-column matrix, one per task: at least one per thread.
fn column_tasks(m: usize) -> Vec<(usize, usize)> {
    let parts = m.div_ceil(COLUMNS_PER_TASK).max(rayon::current_num_threads().min(m.max(1)));
    let chunk = m.div_ceil(parts).max(1);
    (0..m).step_by(chunk).map(|a| (a, (a + chunk).min(m))).collect()
}

/// `scale * F F^T` for `f` a row-major `c x m` matrix.
///
/// The product is small (`c x c`) and its inner dimension long (`m` pixels), which `gemm` does
/// not split between threads: the pixels are split here instead, in cache-sized parts, and the
/// parts' products added up, in order.
pub fn gram_scaled(f: &[f32], c: usize, m: usize, scale: f32) -> Vec<f32> {
    let parts: Vec<Vec<f32>> = column_tasks(m)
        .into_par_iter()
        .map(|(a, b)| {
            // Columns a..b of F: element (i, j) at i*m + j of f[a..].
            let sub = &f[a..];
            let rows = View { data: sub, row_stride: m, col_stride: 1 };
            let cols = View { data: sub, row_stride: 1, col_stride: m };
            product(c, c, b - a, rows, cols, scale, Parallelism::None)
        })
        .collect();
    // Added in order, so that every run gives the same sums.
    let mut parts = parts.into_iter();
    let mut g = parts.next().unwrap_or_else(|| vec![0.0; c * c]);
    for p in parts {
        g.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
    }
    g
}

/// `alpha * D F` for a square `c x c` matrix `d` and a row-major `c x m` feature matrix `f`,
/// computed in cache-sized column blocks in parallel (the style loss's gradient), into `out`
/// (whatever it held).
pub fn times_features(d: &[f32], f: &[f32], c: usize, m: usize, alpha: f32, mut out: Vec<f32>) -> Vec<f32> {
    assert_eq!((d.len(), f.len(), out.len()), (c * c, c * m, c * m), "times_features operands");
    let out_ptr = SendPtr(out.as_mut_ptr());
    column_tasks(m).into_par_iter().for_each(|(a, b)| {
        // SAFETY: this task writes only columns a..b of `out` (c x m row-major), and reads
        // columns a..b of `f`; both are inside their buffers (b <= m).
        unsafe {
            gemm::gemm(
                c,
                b - a,
                c,
                out_ptr.at(a),
                1,
                m as isize,
                false,
                d.as_ptr(),
                1,
                c as isize,
                f.as_ptr().add(a),
                1,
                m as isize,
                0.0,
                alpha,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
    });
    out
}

/// A raw pointer that parallel tasks share, each writing a disjoint part of the buffer (the
/// caller's SAFETY comment says why the parts are disjoint).
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: the pointer is only dereferenced under the disjointness argument above.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer `offset` elements on (a method, so closures capture the whole `SendPtr`).
    ///
    /// # Safety
    /// `offset` must stay inside the buffer.
    pub(crate) unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller keeps `offset` inside the buffer.
        unsafe { self.0.add(offset) }
    }
}

/// `A B` for square `n x n` row-major matrices.
pub fn square(a: &[f32], b: &[f32], n: usize) -> Vec<f32> {
    matmul(n, n, n, View::rows(a, n), View::rows(b, n), 1.0)
}

/// The square root of a symmetric positive semi-definite `n x n` matrix and its inverse,
/// `(A^(1/2), A^(-1/2))`, by the coupled Newton-Schulz iteration on `A / |A|_F`
/// (Higham 2008): `T = (3I - Z Y)/2, Y <- Y T, Z <- T Z`, which converges because the
/// normalised eigenvalues lie in (0, 1].
pub fn sqrt_newton_schulz(a: &[f32], n: usize, iterations: usize) -> (Vec<f32>, Vec<f32>) {
    let norm = a.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt().max(1e-30);
    let mut y: Vec<f32> = a.iter().map(|v| (*v as f64 / norm) as f32).collect();
    let mut z = identity(n);
    for _ in 0..iterations {
        let zy = square(&z, &y, n);
        let t: Vec<f32> =
            zy.iter().enumerate().map(|(i, v)| if i % (n + 1) == 0 { 1.5 - 0.5 * v } else { -0.5 * v }).collect();
        y = square(&y, &t, n);
        z = square(&t, &z, n);
    }
    let s = norm.sqrt() as f32;
    y.iter_mut().for_each(|v| *v *= s);
    z.iter_mut().for_each(|v| *v /= s);
    (y, z)
}

/// The `n x n` identity.
pub fn identity(n: usize) -> Vec<f32> {
    let mut m = vec![0.0; n * n];
    (0..n).for_each(|i| m[i * n + i] = 1.0);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gram_matches_hand_computation() {
        // F = [[1, 2, 3], [4, 5, 6]] (C=2, M=3): F F^T = [[14, 32], [32, 77]], divided by 3.
        let g = gram(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
        let want = [14.0 / 3.0, 32.0 / 3.0, 32.0 / 3.0, 77.0 / 3.0];
        for (a, b) in g.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{g:?}");
        }
    }

    #[test]
    fn buffer_pool_reuses_the_best_fit_and_keeps_one_size() {
        let pool = BufferPool::default();
        pool.give(100, [vec![1.0; 10], vec![2.0; 50], vec![3.0; 20]]);
        // The smallest buffer that fits, cut or grown to length.
        let b = pool.take(15);
        assert_eq!((b.len(), b.capacity(), b[0]), (15, 20, 3.0));
        let b = pool.take(40);
        assert_eq!((b.len(), b.capacity()), (40, 50));
        assert_eq!(pool.copied(&[4.0, 5.0]), vec![4.0, 5.0]);
        // Buffers given back from a pass at another size replace the old ones.
        pool.give(200, [vec![9.0; 4]]);
        assert_eq!(pool.free.lock().unwrap().1.len(), 1);
        pool.size_for(200);
        assert_eq!(pool.free.lock().unwrap().1.len(), 1);
        pool.size_for(300);
        assert!(pool.free.lock().unwrap().1.is_empty());
        pool.give(200, [vec![9.0; 4]]);
        assert_eq!(pool.take(30), vec![0.0; 30]); // nothing fits: a fresh buffer
        pool.give(200, (0..BufferPool::MAX_BUFFERS + 5).map(|_| vec![0.0; 1]));
        assert_eq!(pool.free.lock().unwrap().1.len(), BufferPool::MAX_BUFFERS);
    }

    #[test]
    fn dot_matches_a_plain_sum_and_repeats_exactly() {
        // Several parallel parts, and a length that is not a multiple of 8.
        let n = 3 * CHUNK + 13;
        let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() * 3.0).collect();
        let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let got = dot(&a, &b);
        assert!((got - want).abs() < 1e-9 * want.abs().max(1.0), "{got} vs {want}");
        assert!((0..8).all(|_| dot(&a, &b).to_bits() == got.to_bits()));
        let sq = zip_sum(&a, &b, |x, y| (x - y) as f64);
        assert!((0..8).all(|_| zip_sum(&a, &b, |x, y| (x - y) as f64).to_bits() == sq.to_bits()));
    }

    #[test]
    fn matmul_matches_loops_with_transposes() {
        let (m, n, k) = (3, 5, 4);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.71).cos()).collect();
        // A (m x k) times B^T where B is stored n x k.
        let out = matmul(m, n, k, View::rows(&a, k), View::transposed(&b, k), 2.0);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|t| a[i * k + t] * b[j * k + t]).sum::<f32>() * 2.0;
                assert!((out[i * n + j] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn newton_schulz_square_root() {
        let n = 6;
        let r: Vec<f32> = (0..n * n).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
        // A = R R^T + 0.5 I is symmetric positive definite.
        let mut a = matmul(n, n, n, View::rows(&r, n), View::transposed(&r, n), 1.0);
        (0..n).for_each(|i| a[i * n + i] += 0.5);
        let (s, inv) = sqrt_newton_schulz(&a, n, 30);
        let ss = square(&s, &s, n);
        let si = square(&s, &inv, n);
        let id = identity(n);
        for i in 0..n * n {
            assert!((ss[i] - a[i]).abs() < 1e-3 * (1.0 + a[i].abs()), "{i}: {} vs {}", ss[i], a[i]);
            assert!((si[i] - id[i]).abs() < 1e-3, "{i}: {}", si[i]);
        }
    }
}
