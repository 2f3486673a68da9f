//! The CUDA engine's own kernels: their CUDA C sources, how each is launched, and the operations
//! built from them, independent of where the buffers live.
//!
//! cuBLAS and cuDNN do the GEMMs and convolutions; everything else the engine does on a GPU is a
//! kernel here, compiled at run time by NVRTC (cudarc loads it dynamically, so nothing here needs a
//! CUDA toolkit to build). GPU time is rare for this project, so as much of the kernels as possible
//! is checked without one:
//! - the sources are written in a subset of CUDA C that also compiles as C++ under a small
//!   emulation header (blocks run one after another, a block's threads as OS threads meeting at
//!   `__syncthreads`): `crates/kernels-emu` runs them so, and its tests hold every kernel to the
//!   CPU engine's reference (the optimizers and SAM of `ringsam-optim`);
//! - the operations ([`flat`]) are generic over a [`Launcher`], so the host-side half (launch
//!   shapes, argument order, the reductions' second pass, the scalars derived from them) is the
//!   same code under emulation and on the device;
//! - with the `cuda` feature, [`nvrtc`] compiles every source for the GPU architectures we ship
//!   for; CI does so with NVIDIA's NVRTC library from PyPI (no GPU needed).
//!
//! What only a GPU can check: the launches themselves through cudarc, and cuBLAS/cuDNN.

pub mod activation;
pub mod alloc;
pub mod batchnorm;
pub mod conv;
pub mod conv_gemm;
pub mod conv_library;
#[cfg(feature = "cuda")]
mod cudnn_conv;
pub mod dense;
#[cfg(feature = "cuda")]
pub mod device;
#[cfg(feature = "cuda")]
pub mod device_memory;
pub mod dropout;
pub mod examples;
pub mod flat;
pub mod gemm;
pub mod gpu;
pub mod host_memory;
pub mod launch;
pub mod loss;
#[cfg(feature = "cuda")]
pub mod nvrtc;
pub mod pinned;
pub mod pool;
pub mod profile;
pub mod selftest;
mod selftest_ops;
pub mod squeeze_excite;

pub use alloc::{CopyDone, DeviceMemory, DeviceVec, MemoryStats, PendingRead, PinnedVec, RawMemory};
pub use gpu::Gpu;
pub use host_memory::HostMemory;
pub use launch::{Arg, Buf, KernelError, Launch, Launcher, Memory, Precision};
pub use profile::{KernelTime, KernelTimes};

/// One CUDA C source file and the kernels it defines.
#[derive(Clone, Copy, Debug)]
pub struct Source {
    /// The file's name under `crates/kernels/cu/` (also NVRTC's name for the program).
    pub file: &'static str,
    /// Its text.
    pub text: &'static str,
    /// The `extern "C" __global__` functions it defines.
    pub kernels: &'static [&'static str],
}

/// Every kernel source. Each is compiled with `cu/common.cuh` before it.
pub const SOURCES: &[Source] = &[
    Source {
        file: "flat.cu",
        text: concat!(include_str!("../cu/common.cuh"), include_str!("../cu/flat.cu")),
        kernels: &[
            "sam_ascent",
            "asam_ascent",
            "nesterov_update",
            "momentum_update",
            "rmsprop_update",
            "scale",
            "clip_to_norm",
            "fill",
            "copy",
            "axpy",
            "ema_update",
        ],
    },
    Source {
        file: "reduce.cu",
        text: concat!(include_str!("../cu/common.cuh"), include_str!("../cu/reduce.cu")),
        kernels: &["sum_squares_blocks", "asam_norm_blocks", "sum_partials", "count_flags"],
    },
    Source {
        file: "activation.cu",
        text: concat!(include_str!("../cu/common.cuh"), include_str!("../cu/activation.cu")),
        kernels: &["relu_forward", "relu_backward", "sigmoid_forward", "sigmoid_backward", "silu_forward", "silu_backward"],
    },
    Source {
        file: "loss.cu",
        text: concat!(include_str!("../cu/common.cuh"), include_str!("../cu/loss.cu")),
        kernels: &["softmax_xent_forward", "softmax_xent_backward"],
    },
    Source {
        file: "dropout.cu",
        text: concat!(include_str!("../cu/common.cuh"), include_str!("../cu/dropout.cu")),
        kernels: &["dropout_forward", "dropout_backward"],
    },
    Source {
        file: "batchnorm.cu",
        text: concat!(include_str!("../cu/common.cuh"), include_str!("../cu/batchnorm.cu")),
        kernels: &[
            "batchnorm_forward_train",
            "batchnorm_forward_eval",
            "batchnorm_backward",
            "batchnorm_backward_eval",
            "bn_part_sums",
            "bn_part_stats",
            "bn_part_apply",
            "bn_part_grad_sums",
            "bn_part_grad_stats",
            "bn_part_grad_apply",
        ],
    },
    Source {
        file: "pool.cu",
        text: concat!(include_str!("../cu/common.cuh"), include_str!("../cu/pool.cu")),
        kernels: &[
            "avgpool_forward",
            "avgpool_backward",
            "maxpool_forward",
            "maxpool_backward",
            "global_avgpool_forward",
            "global_avgpool_backward",
            "add",
            "shift_subsample_forward",
            "shift_subsample_backward",
        ],
    },
    Source {
        file: "im2col.cu",
        text: concat!(include_str!("../cu/common.cuh"), include_str!("../cu/im2col.cu")),
        kernels: &["im2col", "col2im"],
    },
    Source {
        file: "dense.cu",
        text: concat!(include_str!("../cu/common.cuh"), include_str!("../cu/dense.cu")),
        kernels: &["broadcast_bias", "add_bias_gradient", "scale_planes", "mix_planes", "count_errors"],
    },
    Source {
        file: "depthwise.cu",
        text: concat!(include_str!("../cu/common.cuh"), include_str!("../cu/depthwise.cu")),
        kernels: &[
            "depthwise_forward",
            "depthwise_backward_data",
            "depthwise_backward_weight",
            "depthwise_weight_parts",
            "depthwise_weight_add",
        ],
    },
    Source {
        file: "weights.cu",
        text: concat!(include_str!("../cu/common.cuh"), include_str!("../cu/weights.cu")),
        kernels: &["hwio_to_kcrs", "kcrs_add_to_hwio", "cnhw_to_nchw"],
    },
    Source {
        file: "examples.cu",
        text: concat!(include_str!("../cu/common.cuh"), include_str!("../cu/examples.cu")),
        kernels: &["example_coefficients"],
    },
    Source {
        file: "se.cu",
        text: concat!(include_str!("../cu/common.cuh"), include_str!("../cu/se.cu")),
        kernels: &["add_row_bias", "add_row_sums", "plane_dot", "se_input_backward"],
    },
];
