//! How a kernel is launched: its shape (grid and block), its arguments, and the [`Launcher`] that
//! runs it: cudarc on a GPU, or the emulation on the CPU (`crates/kernels-emu`).

use std::marker::PhantomData;

use crate::conv_library::{ConvCall, ConvImpl};

/// Threads per block of the element-wise kernels.
pub const BLOCK: u32 = 256;
/// Threads per block of the reductions: `REDUCE_BLOCK` in `cu/reduce.cu`, a power of two.
pub const REDUCE_BLOCK: u32 = 256;
/// The most blocks an element-wise launch uses; each thread loops over the rest (grid-stride), so
/// a launch's cost does not grow with blocks that would each do a few elements.
pub const MAX_GRID: u32 = 65_535;
/// The most partial sums a reduction makes (its first pass's blocks): `sum_partials` adds them in
/// one block, each thread a few.
pub const MAX_PARTIALS: usize = 1024;

/// Doubles of a launcher's reduction scratch: the norms use [`MAX_PARTIALS`] of them, the split
/// batch norm (`batchnorm.rs`) up to all.
pub const SCRATCH_DOUBLES: usize = 1 << 16;
/// Elements each reduction thread sums at least, before blocks are added.
const REDUCE_PER_THREAD: usize = 8;

/// How a device's GEMMs (and so its im2col convolutions) compute; the element-wise kernels and
/// every reduction are FP32 (and double) either way, and every tensor is stored in FP32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// IEEE single precision: what the CPU engine computes, and what the self-tests compare.
    #[default]
    Fp32,
    /// TF32 tensor cores for the GEMMs (10-bit mantissa products, FP32 sums), PyTorch's
    /// default for convolutions: training's default on a GPU.
    Tf32,
    /// BF16 tensor cores for the GEMMs: each operand rounded to BF16 (8-bit mantissa, to
    /// nearest), products summed in FP32 into an FP32 result (cuBLAS's `COMPUTE_32F_FAST_16BF`).
    /// Autocast's arithmetic with FP32 master weights and reductions, but not its memory: the
    /// activations stay FP32 (docs/ARCHITECTURE.md, "Precision").
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "tf32" => Ok(Precision::Tf32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!("{s:?}: expected fp32, tf32 or bf16")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        })
    }
}

/// A 1-D launch: `grid` blocks of `block` threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Blocks.
    pub grid: u32,
    /// Threads per block.
    pub block: u32,
}

impl Launch {
    /// An element-wise kernel over `n` elements.
    pub fn elementwise(n: usize) -> Launch {
        Launch { grid: n.div_ceil(BLOCK as usize).clamp(1, MAX_GRID as usize) as u32, block: BLOCK }
    }

    /// The first pass of a reduction over `n` elements: one partial sum per block.
    pub fn reduction(n: usize) -> Launch {
        let blocks = n.div_ceil(REDUCE_BLOCK as usize * REDUCE_PER_THREAD).clamp(1, MAX_PARTIALS);
        Launch { grid: blocks as u32, block: REDUCE_BLOCK }
    }

    /// The second pass: one block adding the first pass's partials.
    pub fn final_sum() -> Launch {
        Launch { grid: 1, block: REDUCE_BLOCK }
    }
}

/// A buffer of `T` where the launcher's kernels can reach it: a device address on a GPU, a host
/// address under emulation. Plain data: the launcher's owner keeps the memory alive.
#[derive(Debug, PartialEq, Eq)]
pub struct Buf<T> {
    addr: u64,
    len: usize,
    elem: PhantomData<T>,
}

impl<T> Clone for Buf<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Buf<T> {}

impl<T> Buf<T> {
    /// `len` elements at `addr`.
    ///
    /// # Safety
    /// `addr` must point to `len` valid `T`s, on the device the launcher runs on, for as long
    /// as the `Buf` (or a copy of it) is launched with.
    pub unsafe fn new(addr: u64, len: usize) -> Self {
        Buf { addr, len, elem: PhantomData }
    }

    /// Its address.
    pub fn addr(self) -> u64 {
        self.addr
    }

    /// Its elements.
    pub fn len(self) -> usize {
        self.len
    }

    /// Whether it has none.
    pub fn is_empty(self) -> bool {
        self.len == 0
    }

    /// Elements `range` of it (a layer's parameters within the arena, a decayed range).
    pub fn slice(self, range: std::ops::Range<usize>) -> Buf<T> {
        assert!(range.start <= range.end && range.end <= self.len, "Buf::slice: {range:?} of {} elements", self.len);
        Buf { addr: self.addr + (range.start * std::mem::size_of::<T>()) as u64, len: range.len(), elem: PhantomData }
    }
}

/// One kernel argument, in the order the kernel declares its parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    /// A pointer (a [`Buf`]'s address).
    Ptr(u64),
    /// A `float`.
    F32(f32),
    /// An `unsigned` (flags).
    U32(u32),
    /// An `unsigned long long` (element counts).
    U64(u64),
}

impl<T> From<Buf<T>> for Arg {
    fn from(b: Buf<T>) -> Arg {
        Arg::Ptr(b.addr)
    }
}

/// A kernel that could not run.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The launcher refused or failed the launch (no such kernel, a driver error).
    #[error("kernel {kernel}: {why}")]
    Launch {
        /// The kernel's name.
        kernel: &'static str,
        /// Why.
        why: String,
    },
    /// Buffers that must be the same length are not.
    #[error("{op}: buffers of {got} elements where {want} were expected")]
    Length {
        /// The operation.
        op: &'static str,
        /// The length found.
        got: usize,
        /// The length expected.
        want: usize,
    },
    /// The device could not give a buffer, even after the cache gave its blocks back.
    #[error("allocating {bytes} bytes on the device ({in_use} in use, {cached} cached before the request): {why}")]
    Alloc {
        /// Bytes asked for.
        bytes: usize,
        /// Bytes held by live buffers.
        in_use: usize,
        /// Bytes the cache held and gave back before the last try.
        cached: usize,
        /// What the device said.
        why: String,
    },
    /// Reading a result back failed.
    #[error("reading back {what}: {why}")]
    Read {
        /// What was read.
        what: &'static str,
        /// Why it failed.
        why: String,
    },
}

/// Runs kernels: the one thing that differs between a GPU and the emulation.
pub trait Launcher {
    /// Launches `kernel` (a name from [`crate::SOURCES`]) with `args`, in stream order.
    fn launch(&mut self, kernel: &'static str, at: Launch, args: &[Arg]) -> Result<(), KernelError>;
    /// Scratch for reductions: [`SCRATCH_DOUBLES`] partial sums and one total, owned by the
    /// launcher and reused by every reduction.
    fn reduction_scratch(&mut self) -> Result<(Buf<f64>, Buf<f64>), KernelError>;
    /// Copies `buf` to the host, after every launch before it has finished.
    fn read_f64(&mut self, buf: Buf<f64>) -> Result<Vec<f64>, KernelError>;
    /// One column-major SGEMM ([`crate::gemm::plan`] makes it from the engine's views): cuBLAS on
    /// a GPU, BLAS's definition under emulation.
    fn sgemm(&mut self, call: &crate::gemm::SgemmCall) -> Result<(), KernelError>;
    /// Starts (or stops) timing each launch and GEMM: see [`crate::profile`].
    fn set_profiling(&mut self, on: bool);
    /// The launches timed since profiling started, by name (waiting for them to finish); the
    /// record starts again empty.
    fn take_profile(&mut self) -> Result<crate::profile::KernelTimes, KernelError>;
    /// One convolution by the device's library ([`crate::conv_library`]); a launcher without one
    /// refuses.
    fn library_conv(&mut self, call: &ConvCall) -> Result<(), KernelError> {
        let _ = call;
        Err(KernelError::Launch { kernel: "library convolution", why: "this device has no convolution library".into() })
    }
    /// Whether the library takes convolutions of shape `sh` (one it fits): on a GPU, whether cuDNN
    /// has a plan for each of its three operations, asked once per shape; a shape it refuses runs
    /// by im2col instead.
    fn library_takes(&mut self, sh: &crate::conv::ConvShape) -> bool {
        let _ = sh;
        false
    }
    /// The shapes the library refused so far, each with the reason (they ran by im2col).
    fn library_refusals(&self) -> Vec<String> {
        Vec::new()
    }
    /// The convolution the layers run ([`ConvImpl::Gemm`] unless set).
    fn conv_impl(&self) -> ConvImpl {
        ConvImpl::Gemm
    }
    /// How the GEMMs compute now ([`Precision::Fp32`] unless set).
    fn precision(&self) -> Precision {
        Precision::Fp32
    }
    /// Sets how the GEMMs compute; a launcher refuses what it cannot compute (and BF16 with the
    /// library's convolutions, [`crate::conv_library::check_precision`]).
    fn set_precision(&mut self, p: Precision) -> Result<(), KernelError> {
        match p {
            Precision::Fp32 => Ok(()),
            _ => Err(KernelError::Launch { kernel: "sgemm", why: format!("this device computes its GEMMs in fp32 only, not {p}") }),
        }
    }
    /// Chooses the convolution; refuses the library where there is none.
    fn set_conv_impl(&mut self, imp: ConvImpl) -> Result<(), KernelError> {
        match imp {
            ConvImpl::Gemm => Ok(()),
            ConvImpl::Library => {
                Err(KernelError::Launch { kernel: "library convolution", why: "this device has no convolution library".into() })
            }
        }
    }
}

/// What a buffer can hold: floats, doubles (sums), labels.
///
/// # Safety
/// Plain old data: no padding, and every bit pattern is a value, so buffers copy as bytes.
#[cfg(not(feature = "cuda"))]
pub unsafe trait Elem: Copy + Default + Send + Sync + 'static {}
/// What a buffer can hold: floats, doubles (sums), labels.
///
/// # Safety
/// Plain old data: no padding, and every bit pattern is a value, so buffers copy as bytes.
#[cfg(feature = "cuda")]
pub unsafe trait Elem:
    Copy + Default + Send + Sync + 'static + cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits
{
}
// SAFETY: primitive numbers: no padding, every bit pattern valid.
unsafe impl Elem for f32 {}
// SAFETY: as above.
unsafe impl Elem for f64 {}
// SAFETY: as above.
unsafe impl Elem for u32 {}

/// Memory a [`Launcher`]'s kernels can use: what the operations and the self-test
/// ([`crate::selftest`]) need to put data on the device and read it back, the same on a GPU and
/// under emulation.
pub trait Memory {
    /// An owned buffer of `T`.
    type Owned<T: Elem>;
    /// Copies `host` into a new buffer.
    fn upload<T: Elem>(&mut self, host: &[T]) -> Result<Self::Owned<T>, KernelError>;
    /// A new buffer of `n` zeros.
    fn zeros<T: Elem>(&mut self, n: usize) -> Result<Self::Owned<T>, KernelError> {
        self.upload(&vec![T::default(); n])
    }
    /// Copies `buf` back, after every launch before it.
    fn download<T: Elem>(&mut self, buf: &Self::Owned<T>) -> Result<Vec<T>, KernelError>;
    /// `buf` as a kernel argument.
    fn buf<T: Elem>(&self, buf: &Self::Owned<T>) -> Buf<T>;
    /// Waits for every launch so far (timing).
    fn finish(&mut self) -> Result<(), KernelError>;
}

#[cfg(test)]
mod tests {
    use super::Precision;

    #[test]
    fn precisions_parse_and_print_as_given() {
        for p in [Precision::Fp32, Precision::Tf32, Precision::Bf16] {
            assert_eq!(p.to_string().parse::<Precision>(), Ok(p));
        }
        assert_eq!("bf16".parse::<Precision>(), Ok(Precision::Bf16));
        assert!("fp16".parse::<Precision>().unwrap_err().contains("expected fp32, tf32 or bf16"));
    }
}
