// Depthwise convolution (crates/tensor/src/depthwise/): (C, N, H, W) activations, weights
// (R, S, C) as Flax stores them, TensorFlow's SAME padding. Forward one thread per output over
// (r, s); the input gradient one thread per input, gathered over (r, s); the weight gradient one
// thread per (channel, tap), over (n, p, q) in float. These sums followed the CPU's old direct
// kernel, to the bit; the CPU's kernels are vectorised now (sixteen lanes of sums per tap), so
// the self-test holds both to the GEMM tolerance, and the weight gradient's one long sum per
// thread (89 % of an EfficientNet-B0 step on an H200) is free to become a tree per block.

extern "C" __global__ void depthwise_forward(float* out, const float* inp, const float* weight, CONV_SHAPE) {
    (void)groups;  // = c: one group per channel
    GRID_STRIDE(i, c * n * p * q) {
        u64 ch = i / (n * p * q), ni = i / (p * q) % n, pi = i / q % p, qi = i % q;
        const float* x = inp + (ch * n + ni) * h * w;
        float acc = 0.0f;
        for (u64 kr = 0; kr < r; ++kr) {
            long long ih = (long long)(pi * stride + kr) - (long long)pad_h;
            if (ih < 0 || ih >= (long long)h) continue;
            for (u64 ks = 0; ks < s; ++ks) {
                long long iw = (long long)(qi * stride + ks) - (long long)pad_w;
                if (iw < 0 || iw >= (long long)w) continue;
                acc += weight[(kr * s + ks) * c + ch] * x[(u64)ih * w + (u64)iw];
            }
        }
        out[i] = acc;
    }
}

// dinp (overwritten) = Σ over the outputs each input fed, weighted.
extern "C" __global__ void depthwise_backward_data(float* dinp, const float* dout, const float* weight, CONV_SHAPE) {
    (void)groups;  // = c: one group per channel
    GRID_STRIDE(i, c * n * h * w) {
        u64 ch = i / (n * h * w), ni = i / (h * w) % n, ih = i / w % h, iw = i % w;
        const float* g = dout + (ch * n + ni) * p * q;
        float acc = 0.0f;
        for (u64 kr = 0; kr < r; ++kr) {
            long long ph = (long long)(ih + pad_h) - (long long)kr;
            if (ph < 0 || ph % (long long)stride != 0 || (u64)ph / stride >= p) continue;
            for (u64 ks = 0; ks < s; ++ks) {
                long long qw = (long long)(iw + pad_w) - (long long)ks;
                if (qw < 0 || qw % (long long)stride != 0 || (u64)qw / stride >= q) continue;
                acc += weight[(kr * s + ks) * c + ch] * g[((u64)ph / stride) * q + (u64)qw / stride];
            }
        }
        dinp[i] = acc;
    }
}

// dweight[tap, ch] += Σ_{n, p, q} dout·x, summed in float in (n, p, q) order.
extern "C" __global__ void depthwise_backward_weight(float* dweight, const float* dout, const float* inp, CONV_SHAPE) {
    (void)groups;  // = c: one group per channel
    GRID_STRIDE(t, c * r * s) {
        u64 ch = t % c, tap = t / c, kr = tap / s, ks = tap % s;
        float a = 0.0f;
        for (u64 ni = 0; ni < n; ++ni) {
            const float* x = inp + (ch * n + ni) * h * w;
            const float* g = dout + (ch * n + ni) * p * q;
            for (u64 pi = 0; pi < p; ++pi) {
                long long ih = (long long)(pi * stride + kr) - (long long)pad_h;
                if (ih < 0 || ih >= (long long)h) continue;
                for (u64 qi = 0; qi < q; ++qi) {
                    long long iw = (long long)(qi * stride + ks) - (long long)pad_w;
                    if (iw < 0 || iw >= (long long)w) continue;
                    a += g[pi * q + qi] * x[(u64)ih * w + (u64)iw];
                }
            }
        }
        dweight[tap * c + ch] = dweight[tap * c + ch] + a;
    }
}
