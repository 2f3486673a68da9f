//! WideResNet: parameter counts, an end-to-end overfit test, and misuse errors.

mod common;

use ringsam_models::{ModelConfig, build};
use ringsam_nn::Pass;
use ringsam_tensor::Tensor;

/// Trainable parameters of WRN-(6n+4)-k by hand, from the reference's definition:
/// init_conv 3·3·C·16; per block init_bn 2·c_in, conv1 9·c_in·c_out, bn_2 2·c_out, conv2 9·c_out²;
/// pre-pool-bn 2·64k; Dense 64k·classes + classes. (BN running statistics are state, not counted.)
fn wrn_params_by_hand(depth: usize, k: usize, classes: usize, in_ch: usize) -> usize {
    let n = (depth - 4) / 6;
    let mut total = 9 * in_ch * 16;
    let mut c_in = 16;
    for width in [16 * k, 32 * k, 64 * k] {
        for _ in 0..n {
            total += 2 * c_in + 9 * c_in * width + 2 * width + 9 * width * width;
            c_in = width;
        }
    }
    total + 2 * c_in + c_in * classes + classes
}

#[test]
fn parameter_counts_match_the_reference_definition() {
    // The right-hand numbers come from jax.eval_shape on the Flax port of the reference
    // (tests/fixtures/wrn_param_counts.json, written by make_wrn_fixture.py).
    for (name, classes, want) in [
        ("WideResnet28x10", 10, 36_220_634),
        ("WideResnet28x10", 100, 36_278_324),
        ("WideResnet16x4", 10, 2_706_906),
        ("WideResnet16x2", 10, 680_922),
    ] {
        let m = build(name, &ModelConfig { num_classes: classes, in_channels: 3 }).unwrap();
        assert_eq!(m.layout().total(), want, "{name} with {classes} classes");
        let (d, k) = name.trim_start_matches("WideResnet").split_once('x').unwrap();
        assert_eq!(wrn_params_by_hand(d.parse().unwrap(), k.parse().unwrap(), classes, 3), want, "{name} by hand");
    }
}

#[test]
fn unknown_and_invalid_names_are_errors() {
    let cfg = ModelConfig::default();
    let err = |name| build(name, &cfg).err().expect("should fail").to_string();
    assert!(err("ResNet9000").contains("unknown model"));
    assert!(err("WideResnet27x10").contains("6n+4"));
}

#[test]
fn wrong_input_is_an_error_naming_the_layer() {
    let mut m = build("WideResnet10x1", &ModelConfig::default()).unwrap();
    let mut params = Tensor::from(vec![0.0; m.layout().total()]);
    let mut state = Tensor::from(vec![0.0; m.state_layout().total()]);
    m.init(&mut params, &mut state, 0);
    let x = Tensor::zeros(&[1, 2, 8, 8], Default::default()).unwrap(); // 1 channel, model wants 3
    let err = m.forward(&params, &mut state, &x, &Pass::eval()).unwrap_err().to_string();
    assert!(err.contains("init_conv") && err.contains("(3, N, H, W)"), "{err}");
    let err = m.forward(&Tensor::from(params[1..].to_vec()), &mut state, &x, &Pass::eval()).unwrap_err().to_string();
    assert!(err.contains("parameter buffer"), "{err}");
}

/// End-to-end gradient test: WRN-16-2 memorises one fixed batch of 64 random images with random
/// labels. Plain SGD with momentum 0.9, lr 0.05; the loss must fall by 10x within 100 steps.
#[test]
fn wrn16x2_overfits_one_batch() {
    let (first, last) = common::memorise("WideResnet16x2", 64, 32, 10, 100, 10.0);
    assert!(last < first / 10.0, "loss went from {first} to {last} in 100 steps");
}
