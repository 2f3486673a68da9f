// Per-example coefficients drawn on the device (crates/nn/src/layers/shake.rs, drop_connect.rs):
// example i's uniform is the first draw of Rng::stream(seed, step, stream_i) with
// stream_i = key ^ what·GOLDEN ^ (first_example + i)·EXAMPLE_MIX (crates/nn/src/pass.rs
// Pass::example_draw), then the layer's formula in float with the CPU's operations in its order,
// so a GPU pass scales exactly the examples a CPU pass scales, by the same values (bitwise), and
// the host never copies them over (a copy would wait for the stream).

#define RNG_GOLDEN 0x9E3779B97F4A7C15ULL
#define RNG_EXAMPLE_MIX 0xD1B54A32D192ED03ULL

__device__ u64 rng_mix(u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// crates/rng: Rng::stream(seed, step, layer) then uniform(): 24 bits in [0, 1).
__device__ float rng_stream_uniform(u64 seed, u64 step, u64 layer) {
    u64 key = rng_mix(rng_mix(seed) + step) + rng_mix(layer + RNG_GOLDEN);
    u64 state = rng_mix(key ^ 0x5DEECE66D1A4F87DULL);
    return (float)(rng_mix(state + RNG_GOLDEN) >> 40) * (1.0f / 16777216.0f);
}

__device__ float example_uniform(u64 seed, u64 step, u64 key, u64 what, u64 example) {
    return rng_stream_uniform(seed, step, key ^ what * RNG_GOLDEN ^ example * RNG_EXAMPLE_MIX);
}

// What each layer draws (shake.rs FORWARD, BACKWARD, MASK; drop_connect.rs's 4).
#define DRAW_FORWARD 1
#define DRAW_BACKWARD 2
#define DRAW_MASK 3
#define DRAW_DROP_CONNECT 4

// The layers (crates/kernels/src/examples.rs ExampleCoefficients), and what `out` holds:
// 0 Shake-Shake: g, then h (g when tied), then 1 − h;
// 1 ShakeDrop with survival `param`: the forward's m + α − m·α, then the backward's m + β − m·β
//   (the forward's when tied), a kept branch scaled by exactly 1;
// 2 drop-connect keeping with probability `param`: 1/keep or 0 (forward and backward alike).
extern "C" __global__ void example_coefficients(float* out, u64 seed, u64 step, u64 key, u64 first_example, u64 n,
                                                unsigned kind, float param, unsigned tied) {
    GRID_STRIDE(i, n) {
        const u64 e = first_example + i;
        if (kind == 0) {
            const float g = example_uniform(seed, step, key, DRAW_FORWARD, e);
            const float h = tied ? g : example_uniform(seed, step, key, DRAW_BACKWARD, e);
            out[i] = g;
            out[n + i] = h;
            out[2 * n + i] = 1.0f - h;
        } else if (kind == 1) {
            const bool kept = example_uniform(seed, step, key, DRAW_MASK, e) < param;
            const float alpha = 2.0f * example_uniform(seed, step, key, DRAW_FORWARD, e) - 1.0f;
            const float beta = example_uniform(seed, step, key, DRAW_BACKWARD, e);
            const float fwd = kept ? 1.0f : alpha;
            out[i] = fwd;
            out[n + i] = tied ? fwd : (kept ? 1.0f : beta);
        } else {
            out[i] = example_uniform(seed, step, key, DRAW_DROP_CONNECT, e) < param ? 1.0f / param : 0.0f;
        }
    }
}
