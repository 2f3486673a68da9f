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
    let _ = st.step(&x, &[1, 2], 0.01).unwrap();
    assert!(gpu.launcher().take_profile().unwrap().by_name.is_empty());
}
