//! `ringsam bench conv`: cuDNN's convolutions timed with their tensors in the engine's layout
//! (`(C, N, H, W)` activations, given as strided tensors) and in the two layouts cuDNN is tuned
//! for (packed NCHW, NHWC), on the zoo's heavy shapes. It answers the question the engine's
//! device layout waits on: whether moving every device kernel to NHWC buys enough
//! (docs/ARCHITECTURE.md, "Convolutions by cuDNN"). On EfficientNet's depthwise shapes it times
//! the engine's depthwise kernels beside cuDNN's grouped convolution: whether `--conv_impl cudnn`
//! should keep sending them there.

use anyhow::Result;
use clap::Args;

use crate::usage;

/// `ringsam bench conv`.
#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub(crate) struct BenchConvArgs {
    /// The GPU: cuda or cuda:N.
    #[arg(long, default_value = "cuda")]
    pub(crate) device: String,
    /// A GPU's convolution math: fp32, or tf32 (the default on a GPU).
    #[arg(long)]
    pub(crate) precision: Option<String>,
    /// Timed calls per (shape, layout, operation), after one to warm up.
    #[arg(long, default_value_t = 10)]
    pub(crate) iters: usize,
}

/// `(name, batch, channels in, channels out, side, kernel, stride, groups)`.
type Timed = (&'static str, usize, usize, usize, usize, usize, usize, usize);

/// The shapes timed, all ones cuDNN fits (symmetric padding). The depthwise ones (groups = channels) are
/// EfficientNet-B0's stride-1 blocks at 224×224; the engine's depthwise kernels are timed
/// beside them.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))] // timed only on a GPU
const SHAPES: [Timed; 7] = [
    ("WRN-28-10 stage 1, 3×3", 128, 160, 160, 32, 3, 1, 1),
    ("WRN-28-10 stage 3, 3×3", 128, 640, 640, 8, 3, 1, 1),
    ("ResNet-50 stage 1, 3×3", 256, 64, 64, 56, 3, 1, 1),
    ("ResNet-50 stage 1, 1×1", 256, 256, 64, 56, 1, 1, 1),
    ("ResNet-50 stage 4, 3×3", 256, 512, 512, 7, 3, 1, 1),
    ("B0 depthwise 3×3, 56²", 128, 144, 144, 56, 3, 1, 144),
    ("B0 depthwise 5×5, 28²", 128, 240, 240, 28, 5, 1, 240),
];

pub(crate) fn cmd_bench_conv(args: &BenchConvArgs) -> Result<()> {
    let device: ringsam_tensor::Device = args.device.parse().map_err(|e| usage(format!("--device: {e}")))?;
    let precision = crate::train_args::precision_for(&args.device, args.precision.as_deref())?;
    if precision == ringsam_kernels::Precision::Bf16 {
        return Err(usage("--precision bf16: bench conv times cuDNN, which computes FP32 tensors in fp32 or tf32 only"));
    }
    if args.iters == 0 {
        return Err(usage("--iters 0: nothing would be timed"));
    }
    run_on(device, precision, args.iters)
}

#[cfg(feature = "cuda")]
fn run_on(device: ringsam_tensor::Device, precision: ringsam_kernels::Precision, iters: usize) -> Result<()> {
    use anyhow::Context;
    use ringsam_kernels::Memory;
    use ringsam_kernels::conv::{ConvShape, depthwise_backward, depthwise_forward};
    use ringsam_kernels::conv_library::{ConvCall, ConvLayouts, ConvOp};
    let ringsam_tensor::Device::Cuda(ordinal) = device else {
        return Err(usage("bench conv times cuDNN: give --device cuda or cuda:N"));
    };
    device.probe()?;
    let mut gpu = ringsam_kernels::device::CudaLauncher::new(ordinal, precision).context("loading the kernels")?;
    println!("cuDNN convolutions on {} ({precision}), ms per call and TFLOP/s, {iters} calls each", gpu.device_name());
    println!("{:<26} {:<14} {:>18} {:>18} {:>18}", "shape", "layout", "forward", "backward data", "backward filter");
    for (name, n, c, k, side, r, stride, groups) in SHAPES {
        let pad = (r - 1) / 2;
        let p = (side + 2 * pad - r) / stride + 1;
        let sh = ConvShape { n, c, h: side, w: side, k, r, s: r, stride, pad_h: pad, pad_w: pad, p, q: p, groups };
        let x = gpu.zeros::<f32>(n * c * side * side).context("allocating the input")?;
        let w = gpu.zeros::<f32>(sh.weight_len()).context("allocating the filters")?;
        let y = gpu.zeros::<f32>(sh.out_len()).context("allocating the output")?;
        let flops = 2.0 * (k * n * p * p) as f64 * (r * r * c / groups) as f64;
        let cell = |timed: Result<f64, ringsam_kernels::KernelError>| match timed {
            Ok(s) => format!("{:>7.3} {:>6.1}", s * 1e3, flops / s / 1e12),
            Err(e) => format!("refused: {e}").chars().take(18).collect(),
        };
        for layouts in [ConvLayouts::Engine, ConvLayouts::Nchw, ConvLayouts::Nhwc] {
            let mut cells = Vec::new();
            for op in [ConvOp::Forward, ConvOp::BackwardData, ConvOp::BackwardFilter] {
                let call = ConvCall { op, shape: sh, x: gpu.buf(&x), w: gpu.buf(&w), y: gpu.buf(&y) };
                cells.push(cell(gpu.time_library_conv(&call, layouts, iters)));
            }
            println!("{name:<26} {:<14} {:>18} {:>18} {:>18}", layouts.to_string(), cells[0], cells[1], cells[2]);
        }
        if sh.is_depthwise() {
            // The engine's kernels on the same buffers: forward; both gradients (one launch
            // computes the input's, the weight's in blocks); the weight's alone.
            let (bx, bw, by) = (gpu.buf(&x), gpu.buf(&w), gpu.buf(&y));
            let dx = gpu.zeros::<f32>(n * c * side * side).context("allocating the input gradient")?;
            let bdx = gpu.buf(&dx);
            let fwd = gpu.time_ops(iters, |l| depthwise_forward(l, by, bx, bw, &sh));
            let both = gpu.time_ops(iters, |l| depthwise_backward(l, Some(bdx), bw, by, bx, bw, &sh));
            let filter = gpu.time_ops(iters, |l| depthwise_backward(l, None, bw, by, bx, bw, &sh));
            let (fwd, both, filter) = (cell(fwd), cell(both), cell(filter));
            println!("{name:<26} {:<14} {fwd:>18} {both:>18} {filter:>18}  (data column: data + filter)", "engine kernels");
        }
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn run_on(_device: ringsam_tensor::Device, _precision: ringsam_kernels::Precision, _iters: usize) -> Result<()> {
    Err(usage("bench conv needs a GPU: this ringsam was built without --features cuda"))
}
