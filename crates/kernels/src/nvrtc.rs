//! Compiling the kernel sources with NVRTC (feature `cuda`): at run time for the GPU in hand, and
//! in CI for every architecture we ship for, which needs NVRTC's library but no GPU.

use std::ffi::CString;

use cudarc::nvrtc::{CompileOptions, Ptx, compile_ptx_with_opts, result, sys};

use crate::Source;

/// The virtual architectures CI compiles every source for: Ampere (A100) and Hopper (H100,
/// H200).
pub const CI_ARCHES: &[&str] = &["compute_80", "compute_90"];
/// The real architectures CI compiles cubins for (what a GPU run loads).
pub const CI_GPUS: &[&str] = &["sm_80", "sm_90"];

/// Options for every compilation. `--fmad=false`: no multiply-add contraction, so element-wise
/// results are the CPU engine's to the bit (see `cu/flat.cu`); the kernels are memory-bound, so
/// the fused form would buy nothing measurable.
const OPTIONS: &[&str] = &["--fmad=false", "--std=c++17"];

/// Compiles `source` to PTX for `arch` (`compute_XY`): what CI checks every source with.
pub fn compile(source: &Source, arch: &'static str) -> Result<Ptx, String> {
    let opts = CompileOptions {
        arch: Some(arch),
        name: Some(source.file.to_string()),
        options: OPTIONS.iter().map(|o| o.to_string()).collect(),
        ..Default::default()
    };
    compile_ptx_with_opts(source.text, opts).map_err(|e| format!("{} for {arch}: {e}", source.file))
}

/// Compiles `source` to a cubin for the GPU `sm` (`sm_XY`): machine code, loaded as it is. Not
/// PTX: the driver compiles PTX when it loads it and refuses PTX from a newer NVRTC than itself
/// (a pip wheel's, say), while a cubin from any CUDA 13 NVRTC loads on any CUDA 13 driver.
pub fn compile_cubin(source: &Source, sm: &str) -> Result<Vec<u8>, String> {
    let what = |why: String| format!("{} for {sm}: {why}", source.file);
    let text = CString::new(source.text).map_err(|_| what("a NUL in the source".into()))?;
    let name = CString::new(source.file).map_err(|_| what("a NUL in the name".into()))?;
    let prog = result::create_program(&text, Some(&name)).map_err(|e| what(e.to_string()))?;
    let arch = format!("--gpu-architecture={sm}");
    let options: Vec<&str> = OPTIONS.iter().copied().chain([arch.as_str()]).collect();
    // SAFETY: `prog` was just created and is destroyed once, below, whatever happens.
    let out = unsafe {
        match result::compile_program(prog, &options) {
            Err(e) => {
                let log = result::get_program_log(prog).map(|l| l.iter().map(|&c| c as u8 as char).collect::<String>()).unwrap_or_default();
                Err(what(format!("{e}: {}", log.trim_end_matches('\0').trim())))
            }
            Ok(()) => {
                let mut size = 0usize;
                sys::nvrtcGetCUBINSize(prog, &mut size).result().map_err(|e| what(e.to_string())).and_then(|()| {
                    let mut cubin = vec![0u8; size];
                    sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast()).result().map_err(|e| what(e.to_string()))?;
                    Ok(cubin)
                })
            }
        }
    };
    // SAFETY: created above, not destroyed before.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

/// Whether NVRTC's library can be loaded (cudarc would panic on first use otherwise).
pub fn available() -> bool {
    // SAFETY: only tries to dlopen the library by its candidate names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel compiles for every CI architecture, its PTX has an entry of its name, and a
    /// cubin (what a GPU run loads) builds for each CI GPU.
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
        for source in crate::SOURCES {
            for gpu in CI_GPUS {
                let cubin = compile_cubin(source, gpu).unwrap_or_else(|e| panic!("{e}"));
                assert!(cubin.starts_with(b"\x7fELF"), "{}: the {gpu} cubin is not an ELF image", source.file);
            }
        }
        eprintln!("NVRTC: {} sources compiled for {:?} (PTX) and {:?} (cubin)", crate::SOURCES.len(), CI_ARCHES, CI_GPUS);
    }
}
