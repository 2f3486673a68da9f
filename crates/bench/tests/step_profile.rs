//! `bench step --profile` on the emulated device: every launch of a step is timed and named
//! (the GEMMs by shape), through the same boxed launcher a GPU's steps use.

use ringsam_bench::step::profile_steps;
use ringsam_kernels_emu::emulated_gpu;
use ringsam_models::ModelConfig;
use ringsam_tensor::Tensor;
use ringsam_train::StepConfig;
use ringsam_train::device_step::DeviceStep;

#[test]
fn a_profiled_step_names_its_kernels_and_gemms_and_compares_them_with_the_wall() {
    let gpu = emulated_gpu();
    let model = ModelConfig { num_classes: 10, in_channels: 1 };
    let mut st = DeviceStep::new("SmallCnn", &model, StepConfig::default(), &gpu).unwrap();
    let x = Tensor::from_vec(&[1, 2, 8, 8], (0..128).map(|i| (i % 7) as f32 / 7.0).collect()).unwrap();
    let [sgd, sam] = profile_steps(&mut st, &x, &[1, 2], 0.05).unwrap();
    for table in [&sgd, &sam] {
        assert!(table.contains("sgemm ") && table.contains("TFLOP/s"), "{table}");
        assert!(table.contains("softmax_xent_forward"), "{table}");
        assert!(table.starts_with("  in kernels "), "{table}");
    }
    assert!(sam.contains("sam_ascent"), "the SAM step's own kernel:\n{sam}");
    assert!(!sgd.contains("sam_ascent"), "no ascent in an SGD step:\n{sgd}");
    // Profiling is off again afterwards: nothing more is recorded.
    let _ = st.step(&x, &[1, 2], 0.01, None).unwrap();
    assert!(gpu.launcher().take_profile().unwrap().by_name.is_empty());
}

/// On the CPU: each layer kind's kernels by pass, the squeeze-excite and depthwise ones among
/// them (the smallest EfficientNet has every kind of block), their sum within the wall time.
#[test]
fn a_profiled_cpu_step_names_its_layer_kinds_by_pass() {
    use ringsam_bench::step::profile_cpu_steps;
    use ringsam_train::{BatchShare, SamStep};
    let model = ModelConfig { num_classes: 10, in_channels: 3 };
    let mut st = SamStep::new("efficientnet-test", &model, StepConfig::default(), None, BatchShare::alone(1)).unwrap();
    let x = Tensor::from_vec(&[3, 2, 16, 16], (0..3 * 2 * 256).map(|i| (i % 11) as f32 / 11.0 - 0.5).collect()).unwrap();
    let [sgd, sam] = profile_cpu_steps(&mut st, &x, &[1, 2], 0.05).unwrap();
    for table in [&sgd, &sam] {
        for kind in
            ["depthwise conv forward", "depthwise conv backward", "1×1 conv backward (GEMMs)", "batch norm forward", "swish backward"]
        {
            assert!(table.contains(kind), "{kind} missing:\n{table}");
        }
        assert!(table.contains("squeeze-excite: plane means"), "{table}");
        let share: f64 = table.split("wall (").nth(1).and_then(|t| t.split('%').next()).and_then(|p| p.parse().ok()).unwrap();
        assert!((0.0..=100.0).contains(&share), "kernels' share of the wall {share}:\n{table}");
    }
    // The SAM step runs every kernel twice as often as the SGD step.
    let calls = |t: &str| {
        t.lines()
            .find(|l| l.contains("depthwise conv forward"))
            .and_then(|l| l.split('×').next()?.split_whitespace().last()?.parse::<u32>().ok())
    };
    assert_eq!(calls(&sam), calls(&sgd).map(|n| 2 * n), "{sgd}\n{sam}");
}
