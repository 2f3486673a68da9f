//! The [`Launcher`] on a GPU (feature `cuda`): kernels compiled by NVRTC to cubins for the device
//! in hand, launched through cudarc on one stream (the legacy default stream: cuBLAS and cuDNN
//! must be given it too, or be ordered against it, since event tracking is off). Only a GPU runs this file; everything it is given
//! (shapes, argument lists, the operations) is checked under emulation.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::cublas::{CudaBlas, sys::cublasOperation_t};
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr, DriverError, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

use crate::conv_library::{ConvCall, ConvImpl, ConvLayouts};
use crate::cudnn_conv::CudnnConvs;
use crate::launch::{Arg, Buf, Elem, KernelError, Launch, Launcher, Memory, Precision, SCRATCH_DOUBLES};
use crate::profile::KernelTimes;
use crate::{SOURCES, nvrtc};

/// One GPU's kernels and its stream.
pub struct CudaLauncher {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    functions: HashMap<&'static str, CudaFunction>,
    partials: CudaSlice<f64>,
    total: CudaSlice<f64>,
    /// While profiling: each launch between two events (read when the profile is taken, so
    /// that timing adds no synchronisation).
    profile: Option<Vec<Timed>>,
    /// cuDNN's convolutions, or why there are none (the layers then use im2col and cuBLAS).
    dnn: Result<CudnnConvs, String>,
    conv: ConvImpl,
    precision: Precision,
    /// The caching allocator: the tensors' memory and cuDNN's workspace.
    memory: crate::DeviceMemory,
    /// The compute capability's major version (BF16 tensor cores from 8).
    major: i32,
}

/// A launch between two events.
struct Timed {
    name: String,
    flops: f64,
    start: CudaEvent,
    end: CudaEvent,
}

fn driver(what: &'static str) -> impl Fn(DriverError) -> KernelError {
    move |e| KernelError::Launch { kernel: what, why: e.to_string() }
}

impl CudaLauncher {
    /// Compiles every kernel for GPU `ordinal` and loads them; GEMMs in `precision`.
    pub fn new(ordinal: usize, precision: Precision) -> Result<CudaLauncher, KernelError> {
        let ctx = CudaContext::new(ordinal).map_err(driver("creating the CUDA context"))?;
        // SAFETY: one stream only, and kernel arguments are raw addresses, which cudarc's
        // per-slice events would not see anyway; stream order is the synchronization.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let (major, minor) = ctx.compute_capability().map_err(driver("reading the compute capability"))?;
        let gpu = format!("sm_{major}{minor}");
        let mut functions = HashMap::new();
        for source in SOURCES {
            let cubin = nvrtc::compile_cubin(source, &gpu).map_err(|why| KernelError::Launch { kernel: source.file, why })?;
            let module = ctx.load_module(Ptx::from_binary(cubin)).map_err(driver(source.file))?;
            for &kernel in source.kernels {
                functions.insert(kernel, module.load_function(kernel).map_err(driver(kernel))?);
            }
        }
        let partials = stream.alloc_zeros::<f64>(SCRATCH_DOUBLES).map_err(driver("allocating reduction scratch"))?;
        let total = stream.alloc_zeros::<f64>(1).map_err(driver("allocating reduction scratch"))?;
        // cuBLAS on the same stream: ordered with the kernels without events.
        let blas = CudaBlas::new(stream.clone()).map_err(|e| KernelError::Launch { kernel: "cuBLAS", why: e.to_string() })?;
        // cuDNN loaded for `--conv_impl cudnn`; the default stays im2col and cuBLAS, the path a
        // GPU has checked, until the device check has held cuDNN's to the CPU engine.
        // One caching allocator for the tensors and cuDNN's workspace ([`CudaLauncher::memory`]).
        let memory = crate::DeviceMemory::new(crate::device_memory::CudaMemory::new(ctx.clone()));
        let dnn = CudnnConvs::new(ctx.clone(), precision == Precision::Tf32, memory.clone()).map_err(|e| e.to_string());
        let mut launcher = CudaLauncher {
            ctx,
            stream,
            blas,
            functions,
            partials,
            total,
            profile: None,
            dnn,
            conv: ConvImpl::Gemm,
            precision: Precision::Fp32,
            memory,
            major,
        };
        // cuDNN was made in this precision's math mode above; cuBLAS takes it here.
        launcher.check_precision(precision)?;
        launcher.set_blas_math(precision)?;
        launcher.precision = precision;
        Ok(launcher)
    }

    /// Refuses a precision this GPU has no tensor cores for: BF16 needs compute capability 8.0
    /// (Ampere) or newer; TF32 too, but cuBLAS falls back to FP32 for it by itself.
    fn check_precision(&self, precision: Precision) -> Result<(), KernelError> {
        if precision == Precision::Bf16 && self.major < 8 {
            let why = format!("BF16 GEMMs need compute capability 8.0 or newer; this GPU is {}.x", self.major);
            return Err(KernelError::Launch { kernel: "sgemm", why });
        }
        Ok(())
    }

    /// cuBLAS's math mode for `precision`: its default (FP32, what the self-tests compare), or
    /// TF32 tensor cores. BF16 is not a mode but a compute type, given per call (`cublas_gemm`).
    fn set_blas_math(&self, precision: Precision) -> Result<(), KernelError> {
        use cudarc::cublas::sys::{cublasMath_t, cublasSetMathMode};
        let mode = if precision == Precision::Tf32 { cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH } else { cublasMath_t::CUBLAS_DEFAULT_MATH };
        // SAFETY: our live handle; setting its math mode touches nothing else.
        unsafe { cublasSetMathMode(*self.blas.handle(), mode) }
            .result()
            .map_err(|e| KernelError::Launch { kernel: "cuBLAS", why: format!("math mode for {precision}: {e}") })
    }

    /// The GPU's caching allocator: the tensors' memory, which cuDNN's workspace comes from too
    /// (so peak memory counts it).
    pub fn memory(&self) -> crate::DeviceMemory {
        self.memory.clone()
    }

    /// Seconds per call of `call` by cuDNN with its tensors in `layouts` (the buffers sized
    /// for them; their values do not matter): one call to warm up, then `iters` between two
    /// events. For `ringsam bench conv`, which measures the layout question.
    pub fn time_library_conv(&mut self, call: &ConvCall, layouts: ConvLayouts, iters: usize) -> Result<f64, KernelError> {
        self.time_ops(iters, |me| {
            let dnn = me.dnn.as_mut().map_err(|why| KernelError::Launch { kernel: "library convolution", why: why.clone() })?;
            dnn.run(call, layouts)
        })
    }

    /// Seconds per call of `op` (cuDNN, or the engine's own kernels launched on this launcher):
    /// one call to warm up, then `iters` between two events.
    pub fn time_ops(&mut self, iters: usize, mut op: impl FnMut(&mut Self) -> Result<(), KernelError>) -> Result<f64, KernelError> {
        self.ctx.bind_to_thread().map_err(driver("binding the CUDA context"))?;
        op(self)?;
        let event = |s: &CudaStream| s.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(driver("recording a timing event"));
        let start = event(&self.stream)?;
        for _ in 0..iters {
            op(self)?;
        }
        let end = event(&self.stream)?;
        self.stream.synchronize().map_err(driver("waiting for the stream"))?;
        let ms = start.elapsed_ms(&end).map_err(driver("reading a timing event"))?;
        Ok(f64::from(ms) / 1e3 / iters.max(1) as f64)
    }

    /// The device's name, for reports.
    pub fn device_name(&self) -> String {
        self.ctx.name().unwrap_or_else(|e| format!("(name unknown: {e})"))
    }

    /// An event recorded now, when profiling (else none).
    fn mark(&self) -> Result<Option<CudaEvent>, KernelError> {
        match self.profile {
            Some(_) => {
                self.stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map(Some).map_err(driver("recording a profiling event"))
            }
            None => Ok(None),
        }
    }

    /// Records the launch that began at `start` (from [`CudaLauncher::mark`]) as ending now.
    fn timed(&mut self, start: Option<CudaEvent>, name: impl FnOnce() -> String, flops: f64) -> Result<(), KernelError> {
        if let (Some(start), Some(end)) = (start, self.mark()?) {
            self.profile.get_or_insert_default().push(Timed { name: name(), flops, start, end });
        }
        Ok(())
    }

    /// One GEMM by cuBLAS in the launcher's precision: SGEMM (its math mode giving FP32 or TF32),
    /// or under BF16 `GemmEx` on the same FP32 matrices with the compute type that rounds the
    /// operands to BF16 and sums in FP32.
    fn cublas_gemm(&self, call: &crate::gemm::SgemmCall) -> Result<(), String> {
        use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cudaDataType};
        let int = |v: usize| i32::try_from(v).map_err(|_| format!("dimension {v} past cuBLAS's int"));
        let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
        let (m, n, k, lda, ldb, ldc) = (int(call.m)?, int(call.n)?, int(call.k)?, int(call.a.1)?, int(call.b.1)?, int(call.c.1)?);
        let (alpha, beta) = (1.0f32, call.beta);
        let (a, b, c) = (call.a.0 as *const f32, call.b.0 as *const f32, call.c.0 as *mut f32);
        let handle = *self.blas.handle();
        let (ta, tb) = (op(call.transa), op(call.transb));
        // SAFETY: gemm::plan made the call from views it checked against their buffers, on this
        // launcher's device; the handle runs on our stream.
        let done = unsafe {
            if self.precision == Precision::Bf16 {
                let f32_ = cudaDataType::CUDA_R_32F;
                cudarc::cublas::result::gemm_ex(
                    handle,
                    ta,
                    tb,
                    m,
                    n,
                    k,
                    (&alpha as *const f32).cast(),
                    a.cast(),
                    f32_,
                    lda,
                    b.cast(),
                    f32_,
                    ldb,
                    (&beta as *const f32).cast(),
                    c.cast(),
                    f32_,
                    ldc,
                    cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_16BF,
                    cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            } else {
                cudarc::cublas::result::sgemm(handle, ta, tb, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc)
            }
        };
        done.map_err(|e| e.to_string())
    }

    fn scratch(&self, s: &CudaSlice<f64>) -> Buf<f64> {
        let (addr, _sync) = s.device_ptr(&self.stream);
        // SAFETY: our own scratch, alive as long as `self`.
        unsafe { Buf::new(addr, s.len()) }
    }
}

impl Launcher for CudaLauncher {
    fn launch(&mut self, kernel: &'static str, at: Launch, args: &[Arg]) -> Result<(), KernelError> {
        let f = self.functions.get(kernel).ok_or(KernelError::Launch { kernel, why: "no such kernel".into() })?;
        // The builder keeps pointers to the values: `args` outlives it.
        let mut builder = self.stream.launch_builder(f);
        for a in args {
            match a {
                Arg::Ptr(p) | Arg::U64(p) => builder.arg(p),
                Arg::F32(v) => builder.arg(v),
                Arg::U32(v) => builder.arg(v),
            };
        }
        let cfg = LaunchConfig { grid_dim: (at.grid, 1, 1), block_dim: (at.block, 1, 1), shared_mem_bytes: 0 };
        let start = self.mark()?;
        // SAFETY: the argument list is the kernel's parameter list, in order (the operations in
        // crate::flat build it, and the emulation checks every one of them against the CPU).
        unsafe { builder.launch(cfg) }.map_err(driver(kernel))?;
        drop(builder);
        self.timed(start, || kernel.to_string(), 0.0)
    }

    fn sgemm(&mut self, call: &crate::gemm::SgemmCall) -> Result<(), KernelError> {
        let start = self.mark()?;
        self.cublas_gemm(call).map_err(|why| KernelError::Launch { kernel: "sgemm", why })?;
        let name = || KernelTimes::gemm_name(call.m, call.n, call.k, call.transa, call.transb);
        self.timed(start, name, 2.0 * call.m as f64 * call.n as f64 * call.k as f64)
    }

    fn set_profiling(&mut self, on: bool) {
        if !on {
            self.profile = None;
        } else if self.profile.is_none() {
            self.profile = Some(Vec::new());
        }
    }

    fn take_profile(&mut self) -> Result<KernelTimes, KernelError> {
        let mut times = KernelTimes::default();
        let read = |e: DriverError| KernelError::Read { what: "a profiling event", why: e.to_string() };
        self.stream.synchronize().map_err(read)?;
        for t in self.profile.as_mut().map(std::mem::take).unwrap_or_default() {
            times.add(&t.name, f64::from(t.start.elapsed_ms(&t.end).map_err(read)?) / 1e3, t.flops);
        }
        Ok(times)
    }

    fn reduction_scratch(&mut self) -> Result<(Buf<f64>, Buf<f64>), KernelError> {
        Ok((self.scratch(&self.partials), self.scratch(&self.total)))
    }

    fn library_conv(&mut self, call: &ConvCall) -> Result<(), KernelError> {
        // cuDNN runs in the context current on the calling thread (a kernel launch binds it; a
        // step's first library call may come before any).
        self.ctx.bind_to_thread().map_err(driver("binding the CUDA context"))?;
        let start = self.mark()?;
        let dnn = self.dnn.as_mut().map_err(|why| KernelError::Launch { kernel: "library convolution", why: why.clone() })?;
        dnn.run(call, ConvLayouts::Engine)?;
        let sh = call.shape;
        let flops = 2.0 * (sh.k * sh.n * sh.p * sh.q) as f64 * (sh.r * sh.s * sh.c / sh.groups) as f64;
        self.timed(start, || format!("cuDNN conv {:?} {}x{} {}->{} /{}", call.op, sh.r, sh.s, sh.c, sh.k, sh.stride), flops)
    }

    fn library_takes(&mut self, sh: &crate::conv::ConvShape) -> bool {
        sh.library_fits() && self.ctx.bind_to_thread().is_ok() && self.dnn.as_mut().is_ok_and(|dnn| dnn.takes(sh))
    }

    fn library_refusals(&self) -> Vec<String> {
        match &self.dnn {
            Ok(dnn) => dnn.refusals(),
            Err(why) => vec![format!("cuDNN did not load: {why}")],
        }
    }

    fn conv_impl(&self) -> ConvImpl {
        self.conv
    }

    fn set_conv_impl(&mut self, imp: ConvImpl) -> Result<(), KernelError> {
        if let (ConvImpl::Library, Err(why)) = (imp, &self.dnn) {
            return Err(KernelError::Launch { kernel: "library convolution", why: why.clone() });
        }
        crate::conv_library::check_precision(imp, self.precision)?;
        self.conv = imp;
        Ok(())
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn set_precision(&mut self, p: Precision) -> Result<(), KernelError> {
        crate::conv_library::check_precision(self.conv, p)?;
        self.check_precision(p)?;
        if (p == Precision::Tf32) != (self.precision == Precision::Tf32) && self.dnn.is_ok() {
            // cuDNN's plans were chosen in the old math mode: start them again in the new one
            // (a failure leaves everything as it was).
            self.dnn = Ok(CudnnConvs::new(self.ctx.clone(), p == Precision::Tf32, self.memory.clone())?);
        }
        self.set_blas_math(p)?;
        self.precision = p;
        Ok(())
    }

    fn read_f64(&mut self, buf: Buf<f64>) -> Result<Vec<f64>, KernelError> {
        let mut out = vec![0.0f64; buf.len()];
        let read = |e: DriverError| KernelError::Read { what: "device scalars (a reduction's total, a step's report)", why: e.to_string() };
        self.stream.synchronize().map_err(read)?;
        // SAFETY: `buf` is a live device buffer of `buf.len()` doubles (the Buf contract), and
        // the stream has finished every launch that writes it.
        unsafe { cudarc::driver::result::memcpy_dtoh_sync(&mut out, buf.addr()) }.map_err(read)?;
        Ok(out)
    }
}

impl Memory for CudaLauncher {
    type Owned<T: Elem> = CudaSlice<T>;

    fn upload<T: Elem>(&mut self, host: &[T]) -> Result<CudaSlice<T>, KernelError> {
        self.stream.clone_htod(host).map_err(driver("copying to the device"))
    }

    fn zeros<T: Elem>(&mut self, n: usize) -> Result<CudaSlice<T>, KernelError> {
        self.stream.alloc_zeros(n).map_err(driver("allocating on the device"))
    }

    fn download<T: Elem>(&mut self, buf: &CudaSlice<T>) -> Result<Vec<T>, KernelError> {
        self.stream.clone_dtoh(buf).map_err(|e| KernelError::Read { what: "a device buffer", why: e.to_string() })
    }

    fn buf<T: Elem>(&self, buf: &CudaSlice<T>) -> Buf<T> {
        let (addr, _sync) = buf.device_ptr(&self.stream);
        // SAFETY: the slice's own address and length, on this launcher's device.
        unsafe { Buf::new(addr, buf.len()) }
    }

    fn finish(&mut self) -> Result<(), KernelError> {
        self.stream.synchronize().map_err(driver("waiting for the stream"))
    }
}
