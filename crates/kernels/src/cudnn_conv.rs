//! cuDNN's convolutions for the [`crate::device::CudaLauncher`] ([`crate::conv_library`] says
//! what they replace and which shapes they take). Per (operation, shape) a plan is made once and
//! kept: the four descriptors (activations as strided `(C, N, H, W)`, filters KCRS), the
//! algorithm cuDNN's heuristics rank first among the deterministic ones that run, and its
//! workspace size. The workspace is one buffer from the device's caching allocator, grown to the
//! largest plan's.
//! Only a GPU runs this file; under emulation the host reference stands in for it.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cudnn::result::{self as dnn, CudnnError};
use cudarc::cudnn::sys;
use cudarc::driver::CudaContext;

use crate::alloc::{DeviceMemory, DeviceVec};
use crate::conv::ConvShape;
use crate::conv_library::{ConvCall, ConvLayouts, ConvOp};
use crate::launch::KernelError;

fn dnn_error(what: &'static str) -> impl Fn(CudnnError) -> KernelError {
    move |e| KernelError::Launch { kernel: what, why: format!("cuDNN: {e:?}") }
}

fn int(v: usize, what: &'static str) -> Result<i32, KernelError> {
    i32::try_from(v).map_err(|_| KernelError::Launch { kernel: what, why: format!("{v} past cuDNN's int") })
}

/// A tensor descriptor: cuDNN's `(N, C, H, W)` with the strides of the memory's order.
struct Tensor(sys::cudnnTensorDescriptor_t);

/// Where the axes of an activation lie.
#[derive(Clone, Copy)]
enum Order {
    /// The engine's `(C, N, H, W)`.
    Cnhw,
    /// Packed `(N, C, H, W)`.
    Nchw,
    /// `(N, H, W, C)`.
    Nhwc,
}

impl Tensor {
    fn new(order: Order, n: usize, c: usize, h: usize, w: usize) -> Result<Tensor, KernelError> {
        let what = "cuDNN tensor descriptor";
        let desc = Tensor(dnn::create_tensor_descriptor().map_err(dnn_error(what))?);
        let dims = [int(n, what)?, int(c, what)?, int(h, what)?, int(w, what)?];
        let strides = match order {
            Order::Cnhw => [h * w, n * h * w, w, 1],
            Order::Nchw => [c * h * w, h * w, w, 1],
            Order::Nhwc => [h * w * c, 1, w * c, c],
        };
        let strides = [int(strides[0], what)?, int(strides[1], what)?, int(strides[2], what)?, int(strides[3], what)?];
        // SAFETY: a descriptor just created, owned by `desc`.
        unsafe { dnn::set_tensor4d_descriptor_ex(desc.0, sys::cudnnDataType_t::CUDNN_DATA_FLOAT, dims, strides) }
            .map_err(dnn_error(what))?;
        Ok(desc)
    }
}

/// The orders of a call's input, output (or output gradient) and the filter's format.
fn orders(op: ConvOp, layouts: ConvLayouts) -> (Order, Order, sys::cudnnTensorFormat_t) {
    let kcrs = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
    match (layouts, op) {
        // The output as the engine keeps it; its gradient packed, as conv_library hands it over.
        (ConvLayouts::Engine, ConvOp::Forward) => (Order::Cnhw, Order::Cnhw, kcrs),
        (ConvLayouts::Engine, _) => (Order::Cnhw, Order::Nchw, kcrs),
        (ConvLayouts::Nchw, _) => (Order::Nchw, Order::Nchw, kcrs),
        (ConvLayouts::Nhwc, _) => (Order::Nhwc, Order::Nhwc, sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC),
    }
}

impl Drop for Tensor {
    fn drop(&mut self) {
        // SAFETY: created by us, destroyed once.
        let _ = unsafe { dnn::destroy_tensor_descriptor(self.0) };
    }
}

/// A KCRS filter descriptor (cuDNN's NCHW filter format: the one every algorithm takes beside
/// activations whose W varies fastest).
struct Filter(sys::cudnnFilterDescriptor_t);

impl Drop for Filter {
    fn drop(&mut self) {
        // SAFETY: created by us, destroyed once.
        let _ = unsafe { dnn::destroy_filter_descriptor(self.0) };
    }
}

/// A convolution descriptor: cross-correlation, symmetric padding, groups, the math mode.
struct Conv(sys::cudnnConvolutionDescriptor_t);

impl Drop for Conv {
    fn drop(&mut self) {
        // SAFETY: created by us, destroyed once.
        let _ = unsafe { dnn::destroy_convolution_descriptor(self.0) };
    }
}

enum Algo {
    Forward(sys::cudnnConvolutionFwdAlgo_t),
    Data(sys::cudnnConvolutionBwdDataAlgo_t),
    Filter(sys::cudnnConvolutionBwdFilterAlgo_t),
}

struct Plan {
    x: Tensor,
    w: Filter,
    conv: Conv,
    y: Tensor,
    algo: Algo,
    workspace: usize,
}

/// The launcher's cuDNN: its handle on the launcher's stream, the plans, the shapes it refused
/// (and why), the workspace.
pub(crate) struct CudnnConvs {
    ctx: Arc<CudaContext>,
    handle: sys::cudnnHandle_t,
    math: sys::cudnnMathType_t,
    plans: HashMap<(ConvOp, ConvShape, ConvLayouts), Plan>,
    refused: HashMap<ConvShape, String>,
    /// The workspace, from the device's caching allocator (so `bench step`'s peak counts it),
    /// in doubles for cuDNN's alignment.
    workspace: Option<DeviceVec<f64>>,
    memory: DeviceMemory,
}

// SAFETY: the handle is used only through `&mut self`, by the launcher's thread at a time.
unsafe impl Send for CudnnConvs {}

impl CudnnConvs {
    /// A handle on the legacy default stream (the launcher's); `tf32` lets cuDNN use TF32
    /// tensor cores (its default math), else FP32 FMAs only; the workspace from `memory`.
    pub(crate) fn new(ctx: Arc<CudaContext>, tf32: bool, memory: DeviceMemory) -> Result<CudnnConvs, KernelError> {
        ctx.bind_to_thread().map_err(|e| KernelError::Launch { kernel: "creating the cuDNN handle", why: e.to_string() })?;
        let handle = dnn::create_handle().map_err(dnn_error("creating the cuDNN handle"))?;
        // SAFETY: a handle just created; null is the legacy default stream.
        unsafe { dnn::set_stream(handle, std::ptr::null_mut()) }.map_err(dnn_error("cuDNN's stream"))?;
        let math = if tf32 { sys::cudnnMathType_t::CUDNN_DEFAULT_MATH } else { sys::cudnnMathType_t::CUDNN_FMA_MATH };
        Ok(CudnnConvs { ctx, handle, math, plans: HashMap::new(), refused: HashMap::new(), workspace: None, memory })
    }

    /// Whether cuDNN plans all three operations of `sh` (asked once per shape): a shape it
    /// refuses (no deterministic algorithm for this layout, say) runs by im2col instead, and
    /// the reason is kept for [`CudnnConvs::refusals`].
    pub(crate) fn takes(&mut self, sh: &ConvShape) -> bool {
        if self.refused.contains_key(sh) {
            return false;
        }
        for op in [ConvOp::Forward, ConvOp::BackwardData, ConvOp::BackwardFilter] {
            if self.plans.contains_key(&(op, *sh, ConvLayouts::Engine)) {
                continue;
            }
            match self.plan(op, sh, ConvLayouts::Engine) {
                Ok(plan) => {
                    self.plans.insert((op, *sh, ConvLayouts::Engine), plan);
                }
                Err(e) => {
                    self.refused.insert(*sh, format!("{op:?}: {e}"));
                    return false;
                }
            }
        }
        true
    }

    /// The shapes cuDNN refused, with the reason.
    pub(crate) fn refusals(&self) -> Vec<String> {
        self.refused.iter().map(|(sh, why)| format!("{sh:?}: {why}")).collect()
    }

    /// Runs `call` (its tensors in `layouts`) on the handle's stream, making its plan the first time its
    /// shape comes.
    pub(crate) fn run(&mut self, call: &ConvCall, layouts: ConvLayouts) -> Result<(), KernelError> {
        call.shape.check_call(call)?;
        let key = (call.op, call.shape, layouts);
        if !self.plans.contains_key(&key) {
            let plan = self.plan(call.op, &call.shape, layouts)?;
            self.plans.insert(key, plan);
        }
        let need = self.plans[&key].workspace.div_ceil(size_of::<f64>()).max(1);
        if self.workspace.as_ref().is_none_or(|w| w.len() < need) {
            self.workspace = None; // back to the cache first: one stream, so reuse is ordered
            self.workspace = Some(self.memory.alloc::<f64>(need)?);
        }
        let ws_addr = self.workspace.as_ref().expect("just placed").buf().addr();
        let plan = &self.plans[&key];
        let (one, zero) = (1.0f32, 0.0f32);
        let (alpha, beta) = (&one as *const f32 as *const c_void, &zero as *const f32 as *const c_void);
        let ptr = |b: crate::launch::Buf<f32>| b.addr() as *mut c_void;
        let ws_ptr = ws_addr as *mut c_void;
        // SAFETY: the plan's descriptors describe the call's buffers (ConvShape::check_call ran
        // above); the workspace holds at least the plan's bytes; all on
        // this launcher's context and stream.
        let done = unsafe {
            match plan.algo {
                Algo::Forward(a) => dnn::convolution_forward(
                    self.handle,
                    alpha,
                    plan.x.0,
                    ptr(call.x),
                    plan.w.0,
                    ptr(call.w),
                    plan.conv.0,
                    a,
                    ws_ptr,
                    plan.workspace,
                    beta,
                    plan.y.0,
                    ptr(call.y),
                ),
                Algo::Data(a) => dnn::convolution_backward_data(
                    self.handle,
                    alpha,
                    plan.w.0,
                    ptr(call.w),
                    plan.y.0,
                    ptr(call.y),
                    plan.conv.0,
                    a,
                    ws_ptr,
                    plan.workspace,
                    beta,
                    plan.x.0,
                    ptr(call.x),
                ),
                Algo::Filter(a) => dnn::convolution_backward_filter(
                    self.handle,
                    alpha,
                    plan.x.0,
                    ptr(call.x),
                    plan.y.0,
                    ptr(call.y),
                    plan.conv.0,
                    a,
                    ws_ptr,
                    plan.workspace,
                    beta,
                    plan.w.0,
                    ptr(call.w),
                ),
            }
        };
        done.map_err(|e| KernelError::Launch {
            kernel: "a cuDNN convolution",
            why: format!("{:?} of {:?} ({layouts}): cuDNN {e:?}", call.op, call.shape),
        })
    }

    fn plan(&self, op: ConvOp, sh: &ConvShape, layouts: ConvLayouts) -> Result<Plan, KernelError> {
        let what = "cuDNN convolution plan";
        let (x_order, y_order, filter_format) = orders(op, layouts);
        let x = Tensor::new(x_order, sh.n, sh.c, sh.h, sh.w)?;
        let y = Tensor::new(y_order, sh.n, sh.k, sh.p, sh.q)?;
        let w = Filter(dnn::create_filter_descriptor().map_err(dnn_error(what))?);
        let dims = [int(sh.k, what)?, int(sh.c / sh.groups, what)?, int(sh.r, what)?, int(sh.s, what)?];
        let conv = Conv(dnn::create_convolution_descriptor().map_err(dnn_error(what))?);
        let (pad_h, pad_w, stride) = (int(sh.pad_h, what)?, int(sh.pad_w, what)?, int(sh.stride, what)?);
        // SAFETY: descriptors just created, owned by the wrappers.
        unsafe {
            dnn::set_filter4d_descriptor(w.0, sys::cudnnDataType_t::CUDNN_DATA_FLOAT, filter_format, dims).map_err(dnn_error(what))?;
            let mode = sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION;
            dnn::set_convolution2d_descriptor(conv.0, pad_h, pad_w, stride, stride, 1, 1, mode, sys::cudnnDataType_t::CUDNN_DATA_FLOAT)
                .map_err(dnn_error(what))?;
            dnn::set_convolution_group_count(conv.0, int(sh.groups, what)?).map_err(dnn_error(what))?;
            dnn::set_convolution_math_type(conv.0, self.math).map_err(dnn_error(what))?;
        }
        let (algo, math, workspace) = self.choose(op, &x, &w, &conv, &y)?;
        // The math type the heuristics paired with the algorithm, or another kernel may run.
        // SAFETY: our live descriptor.
        unsafe { dnn::set_convolution_math_type(conv.0, math) }.map_err(dnn_error(what))?;
        Ok(Plan { x, w, conv, y, algo, workspace })
    }

    /// The heuristics' first candidate that is deterministic, in the math mode asked for (FMA
    /// only when TF32 is off), and whose workspace cuDNN sizes for these descriptors (the query
    /// says NOT_SUPPORTED where a ranked algorithm would fail at run time); its math type and
    /// workspace (the larger of the two sizes cuDNN gives).
    fn choose(
        &self,
        op: ConvOp,
        x: &Tensor,
        w: &Filter,
        conv: &Conv,
        y: &Tensor,
    ) -> Result<(Algo, sys::cudnnMathType_t, usize), KernelError> {
        let what = "choosing a cuDNN algorithm";
        let strict = self.math == sys::cudnnMathType_t::CUDNN_FMA_MATH;
        let none = || KernelError::Launch { kernel: what, why: format!("no deterministic {op:?} algorithm runs for this shape") };
        let (h, conv) = (self.handle, conv.0);
        // SAFETY (every closure below): valid descriptors and handle; `ranked` gives each
        // ranking room for `n` candidates and reads the `found` it writes.
        match op {
            ConvOp::Forward => {
                let rank =
                    |n, found: &mut i32, perf| unsafe { dnn::get_convolution_forward_algorithm(h, x.0, w.0, conv, y.0, n, found, perf) };
                let size = |p: &sys::cudnnConvolutionFwdAlgoPerf_t| unsafe {
                    dnn::get_convolution_forward_workspace_size(h, x.0, w.0, conv, y.0, p.algo)
                };
                let (p, bytes) = ranked(h, sys::cudnnGetConvolutionForwardAlgorithmMaxCount, rank, size, strict)?.ok_or_else(none)?;
                Ok((Algo::Forward(p.algo), p.mathType, bytes))
            }
            ConvOp::BackwardData => {
                let rank = |n, found: &mut i32, perf| unsafe {
                    dnn::get_convolution_backward_data_algorithm(h, w.0, y.0, conv, x.0, n, found, perf)
                };
                let size = |p: &sys::cudnnConvolutionBwdDataAlgoPerf_t| unsafe {
                    dnn::get_convolution_backward_data_workspace_size(h, w.0, y.0, conv, x.0, p.algo)
                };
                let (p, bytes) = ranked(h, sys::cudnnGetConvolutionBackwardDataAlgorithmMaxCount, rank, size, strict)?.ok_or_else(none)?;
                Ok((Algo::Data(p.algo), p.mathType, bytes))
            }
            ConvOp::BackwardFilter => {
                let rank = |n, found: &mut i32, perf| unsafe {
                    dnn::get_convolution_backward_filter_algorithm(h, x.0, y.0, conv, w.0, n, found, perf)
                };
                let size = |p: &sys::cudnnConvolutionBwdFilterAlgoPerf_t| unsafe {
                    dnn::get_convolution_backward_filter_workspace_size(h, x.0, y.0, conv, w.0, p.algo)
                };
                let (p, bytes) =
                    ranked(h, sys::cudnnGetConvolutionBackwardFilterAlgorithmMaxCount, rank, size, strict)?.ok_or_else(none)?;
                Ok((Algo::Filter(p.algo), p.mathType, bytes))
            }
        }
    }
}

/// What the three kinds of cuDNN's ranked candidates share.
trait Candidate: Copy {
    fn usable(&self, strict: bool) -> bool;
    fn memory(&self) -> usize;
}

macro_rules! candidate {
    ($($t:ty),*) => {$(
        impl Candidate for $t {
            fn usable(&self, strict: bool) -> bool {
                // Never a math type that may convert FP32 data to FP16 (`--precision` promises
                // TF32 at least); FMA only when TF32 is off.
                self.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS
                    && self.determinism == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC
                    && self.mathType != sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION
                    && (!strict || self.mathType == sys::cudnnMathType_t::CUDNN_FMA_MATH)
            }
            fn memory(&self) -> usize {
                self.memory
            }
        }
    )*};
}
candidate!(sys::cudnnConvolutionFwdAlgoPerf_t, sys::cudnnConvolutionBwdDataAlgoPerf_t, sys::cudnnConvolutionBwdFilterAlgoPerf_t);

/// One operation's ranking (`rank(room, &mut found, out)`, room for as many candidates as
/// `max_count`, its `cudnnGet*AlgorithmMaxCount`, says), then its first usable candidate whose
/// workspace cuDNN sizes (`size`), with the larger of the two sizes; None when none is.
fn ranked<P: Candidate>(
    handle: sys::cudnnHandle_t,
    max_count: unsafe fn(sys::cudnnHandle_t, *mut std::ffi::c_int) -> sys::cudnnStatus_t,
    rank: impl FnOnce(i32, &mut i32, *mut P) -> Result<(), CudnnError>,
    size: impl Fn(&P) -> Result<usize, CudnnError>,
    strict: bool,
) -> Result<Option<(P, usize)>, KernelError> {
    let what = "choosing a cuDNN algorithm";
    let mut count = 0;
    // SAFETY: a live handle and a place for the count.
    unsafe { max_count(handle, &mut count) }.result().map_err(dnn_error(what))?;
    // SAFETY: the perf structs are plain data (enums whose zero is a valid variant, numbers).
    let mut perf = vec![unsafe { std::mem::zeroed::<P>() }; count.clamp(1, 64) as usize];
    let mut found = 0;
    rank(perf.len() as i32, &mut found, perf.as_mut_ptr()).map_err(dnn_error(what))?;
    let ranked = &perf[..(found.max(0) as usize).min(perf.len())];
    Ok(ranked.iter().filter(|p| p.usable(strict)).find_map(|p| size(p).ok().map(|bytes| (*p, bytes.max(p.memory())))))
}

impl Drop for CudnnConvs {
    fn drop(&mut self) {
        self.plans.clear(); // descriptors before the handle
        self.workspace = None;
        // The handle goes in its context (this struct holds it, so it is still alive).
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: created by us, destroyed once, no call in flight on it from the host.
            let _ = unsafe { dnn::destroy_handle(self.handle) };
        }
    }
}
