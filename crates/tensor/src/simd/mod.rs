//! Runtime choice of the vector instruction set for the engine's own kernels.
//!
//! The release binary targets baseline x86-64 (SSE2) so that it runs on any x86-64 machine; the
//! GEMM crate picks AVX2 or AVX-512 at run time, and the kernels outside GEMM (depthwise
//! convolution, swish, batch norm, squeeze-excite) do the same through [`multiversion!`]: a
//! kernel is written once, generic over a [`Vector`] of sixteen `f32` lanes, and compiled three
//! times: with AVX-512 registers, with pairs of AVX2 registers, and with plain arrays the
//! compiler vectorises for the baseline ([`vector`]); [`level`] decides which runs, once per
//! process. Element-wise code in a kernel (`madd::<V>`, [`sum_lanes`]) is plain Rust that the
//! compiler vectorises for the variant's instruction set. On aarch64 the plain version is the
//! one compiled (NEON is baseline there).
//!
//! Every variant sums in the same order (the same lane count, the same loops), so they differ
//! only where the plain version rounds a multiply and an add separately instead of fusing them.

use std::sync::OnceLock;

mod vector;

#[cfg(target_arch = "x86_64")]
pub(crate) use vector::{Avx2, Avx512};
pub(crate) use vector::{Portable, Vector};

/// Values per lane array. Sixteen is one AVX-512 register, two AVX2 registers, four SSE or
/// NEON registers: the same order of operations on every machine.
pub const LANES: usize = 16;

/// The instruction set the multiversioned kernels run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// x86-64 with AVX-512F (and AVX2, FMA).
    Avx512,
    /// x86-64 with AVX2 and FMA.
    Avx2,
    /// Whatever the target's baseline is (SSE2 on x86-64, NEON on aarch64).
    Baseline,
}

impl Level {
    /// A short name for logs and benchmark reports.
    pub fn name(self) -> &'static str {
        match self {
            Level::Avx512 => "avx512",
            Level::Avx2 => "avx2",
            Level::Baseline => "baseline",
        }
    }
}

/// The best level this CPU supports, detected on first use.
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Level {
    if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        Level::Avx512
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        Level::Avx2
    } else {
        Level::Baseline
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Level {
    Level::Baseline
}

/// `a·b + c`, fused where the vector type `V`'s instruction set has the instruction.
#[inline(always)]
pub(crate) fn madd<V: Vector>(a: f32, b: f32, c: f32) -> f32 {
    if V::FMA { a.mul_add(b, c) } else { a * b + c }
}

/// Defines `fn $name(args)` that runs `$body::<V>(args)` with the [`Vector`] type of the best
/// available [`Level`]. `$body` must be `#[inline(always)]` so that each variant inlines it and is
/// compiled for its own instruction set. Closures inside `$body` (rayon's included) are separate
/// functions that do NOT inherit the instruction set: multiversion the function called per
/// chunk, not the one that spreads the chunks over threads.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:ident) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body::<$crate::simd::Avx512>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body::<$crate::simd::Avx2>($($arg),*)
                }
                match $crate::simd::level() {
                    // SAFETY: `level()` saw these features on this CPU.
                    $crate::simd::Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::simd::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::simd::Level::Baseline => {}
                }
            }
            $body::<$crate::simd::Portable>($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Values summed in f32 lanes before they are folded into the f64 total: long enough that the
/// fold costs nothing, short enough that a channel of 10⁵ values keeps its precision.
const BLOCK: usize = 1024;

/// Σ f(x) over a slice: `LANES` running f32 sums per block of [`BLOCK`] values (vectorisable: a
/// single running sum is a dependency chain the compiler may not reorder), folded into f64
/// across blocks. The order is fixed, whatever the instruction set.
#[inline(always)]
pub(crate) fn sum_lanes<V: Vector>(x: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut total = 0.0f64;
    for block in x.chunks(BLOCK) {
        let mut lanes = [0.0f32; LANES];
        let chunks = block.chunks_exact(LANES);
        let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
        for c in chunks {
            for l in 0..LANES {
                lanes[l] += f(c[l]);
            }
        }
        total += lanes.iter().map(|&v| v as f64).sum::<f64>() + tail as f64;
    }
    total
}

/// Σ f(a, b) over two equal-length slices, accumulated like [`sum_lanes`].
#[inline(always)]
pub(crate) fn sum_lanes_zip<V: Vector>(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    let mut total = 0.0f64;
    for (ba, bb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let mut lanes = [0.0f32; LANES];
        let (ca, cb) = (ba.chunks_exact(LANES), bb.chunks_exact(LANES));
        let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| f(x, y)).sum();
        for (x, y) in ca.zip(cb) {
            for l in 0..LANES {
                lanes[l] += f(x[l], y[l]);
            }
        }
        total += lanes.iter().map(|&v| v as f64).sum::<f64>() + tail as f64;
    }
    total
}

/// Σ a·b, as [`sum_lanes_zip`] with fused multiply-adds where `FMA`.
#[inline(always)]
pub(crate) fn dot_lanes<V: Vector>(a: &[f32], b: &[f32]) -> f64 {
    let mut total = 0.0f64;
    for (ba, bb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let mut lanes = [0.0f32; LANES];
        let (ca, cb) = (ba.chunks_exact(LANES), bb.chunks_exact(LANES));
        let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| x * y).sum();
        for (x, y) in ca.zip(cb) {
            for l in 0..LANES {
                lanes[l] = madd::<V>(x[l], y[l], lanes[l]);
            }
        }
        total += lanes.iter().map(|&v| v as f64).sum::<f64>() + tail as f64;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(always)]
    fn dot_body<V: Vector>(a: &[f32], b: &[f32]) -> f64 {
        dot_lanes::<V>(a, b)
    }
    multiversion!(fn dot(a: &[f32], b: &[f32]) -> f64 => dot_body);

    #[test]
    fn multiversioned_dot_matches_f64() {
        let a: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.11).cos()).collect();
        let exact: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
        assert!((dot(&a, &b) - exact).abs() < 1e-4, "{} vs {exact}", dot(&a, &b));
        assert!((dot_body::<Portable>(&a, &b) - exact).abs() < 1e-4);
        assert!((sum_lanes::<Portable>(&a, |v| v) - a.iter().map(|&v| v as f64).sum::<f64>()).abs() < 1e-4);
    }
}
