//! Wall time per CPU kernel call, for `ringsam bench step --profile` on the CPU.
//!
//! A device's launcher times each launch with CUDA events; on the CPU the kernels' entry points
//! time themselves with [`timed`] while profiling is on (when it is off, the cost is one relaxed
//! atomic load per call). Only the outermost timed call on a thread is recorded, so the GEMM
//! inside a convolution is part of the convolution's row, and a dense layer's GEMM is a row of
//! its own. Kernels spread their work over the pool but are called, and timed, from the calling
//! thread, so a row is the wall time the step spent in that kernel. What no kernel times (the
//! optimizer, squeeze-excite's small products, copies between layers) is the gap between the
//! rows' sum and the step's wall time.

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ringsam_kernels::KernelTimes;

static ON: AtomicBool = AtomicBool::new(false);
static TIMES: Mutex<Option<KernelTimes>> = Mutex::new(None);

thread_local! {
    /// Timed calls open on this thread (a kernel calling another is not recorded twice).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

fn times() -> std::sync::MutexGuard<'static, Option<KernelTimes>> {
    TIMES.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts recording (from empty).
pub fn start() {
    *times() = Some(KernelTimes::default());
    ON.store(true, Ordering::Relaxed);
}

/// Stops recording and returns what was recorded since [`start`].
pub fn stop() -> KernelTimes {
    ON.store(false, Ordering::Relaxed);
    times().take().unwrap_or_default()
}

/// Closes a timed call even when the kernel panics.
struct Open;

impl Drop for Open {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Runs `f`, recording its wall time under `kernel` (with `flops` floating-point operations, 0
/// when not worth counting) while profiling is on.
#[inline]
pub fn timed<T>(kernel: &'static str, flops: f64, f: impl FnOnce() -> T) -> T {
    if !ON.load(Ordering::Relaxed) {
        return f();
    }
    let outermost = DEPTH.with(|d| {
        d.set(d.get() + 1);
        d.get() == 1
    });
    let open = Open;
    let t = Instant::now();
    let out = f();
    let seconds = t.elapsed().as_secs_f64();
    drop(open);
    if outermost && let Some(k) = times().as_mut() {
        k.add(kernel, seconds, flops);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_the_outermost_call_only_while_on() {
        timed("before", 0.0, || ());
        start();
        let v = timed("outer", 2.0, || timed("inner", 1.0, || 7));
        let k = stop();
        timed("after", 0.0, || ());
        assert_eq!(v, 7);
        assert_eq!(k.by_name.keys().collect::<Vec<_>>(), ["outer"]);
        assert_eq!((k.by_name["outer"].count, k.by_name["outer"].flops), (1, 2.0));
    }
}
