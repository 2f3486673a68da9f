//! Sixteen `f32` lanes in the registers of one instruction set.
//!
//! Written as arrays, sixteen lanes are often split by the compiler into odd mixtures of scalar
//! and half-width operations once a kernel keeps several of them live (measured: the depthwise
//! forward ran at a third of the speed it reaches with these). The kernels that keep lane
//! registers live across a loop (the depthwise convolution's) use this type instead.
//!
//! Only [`crate::simd::multiversion!`] names [`Avx512`] and [`Avx2`], and only inside functions
//! compiled with those features and called after [`crate::simd::level`] saw them: that is what
//! makes their `unsafe` intrinsic calls sound. The types are not exported from the crate.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::LANES;

/// Sixteen lanes. Loads and stores take exactly sixteen values.
pub(crate) trait Vector: Copy {
    /// Whether `mul_add` (and [`crate::simd::madd`]) round once.
    const FMA: bool;
    fn zero() -> Self;
    fn splat(v: f32) -> Self;
    fn load(src: &[f32; LANES]) -> Self;
    fn store(self, dst: &mut [f32; LANES]);
    /// `self·b + c`.
    fn mul_add(self, b: Self, c: Self) -> Self;
    fn to_array(self) -> [f32; LANES];
}

/// Plain arrays: whatever the compiler makes of them for the target's baseline.
#[derive(Clone, Copy)]
pub(crate) struct Portable([f32; LANES]);

impl Vector for Portable {
    // aarch64 has a fused multiply-add in its baseline; SSE2 does not (`mul_add` would be a call).
    const FMA: bool = cfg!(target_arch = "aarch64");
    #[inline(always)]
    fn zero() -> Self {
        Portable([0.0; LANES])
    }
    #[inline(always)]
    fn splat(v: f32) -> Self {
        Portable([v; LANES])
    }
    #[inline(always)]
    fn load(src: &[f32; LANES]) -> Self {
        Portable(*src)
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32; LANES]) {
        *dst = self.0;
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        Portable(std::array::from_fn(|l| super::madd::<Self>(self.0[l], b.0[l], c.0[l])))
    }
    #[inline(always)]
    fn to_array(self) -> [f32; LANES] {
        self.0
    }
}

/// One AVX-512 register.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Avx512(__m512);

// SAFETY (every `unsafe` below): see the module docs; loads and stores go through references to
// exactly sixteen values.
#[cfg(target_arch = "x86_64")]
impl Vector for Avx512 {
    const FMA: bool = true;
    #[inline(always)]
    fn zero() -> Self {
        Avx512(unsafe { _mm512_setzero_ps() })
    }
    #[inline(always)]
    fn splat(v: f32) -> Self {
        Avx512(unsafe { _mm512_set1_ps(v) })
    }
    #[inline(always)]
    fn load(src: &[f32; LANES]) -> Self {
        Avx512(unsafe { _mm512_loadu_ps(src.as_ptr()) })
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32; LANES]) {
        unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        Avx512(unsafe { _mm512_fmadd_ps(self.0, b.0, c.0) })
    }
    #[inline(always)]
    fn to_array(self) -> [f32; LANES] {
        let mut out = [0.0; LANES];
        self.store(&mut out);
        out
    }
}

/// Two AVX2 registers.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Avx2(__m256, __m256);

// SAFETY (every `unsafe` below): as for `Avx512`; each half is eight of the sixteen values.
#[cfg(target_arch = "x86_64")]
impl Vector for Avx2 {
    const FMA: bool = true;
    #[inline(always)]
    fn zero() -> Self {
        unsafe { Avx2(_mm256_setzero_ps(), _mm256_setzero_ps()) }
    }
    #[inline(always)]
    fn splat(v: f32) -> Self {
        unsafe { Avx2(_mm256_set1_ps(v), _mm256_set1_ps(v)) }
    }
    #[inline(always)]
    fn load(src: &[f32; LANES]) -> Self {
        unsafe { Avx2(_mm256_loadu_ps(src.as_ptr()), _mm256_loadu_ps(src.as_ptr().add(8))) }
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32; LANES]) {
        unsafe {
            _mm256_storeu_ps(dst.as_mut_ptr(), self.0);
            _mm256_storeu_ps(dst.as_mut_ptr().add(8), self.1);
        }
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        unsafe { Avx2(_mm256_fmadd_ps(self.0, b.0, c.0), _mm256_fmadd_ps(self.1, b.1, c.1)) }
    }
    #[inline(always)]
    fn to_array(self) -> [f32; LANES] {
        let mut out = [0.0; LANES];
        self.store(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(always)]
    fn roundtrip<V: Vector>() -> [f32; LANES] {
        let a: [f32; LANES] = std::array::from_fn(|i| i as f32);
        let b = V::splat(2.0);
        let mut out = [0.0; LANES];
        V::load(&a).mul_add(b, V::splat(1.0)).store(&mut out);
        assert_eq!(V::zero().to_array(), [0.0; LANES]);
        out
    }

    #[test]
    fn every_available_vector_computes_the_same() {
        let want: [f32; LANES] = std::array::from_fn(|i| 2.0 * i as f32 + 1.0);
        assert_eq!(roundtrip::<Portable>(), want);
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx2,fma")]
            fn avx512() -> [f32; LANES] {
                roundtrip::<Avx512>()
            }
            #[target_feature(enable = "avx2,fma")]
            fn avx2() -> [f32; LANES] {
                roundtrip::<Avx2>()
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                // SAFETY: the features were just detected.
                assert_eq!(unsafe { avx2() }, want);
            }
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                // SAFETY: as above.
                assert_eq!(unsafe { avx512() }, want);
            }
        }
    }
}
