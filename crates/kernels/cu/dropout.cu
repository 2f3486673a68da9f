// Dropout with the CPU engine's masks (crates/nn/src/layers/dropout.rs): element i's draw is
// SplitMix64's output for counter base + (i + 1)·golden (crates/rng: Rng::counter_base, draw_at),
// so any element's value is computed where it is needed and a GPU run drops exactly the
// elements a CPU run drops. Integer arithmetic and one exact float product: bitwise.

#define GOLDEN 0x9E3779B97F4A7C15ULL

__device__ u64 splitmix_at(u64 base, u64 i) {
    u64 z = base + GOLDEN * (i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// mask = 0 where the draw (24 bits in [0, 1)) is below `rate`, else `keep` = 1/(1 − rate);
// out = inp·mask. The mask is kept for the backward.
extern "C" __global__ void dropout_forward(float* out, float* mask, const float* inp, u64 base, float rate, float keep,
                                           u64 n) {
    GRID_STRIDE(i, n) {
        float u = (float)(splitmix_at(base, i) >> 40) * (1.0f / 16777216.0f);
        float m = u < rate ? 0.0f : keep;
        mask[i] = m;
        out[i] = inp[i] * m;
    }
}

// dinp = dout·mask.
extern "C" __global__ void dropout_backward(float* dinp, const float* dout, const float* mask, u64 n) {
    GRID_STRIDE(i, n) { dinp[i] = dout[i] * mask[i]; }
}
