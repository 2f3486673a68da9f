//! ringsam-rng: a small counter-based random number generator, shared by the engine (dropout,
//! initialisation) and the data pipeline (permutations, augmentation).
//!
//! Why our own: a draw must be a pure function of `(seed, step, layer)` (see `ringsam_nn::Pass`), so
//! generators are created per use from a key rather than threaded through the program. SplitMix64
//! (Steele, Lea & Flood 2014) mixes the key into a state; each output is the mix of an advancing
//! counter. It is not cryptographic; it is fast, tiny and passes BigCrush.

/// A SplitMix64 stream.
#[allow(missing_docs)]
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A stream from one seed.
    pub fn new(seed: u64) -> Self {
        Rng { state: mix(seed ^ 0x5DEE_CE66_D1A4_F87D) }
    }

    /// The stream for `(seed, step, layer)`: distinct keys give independent-looking streams.
    pub fn stream(seed: u64, step: u64, layer: u64) -> Self {
        Rng::new(mix(mix(seed).wrapping_add(step)).wrapping_add(mix(layer.wrapping_add(GOLDEN))))
    }

    /// The counter this stream's draws come from: draw `i` (from 0) is [`Rng::draw_at`]`(base, i)`.
    /// A GPU kernel given the base draws any element's value without the ones before it, which is
    /// how device dropout masks equal the CPU's (ringsam_kernels' `dropout.cu`).
    pub fn counter_base(&self) -> u64 {
        self.state
    }

    /// Draw `i` of the stream whose [`Rng::counter_base`] is `base`: what the `i + 1`-th
    /// [`Rng::next_u64`] returns.
    pub fn draw_at(base: u64, i: u64) -> u64 {
        mix(base.wrapping_add(GOLDEN.wrapping_mul(i.wrapping_add(1))))
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// Uniform in `[0, 1)` with 24 bits of precision.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform_in(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal (Box–Muller, in f64).
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64); // (0, 1]
        let u2 = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// Gamma(`shape`, 1) by Marsaglia and Tsang (2000), with `shape < 1` boosted by `U^(1/shape)`.
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = ((self.next_u64() >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64); // (0, 1]
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal() as f64;
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = ((self.next_u64() >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64);
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    /// Beta(`a`, `b`) as `X / (X + Y)` with `X ~ Gamma(a)`, `Y ~ Gamma(b)`.
    pub fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        let y = self.gamma(b);
        if x + y > 0.0 { x / (x + y) } else { 0.5 }
    }

    /// Uniform integer in `[0, n)` (n > 0), by Lemire's multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_deterministic_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::stream(1, 2, 3).next_u64()).collect();
        assert!(a.iter().all(|&x| x == a[0]));
        assert_ne!(Rng::stream(1, 2, 3).next_u64(), Rng::stream(1, 2, 4).next_u64());
        assert_ne!(Rng::stream(1, 2, 3).next_u64(), Rng::stream(1, 3, 3).next_u64());
    }

    #[test]
    fn any_draw_can_be_computed_from_the_counter_base() {
        let mut r = Rng::stream(7, 11, 13);
        let base = r.counter_base();
        for i in 0..1000 {
            assert_eq!(r.next_u64(), Rng::draw_at(base, i), "draw {i}");
        }
    }

    #[test]
    fn beta_has_the_right_mean_and_variance() {
        // Beta(a, b): mean a/(a+b), variance ab/((a+b)²(a+b+1)); 40 000 draws put the sample
        // mean within ~0.003 of it.
        for (a, b) in [(0.2, 0.2), (1.0, 1.0), (2.5, 0.7)] {
            let mut r = Rng::new(11);
            let xs: Vec<f64> = (0..40_000).map(|_| r.beta(a, b)).collect();
            let n = xs.len() as f64;
            let m = xs.iter().sum::<f64>() / n;
            let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
            let (em, ev) = (a / (a + b), a * b / ((a + b) * (a + b) * (a + b + 1.0)));
            assert!((m - em).abs() < 4.0 * (ev / n).sqrt(), "Beta({a}, {b}): mean {m} vs {em}");
            assert!((v - ev).abs() < 0.05 * ev, "Beta({a}, {b}): variance {v} vs {ev}");
            assert!(xs.iter().all(|x| (0.0..=1.0).contains(x)));
        }
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut r = Rng::new(7);
        let xs: Vec<f64> = (0..200_000).map(|_| r.normal() as f64).collect();
        let m = xs.iter().sum::<f64>() / xs.len() as f64;
        let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / xs.len() as f64;
        assert!(m.abs() < 0.01 && (v - 1.0).abs() < 0.01, "mean {m} var {v}");
    }
}
