//! Compiles the CUDA kernels (crates/kernels/cu) as C++ under the emulation header.
fn main() {
    println!("cargo:rerun-if-changed=emu");
    println!("cargo:rerun-if-changed=../kernels/cu");
    cc::Build::new()
        .cpp(true)
        .file("emu/launchers.cpp")
        .include("emu")
        .flag("-std=c++20")
        .flag("-ffp-contract=off")
        .flag("-pthread")
        // `#pragma unroll` is NVRTC's hint; the host compiler has no use for it.
        .flag("-Wno-unknown-pragmas")
        .warnings(true)
        .compile("ringsam_kernels_emu");
    println!("cargo:rustc-link-lib=pthread");
}
