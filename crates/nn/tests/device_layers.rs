//! Every layer with a device path, on the emulated device against the same layer on the CPU:
//! output, input gradient, parameter gradients (accumulated onto non-zero values) and running
//! statistics. Element-wise layers agree to the bit (swish and sigmoid within the rounding of the
//! CPU's vectorised exp); GEMMs and batch norm's per-channel sums run
//! in another order, so they agree within 1e-5 of max(|value|, 1) — the device check's bounds.

use ringsam_kernels::conv_library::ConvImpl;
use ringsam_kernels_emu::emulated_gpu;
use ringsam_nn::layers::{
    Activation, ActivationKind, AvgPool2d, BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, DropConnect, Dropout, GlobalAvgPool, Linear,
    MaxPool2d, PoolPadShortcut, ShakeDrop, ShakeShake, ShiftSubsample, SqueezeExcite,
};
use ringsam_nn::{Layer, ParamLayout, Pass, Rng, StateLayout, Workspace};
use ringsam_tensor::Tensor;

/// Relative to max(|value|, 1): the bound for sums in another order.
const SUMS: f64 = 1e-5;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.uniform_in(-1.0, 1.0)).collect()
}

/// Largest difference relative to max(|want|, 1), NaN as infinite.
fn worst(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.shape(), want.shape());
    got.as_slice()
        .iter()
        .zip(want.as_slice())
        .map(|(&a, &b)| if a.to_bits() == b.to_bits() { 0.0 } else { ((a - b).abs() as f64 / (b.abs() as f64).max(1.0)).max(0.0) })
        .map(|r| if r.is_nan() { f64::INFINITY } else { r })
        .fold(0.0, f64::max)
}

/// What one pass of a layer leaves: output, input gradient, parameter gradients, statistics.
struct Outcome([Tensor; 4]);

fn run(layer: &mut dyn Layer, params: &Tensor, state: &Tensor, x: &Tensor, dy_seed: u64, pass: Pass) -> Outcome {
    let gpu = x.gpu().cloned();
    let on = |t: Tensor| match &gpu {
        Some(g) => t.to_gpu(g).unwrap(),
        None => t,
    };
    let mut st = state.try_clone().unwrap();
    layer.forward(params, &mut st, x, &pass).unwrap();
    let dy = on(Tensor::from_vec(layer.output().shape(), values(layer.output().len(), dy_seed)).unwrap());
    let mut grads = on(Tensor::from(vec![0.25; params.len()]));
    layer.backward(params, &mut grads, x, &dy).unwrap();
    let host = |t: &Tensor| t.to_host().unwrap();
    Outcome([host(layer.output()), host(layer.dinput()), host(&grads), host(&st)])
}

/// Runs `layer` on the CPU, then on the emulated device, and returns the worst difference of
/// the four results.
fn compare(layer: &mut dyn Layer, layout: &ParamLayout, state: &StateLayout, x_shape: &[usize], pass: Pass) -> f64 {
    compare_by(ConvImpl::Gemm, layer, layout, state, x_shape, pass)
}

/// [`compare`] with the device's convolutions by `imp`.
fn compare_by(imp: ConvImpl, layer: &mut dyn Layer, layout: &ParamLayout, state: &StateLayout, x_shape: &[usize], pass: Pass) -> f64 {
    let mut params = values(layout.total(), 1);
    for e in layout.entries().iter().filter(|e| e.name.ends_with("/scale")) {
        params[e.id.range()].iter_mut().for_each(|v| *v += 1.5); // batch-norm scales away from 0
    }
    let mut stats = values(state.total(), 2);
    for e in state.entries().iter().filter(|e| e.name.ends_with("/var")) {
        stats[e.id.range()].iter_mut().for_each(|v| *v += 1.5); // positive running variances
    }
    let (params, stats) = (Tensor::from(params), Tensor::from(stats));
    let x = Tensor::from_vec(x_shape, values(x_shape.iter().product(), 3)).unwrap();
    let cpu = run(layer, &params, &stats, &x, 4, pass);
    let gpu = emulated_gpu();
    gpu.launcher().set_conv_impl(imp).unwrap();
    let dev = run(layer, &params.to_gpu(&gpu).unwrap(), &stats.to_gpu(&gpu).unwrap(), &x.to_gpu(&gpu).unwrap(), 4, pass);
    assert!(layer.output().gpu().is_some(), "{}: the output stayed on the host", layer.name());
    cpu.0.iter().zip(&dev.0).map(|(c, d)| worst(d, c)).fold(0.0, f64::max)
}

fn train() -> Pass {
    Pass::train(7, 3)
}

/// The CPU's swish and sigmoid use its vectorised `exp` (within 2 ulp), the device the C
/// library's `expf`: they agree within a few ulp. ReLU is exact on both.
const EXP_ULPS: f64 = 1e-6;

#[test]
fn activations_agree_to_the_bit_or_within_exp_rounding() {
    for (kind, bound) in [(ActivationKind::Relu, 0.0), (ActivationKind::Silu, EXP_ULPS), (ActivationKind::Sigmoid, EXP_ULPS)] {
        let mut a = Activation::new("act", kind);
        let r = compare(&mut a, &ParamLayout::new(), &StateLayout::new(), &[3, 4, 5, 5], train());
        assert!(r <= bound, "{kind:?}: {r:e}");
    }
}

#[test]
fn convolutions_agree_within_sum_order() {
    // (c_in, c_out, kernel, stride, groups): WRN's 3×3s, a ResNet projection, a grouped and a
    // depthwise convolution.
    for (c_in, c_out, kernel, stride, groups) in
        [(4, 6, 3, 1, 1), (4, 6, 3, 2, 1), (6, 4, 1, 1, 1), (4, 8, 1, 2, 1), (4, 4, 3, 1, 2), (6, 6, 5, 2, 6)]
    {
        let mut layout = ParamLayout::new();
        let cfg = Conv2dConfig { groups, ..Conv2dConfig::same(c_in, c_out, kernel, stride) };
        let mut conv = Conv2d::with_workspace(&mut layout, "conv", cfg, &Workspace::new());
        // By im2col and GEMM, and by the convolution library where the shape fits it (the host
        // reference under emulation: the weight transposes, the accumulation, the groups).
        for imp in [ConvImpl::Gemm, ConvImpl::Library] {
            let r = compare_by(imp, &mut conv, &layout, &StateLayout::new(), &[c_in, 3, 8, 8], train());
            assert!(r <= SUMS, "conv {c_in}→{c_out} {kernel}×{kernel}/{stride} in {groups} groups by {imp}: {r:e}");
        }
    }
}

#[test]
fn batch_norm_agrees_in_training_finetuning_and_evaluation() {
    // Training; frozen statistics (finetuning: the evaluation forward, and its own backward);
    // evaluation.
    for (relu, pass) in [(true, train()), (false, train()), (true, train().with_frozen_bn(true)), (false, Pass::eval())] {
        let (mut layout, mut state) = (ParamLayout::new(), StateLayout::new());
        let mut bn = BatchNorm::new(&mut layout, &mut state, "bn", BatchNormConfig::cifar(5, relu));
        let r = compare(&mut bn, &layout, &state, &[5, 4, 6, 6], pass);
        assert!(r <= SUMS, "relu {relu}: {r:e}");
    }
}

#[test]
fn squeeze_excite_agrees_within_sum_order() {
    // EfficientNet's: C channels squeezed to R, planes from 1×1 (B0's last stage at 32×32) up.
    for (c, r, n, side) in [(8, 2, 3, 5), (16, 4, 2, 1), (6, 1, 4, 3)] {
        let mut layout = ParamLayout::new();
        let mut se = SqueezeExcite::new(&mut layout, "SqueezeExcite_0", c, r);
        let w = compare(&mut se, &layout, &StateLayout::new(), &[c, n, side, side], train());
        assert!(w <= SUMS, "C {c} R {r} N {n} {side}×{side}: {w:e}");
    }
}

#[test]
fn dense_pools_and_shortcuts_agree() {
    let mut layout = ParamLayout::new();
    let mut dense = Linear::new(&mut layout, "Dense_0", 12, 10);
    assert!(compare(&mut dense, &layout, &StateLayout::new(), &[12, 5], train()) <= SUMS);
    let mut gap = GlobalAvgPool::new("pool");
    assert!(compare(&mut gap, &ParamLayout::new(), &StateLayout::new(), &[6, 3, 4, 4], train()) <= 1e-6);
    let mut max = MaxPool2d::new("max_pool", 3, 2);
    assert_eq!(compare(&mut max, &ParamLayout::new(), &StateLayout::new(), &[3, 2, 8, 8], train()), 0.0, "max pool");
    let mut avg = AvgPool2d::new("avg_pool", 2, 2);
    assert_eq!(compare(&mut avg, &ParamLayout::new(), &StateLayout::new(), &[3, 2, 8, 8], train()), 0.0, "avg pool");
    for (stride, offset) in [(2, 0), (2, 1), (1, 1)] {
        let mut path = ShiftSubsample::new("path", 3, stride, offset);
        assert_eq!(compare(&mut path, &ParamLayout::new(), &StateLayout::new(), &[3, 2, 7, 6], train()), 0.0, "{stride} {offset}");
    }
    for stride in [1, 2] {
        let mut sc = PoolPadShortcut::new("shortcut", 4, 7, stride);
        assert_eq!(compare(&mut sc, &ParamLayout::new(), &StateLayout::new(), &[4, 3, 6, 6], train()), 0.0, "stride {stride}");
    }
}

#[test]
fn random_layers_draw_the_cpus_values_on_the_device() {
    let none = (ParamLayout::new(), StateLayout::new());
    for pass in [train(), train().tied(true), train().starting_at(40), Pass::train_frozen_stats(7, 4), Pass::eval()] {
        let mut dropout = Dropout::new("dropout", 0.3);
        assert_eq!(compare(&mut dropout, &none.0, &none.1, &[3, 4, 5, 5], pass), 0.0, "dropout {pass:?}");
        let mut shake_drop = ShakeDrop::new("shake_drop", 0.7);
        assert_eq!(compare(&mut shake_drop, &none.0, &none.1, &[3, 16, 2, 2], pass), 0.0, "ShakeDrop {pass:?}");
        let mut drop_connect = DropConnect::new("drop_connect", 0.4);
        assert_eq!(compare(&mut drop_connect, &none.0, &none.1, &[3, 16, 2, 2], pass), 0.0, "drop-connect {pass:?}");
    }
}

/// Shake-Shake's mix draws its coefficients on the device too (two inputs: not a `Layer`).
#[test]
fn shake_shake_mixes_with_the_cpus_coefficients_on_the_device() {
    let shape = [3, 16, 2, 2];
    let n: usize = shape.iter().product();
    let host = [values(n, 5), values(n, 6), values(n, 7)].map(|v| Tensor::from_vec(&shape, v).unwrap());
    let gpu = emulated_gpu();
    let device = host.clone().map(|t| t.to_gpu(&gpu).unwrap());
    for pass in [train(), train().tied(true), train().starting_at(40), Pass::eval()] {
        let mut results = Vec::new();
        for [a, b, dy] in [&host, &device] {
            let mut mix = ShakeShake::new("shake_shake");
            mix.forward(a, b, &pass).unwrap();
            mix.backward(dy).unwrap();
            results.push([mix.output(), mix.da(), mix.db()].map(|t| t.to_host().unwrap()));
        }
        for (cpu, dev) in results[0].iter().zip(&results[1]) {
            assert_eq!(worst(dev, cpu), 0.0, "Shake-Shake {pass:?}");
        }
    }
}

#[test]
fn parameters_left_on_the_host_are_a_named_error() {
    let mut layout = ParamLayout::new();
    let mut conv = Conv2d::new(&mut layout, "WideResnetGroup_1/conv1", Conv2dConfig::same(2, 2, 3, 1));
    let x = Tensor::from_vec(&[2, 1, 4, 4], values(32, 5)).unwrap().to_gpu(&emulated_gpu()).unwrap();
    let err = conv.forward(&Tensor::from(vec![0.0; layout.total()]), &mut Tensor::empty(), &x, &train()).unwrap_err().to_string();
    assert!(err.contains("WideResnetGroup_1/conv1") && err.contains("on the host while the input is on emulated GPU"), "{err}");
}
