// The layouts cuDNN takes (crates/kernels/src/conv_library.rs): convolution kernels between the
// arena's HWIO ((R·S) taps, then C/groups input channels, then K outputs: Flax's) and KCRS, one
// thread per weight indexed in HWIO order (reads coalesced, writes strided: weights are small);
// and an output gradient from the engine's (C, N, H, W) to packed (N, C, H, W), which cuDNN's
// backward algorithms require of it.

extern "C" __global__ void hwio_to_kcrs(float* kcrs, const float* hwio, u64 taps, u64 cg, u64 k) {
    GRID_STRIDE(i, taps * cg * k) {
        const u64 ko = i % k, c = i / k % cg, tap = i / (k * cg);
        kcrs[(ko * cg + c) * taps + tap] = hwio[i];
    }
}

// hwio += kcrs transposed: the library's filter gradient added to the arena's.
extern "C" __global__ void kcrs_add_to_hwio(float* hwio, const float* kcrs, u64 taps, u64 cg, u64 k) {
    GRID_STRIDE(i, taps * cg * k) {
        const u64 ko = i % k, c = i / k % cg, tap = i / (k * cg);
        hwio[i] = hwio[i] + kcrs[(ko * cg + c) * taps + tap];
    }
}

// out (N, C, HW) = in (C, N, HW): one thread per value, in the output's order.
extern "C" __global__ void cnhw_to_nchw(float* out, const float* in, u64 c, u64 n, u64 hw) {
    GRID_STRIDE(i, c * n * hw) {
        const u64 j = i % hw, ci = i / hw % c, ni = i / (hw * c);
        out[i] = in[(ci * n + ni) * hw + j];
    }
}
