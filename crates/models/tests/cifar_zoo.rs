//! Shake-Shake and PyramidNet+ShakeDrop: parameter counts against the reference's definitions,
//! whole-model gradients against finite differences, and a fixed batch memorised.

mod common;

use ringsam_models::pyramid_net::pyramid_widths;
use ringsam_models::{ModelConfig, build};
use ringsam_nn::Pass;

/// Shake-Shake by hand from the reference: init_conv 9·3·16 + init_bn 2·16; per block two
/// branches of conv 9·c_in·c + BN 2c + conv 9·c² + BN 2c; a width change adds the shortcut's
/// two 1×1 convs c_in·c/2 each and bn_residual 2c; Dense 64k·classes + classes.
fn shake_shake_by_hand(blocks: usize, k: usize, classes: usize) -> usize {
    let mut total = 9 * 3 * 16 + 2 * 16;
    let mut c_in = 16;
    for c in [16 * k, 32 * k, 64 * k] {
        for _ in 0..blocks {
            total += 2 * (9 * c_in * c + 2 * c + 9 * c * c + 2 * c);
            if c_in != c {
                total += 2 * (c_in * (c / 2)) + 2 * c;
            }
            c_in = c;
        }
    }
    total + c_in * classes + classes
}

/// PyramidNet by hand: init_conv + init_bn; per block bn_1_pre 2·c_in, contract c_in·c,
/// bn_1_post 2c, 3x3 9c², bn_2 2c, expand 4c², bn_3 8c (shortcuts have no parameters);
/// final_bn 2·4c_N; Dense 4c_N·classes + classes.
fn pyramid_by_hand(depth: usize, alpha: usize, classes: usize) -> usize {
    let mut total = 9 * 3 * 16 + 2 * 16;
    let mut c_in = 16;
    for c in pyramid_widths(3 * (depth - 2) / 9, alpha as f64) {
        total += 2 * c_in + c_in * c + 2 * c + 9 * c * c + 2 * c + 4 * c * c + 8 * c;
        c_in = 4 * c;
    }
    total + 2 * c_in + c_in * classes + classes
}

#[test]
fn parameter_counts_match_the_reference_definitions() {
    // The numbers the reference's own tests state (sam_jax/models/load_model_test.py: 26,227,572
    // and 26,288,692 for CIFAR-100), and the 10-class ones from the same definition.
    for (name, classes, want) in [
        ("WideResnet28x6_ShakeShake", 10, 26_192_922),
        ("WideResnet28x6_ShakeShake", 100, 26_227_572),
        ("Pyramid_ShakeDrop", 10, 26_210_842),
        ("Pyramid_ShakeDrop", 100, 26_288_692),
    ] {
        let m = build(name, &ModelConfig { num_classes: classes, in_channels: 3 }).unwrap();
        assert_eq!(m.layout().total(), want, "{name} with {classes} classes");
        let by_hand = if name.starts_with("Wide") { shake_shake_by_hand(4, 6, classes) } else { pyramid_by_hand(272, 200, classes) };
        assert_eq!(by_hand, want, "{name} by hand");
    }
    // The paper's 26.0M PyramidNet truncates widths where the reference rounds.
    let widths = pyramid_widths(90, 200.0);
    assert_eq!((widths[0], widths[29], widths[59], widths[89]), (18, 83, 149, 216));
}

#[test]
fn whole_model_gradients_match_finite_differences_with_tied_coefficients() {
    // Training mode with frozen statistics (batch statistics, nothing written) and tied
    // coefficients: backward is then the true gradient of forward (SAM's first pass).
    let pass = Pass::train_frozen_stats(7, 3).tied(true);
    for name in ["ShakeShake_1x1", "Pyramid_ShakeDrop_11x8"] {
        let agreed = common::check_gradients(name, pass, 8, 1e-3).unwrap();
        assert!(agreed > 50, "{name}: only {agreed} values checked");
    }
    // Independent backward coefficients (pass 2, the reference's default) are, by design, not the
    // gradient of this forward: the same check must fail.
    for name in ["ShakeShake_1x1", "Pyramid_ShakeDrop_11x8"] {
        assert!(
            common::check_gradients(name, Pass::train_frozen_stats(7, 3), 8, 1e-3).is_err(),
            "{name}: untied backward matched the true gradient"
        );
    }
}

#[test]
fn small_variants_memorise_a_fixed_batch() {
    for name in ["ShakeShake_1x2", "Pyramid_ShakeDrop_11x16"] {
        let (first, last) = common::memorise(name, 32, 16, 4, 150, 4.0);
        assert!(last < first / 4.0, "{name}: loss went from {first} to {last} in 150 steps");
    }
}
