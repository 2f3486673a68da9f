//! Compiling the kernel sources with NVRTC (feature `cuda`): at run time for the GPU in hand, and
//! in CI for every architecture we ship for, which needs NVRTC's library but no GPU.

use cudarc::nvrtc::{CompileOptions, Ptx, compile_ptx_with_opts};

use crate::Source;

/// The virtual architectures CI compiles every source for: Ampere (A100) and Hopper (H100,
/// H200).
pub const CI_ARCHES: &[&str] = &["compute_80", "compute_90"];

/// Compiles `source` to PTX for `arch` (`compute_XY`). `--fmad=false`: no multiply-add
/// contraction, so element-wise results are the CPU engine's to the bit (see `cu/flat.cu`); the
/// kernels are memory-bound, so the fused form would buy nothing measurable.
pub fn compile(source: &Source, arch: &'static str) -> Result<Ptx, String> {
    let opts = CompileOptions {
        fmad: Some(false),
        arch: Some(arch),
        name: Some(source.file.to_string()),
        options: vec!["--std=c++17".to_string()],
        ..Default::default()
    };
    compile_ptx_with_opts(source.text, opts).map_err(|e| format!("{} for {arch}: {e}", source.file))
}

/// Whether NVRTC's library can be loaded (cudarc would panic on first use otherwise).
pub fn available() -> bool {
    // SAFETY: only tries to dlopen the library by its candidate names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel compiles for every CI architecture, and its PTX has an entry of its name.
    /// Runs where libnvrtc loads (CI: NVIDIA's wheel from PyPI, scripts/test.sh); says so where not.
    #[test]
    fn every_kernel_compiles_for_the_shipped_architectures() {
        if !available() {
            eprintln!(
                "NVRTC compile check NOT RUN: libnvrtc.so not found (scripts/test.sh installs nvidia-cuda-nvrtc and sets LD_LIBRARY_PATH)"
            );
            return;
        }
        for source in crate::SOURCES {
            for arch in CI_ARCHES {
                let ptx = compile(source, arch).unwrap_or_else(|e| panic!("{e}"));
                let text = ptx.to_src();
                for kernel in source.kernels {
                    assert!(text.contains(&format!(".entry {kernel}(")), "{}: no entry for {kernel} in the {arch} PTX", source.file);
                }
            }
        }
        eprintln!("NVRTC: {} sources compiled for {:?}", crate::SOURCES.len(), CI_ARCHES);
    }
}
