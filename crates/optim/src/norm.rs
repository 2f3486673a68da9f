//! Global L2 norm over a flat buffer.

use rayon::prelude::*;

/// `‖x‖₂` over every value, accumulated in f64 (a WRN-28-10 gradient has 36 M values).
pub fn global_norm(x: &[f32]) -> f64 {
    ordered_sum(x.par_chunks(1 << 16).map(|c| c.iter().map(|&v| v as f64 * v as f64).sum::<f64>())).sqrt()
}

/// The sum of per-chunk partial sums, added in chunk order. rayon's own `sum` groups partials as
/// its threads happened to split the work, so its last bits change from call to call; replicas
/// that apply a norm after the exchange (clipping, LookSAM's scale) must all compute the same.
pub fn ordered_sum(partials: impl IndexedParallelIterator<Item = f64>) -> f64 {
    partials.collect::<Vec<f64>>().iter().sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn norm_of_3_4_is_5() {
        assert_eq!(super::global_norm(&[3.0, 4.0]), 5.0);
    }
}
