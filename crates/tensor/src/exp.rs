//! An `exp` the compiler can vectorise, for swish and sigmoid.
//!
//! `f32::exp` is a call into the C library, one value at a time; EfficientNet evaluates a sigmoid
//! for every value of every expanded activation, forward and backward. This one is branch-free
//! arithmetic, so a loop over a slice becomes vector code under [`crate::simd::multiversion!`]:
//! `eˣ = 2ⁿ·eʳ` with `n = round(x·log₂e)`, `r = x − n·ln2` (ln 2 in two parts, Cody and Waite, so
//! `r` is exact to float precision), `eʳ` by Cephes' degree-6 minimax polynomial on
//! `|r| ≤ ln2/2`, and `2ⁿ` built in the exponent bits. Within 2 ulp of the correctly rounded
//! value over the clamped range (tested against f64); NaN stays NaN.
//!
//! The input is clamped to `[−87.3, 88.3]`, where `2ⁿ` is a normal float: below, the result is
//! about 1e-38 instead of smaller (a sigmoid of −87 is 1e-38 either way); above, about 2e38
//! instead of infinity, so `1/(1 + eˣ)` is 4e-39 rather than 0.

use crate::simd::{Vector, madd};

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that `n·LN2_HI` is exact for the `n` that occur.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5·2²³: adding it rounds a float of magnitude below 2²² to an integer, kept in the low
/// mantissa bits.
const ROUNDER: f32 = 12_582_912.0;
const LO: f32 = -87.3;
const HI: f32 = 88.3;
/// Cephes `expf`'s coefficients of `(eʳ − 1 − r)/r²`, highest degree first (the last,
/// 0.500000012 in Cephes, is 0.5 in f32).
const P: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];

/// `eˣ` (see the module docs).
#[inline(always)]
pub(crate) fn exp<V: Vector>(x: f32) -> f32 {
    let x = x.clamp(LO, HI);
    let t = madd::<V>(x, LOG2E, ROUNDER);
    let n = t - ROUNDER;
    let r = madd::<V>(-n, LN2_LO, madd::<V>(-n, LN2_HI, x));
    let mut p = P[0];
    for &c in &P[1..] {
        p = madd::<V>(p, r, c);
    }
    let er = madd::<V>(p, r * r, r) + 1.0;
    // n + 127 in the exponent field; t's low bits hold n + ROUNDER's.
    let two_n = f32::from_bits(t.to_bits().wrapping_sub(ROUNDER.to_bits()).wrapping_add(127) << 23);
    er * two_n
}

/// `1 / (1 + e⁻ˣ)`.
#[inline(always)]
pub(crate) fn sigmoid<V: Vector>(x: f32) -> f32 {
    1.0 / (1.0 + exp::<V>(-x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::Portable;

    // The best fused variant this machine has, and the plain one (`Portable`, unfused on x86).
    crate::simd::multiversion!(fn exp_best(x: f32) -> f32 => exp);

    fn ulps(a: f32, b: f64) -> f64 {
        let b32 = b as f32;
        ((a - b32).abs() / (b32.abs() * f32::EPSILON).max(f32::MIN_POSITIVE)) as f64
    }

    #[test]
    fn exp_within_two_ulp_of_f64() {
        let mut worst = 0.0f64;
        for i in 0..=2_000_000 {
            let x = LO + (HI - LO) * i as f32 / 2_000_000.0;
            for fma in [false, true] {
                let got = if fma { exp_best(x) } else { exp::<Portable>(x) };
                let u = ulps(got, (x as f64).exp());
                worst = worst.max(u);
                assert!(u <= 2.0, "exp({x}) = {got}, f64 {}: {u} ulp (fma {fma})", (x as f64).exp());
            }
        }
        assert!(worst > 0.0, "suspiciously exact");
    }

    #[test]
    fn edges() {
        assert!(exp::<Portable>(f32::NAN).is_nan() && sigmoid::<Portable>(f32::NAN).is_nan());
        assert_eq!(exp::<Portable>(0.0), 1.0);
        assert!(exp_best(1000.0).is_finite() && exp_best(1000.0) > 1e38);
        assert!(exp_best(-1000.0) >= 0.0 && exp_best(-1000.0) < 2e-38);
        assert_eq!(sigmoid::<Portable>(200.0), 1.0);
        assert!(sigmoid::<Portable>(-200.0) < 1e-38);
        assert_eq!(sigmoid::<Portable>(f32::INFINITY), 1.0);
    }
}
