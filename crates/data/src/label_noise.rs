//! Symmetric label noise (`--label_noise p`), for the paper's noisy-label experiment.
//!
//! Each training label is, with probability `p`, replaced by a class drawn uniformly from all
//! `K` classes — the true one included, as Jiang et al. (2019) define symmetric noise, so about
//! `p·(K−1)/K` of the labels end up wrong. The draw for example `i` is a pure function of
//! `(seed, i)`: the same corrupted set on every replica, in every epoch and after any resume;
//! test labels are never touched.

use ringsam_rng::Rng;

/// The stream key that keeps label-noise draws apart from every other use of the run's seed.
const NOISE_STREAM: u64 = 0x4C41_4245_4C4E_4F49; // "LABELNOI"

/// Replaces labels as the module docs say; returns how many changed.
pub fn corrupt(labels: &mut [u32], num_classes: usize, p: f64, seed: u64) -> usize {
    if p <= 0.0 || num_classes < 2 {
        return 0;
    }
    let mut changed = 0;
    for (i, label) in labels.iter_mut().enumerate() {
        let mut rng = Rng::stream(seed, i as u64, NOISE_STREAM);
        // 53 bits of the first draw against p, so p = 1 replaces every label.
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        if u < p {
            let new = rng.below(num_classes as u64) as u32;
            changed += (new != *label) as usize;
            *label = new;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_changed_fraction_is_p_times_k_minus_1_over_k() {
        let clean: Vec<u32> = (0..20_000).map(|i| i % 10).collect();
        for p in [0.2, 0.8] {
            let mut noisy = clean.clone();
            let changed = corrupt(&mut noisy, 10, p, 7);
            let wrong = noisy.iter().zip(&clean).filter(|(a, b)| a != b).count();
            assert_eq!(changed, wrong);
            let want = p * 0.9 * 20_000.0;
            assert!((wrong as f64 - want).abs() < 4.0 * (want * (1.0 - p * 0.9)).sqrt(), "p {p}: {wrong} changed, about {want} expected");
            assert!(noisy.iter().all(|&l| l < 10));
        }
    }

    #[test]
    fn the_draw_depends_on_seed_and_index_only() {
        let clean: Vec<u32> = (0..1000).map(|i| i % 10).collect();
        let (mut a, mut b, mut c) = (clean.clone(), clean.clone(), clean.clone());
        corrupt(&mut a, 10, 0.4, 1);
        corrupt(&mut b, 10, 0.4, 1);
        corrupt(&mut c, 10, 0.4, 2);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // A prefix is corrupted as the whole set's first examples are.
        let mut prefix = clean[..100].to_vec();
        corrupt(&mut prefix, 10, 0.4, 1);
        assert_eq!(prefix, a[..100]);
        let mut untouched = clean.clone();
        assert_eq!(corrupt(&mut untouched, 10, 0.0, 1), 0);
        assert_eq!(untouched, clean);
    }
}
