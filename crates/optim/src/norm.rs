//! Global L2 norm over a flat buffer.

use rayon::prelude::*;

/// `‖x‖₂` over every value, accumulated in f64 (a WRN-28-10 gradient has 36 M values).
pub fn global_norm(x: &[f32]) -> f64 {
    x.par_chunks(1 << 16).map(|c| c.iter().map(|&v| v as f64 * v as f64).sum::<f64>()).sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    #[test]
    fn norm_of_3_4_is_5() {
        assert_eq!(super::global_norm(&[3.0, 4.0]), 5.0);
    }
}
