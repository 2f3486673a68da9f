//! ringsam's CUDA kernels run as C++ on the CPU: a [`Launcher`] that calls the kernels compiled by
//! `build.rs` under `emu/cuda_emu.h`, so tests hold the GPU code to the CPU engine without a GPU.
//! See `ringsam_kernels` for what this checks and what it cannot.

use std::sync::Arc;

use ringsam_kernels::conv_library::{self, ConvCall, ConvImpl};
use ringsam_kernels::launch::Elem;
use ringsam_kernels::launch::SCRATCH_DOUBLES;
use ringsam_kernels::{Arg, Buf, DeviceMemory, Gpu, HostMemory, KernelError, KernelTimes, Launch, Launcher, Memory, Precision};

/// An emulated device for the engine's tensors: the kernels as C++ over host memory behind the
/// caching allocator, exactly what a GPU's tensors hold except where the memory is.
pub fn emulated_gpu() -> Arc<Gpu> {
    Gpu::new("emulated GPU", Emu::default(), DeviceMemory::new(HostMemory::new()))
}

unsafe extern "C" {
    /// `emu/launchers.cpp`: runs kernel `name` with `nargs` argument slots; 0, or -1 for an
    /// unknown kernel, or the kernel's arity when `nargs` is wrong.
    fn emu_launch(name: *const std::ffi::c_char, grid: u32, block: u32, args: *const u64, nargs: usize) -> i64;
}

/// The emulated GPU: kernels run on host memory, in the order launched, each to completion.
pub struct Emu {
    partials: Vec<f64>,
    total: Vec<f64>,
    /// Launches so far, by kernel name (tests check what an operation launched).
    pub launches: Vec<(&'static str, Launch)>,
    /// While profiling: each launch timed on the host's clock (emulated launches are
    /// synchronous, so that is its whole time).
    profile: Option<KernelTimes>,
    /// The convolution the layers run: im2col unless set; the library is the host reference
    /// (`ringsam_kernels::conv_library::conv_reference`).
    conv: ConvImpl,
    /// How the GEMMs' operands are taken: FP32, or rounded to BF16 as cuBLAS's BF16 mode does.
    precision: Precision,
}

impl Default for Emu {
    fn default() -> Self {
        Emu {
            partials: vec![0.0; SCRATCH_DOUBLES],
            total: vec![0.0],
            launches: Vec::new(),
            profile: None,
            conv: ConvImpl::Gemm,
            precision: Precision::Fp32,
        }
    }
}

impl Emu {
    fn timed<T>(&mut self, name: impl FnOnce() -> String, flops: f64, run: impl FnOnce() -> T) -> T {
        let started = std::time::Instant::now();
        let out = run();
        if let Some(p) = &mut self.profile {
            p.add(&name(), started.elapsed().as_secs_f64(), flops);
        }
        out
    }
}

/// A host slice as a kernel buffer.
///
/// # Safety
/// The slice must outlive every launch given the `Buf`, and nothing else may access it while a
/// kernel that writes it runs.
pub unsafe fn host_buf<T>(s: &[T]) -> Buf<T> {
    // SAFETY: the caller's contract; the address and length are the slice's.
    unsafe { Buf::new(s.as_ptr() as u64, s.len()) }
}

/// An argument as the 8-byte slot `emu_launch` unpacks: a float's bits in the low half.
fn slot(a: Arg) -> u64 {
    match a {
        Arg::Ptr(p) => p,
        Arg::F32(v) => v.to_bits() as u64,
        Arg::U32(v) => v as u64,
        Arg::U64(v) => v,
    }
}

impl Launcher for Emu {
    fn launch(&mut self, kernel: &'static str, at: Launch, args: &[Arg]) -> Result<(), KernelError> {
        let name = std::ffi::CString::new(kernel).map_err(|_| KernelError::Launch { kernel, why: "a NUL in the name".into() })?;
        let slots: Vec<u64> = args.iter().map(|&a| slot(a)).collect();
        self.launches.push((kernel, at));
        // SAFETY: the Bufs' contract (host_buf): live host memory of the stated lengths; the
        // kernels stay within the counts the operations check against the Bufs. The C side
        // checks the argument count against the kernel's own parameter list.
        let code =
            self.timed(|| kernel.to_string(), 0.0, || unsafe { emu_launch(name.as_ptr(), at.grid, at.block, slots.as_ptr(), slots.len()) });
        match code {
            0 => Ok(()),
            -1 => Err(KernelError::Launch { kernel, why: "not an emulated kernel".into() }),
            arity => Err(KernelError::Launch { kernel, why: format!("{} arguments, the kernel takes {arity}", args.len()) }),
        }
    }

    fn reduction_scratch(&mut self) -> Result<(Buf<f64>, Buf<f64>), KernelError> {
        // SAFETY: both vectors live as long as `self` and are never resized.
        unsafe { Ok((host_buf(&self.partials), host_buf(&self.total))) }
    }

    fn sgemm(&mut self, call: &ringsam_kernels::gemm::SgemmCall) -> Result<(), KernelError> {
        self.launches.push(("sgemm", Launch { grid: 1, block: 1 }));
        let name = || KernelTimes::gemm_name(call.m, call.n, call.k, call.transa, call.transb);
        // SAFETY: the plan's matrices lie inside host Bufs (plan checks each against its
        // buffer's length; host_buf's contract keeps them alive).
        let products = self.precision;
        self.timed(name, 2.0 * (call.m * call.n * call.k) as f64, || unsafe { ringsam_kernels::gemm::sgemm_reference(call, products) });
        Ok(())
    }

    fn library_conv(&mut self, call: &ConvCall) -> Result<(), KernelError> {
        self.launches.push(("library_conv", Launch { grid: 1, block: 1 }));
        let name = || format!("library conv {:?}", call.op);
        // SAFETY: the call's buffers are host Bufs of their stated lengths (host_buf's contract),
        // and an operation's output never overlaps its inputs.
        self.timed(name, 0.0, || unsafe { conv_library::conv_reference(call) })
    }

    fn library_takes(&mut self, sh: &ringsam_kernels::conv::ConvShape) -> bool {
        sh.library_fits() // the host reference computes every shape the library fits
    }

    fn conv_impl(&self) -> ConvImpl {
        self.conv
    }

    fn set_conv_impl(&mut self, imp: ConvImpl) -> Result<(), KernelError> {
        conv_library::check_precision(imp, self.precision)?;
        self.conv = imp;
        Ok(())
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    /// FP32 and BF16 products are modelled; TF32's rounding is cuBLAS's own, and refused.
    fn set_precision(&mut self, p: Precision) -> Result<(), KernelError> {
        if p == Precision::Tf32 {
            return Err(KernelError::Launch { kernel: "sgemm", why: "the emulated device does not model TF32".into() });
        }
        conv_library::check_precision(self.conv, p)?;
        self.precision = p;
        Ok(())
    }

    fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(|| self.profile.take().unwrap_or_default());
    }

    fn take_profile(&mut self) -> Result<KernelTimes, KernelError> {
        Ok(self.profile.as_mut().map(std::mem::take).unwrap_or_default())
    }

    fn read_f64(&mut self, buf: Buf<f64>) -> Result<Vec<f64>, KernelError> {
        // SAFETY: a Buf of this launcher's host memory (the contract of host_buf).
        Ok(unsafe { std::slice::from_raw_parts(buf.addr() as *const f64, buf.len()) }.to_vec())
    }
}

impl Memory for Emu {
    type Owned<T: Elem> = Vec<T>;

    fn upload<T: Elem>(&mut self, host: &[T]) -> Result<Vec<T>, KernelError> {
        Ok(host.to_vec())
    }

    fn download<T: Elem>(&mut self, buf: &Vec<T>) -> Result<Vec<T>, KernelError> {
        Ok(buf.clone())
    }

    fn buf<T: Elem>(&self, buf: &Vec<T>) -> Buf<T> {
        // SAFETY: the Vec's heap block, which does not move while the Vec lives unresized; the
        // self-test keeps every buffer alive across the launches given it.
        unsafe { host_buf(buf) }
    }

    fn finish(&mut self) -> Result<(), KernelError> {
        Ok(()) // every emulated launch has finished when it returns
    }
}
