//! The engine's one thread pool.
//!
//! Every parallel kernel runs on rayon's global pool; the `gemm` backend is told to use the same
//! pool. Configuring it once, before any kernel runs, is how `--threads N` / `RINGSAM_THREADS`
//! cap the engine. The binary calls [`configure`]; library code never reads the environment.

use crate::TensorError;

/// Builds the global pool with `n` threads (`None`: one per logical core). Returns the thread
/// count in effect. Calling it again is an error if the pool was already built with a different
/// size: rayon's global pool can be built only once per process.
pub fn configure(n: Option<usize>) -> Result<usize, TensorError> {
    let want = n.unwrap_or_else(default_threads);
    if want == 0 {
        return Err(TensorError::Threads("thread count must be at least 1".into()));
    }
    match rayon::ThreadPoolBuilder::new().num_threads(want).thread_name(|i| format!("ringsam-engine-{i}")).build_global() {
        Ok(()) => {
            crate::gemm::set_threads(want);
            Ok(want)
        }
        Err(e) => {
            let have = rayon::current_num_threads();
            if have == want { Ok(have) } else { Err(TensorError::Threads(format!("{e} (pool already has {have} threads)"))) }
        }
    }
}

/// One thread per logical core, as the OS reports it.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Threads in the pool kernels run on now.
pub fn current() -> usize {
    rayon::current_num_threads()
}
