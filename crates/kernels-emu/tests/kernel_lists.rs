//! The three lists of kernels agree: the `extern "C" __global__` functions each CUDA source
//! defines, the names [`ringsam_kernels::SOURCES`] loads from it on a GPU, and the emulator's
//! table. A kernel missing from `SOURCES` runs under emulation and fails on a GPU with "no such
//! kernel" (as `copy` once did), so this is checked here, where no GPU is needed.

use std::collections::BTreeSet;

/// The names after `extern "C" __global__ void` in `text`.
fn defined(text: &str) -> BTreeSet<String> {
    let marker = "extern \"C\" __global__ void";
    text.match_indices(marker)
        .map(|(at, _)| {
            let rest = text[at + marker.len()..].trim_start();
            rest[..rest.find('(').expect("a kernel's parameter list")].trim().to_string()
        })
        .collect()
}

#[test]
fn every_defined_kernel_is_loaded_on_a_gpu() {
    for source in ringsam_kernels::SOURCES {
        let listed: BTreeSet<String> = source.kernels.iter().map(|k| k.to_string()).collect();
        assert_eq!(defined(source.text), listed, "{}: defined vs SOURCES' list", source.file);
    }
}

#[test]
fn every_loaded_kernel_is_emulated() {
    let table = include_str!("../emu/launchers.cpp");
    let emulated: BTreeSet<String> =
        table.match_indices("KERNEL(").filter_map(|(at, _)| table[at + 7..].split(')').next()).map(|k| k.trim().to_string()).collect();
    let loaded: BTreeSet<String> = ringsam_kernels::SOURCES.iter().flat_map(|s| s.kernels.iter().map(|k| k.to_string())).collect();
    let missing: Vec<_> = loaded.difference(&emulated).collect();
    assert!(missing.is_empty(), "kernels with no KERNEL line in emu/launchers.cpp: {missing:?}");
}
