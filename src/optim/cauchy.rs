//! L-BFGS-B's search direction (Byrd, Lu, Nocedal and Zhu 1995, "A limited memory algorithm for
//! bound constrained optimization", sections 3-5), written here from the paper: the generalised
//! Cauchy point of the quadratic model along the projected steepest descent path, then the
//! minimiser of the model over the variables still free there (the direct primal method),
//! projected into the box. [`super::Lbfgs`] uses it with [`super::Bounds::Cauchy`]; the default
//! is the projected path ([`super::Bounds::Projected`]), which measured as fast or faster on
//! images (see the README).
//!
//! The model is `m(z) = g.(z - x) + (z - x)ᵀ B (z - x) / 2` with the compact L-BFGS matrix
//! `B = θ I - W M Wᵀ`, `W = [Y  θS]` (`n x 2k` for `k` pairs), `θ = y.y / y.s` of the newest
//! pair, and `M = [[-D, Lᵀ], [L, θ SᵀS]]⁻¹`, `D = diag(s_i.y_i)`, `L_ij = s_i.y_j` for `i > j`.
//! The `k x k` products `SᵀS`, `SᵀY`, `YᵀY` are kept up to date as pairs come and go
//! ([`PairProducts`]), so an iteration costs a few passes over the pairs plus `O(k²)` per
//! breakpoint passed.

use std::collections::VecDeque;

use crate::linalg;

/// `s_i.s_j`, `s_i.y_j` and `y_i.y_j` for the pairs in the history, oldest first.
#[derive(Default)]
pub(crate) struct PairProducts {
    ss: VecDeque<VecDeque<f64>>,
    sy: VecDeque<VecDeque<f64>>,
    yy: VecDeque<VecDeque<f64>>,
}

impl PairProducts {
    /// Adds the products of a new pair `(s, y)` with the pairs before it (given oldest first).
    pub(crate) fn push<'a>(&mut self, s: &[f32], y: &[f32], before: impl Iterator<Item = (&'a [f32], &'a [f32])>) {
        let mut row_ss = VecDeque::new();
        let mut row_sy = VecDeque::new();
        let mut row_ys = VecDeque::new();
        let mut row_yy = VecDeque::new();
        for (si, yi) in before {
            row_ss.push_back(linalg::dot(s, si));
            row_sy.push_back(linalg::dot(s, yi)); // s_new . y_i
            row_ys.push_back(linalg::dot(y, si)); // s_i . y_new, as column
            row_yy.push_back(linalg::dot(y, yi));
        }
        for (i, v) in row_ss.iter().enumerate() {
            self.ss[i].push_back(*v);
        }
        for (i, v) in row_ys.iter().enumerate() {
            self.sy[i].push_back(*v);
        }
        for (i, v) in row_yy.iter().enumerate() {
            self.yy[i].push_back(*v);
        }
        row_ss.push_back(linalg::dot(s, s));
        row_sy.push_back(linalg::dot(s, y));
        row_yy.push_back(linalg::dot(y, y));
        self.ss.push_back(row_ss);
        self.sy.push_back(row_sy);
        self.yy.push_back(row_yy);
    }

    /// Drops the oldest pair.
    pub(crate) fn pop_front(&mut self) {
        for m in [&mut self.ss, &mut self.sy, &mut self.yy] {
            m.pop_front();
            m.iter_mut().for_each(|r| _ = r.pop_front());
        }
    }

    pub(crate) fn clear(&mut self) {
        *self = PairProducts::default();
    }
}

/// A dense `n x n` f64 matrix, row-major.
struct Dense {
    n: usize,
    a: Vec<f64>,
}

impl Dense {
    fn zeros(n: usize) -> Self {
        Dense { n, a: vec![0.0; n * n] }
    }
    fn at(&mut self, i: usize, j: usize) -> &mut f64 {
        &mut self.a[i * self.n + j]
    }
    fn mul(&self, v: &[f64]) -> Vec<f64> {
        (0..self.n).map(|i| self.a[i * self.n..(i + 1) * self.n].iter().zip(v).map(|(a, b)| a * b).sum()).collect()
    }
    /// The inverse by Gauss-Jordan elimination with partial pivoting; `None` if singular.
    fn inverse(&self) -> Option<Dense> {
        let n = self.n;
        let mut a = self.a.clone();
        let mut inv = Dense::zeros(n);
        (0..n).for_each(|i| *inv.at(i, i) = 1.0);
        let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for col in 0..n {
            let pivot = (col..n).max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))?;
            if a[pivot * n + col].abs() <= 1e-14 * scale {
                return None;
            }
            for k in 0..n {
                a.swap(col * n + k, pivot * n + k);
                inv.a.swap(col * n + k, pivot * n + k);
            }
            let p = a[col * n + col];
            for k in 0..n {
                a[col * n + k] /= p;
                inv.a[col * n + k] /= p;
            }
            for i in 0..n {
                if i != col {
                    let f = a[i * n + col];
                    if f != 0.0 {
                        for k in 0..n {
                            a[i * n + k] -= f * a[col * n + k];
                            inv.a[i * n + k] -= f * inv.a[col * n + k];
                        }
                    }
                }
            }
        }
        Some(inv)
    }
}

/// The pairs as L-BFGS-B sees them.
pub(crate) struct Compact<'a> {
    pub s: Vec<&'a [f32]>,
    pub y: Vec<&'a [f32]>,
    pub products: &'a PairProducts,
    /// `θ = y.y / y.s` of the newest pair.
    pub theta: f64,
}

impl Compact<'_> {
    fn k(&self) -> usize {
        self.s.len()
    }

    /// Row `i` of `W = [Y θS]`.
    fn w_row(&self, i: usize) -> Vec<f64> {
        let mut w: Vec<f64> = self.y.iter().map(|y| y[i] as f64).collect();
        w.extend(self.s.iter().map(|s| self.theta * s[i] as f64));
        w
    }

    /// `Wᵀ v`.
    fn wt(&self, v: &[f32]) -> Vec<f64> {
        let mut out: Vec<f64> = self.y.iter().map(|y| linalg::dot(y, v)).collect();
        out.extend(self.s.iter().map(|s| self.theta * linalg::dot(s, v)));
        out
    }

    /// `W u` (an n-vector).
    fn w(&self, u: &[f64]) -> Vec<f32> {
        let k = self.k();
        let mut out = linalg::zeros(self.s[0].len());
        for j in 0..k {
            let (a, b) = (u[j] as f32, (self.theta * u[k + j]) as f32);
            linalg::zip_apply(&mut out, self.y[j], |o, y| *o += a * y);
            linalg::zip_apply(&mut out, self.s[j], |o, s| *o += b * s);
        }
        out
    }

    /// `M` (the inverse of the middle matrix).
    fn middle(&self) -> Option<Dense> {
        let k = self.k();
        let p = self.products;
        let mut m = Dense::zeros(2 * k);
        for i in 0..k {
            *m.at(i, i) = -p.sy[i][i];
            for j in 0..k {
                // L_ij = s_i.y_j for i > j: bottom-left L, top-right Lᵀ.
                if i > j {
                    *m.at(k + i, j) = p.sy[i][j];
                    *m.at(j, k + i) = p.sy[i][j];
                }
                *m.at(k + i, k + j) = self.theta * p.ss[i][j];
            }
        }
        m.inverse()
    }

    /// `WᵀW`.
    fn wtw(&self) -> Dense {
        let k = self.k();
        let p = self.products;
        let mut m = Dense::zeros(2 * k);
        for i in 0..k {
            for j in 0..k {
                *m.at(i, j) = p.yy[i][j];
                // (Yᵀ θS)_ij = θ y_i.s_j = θ s_j.y_i.
                *m.at(i, k + j) = self.theta * p.sy[j][i];
                *m.at(k + i, j) = self.theta * p.sy[i][j];
                *m.at(k + i, k + j) = self.theta * self.theta * p.ss[i][j];
            }
        }
        m
    }
}

/// `AᵀA` for a row-major `rows x cols` f64 matrix `A`.
fn gram64(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; cols * cols];
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: Aᵀ (cols x rows: column stride cols, row stride 1) and A (rows x cols: column
    // stride 1, row stride cols) read only `a`'s rows * cols elements; `out` is cols x cols
    // row-major (column stride 1, row stride cols).
    unsafe {
        gemm::gemm(
            cols,
            cols,
            rows,
            out.as_mut_ptr(),
            1,
            cols as isize,
            false,
            a.as_ptr(),
            cols as isize,
            1,
            a.as_ptr(),
            1,
            cols as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    out
}

fn dot64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// L-BFGS-B's direction from `x` (gradient `g`) in the box `[lo, hi]`: `x̄ - x`, with `x̄` the
/// subspace minimiser from the generalised Cauchy point, projected into the box. `None` when the
/// compact matrices are singular or the result is not a descent direction (the caller then
/// falls back to the projected path).
pub(crate) fn direction(c: &Compact<'_>, x: &[f32], g: &[f32], (lo, hi): (f32, f32)) -> Option<Vec<f32>> {
    let m = c.middle()?;
    let cp = cauchy_point(c, &m, x, g, (lo, hi));
    subspace_step(c, &m, x, g, (lo, hi), cp)
}

/// The generalised Cauchy point: its position, which variables are at a bound there, and
/// `c = Wᵀ(xc - x)`.
struct CauchyPoint {
    xc: Vec<f32>,
    active: Vec<bool>,
    c: Vec<f64>,
}

/// The first local minimiser of the model along the projected steepest descent path `P(x - t g)`
/// (the paper's algorithm CP): the path is cut at each variable's breakpoint, and the model's
/// slope and curvature are updated from one segment to the next.
fn cauchy_point(c: &Compact<'_>, m: &Dense, x: &[f32], g: &[f32], (lo, hi): (f32, f32)) -> CauchyPoint {
    let n = x.len();
    let k2 = 2 * c.k();
    let theta = c.theta;
    // Breakpoints along the projected steepest descent path x - t g.
    let mut d: Vec<f32> = g.iter().map(|v| -v).collect();
    let mut breaks: Vec<(f64, usize)> = Vec::new();
    let mut active = vec![false; n];
    for i in 0..n {
        let t = match g[i] {
            v if v < 0.0 => (x[i] - hi) as f64 / v as f64,
            v if v > 0.0 => (x[i] - lo) as f64 / v as f64,
            _ => f64::INFINITY,
        };
        if t <= 0.0 {
            d[i] = 0.0;
            active[i] = true;
        } else if t.is_finite() {
            breaks.push((t, i));
        }
    }
    breaks.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let mut p = c.wt(&d);
    let mut cv = vec![0.0f64; k2];
    let mut mp = m.mul(&p);
    let mut mc = vec![0.0f64; k2];
    let mut f1 = -linalg::dot(&d, &d);
    let f2_start = -theta * f1 - dot64(&p, &mp);
    let mut f2 = f2_start;
    let mut t_old = 0.0;
    let mut dt_min = -f1 / f2;
    let mut next = 0;
    while next < breaks.len() {
        let (t_b, b) = breaks[next];
        let dt = t_b - t_old;
        if dt_min < dt {
            break;
        }
        // Variable b reaches its bound.
        let bound = if d[b] > 0.0 { hi } else { lo };
        let (zb, gb) = ((bound - x[b]) as f64, g[b] as f64);
        cv.iter_mut().zip(&p).for_each(|(c, p)| *c += dt * p);
        mc.iter_mut().zip(&mp).for_each(|(c, p)| *c += dt * p);
        let wb = c.w_row(b);
        let mw = m.mul(&wb);
        f1 += dt * f2 + gb * gb + theta * gb * zb - gb * dot64(&wb, &mc);
        f2 += -theta * gb * gb - 2.0 * gb * dot64(&wb, &mp) - gb * gb * dot64(&wb, &mw);
        f2 = f2.max(f64::EPSILON * f2_start);
        p.iter_mut().zip(&wb).for_each(|(p, w)| *p += gb * w);
        mp.iter_mut().zip(&mw).for_each(|(p, w)| *p += gb * w);
        d[b] = 0.0;
        active[b] = true;
        t_old = t_b;
        dt_min = -f1 / f2;
        next += 1;
    }
    let dt_min = dt_min.max(0.0);
    let t_cp = t_old + dt_min;
    cv.iter_mut().zip(&p).for_each(|(c, p)| *c += dt_min * p);
    // The Cauchy point: the variables passed are at their bounds, the rest moved by t_cp.
    let xc: Vec<f32> = (0..n)
        .map(|i| if active[i] && g[i] != 0.0 { if g[i] > 0.0 { lo } else { hi } } else { x[i] + (t_cp as f32) * d[i] })
        .map(|v| v.clamp(lo, hi))
        .collect();
    CauchyPoint { xc, active, c: cv }
}

/// The minimiser of the model over the variables free at the Cauchy point (the paper's direct
/// primal method), projected into the box; `x̄ - x`.
fn subspace_step(
    c: &Compact<'_>,
    m: &Dense,
    x: &[f32],
    g: &[f32],
    (lo, hi): (f32, f32),
    CauchyPoint { xc, active, c: cv }: CauchyPoint,
) -> Option<Vec<f32>> {
    let n = x.len();
    let k2 = 2 * c.k();
    let theta = c.theta;
    // Subspace minimisation over the free variables (the direct primal method).
    let wmc = c.w(&m.mul(&cv));
    let r: Vec<f32> =
        (0..n).map(|i| if active[i] { 0.0 } else { g[i] + theta as f32 * (xc[i] - x[i]) - wmc[i] }).collect();
    let v = m.mul(&c.wt(&r));
    // WᵀZZᵀW = WᵀW minus the active rows' outer products (one product on gemm).
    let mut wzzw = c.wtw();
    let rows: Vec<usize> = (0..n).filter(|&i| active[i]).collect();
    if !rows.is_empty() {
        let wa: Vec<f64> = rows.iter().flat_map(|&i| c.w_row(i)).collect();
        let prod = gram64(&wa, rows.len(), k2);
        wzzw.a.iter_mut().zip(&prod).for_each(|(a, b)| *a -= b);
    }
    let mw = {
        let mut out = Dense::zeros(k2);
        for i in 0..k2 {
            for j in 0..k2 {
                *out.at(i, j) = (0..k2).map(|l| m.a[i * k2 + l] * wzzw.a[l * k2 + j]).sum::<f64>();
            }
        }
        out
    };
    let mut big_n = Dense::zeros(k2);
    for i in 0..k2 {
        for j in 0..k2 {
            *big_n.at(i, j) = if i == j { 1.0 } else { 0.0 } - mw.a[i * k2 + j] / theta;
        }
    }
    let u = big_n.inverse()?.mul(&v);
    let wu = c.w(&u);
    let dir: Vec<f32> = (0..n)
        .map(|i| {
            let target = if active[i] {
                xc[i]
            } else {
                xc[i] - (r[i] as f64 / theta) as f32 - (wu[i] as f64 / (theta * theta)) as f32
            };
            target.clamp(lo, hi) - x[i]
        })
        .collect();
    (linalg::dot(g, &dir) < 0.0).then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `B` built by the BFGS update formula from `θI`, pair by pair, densely (an independent
    /// computation of the compact form's matrix).
    fn dense_b(pairs: &[(Vec<f64>, Vec<f64>)], theta: f64, n: usize) -> Vec<f64> {
        let mut b = vec![0.0; n * n];
        (0..n).for_each(|i| b[i * n + i] = theta);
        for (s, y) in pairs {
            let bs: Vec<f64> = (0..n).map(|i| (0..n).map(|j| b[i * n + j] * s[j]).sum()).collect();
            let sbs: f64 = s.iter().zip(&bs).map(|(a, b)| a * b).sum();
            let ys: f64 = y.iter().zip(s).map(|(a, b)| a * b).sum();
            for i in 0..n {
                for j in 0..n {
                    b[i * n + j] += -bs[i] * bs[j] / sbs + y[i] * y[j] / ys;
                }
            }
        }
        b
    }

    /// The model's value at `z`.
    fn model(b: &[f64], g: &[f32], x: &[f32], z: &[f64]) -> f64 {
        let n = x.len();
        let d: Vec<f64> = (0..n).map(|i| z[i] - x[i] as f64).collect();
        let bd: Vec<f64> = (0..n).map(|i| (0..n).map(|j| b[i * n + j] * d[j]).sum()).collect();
        (0..n).map(|i| g[i] as f64 * d[i] + 0.5 * d[i] * bd[i]).sum()
    }

    /// Solves the dense system `a x = r` (Gaussian elimination).
    fn solve(mut a: Vec<f64>, mut r: Vec<f64>) -> Vec<f64> {
        let n = r.len();
        for c in 0..n {
            let p = (c..n).max_by(|&i, &j| a[i * n + c].abs().total_cmp(&a[j * n + c].abs())).unwrap();
            for k in 0..n {
                a.swap(c * n + k, p * n + k);
            }
            r.swap(c, p);
            for i in c + 1..n {
                let f = a[i * n + c] / a[c * n + c];
                for k in c..n {
                    a[i * n + k] -= f * a[c * n + k];
                }
                r[i] -= f * r[c];
            }
        }
        let mut x = vec![0.0; n];
        for i in (0..n).rev() {
            x[i] = (r[i] - (i + 1..n).map(|k| a[i * n + k] * x[k]).sum::<f64>()) / a[i * n + i];
        }
        x
    }

    #[test]
    fn gram64_is_a_transpose_a() {
        let a: Vec<f64> = (0..12).map(|i| (i as f64 * 0.7).sin()).collect(); // 4 x 3
        let g = gram64(&a, 4, 3);
        for i in 0..3 {
            for j in 0..3 {
                let want: f64 = (0..4).map(|r| a[r * 3 + i] * a[r * 3 + j]).sum();
                assert!((g[i * 3 + j] - want).abs() < 1e-12, "{i} {j}: {} vs {want}", g[i * 3 + j]);
            }
        }
    }

    /// The direction against a dense computation: the Cauchy point by a fine search along the
    /// projected steepest descent path of the dense model, then the exact minimiser over the free
    /// variables, clamped.
    #[test]
    fn direction_matches_a_dense_computation() {
        let n = 6;
        let (lo, hi) = (0.0f32, 10.0f32);
        let x: Vec<f32> = vec![1.0, 9.5, 5.0, 0.2, 4.0, 7.0];
        let g: Vec<f32> = vec![3.0, -2.0, 0.5, 4.0, -1.0, 0.3];
        // Pairs from a positive definite quadratic with curvatures 1..6 and some coupling.
        let h = |v: &[f64]| -> Vec<f64> {
            (0..n).map(|i| (i + 1) as f64 * v[i] + 0.3 * v[(i + 1) % n] + 0.3 * v[(i + n - 1) % n]).collect()
        };
        let steps =
            [[1.0, 0.5, -0.2, 0.3, 0.0, 0.1], [-0.3, 0.2, 0.4, 0.0, 0.6, -0.1], [0.2, -0.1, 0.1, 0.5, 0.2, 0.3]];
        let pairs: Vec<(Vec<f64>, Vec<f64>)> = steps.iter().map(|s| (s.to_vec(), h(s))).collect();
        let pairs32: Vec<(Vec<f32>, Vec<f32>)> = pairs
            .iter()
            .map(|(s, y)| (s.iter().map(|v| *v as f32).collect(), y.iter().map(|v| *v as f32).collect()))
            .collect();
        let mut products = PairProducts::default();
        for (k, (s, y)) in pairs32.iter().enumerate() {
            products.push(s, y, pairs32[..k].iter().map(|(s, y)| (s.as_slice(), y.as_slice())));
        }
        let (sl, yl) = &pairs[2];
        let theta = yl.iter().map(|v| v * v).sum::<f64>() / yl.iter().zip(sl).map(|(a, b)| a * b).sum::<f64>();
        let compact = Compact {
            s: pairs32.iter().map(|p| p.0.as_slice()).collect(),
            y: pairs32.iter().map(|p| p.1.as_slice()).collect(),
            products: &products,
            theta,
        };
        let got = direction(&compact, &x, &g, (lo, hi)).expect("a descent direction");
        let b = dense_b(&pairs, theta, n);
        // The compact form's B against the dense one.
        let m = compact.middle().unwrap();
        let cp = cauchy_point(&compact, &m, &x, &g, (lo, hi));
        for e in 0..n {
            let mut v = vec![0.0f32; n];
            v[e] = 1.0;
            let wmv = compact.w(&m.mul(&compact.wt(&v)));
            for i in 0..n {
                let bc = theta * v[i] as f64 - wmv[i] as f64;
                assert!((bc - b[i * n + e]).abs() < 1e-3, "B[{i}][{e}]: compact {bc} vs dense {}", b[i * n + e]);
            }
        }
        // The Cauchy point: the first local minimum of the model along P(x - t g), to 1e-5 in t.
        let path = |t: f64| -> Vec<f64> { (0..n).map(|i| (x[i] as f64 - t * g[i] as f64).clamp(0.0, 10.0)).collect() };
        let (mut best_t, mut best) = (0.0, 0.0);
        for k in 1..=2_000_000 {
            let t = k as f64 * 1e-5;
            let v = model(&b, &g, &x, &path(t));
            if v > best {
                break;
            }
            (best_t, best) = (t, v);
        }
        let xc = path(best_t);
        for i in 0..n {
            assert!((cp.xc[i] as f64 - xc[i]).abs() < 1e-3, "Cauchy point {i}: {:?} vs {xc:?}", cp.xc);
        }
        // Free: not at a bound (the grid's t lands within 1e-4 of a breakpoint).
        let free: Vec<usize> = (0..n).filter(|&i| xc[i] > 1e-3 && xc[i] < 10.0 - 1e-3).collect();
        assert_eq!(free, [2, 4, 5]);
        // Minimise over the free variables: B_FF (z_F - xc_F) = -(g + B (xc - x))_F.
        let grad_c: Vec<f64> =
            (0..n).map(|i| g[i] as f64 + (0..n).map(|j| b[i * n + j] * (xc[j] - x[j] as f64)).sum::<f64>()).collect();
        let bff: Vec<f64> =
            free.iter().flat_map(|&i| free.iter().map(move |&j| (i, j))).map(|(i, j)| b[i * n + j]).collect();
        let du = solve(bff, free.iter().map(|&i| -grad_c[i]).collect());
        let mut want = xc.clone();
        free.iter().zip(&du).for_each(|(&i, d)| want[i] = (xc[i] + d).clamp(0.0, 10.0));
        for i in 0..n {
            let w = want[i] - x[i] as f64;
            assert!((got[i] as f64 - w).abs() < 1e-3, "{i}: {} vs {w} (free {free:?})", got[i]);
        }
    }
}
