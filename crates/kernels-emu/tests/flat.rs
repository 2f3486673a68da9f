//! The flat-buffer kernels (SAM's ascent, the base optimizers, clipping, weight decay, the EMA)
//! under emulation, held to the CPU engine by the very self-test the GPU device check runs
//! (`ringsam_kernels::selftest`): element-wise results bitwise, norms to 1e-12.

use ringsam_kernels::flat::{self, OptimizerState};
use ringsam_kernels::launch::Elem;
use ringsam_kernels::selftest;
use ringsam_kernels::{Arg, Buf, KernelError, Launch, Launcher, Memory};
use ringsam_kernels_emu::{Emu, host_buf};
use ringsam_optim::OptimizerKind;

/// Long enough for several reduction blocks with a few elements per thread; short enough that
/// one OS thread per emulated GPU thread stays quick.
const N: usize = 5_003;

#[test]
fn every_kernel_agrees_with_the_cpu_engine() {
    let checks = selftest::run(&mut Emu::default(), N, &ringsam_bench::kernels::cpu_reference()).unwrap();
    let report = selftest::report(&checks);
    assert!(checks.iter().all(selftest::Check::passed), "{report}");
    assert_eq!(checks.len(), 39, "{report}");
    eprintln!("{report}");
}

#[test]
fn the_device_memory_check_passes_on_host_memory() {
    let mem = ringsam_kernels::DeviceMemory::new(ringsam_kernels::HostMemory::new());
    let check = selftest::memory(&mem, N).unwrap();
    assert!(check.passed(), "{}", selftest::report(&[check]));
}

/// A launcher that runs the momentum kernel where Nesterov's was asked for.
struct Swapped(Emu);

impl Launcher for Swapped {
    fn launch(&mut self, kernel: &'static str, at: Launch, args: &[Arg]) -> Result<(), KernelError> {
        self.0.launch(if kernel == "nesterov_update" { "momentum_update" } else { kernel }, at, args)
    }
    fn reduction_scratch(&mut self) -> Result<(Buf<f64>, Buf<f64>), KernelError> {
        self.0.reduction_scratch()
    }
    fn read_f64(&mut self, buf: Buf<f64>) -> Result<Vec<f64>, KernelError> {
        self.0.read_f64(buf)
    }
    fn sgemm(&mut self, call: &ringsam_kernels::gemm::SgemmCall) -> Result<(), KernelError> {
        self.0.sgemm(call)
    }
    fn set_profiling(&mut self, on: bool) {
        self.0.set_profiling(on)
    }
    fn take_profile(&mut self) -> Result<ringsam_kernels::KernelTimes, KernelError> {
        self.0.take_profile()
    }
}

impl Memory for Swapped {
    type Owned<T: Elem> = Vec<T>;
    fn upload<T: Elem>(&mut self, host: &[T]) -> Result<Vec<T>, KernelError> {
        self.0.upload(host)
    }
    fn download<T: Elem>(&mut self, buf: &Vec<T>) -> Result<Vec<T>, KernelError> {
        self.0.download(buf)
    }
    fn buf<T: Elem>(&self, buf: &Vec<T>) -> Buf<T> {
        self.0.buf(buf)
    }
    fn finish(&mut self) -> Result<(), KernelError> {
        Ok(())
    }
}

#[test]
fn the_selftest_catches_a_wrong_kernel() {
    let checks = selftest::run(&mut Swapped(Emu::default()), 300, &ringsam_bench::kernels::cpu_reference()).unwrap();
    let failed: Vec<&str> = checks.iter().filter(|c| !c.passed()).map(|c| c.name).collect();
    assert_eq!(failed, ["Nesterov update, 3 steps"], "{}", selftest::report(&checks));
}

#[test]
fn the_ascent_is_a_two_pass_norm_then_one_element_wise_launch() {
    let (w, g, out) = (vec![1.0f32; N], vec![0.5f32; N], vec![0.0f32; N]);
    let mut emu = Emu::default();
    // SAFETY: the vectors outlive the launches.
    let (bw, bg, bo) = unsafe { (host_buf(&w), host_buf(&g), host_buf(&out)) };
    flat::ascent_point(&mut emu, bo, bw, bg, 0.05).unwrap();
    assert_eq!(emu.launches.iter().map(|l| l.0).collect::<Vec<_>>(), ["sum_squares_blocks", "sum_partials", "sam_ascent"]);
    assert!(emu.launches[0].1.grid > 1, "the reduction spans several blocks: {:?}", emu.launches[0].1);
}

#[test]
fn a_zero_gradient_leaves_the_weights() {
    let (w, g, out): (Vec<f32>, _, _) = ((0..300).map(|i| i as f32).collect(), vec![0.0f32; 300], vec![7.0f32; 300]);
    let mut emu = Emu::default();
    // SAFETY: the vectors outlive the launches.
    let (bw, bg, bo) = unsafe { (host_buf(&w), host_buf(&g), host_buf(&out)) };
    assert_eq!(flat::ascent_point(&mut emu, bo, bw, bg, 0.05).unwrap(), 0.0);
    assert_eq!(out, w);
    assert_eq!(flat::asam_ascent_point(&mut emu, bo, bw, bg, 0.5, 0.01).unwrap(), 0.0);
}

#[test]
fn rmsprop_without_its_second_moment_and_mismatched_lengths_are_refused() {
    let (w, g, m, short) = (vec![0.0f32; 4], vec![0.0f32; 4], vec![0.0f32; 4], vec![0.0f32; 3]);
    let mut emu = Emu::default();
    // SAFETY: the vectors outlive the launches.
    let (bw, bg, bm, bs) = unsafe { (host_buf(&w), host_buf(&g), host_buf(&m), host_buf(&short)) };
    let kind = OptimizerKind::RmsProp { beta: 0.9, beta2: 0.99, eps: 1e-3 };
    let state = OptimizerState { momentum: bm, second_moment: None };
    assert!(flat::update(&mut emu, kind, bw, bg, state, 0.1).is_err());
    assert!(matches!(flat::axpy(&mut emu, bw, 1.0, bs), Err(KernelError::Length { got: 3, want: 4, .. })));
    assert!(emu.launches.is_empty(), "nothing launched: {:?}", emu.launches);
}

#[test]
fn launch_shapes_cover_every_element_and_bound_the_partials() {
    for n in [1, 255, 256, 257, 1 << 20, 1 << 30] {
        let e = Launch::elementwise(n);
        assert!(e.grid >= 1 && e.block == ringsam_kernels::launch::BLOCK);
        let r = Launch::reduction(n);
        assert!(r.grid as usize <= ringsam_kernels::launch::MAX_PARTIALS && r.grid >= 1, "{n}: {r:?}");
    }
}

#[test]
fn every_kernel_source_is_emulated_and_arguments_are_counted() {
    let mut emu = Emu::default();
    for source in ringsam_kernels::SOURCES {
        for &kernel in source.kernels {
            // No arguments: refused for the count (so the kernel is known), never run.
            match emu.launch(kernel, Launch::elementwise(1), &[]) {
                Err(KernelError::Launch { why, .. }) => assert!(why.contains("the kernel takes"), "{kernel}: {why}"),
                other => panic!("{kernel}: {other:?}"),
            }
        }
    }
    assert!(
        matches!(emu.launch("no_such_kernel", Launch::elementwise(1), &[]), Err(KernelError::Launch { why, .. }) if why.contains("not an emulated"))
    );
}

/// A GPU refuses a launch of 0 blocks: the per-channel and per-plane operations never make one.
#[test]
fn nothing_launches_zero_blocks() {
    use ringsam_kernels::batchnorm::{self, BnLayout, BnParams, BnStats};
    let (empty, one) = (Vec::<f32>::new(), vec![0.0f32; 1]);
    let mut emu = Emu::default();
    // SAFETY: the vectors outlive the launches.
    let (e, o) = unsafe { (host_buf(&empty), host_buf(&one)) };
    let stats = BnStats { mean: e, var: e, rstd: e };
    let p = BnParams { scale: e, bias: e };
    assert!(batchnorm::forward_train(&mut emu, BnLayout::cnhw(0, 1), e, stats, e, p, 1e-5, false).is_err());
    ringsam_kernels::pool::global_avgpool_forward(&mut emu, e, e, 4).unwrap();
    assert!(ringsam_kernels::pool::global_avgpool_forward(&mut emu, o, e, 4).is_err());
    assert!(emu.launches.iter().all(|l| l.1.grid > 0), "{:?}", emu.launches);
    assert!(emu.launches.is_empty(), "{:?}", emu.launches);
}

/// With the library chosen, a stride-1 depthwise convolution goes to it as a grouped one; a
/// stride-2 SAME one on an even size (padding only after) keeps the depthwise kernels.
#[test]
fn depthwise_convolutions_go_to_the_library_where_its_padding_fits() {
    use ringsam_kernels::conv_gemm;
    use ringsam_kernels::conv_library::ConvImpl;
    let conv_same = ringsam_bench::kernels::cpu_reference().conv_same;
    for (stride, want) in [(1, "library_conv"), (2, "depthwise_forward")] {
        let sh = conv_same(2, 4, 8, 8, 4, 3, stride, 4);
        let mut emu = Emu::default();
        emu.set_conv_impl(ConvImpl::Library).unwrap();
        let col = vec![0.0f32; conv_gemm::scratch_need(&mut emu, &sh)];
        let (x, w, y) = (vec![1.0f32; 2 * 4 * 8 * 8], vec![0.5f32; sh.weight_len()], vec![0.0f32; sh.out_len()]);
        // SAFETY: host vectors of the shape's lengths, alive across the call.
        let bufs = unsafe { (host_buf(&y), host_buf(&x), host_buf(&w), host_buf(&col)) };
        conv_gemm::forward(&mut emu, bufs.0, bufs.1, bufs.2, bufs.3, &sh).unwrap();
        let names: Vec<&str> = emu.launches.iter().map(|l| l.0).collect();
        assert!(names.contains(&want), "stride {stride}: {names:?}");
        assert!(y.iter().all(|&v| v > 0.0), "stride {stride}: every output has an input tap");
    }
}
