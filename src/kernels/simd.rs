//! Code that vectorizes without intrinsics: [`Lanes`], a fixed group of values with lane-wise
//! arithmetic, and [`simd_dispatch!`], which compiles a function body for AVX-512 and AVX2 + FMA
//! as well as for the baseline target and picks one by what the CPU has at run time.

/// Values processed at once, one per SIMD lane (16 f32 fill one AVX-512 register).
pub(crate) const LANES: usize = 16;

/// [`LANES`] values (of neighbouring tiles, say), one per lane: code written on these does
/// each arithmetic operation as one vector instruction.
#[derive(Clone, Copy)]
pub(crate) struct Lanes(pub(crate) [f32; LANES]);

impl Lanes {
    pub(crate) const ZERO: Lanes = Lanes([0.0; LANES]);

    /// `s[0..LANES]`.
    #[inline(always)]
    pub(crate) fn load(s: &[f32]) -> Lanes {
        Lanes(s[..LANES].try_into().expect("LANES values"))
    }
    /// Writes into `d[0..LANES]`.
    #[inline(always)]
    pub(crate) fn store(self, d: &mut [f32]) {
        d[..LANES].copy_from_slice(&self.0);
    }
    /// Adds into `d[0..LANES]`.
    #[inline(always)]
    pub(crate) fn add_to(self, d: &mut [f32]) {
        for (d, v) in d[..LANES].iter_mut().zip(self.0) {
            *d += v;
        }
    }
    /// Each lane through `f`.
    #[inline(always)]
    pub(crate) fn map(mut self, f: impl Fn(f32) -> f32) -> Lanes {
        for v in &mut self.0 {
            *v = f(*v);
        }
        self
    }
}

macro_rules! lanewise {
    ($trait:ident, $method:ident, $op:tt) => {
        impl std::ops::$trait for Lanes {
            type Output = Lanes;
            #[inline(always)]
            fn $method(mut self, o: Lanes) -> Lanes {
                for (a, b) in self.0.iter_mut().zip(o.0) {
                    *a $op b;
                }
                self
            }
        }
    };
}
lanewise!(Add, add, +=);
lanewise!(Sub, sub, -=);

impl std::ops::Mul<f32> for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn mul(mut self, k: f32) -> Lanes {
        for v in &mut self.0 {
            *v *= k;
        }
        self
    }
}

/// Defines `fn $name(args)` that runs `$body(args)` compiled for AVX-512 or AVX2 + FMA when the
/// CPU has them (the lane-wise transforms vectorize fully only there), and as built otherwise.
///
/// `$body` must be `#[inline(always)]`, and so must what it calls in its loops (the `Lanes`
/// operations are), for it to be compiled inside each copy. Closures passed to library
/// functions such as arrays' `map` are not reliably inlined: the transforms were 2x slower
/// with them.
macro_rules! simd_dispatch {
    ($(#[$attr:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) = $body:ident) => {
        $(#[$attr])*
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl") {
                    // SAFETY: this CPU has every feature `avx512` is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: as above, for `avx2`.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

pub(crate) use simd_dispatch;
