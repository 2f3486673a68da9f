//! Every layer's backward against central finite differences (`ringsam_nn::gradcheck`).
//!
//! Tolerance, stated once for all layers: `|analytic − numeric| ≤ 1e-3 + 5e-3·|numeric|` with
//! `eps = 1e-3` (f32 forward, f64 loss accumulation). Inputs are distinct values at least 5e-3
//! apart and at least 2.5e-3 away from zero, so no ±eps step crosses a ReLU kink or a max-pool tie.

use ringsam_nn::gradcheck::{GradCheckConfig, check_layer};
use ringsam_nn::layers::*;
use ringsam_nn::{Layer, ParamLayout, Pass, Rng, StateLayout};
use ringsam_tensor::Tensor;

/// A tensor of the given shape holding a random permutation of well-separated values.
fn separated(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut vals: Vec<f32> = (0..n).map(|i| (i as f32 - n as f32 / 2.0) * 0.01 + 0.005).collect();
    let scale = 2.0 / (n as f32 * 0.01).max(1.0); // keep values O(1)
    let mut rng = Rng::new(seed);
    for i in (1..n).rev() {
        vals.swap(i, rng.below(i as u64 + 1) as usize);
    }
    vals.iter_mut().for_each(|v| *v *= scale.max(0.5));
    Tensor::from_vec(shape, vals).unwrap()
}

fn random_params(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.uniform_in(lo, hi)).collect()
}

fn run(layer: &mut dyn Layer, layout: &ParamLayout, state: &StateLayout, x: &Tensor, pass: Pass) {
    let mut params = random_params(layout.total(), 11, -0.5, 0.5);
    // batch-norm scales away from zero, running variances positive
    for e in layout.entries() {
        if e.name.ends_with("/scale") {
            params[e.id.range()].iter_mut().for_each(|v| *v += 1.0);
        }
    }
    let mut st = random_params(state.total(), 12, 0.1, 0.3);
    for e in state.entries() {
        if e.name.ends_with("/var") {
            st[e.id.range()].iter_mut().for_each(|v| *v += 0.8);
        }
    }
    let cfg = GradCheckConfig::default();
    match check_layer(layer, &params, &mut st, x, &pass, &cfg) {
        Ok(r) => assert!(r.checked > 0, "{}: nothing checked", layer.name()),
        Err(e) => panic!("{e}"),
    }
}

fn train() -> Pass {
    Pass::train_frozen_stats(3, 7)
}

#[test]
fn conv2d_variants() {
    let cases: [(&str, Conv2dConfig, [usize; 4]); 7] = [
        ("conv3x3", Conv2dConfig::same(3, 4, 3, 1), [3, 2, 6, 6]),
        ("conv3x3_stride2_same", Conv2dConfig::same(4, 5, 3, 2), [4, 2, 6, 6]),
        ("conv1x1", Conv2dConfig::same(4, 3, 1, 1), [4, 2, 5, 5]),
        ("conv1x1_stride2", Conv2dConfig::same(4, 6, 1, 2), [4, 2, 6, 6]),
        ("conv_grouped", Conv2dConfig { groups: 2, ..Conv2dConfig::same(4, 6, 3, 1) }, [4, 2, 5, 5]),
        ("conv_depthwise", Conv2dConfig { groups: 5, ..Conv2dConfig::same(5, 5, 3, 2) }, [5, 2, 7, 7]),
        ("conv7x7_stem", Conv2dConfig { padding: Padding::Explicit(3), ..Conv2dConfig::same(3, 4, 7, 2) }, [3, 2, 9, 9]),
    ];
    for (name, cfg, shape) in cases {
        let mut layout = ParamLayout::new();
        let mut conv = Conv2d::new(&mut layout, name, cfg);
        run(&mut conv, &layout, &StateLayout::new(), &separated(&shape, 1), train());
    }
}

#[test]
fn conv2d_without_input_gradient_still_gives_kernel_gradient() {
    let mut layout = ParamLayout::new();
    let mut conv = Conv2d::new(&mut layout, "init_conv", Conv2dConfig { input_grad: false, ..Conv2dConfig::same(3, 4, 3, 1) });
    run(&mut conv, &layout, &StateLayout::new(), &separated(&[3, 2, 5, 5], 2), train());
}

#[test]
fn batchnorm_train_eval_relu_and_features() {
    for (relu, pass, shape) in [
        (false, train(), vec![3, 4, 3, 3]),
        (true, train(), vec![3, 4, 3, 3]),
        (true, Pass::eval(), vec![3, 4, 3, 3]),
        (false, train().with_frozen_bn(true), vec![3, 4, 3, 3]), // finetuning: running statistics
        (false, train(), vec![5, 6]),
    ] {
        let (mut p, mut s) = (ParamLayout::new(), StateLayout::new());
        let mut bn = BatchNorm::new(&mut p, &mut s, "bn", BatchNormConfig::cifar(shape[0], relu));
        run(&mut bn, &p, &s, &separated(&shape, 3), pass);
    }
}

#[test]
fn linear() {
    let mut p = ParamLayout::new();
    let mut l = Linear::new(&mut p, "Dense_0", 6, 4);
    run(&mut l, &p, &StateLayout::new(), &separated(&[6, 3], 4), train());
}

#[test]
fn activations() {
    for kind in [ActivationKind::Relu, ActivationKind::Silu, ActivationKind::Sigmoid] {
        let mut a = Activation::new("act", kind);
        run(&mut a, &ParamLayout::new(), &StateLayout::new(), &separated(&[3, 2, 4, 4], 5), train());
    }
}

#[test]
fn pools() {
    let x = separated(&[3, 2, 6, 6], 6);
    run(&mut AvgPool2d::new("avg", 2, 2), &ParamLayout::new(), &StateLayout::new(), &x, train());
    run(&mut MaxPool2d::new("max", 3, 2), &ParamLayout::new(), &StateLayout::new(), &x, train());
    run(&mut GlobalAvgPool::new("gap"), &ParamLayout::new(), &StateLayout::new(), &x, train());
}

#[test]
fn dropout_in_training() {
    let mut d = Dropout::new("dropout", 0.3);
    run(&mut d, &ParamLayout::new(), &StateLayout::new(), &separated(&[4, 3, 2, 2], 7), train());
}

#[test]
fn pool_pad_shortcut() {
    run(&mut PoolPadShortcut::new("sc1", 3, 5, 1), &ParamLayout::new(), &StateLayout::new(), &separated(&[3, 2, 4, 4], 8), train());
    run(&mut PoolPadShortcut::new("sc2", 3, 6, 2), &ParamLayout::new(), &StateLayout::new(), &separated(&[3, 2, 4, 4], 9), train());
}

#[test]
fn shape_errors_name_the_layer() {
    let mut p = ParamLayout::new();
    let mut conv = Conv2d::new(&mut p, "WideResnetGroup_0/WideResnetBlock_0/conv1", Conv2dConfig::same(16, 32, 3, 1));
    let params = Tensor::from(vec![0.0; p.total()]);
    let err =
        conv.forward(&params, &mut Tensor::empty(), &Tensor::zeros(&[8, 2, 4, 4], Default::default()).unwrap(), &train()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("WideResnetGroup_0/WideResnetBlock_0/conv1") && msg.contains("(16, N, H, W)") && msg.contains("[8, 2, 4, 4]"),
        "{msg}"
    );
    let err = conv.backward(&params, &mut Tensor::from(vec![0.0; p.total()]), &Tensor::empty(), &Tensor::empty()).unwrap_err();
    assert!(err.to_string().contains("backward called before forward"), "{err}");
}

#[test]
fn shift_subsample_paths() {
    for (stride, offset, side) in [(1, 0, 5), (1, 1, 5), (2, 0, 6), (2, 1, 6), (2, 1, 7)] {
        let mut l = ShiftSubsample::new("shortcut/path", 3, stride, offset);
        run(&mut l, &ParamLayout::new(), &StateLayout::new(), &separated(&[3, 2, side, side], 5), train());
    }
}

#[test]
fn shake_drop_true_gradient() {
    // Tied coefficients (SAM's first pass) make backward the true gradient of forward.
    for survival in [0.0, 0.5, 1.0] {
        let mut l = ShakeDrop::new("BottleneckShakeDrop_0/shake_drop", survival);
        run(&mut l, &ParamLayout::new(), &StateLayout::new(), &separated(&[3, 4, 3, 3], 6), train().tied(true));
    }
}

/// ShakeShake has two inputs; check it through a layer that feeds channel halves as a and b.
/// Its output is the mix's own; only the input gradient sits in the `Buffers`.
struct Halves(ShakeShake, Tensor, Tensor, Buffers);

impl Layer for Halves {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn forward(&mut self, _p: &Tensor, _s: &mut Tensor, x: &Tensor, pass: &Pass) -> Result<(), ringsam_nn::NnError> {
        let [c, n, h, w] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
        let half = c / 2 * n * h * w;
        self.1 = Tensor::from_vec(&[c / 2, n, h, w], x.as_slice()[..half].to_vec()).unwrap();
        self.2 = Tensor::from_vec(&[c / 2, n, h, w], x.as_slice()[half..].to_vec()).unwrap();
        self.0.forward(&self.1, &self.2, pass)
    }
    fn backward(&mut self, _p: &Tensor, _g: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), ringsam_nn::NnError> {
        self.0.backward(dout)?;
        let mut d = self.0.da().as_slice().to_vec();
        d.extend_from_slice(self.0.db().as_slice());
        self.3.dinp = Tensor::from_vec(x.shape(), d).unwrap();
        Ok(())
    }
    fn buffers(&self) -> &Buffers {
        &self.3
    }
    fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.3
    }
    fn output(&self) -> &Tensor {
        self.0.output()
    }
}

#[test]
fn shake_shake_true_gradient() {
    let mut l = Halves(ShakeShake::new("ShakeShakeBlock_0/shake"), Tensor::empty(), Tensor::empty(), Buffers::default());
    run(&mut l, &ParamLayout::new(), &StateLayout::new(), &separated(&[4, 3, 3, 3], 8), train().tied(true));
}

#[test]
fn shake_draws_are_tied_in_pass_one_and_independent_in_pass_two() {
    let x = separated(&[2, 6, 2, 2], 9);
    let (first, second) = (Pass::train(4, 11).tied(true), Pass::train_frozen_stats(4, 11));
    let mut ss = ShakeShake::new("g/b/shake");
    ss.forward(&x, &x, &first).unwrap();
    let (f1, b1) = (ss.coefficients().0.to_vec(), ss.coefficients().1.to_vec());
    assert_eq!(f1, b1, "pass 1: backward uses the forward's gates");
    ss.forward(&x, &x, &second).unwrap();
    let (f2, b2) = (ss.coefficients().0.to_vec(), ss.coefficients().1.to_vec());
    assert_eq!(f1, f2, "pass 2 sees pass 1's forward gates");
    assert!(f2.iter().zip(&b2).all(|(f, b)| f != b), "pass 2 draws independent backward gates");
    assert!(f1.iter().any(|&g| g != f1[0]), "one gate per example");
    // Another step draws new gates; a replica holding examples 3.. draws what one replica would.
    ss.forward(&x, &x, &Pass::train(4, 12)).unwrap();
    assert_ne!(ss.coefficients().0, &f1[..]);
    let tail = Tensor::from_vec(&[2, 3, 2, 2], [&x.as_slice()[12..24], &x.as_slice()[36..48]].concat()).unwrap();
    ss.forward(&tail, &tail, &second.starting_at(3)).unwrap();
    assert_eq!(ss.coefficients().0, &f2[3..]);
    // Evaluation: the mean of the branches.
    ss.forward(&x, &x, &Pass::eval()).unwrap();
    assert!(ss.coefficients().0.iter().all(|&g| g == 0.5));

    let mut sd = ShakeDrop::new("BottleneckShakeDrop_3/shake_drop", 0.5);
    let mut nothing = Tensor::empty();
    sd.forward(&Tensor::empty(), &mut nothing, &x, &first).unwrap();
    let (f1, b1) = (sd.coefficients().0.to_vec(), sd.coefficients().1.to_vec());
    assert_eq!(f1, b1);
    assert!(f1.iter().all(|&c| (-1.0..=1.0).contains(&c)));
    sd.forward(&Tensor::empty(), &mut nothing, &x, &second).unwrap();
    assert_eq!(sd.coefficients().0, &f1[..]);
    assert!(sd.coefficients().1.iter().all(|&c| (0.0..=1.0).contains(&c)));
    assert_ne!(sd.coefficients().1, &f1[..]);
    sd.forward(&Tensor::empty(), &mut nothing, &x, &Pass::eval()).unwrap();
    assert!(sd.output().as_slice().iter().zip(x.as_slice()).all(|(o, v)| *o == 0.5 * v), "evaluation scales by p");
}

#[test]
fn shake_drop_survival_rate_is_p() {
    // Over many examples, the branch passes unchanged (coefficient 1 in both directions when the
    // mask is 1) for a fraction p of them.
    let x = separated(&[1, 4000, 1, 1], 10);
    let mut sd = ShakeDrop::new("BottleneckShakeDrop_7/shake_drop", 0.8);
    sd.forward(&Tensor::empty(), &mut Tensor::empty(), &x, &Pass::train_frozen_stats(1, 2)).unwrap();
    let kept = sd.coefficients().0.iter().zip(sd.coefficients().1).filter(|&(&f, &b)| f == 1.0 && b == 1.0).count();
    let rate = kept as f64 / 4000.0;
    assert!((rate - 0.8).abs() < 0.03, "survival rate {rate}");
}

#[test]
fn squeeze_excite() {
    for (c, r) in [(4, 1), (6, 3)] {
        let mut layout = ParamLayout::new();
        let mut se = SqueezeExcite::new(&mut layout, "MBConvBlock_1/SqueezeExcite_0", c, r);
        run(&mut se, &layout, &StateLayout::new(), &separated(&[c, 3, 3, 3], 12), train());
    }
}

#[test]
fn depthwise_with_the_tensorflow_kernel_layout() {
    let mut layout = ParamLayout::new();
    let mut dw = Conv2d::depthwise_tf(&mut layout, "MBConvBlock_2/depthwise_conv2d", 5, 3, 2, &ringsam_nn::Workspace::new());
    assert_eq!(layout.entries()[0].name, "MBConvBlock_2/depthwise_conv2d/depthwise_kernel");
    assert_eq!(layout.entries()[0].shape, vec![3, 3, 5, 1]);
    run(&mut dw, &layout, &StateLayout::new(), &separated(&[5, 2, 7, 7], 13), train());
}

#[test]
fn drop_connect() {
    let mut dc = DropConnect::new("MBConvBlock_3/drop_connect", 0.3);
    run(&mut dc, &ParamLayout::new(), &StateLayout::new(), &separated(&[3, 6, 2, 2], 14), train());
    // Whole examples are dropped or scaled by 1/(1 − rate); evaluation is the identity.
    let x = separated(&[2, 400, 1, 1], 15);
    dc.forward(&Tensor::empty(), &mut Tensor::empty(), &x, &train()).unwrap();
    let kept = dc.coefficients().iter().filter(|&&c| c > 0.0).count() as f64 / 400.0;
    assert!((kept - 0.7).abs() < 0.07, "kept {kept}");
    assert!(dc.coefficients().iter().all(|&c| c == 0.0 || (c - 1.0 / 0.7).abs() < 1e-6));
    dc.forward(&Tensor::empty(), &mut Tensor::empty(), &x, &Pass::eval()).unwrap();
    assert_eq!(dc.output().as_slice(), x.as_slice());
}
