//! Whole models on the emulated device against the same models on the CPU: the logits, every
//! parameter gradient and the batch-norm statistics of a training pass, and the ready marks of
//! `backward_notify` (what the ring's buckets follow). The models whose every layer has a device
//! path are checked here; the device check (`ringsam selftest engine`) runs the same on a GPU.

use ringsam_kernels_emu::emulated_gpu;
use ringsam_models::{ModelConfig, build};
use ringsam_nn::{Pass, Rng};
use ringsam_tensor::Tensor;

/// GEMM and batch-norm sums run in another order on a device: relative to max(|value|, 1).
const SUMS: f64 = 1e-4;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.normal()).collect()
}

fn worst(got: &Tensor, want: &Tensor) -> f64 {
    let (got, want) = (got.to_host().unwrap(), want.to_host().unwrap());
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want.iter())
        .map(|(&a, &b)| (a - b).abs() as f64 / (b.abs() as f64).max(1.0))
        .fold(0.0, |m, r| if r.is_nan() { f64::INFINITY } else { m.max(r) })
}

/// One training pass of `name` on the CPU and on the device: the worst relative difference of
/// logits, gradients and statistics, and whether the ready marks were the same.
fn compare(name: &str, in_channels: usize, side: usize) -> (f64, bool) {
    let cfg = ModelConfig { num_classes: 10, in_channels };
    let mut m = build(name, &cfg).unwrap();
    let (mut p, mut s) = (vec![0.0; m.layout().total()], vec![0.0; m.state_layout().total()]);
    m.init(&mut p, &mut s, 0);
    let n = 4;
    let x = Tensor::from_vec(&[in_channels, n, side, side], values(in_channels * n * side * side, 1)).unwrap();
    let dl = Tensor::from_vec(&[n, 10], values(n * 10, 2).iter().map(|v| v * 0.1).collect()).unwrap();
    let pass = Pass::train(3, 5);
    let mut run = |params: Tensor, mut state: Tensor, x: &Tensor, dl: &Tensor| {
        let logits = m.forward(&params, &mut state, x, &pass).unwrap().to_host().unwrap();
        let mut grads = params.try_clone().unwrap(); // non-zero: backward accumulates
        let mut marks = Vec::new();
        m.backward_notify(&params, &mut grads, x, dl, &mut |_, at| marks.push(at)).unwrap();
        (logits, grads.to_host().unwrap(), state.to_host().unwrap(), marks)
    };
    let cpu = run(Tensor::from(p.clone()), Tensor::from(s.clone()), &x, &dl);
    let gpu = emulated_gpu();
    let on = |t: &Tensor| t.to_gpu(&gpu).unwrap();
    let dev = run(on(&Tensor::from(p)), on(&Tensor::from(s)), &on(&x), &on(&dl));
    let r = [worst(&dev.0, &cpu.0), worst(&dev.1, &cpu.1), worst(&dev.2, &cpu.2)].into_iter().fold(0.0, f64::max);
    eprintln!("{name}: logits, {} gradients and {} statistics within {r:.1e} of the CPU's", cpu.1.len(), cpu.2.len());
    (r, dev.3 == cpu.3)
}

#[test]
fn wide_resnet_trains_on_the_device_as_on_the_cpu() {
    let (r, marks) = compare("WideResnet10x2", 3, 8);
    assert!(r <= SUMS, "WideResnet10x2: {r:e}");
    assert!(marks, "the ready marks differ");
}

#[test]
fn small_cnn_trains_on_the_device_as_on_the_cpu() {
    let (r, marks) = compare("SmallCnn", 1, 8);
    assert!(r <= SUMS, "SmallCnn: {r:e}");
    assert!(marks);
}
