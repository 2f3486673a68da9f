// Convolution kernels between the arena's HWIO layout ((R·S) taps, then C/groups input channels,
// then K outputs: Flax's) and the KCRS layout cuDNN takes beside activations whose W varies
// fastest (crates/kernels/src/conv_library.rs). One thread per weight, indexed in HWIO order:
// reads coalesced, writes strided (weights are small beside the activations).

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
