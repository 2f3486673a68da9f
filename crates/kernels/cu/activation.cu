// Activations, element-wise (crates/tensor/src/activation.rs): ReLU is the CPU's to the bit;
// sigmoid and SiLU use expf, which CUDA computes to within 2 ulp rather than correctly rounded,
// so on a GPU they agree with the CPU to rounding (the self-test's tolerance says how closely).

__device__ float sigmoid_of(float x) { return 1.0f / (1.0f + expf(-x)); }

extern "C" __global__ void relu_forward(float* out, const float* inp, u64 n) {
    GRID_STRIDE(i, n) { out[i] = fmaxf(inp[i], 0.0f); }
}

// The gradient passes where the output is positive.
extern "C" __global__ void relu_backward(float* dinp, const float* dout, const float* out, u64 n) {
    GRID_STRIDE(i, n) { dinp[i] = out[i] > 0.0f ? dout[i] : 0.0f; }
}

extern "C" __global__ void sigmoid_forward(float* out, const float* inp, u64 n) {
    GRID_STRIDE(i, n) { out[i] = sigmoid_of(inp[i]); }
}

// From the output y: g·y·(1 − y).
extern "C" __global__ void sigmoid_backward(float* dinp, const float* dout, const float* out, u64 n) {
    GRID_STRIDE(i, n) {
        float y = out[i];
        dinp[i] = dout[i] * y * (1.0f - y);
    }
}

// x·σ(x) (swish, EfficientNet's activation).
extern "C" __global__ void silu_forward(float* out, const float* inp, u64 n) {
    GRID_STRIDE(i, n) { out[i] = inp[i] * sigmoid_of(inp[i]); }
}

// From the input x: g·σ(x)·(1 + x·(1 − σ(x))).
extern "C" __global__ void silu_backward(float* dinp, const float* dout, const float* inp, u64 n) {
    GRID_STRIDE(i, n) {
        float x = inp[i];
        float s = sigmoid_of(x);
        dinp[i] = dout[i] * s * (1.0f + x * (1.0f - s));
    }
}
