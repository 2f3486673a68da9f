//! ringsam's CUDA kernels run as C++ on the CPU: a [`Launcher`] that calls the kernels compiled by
//! `build.rs` under `emu/cuda_emu.h`, so tests hold the GPU code to the CPU engine without a GPU.
//! See `ringsam_kernels` for what this checks and what it cannot.

use ringsam_kernels::launch::Elem;
use ringsam_kernels::launch::MAX_PARTIALS;
use ringsam_kernels::{Arg, Buf, KernelError, Launch, Launcher, Memory};

type U64 = u64;

unsafe extern "C" {
    fn emu_sam_ascent(grid: u32, block: u32, a: *mut f32, w: *const f32, g: *const f32, s: f32, n: U64);
    fn emu_asam_ascent(grid: u32, block: u32, a: *mut f32, w: *const f32, g: *const f32, s: f32, eta: f32, n: U64);
    fn emu_nesterov_update(grid: u32, block: u32, w: *mut f32, g: *const f32, m: *mut f32, beta: f32, lr: f32, n: U64);
    fn emu_momentum_update(grid: u32, block: u32, w: *mut f32, g: *const f32, m: *mut f32, beta: f32, lr: f32, n: U64);
    fn emu_rmsprop_update(
        grid: u32,
        block: u32,
        w: *mut f32,
        g: *const f32,
        m: *mut f32,
        v: *mut f32,
        beta: f32,
        beta2: f32,
        eps: f32,
        lr: f32,
        n: U64,
    );
    fn emu_scale(grid: u32, block: u32, x: *mut f32, s: f32, n: U64);
    fn emu_axpy(grid: u32, block: u32, y: *mut f32, a: f32, x: *const f32, n: U64);
    fn emu_ema_update(grid: u32, block: u32, avg: *mut f32, x: *const f32, d: f32, n: U64);
    fn emu_sum_squares_blocks(grid: u32, block: u32, x: *const f32, n: U64, partials: *mut f64);
    fn emu_asam_norm_blocks(grid: u32, block: u32, w: *const f32, g: *const f32, eta: f32, n: U64, partials: *mut f64);
    fn emu_sum_partials(grid: u32, block: u32, partials: *const f64, n: U64, out: *mut f64);
    fn emu_dropout_forward(grid: u32, block: u32, out: *mut f32, mask: *mut f32, inp: *const f32, base: U64, rate: f32, keep: f32, n: U64);
    fn emu_dropout_backward(grid: u32, block: u32, dinp: *mut f32, dout: *const f32, mask: *const f32, n: U64);
    fn emu_relu_forward(grid: u32, block: u32, out: *mut f32, inp: *const f32, n: U64);
    fn emu_relu_backward(grid: u32, block: u32, dinp: *mut f32, dout: *const f32, out: *const f32, n: U64);
    fn emu_sigmoid_forward(grid: u32, block: u32, out: *mut f32, inp: *const f32, n: U64);
    fn emu_sigmoid_backward(grid: u32, block: u32, dinp: *mut f32, dout: *const f32, out: *const f32, n: U64);
    fn emu_silu_forward(grid: u32, block: u32, out: *mut f32, inp: *const f32, n: U64);
    fn emu_silu_backward(grid: u32, block: u32, dinp: *mut f32, dout: *const f32, inp: *const f32, n: U64);
    fn emu_softmax_xent_forward(
        grid: u32,
        block: u32,
        z: *const f32,
        labels: *const u32,
        eps: f32,
        k: U64,
        probs: *mut f32,
        losses: *mut f32,
        losses64: *mut f64,
    );
    fn emu_softmax_xent_backward(
        grid: u32,
        block: u32,
        d: *mut f32,
        probs: *const f32,
        labels: *const u32,
        eps: f32,
        scale: f32,
        k: U64,
        nk: U64,
    );
}

/// The emulated GPU: kernels run on host memory, in the order launched, each to completion.
pub struct Emu {
    partials: Vec<f64>,
    total: Vec<f64>,
    /// Launches so far, by kernel name (tests check what an operation launched).
    pub launches: Vec<(&'static str, Launch)>,
}

impl Default for Emu {
    fn default() -> Self {
        Emu { partials: vec![0.0; MAX_PARTIALS], total: vec![0.0], launches: Vec::new() }
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

fn ptr<T>(a: Arg) -> *mut T {
    match a {
        Arg::Ptr(p) => p as *mut T,
        other => panic!("expected a pointer argument, got {other:?}"),
    }
}

fn f(a: Arg) -> f32 {
    match a {
        Arg::F32(v) => v,
        other => panic!("expected a float argument, got {other:?}"),
    }
}

fn n(a: Arg) -> u64 {
    match a {
        Arg::U64(v) => v,
        other => panic!("expected an element count, got {other:?}"),
    }
}

impl Launcher for Emu {
    fn launch(&mut self, kernel: &'static str, at: Launch, a: &[Arg]) -> Result<(), KernelError> {
        let (g, b) = (at.grid, at.block);
        let want = |k: usize| {
            if a.len() == k { Ok(()) } else { Err(KernelError::Launch { kernel, why: format!("{} arguments, expected {k}", a.len()) }) }
        };
        self.launches.push((kernel, at));
        // SAFETY: the Bufs' contract (host_buf): live host memory of the stated lengths; the
        // kernels stay within `n` elements, which the operations check against the Bufs.
        unsafe {
            match kernel {
                "sam_ascent" => want(5).map(|()| emu_sam_ascent(g, b, ptr(a[0]), ptr(a[1]), ptr(a[2]), f(a[3]), n(a[4]))),
                "asam_ascent" => want(6).map(|()| emu_asam_ascent(g, b, ptr(a[0]), ptr(a[1]), ptr(a[2]), f(a[3]), f(a[4]), n(a[5]))),
                "nesterov_update" => {
                    want(6).map(|()| emu_nesterov_update(g, b, ptr(a[0]), ptr(a[1]), ptr(a[2]), f(a[3]), f(a[4]), n(a[5])))
                }
                "momentum_update" => {
                    want(6).map(|()| emu_momentum_update(g, b, ptr(a[0]), ptr(a[1]), ptr(a[2]), f(a[3]), f(a[4]), n(a[5])))
                }
                "rmsprop_update" => want(9).map(|()| {
                    emu_rmsprop_update(g, b, ptr(a[0]), ptr(a[1]), ptr(a[2]), ptr(a[3]), f(a[4]), f(a[5]), f(a[6]), f(a[7]), n(a[8]))
                }),
                "scale" => want(3).map(|()| emu_scale(g, b, ptr(a[0]), f(a[1]), n(a[2]))),
                "axpy" => want(4).map(|()| emu_axpy(g, b, ptr(a[0]), f(a[1]), ptr(a[2]), n(a[3]))),
                "ema_update" => want(4).map(|()| emu_ema_update(g, b, ptr(a[0]), ptr(a[1]), f(a[2]), n(a[3]))),
                "sum_squares_blocks" => want(3).map(|()| emu_sum_squares_blocks(g, b, ptr(a[0]), n(a[1]), ptr(a[2]))),
                "asam_norm_blocks" => want(5).map(|()| emu_asam_norm_blocks(g, b, ptr(a[0]), ptr(a[1]), f(a[2]), n(a[3]), ptr(a[4]))),
                "sum_partials" => want(3).map(|()| emu_sum_partials(g, b, ptr(a[0]), n(a[1]), ptr(a[2]))),
                "dropout_forward" => {
                    want(7).map(|()| emu_dropout_forward(g, b, ptr(a[0]), ptr(a[1]), ptr(a[2]), n(a[3]), f(a[4]), f(a[5]), n(a[6])))
                }
                "dropout_backward" => want(4).map(|()| emu_dropout_backward(g, b, ptr(a[0]), ptr(a[1]), ptr(a[2]), n(a[3]))),
                "relu_forward" => want(3).map(|()| emu_relu_forward(g, b, ptr(a[0]), ptr(a[1]), n(a[2]))),
                "relu_backward" => want(4).map(|()| emu_relu_backward(g, b, ptr(a[0]), ptr(a[1]), ptr(a[2]), n(a[3]))),
                "sigmoid_forward" => want(3).map(|()| emu_sigmoid_forward(g, b, ptr(a[0]), ptr(a[1]), n(a[2]))),
                "sigmoid_backward" => want(4).map(|()| emu_sigmoid_backward(g, b, ptr(a[0]), ptr(a[1]), ptr(a[2]), n(a[3]))),
                "silu_forward" => want(3).map(|()| emu_silu_forward(g, b, ptr(a[0]), ptr(a[1]), n(a[2]))),
                "silu_backward" => want(4).map(|()| emu_silu_backward(g, b, ptr(a[0]), ptr(a[1]), ptr(a[2]), n(a[3]))),
                "softmax_xent_forward" => want(7)
                    .map(|()| emu_softmax_xent_forward(g, b, ptr(a[0]), ptr(a[1]), f(a[2]), n(a[3]), ptr(a[4]), ptr(a[5]), ptr(a[6]))),
                "softmax_xent_backward" => {
                    want(7).map(|()| emu_softmax_xent_backward(g, b, ptr(a[0]), ptr(a[1]), ptr(a[2]), f(a[3]), f(a[4]), n(a[5]), n(a[6])))
                }
                _ => Err(KernelError::Launch { kernel, why: "not an emulated kernel".into() }),
            }
        }
    }

    fn reduction_scratch(&mut self) -> Result<(Buf<f64>, Buf<f64>), KernelError> {
        // SAFETY: both vectors live as long as `self` and are never resized.
        unsafe { Ok((host_buf(&self.partials), host_buf(&self.total))) }
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
