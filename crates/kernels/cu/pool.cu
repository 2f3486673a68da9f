// Pooling (crates/tensor/src/pool.rs) on planes: each (channel, example) plane of h × w values is
// contiguous, as in the CPU engine's (C, N, H, W). One thread per output value forward; the
// backwards gather (one thread per input value, adding the outputs whose window covers it in the
// CPU's order of p then q), so no two threads write one value and the sums are the CPU's, bit
// for bit. The global average sums in double as a tree, so it agrees to rounding.

// The window of output (op, oq), clipped to the plane, as the CPU's PoolShape::window.
#define WINDOW(op, oq)                                               \
    long long h0 = (long long)((op) * stride) - (long long)pad_h;   \
    long long w0 = (long long)((oq) * stride) - (long long)pad_w;   \
    u64 hs = h0 > 0 ? (u64)h0 : 0, ws = w0 > 0 ? (u64)w0 : 0;       \
    long long he_ = h0 + (long long)r < (long long)h ? h0 + (long long)r : (long long)h; \
    long long we_ = w0 + (long long)s < (long long)w ? w0 + (long long)s : (long long)w; \
    u64 he = he_ > 0 ? (u64)he_ : 0, we = we_ > 0 ? (u64)we_ : 0;

// The outputs whose window may cover input (ih, iw): rows [p_lo, p_hi) and columns [q_lo, q_hi).
#define COVERING(ih, iw)                                                                   \
    long long pn_ = (long long)(ih) + (long long)pad_h - (long long)r; /* may be negative */  \
    u64 p_lo = pn_ < 0 ? 0 : (u64)pn_ / stride + 1;                                        \
    u64 p_hi = ((ih) + pad_h) / stride + 1;                                                \
    if (p_hi > p) p_hi = p;                                                                \
    long long qn_ = (long long)(iw) + (long long)pad_w - (long long)s;                      \
    u64 q_lo = qn_ < 0 ? 0 : (u64)qn_ / stride + 1;                                        \
    u64 q_hi = ((iw) + pad_w) / stride + 1;                                                \
    if (q_hi > q) q_hi = q;

#define POOL_SHAPE u64 planes, u64 h, u64 w, u64 r, u64 s, u64 stride, u64 pad_h, u64 pad_w, u64 p, u64 q

extern "C" __global__ void avgpool_forward(float* out, const float* inp, POOL_SHAPE) {
    const float inv = 1.0f / (float)(r * s);
    GRID_STRIDE(i, planes * p * q) {
        u64 plane = i / (p * q), op = i / q % p, oq = i % q;
        const float* x = inp + plane * h * w;
        WINDOW(op, oq)
        float acc = 0.0f;
        for (u64 ih = hs; ih < he; ++ih)
            for (u64 iw = ws; iw < we; ++iw) acc += x[ih * w + iw];
        out[i] = acc * inv;
    }
}

extern "C" __global__ void avgpool_backward(float* dinp, const float* dout, POOL_SHAPE) {
    const float inv = 1.0f / (float)(r * s);
    GRID_STRIDE(i, planes * h * w) {
        u64 plane = i / (h * w), ih = i / w % h, iw = i % w;
        const float* g = dout + plane * p * q;
        COVERING(ih, iw)
        float acc = 0.0f;
        for (u64 op = p_lo; op < p_hi; ++op)
            for (u64 oq = q_lo; oq < q_hi; ++oq) {
                WINDOW(op, oq)
                if (ih >= hs && ih < he && iw >= ws && iw < we) acc += g[op * q + oq] * inv;
            }
        dinp[i] = acc;
    }
}

// The first largest value of the window, and where it is in the plane.
extern "C" __global__ void maxpool_forward(float* out, unsigned* argmax, const float* inp, POOL_SHAPE) {
    GRID_STRIDE(i, planes * p * q) {
        u64 plane = i / (p * q), op = i / q % p, oq = i % q;
        const float* x = inp + plane * h * w;
        WINDOW(op, oq)
        float best = -1.0f / 0.0f;
        unsigned at = (unsigned)(hs * w + ws);
        for (u64 ih = hs; ih < he; ++ih)
            for (u64 iw = ws; iw < we; ++iw) {
                float v = x[ih * w + iw];
                if (v > best) {
                    best = v;
                    at = (unsigned)(ih * w + iw);
                }
            }
        out[i] = best;
        argmax[i] = at;
    }
}

extern "C" __global__ void maxpool_backward(float* dinp, const float* dout, const unsigned* argmax, POOL_SHAPE) {
    GRID_STRIDE(i, planes * h * w) {
        u64 plane = i / (h * w), ih = i / w % h, iw = i % w;
        const float* g = dout + plane * p * q;
        const unsigned* am = argmax + plane * p * q;
        COVERING(ih, iw)
        float acc = 0.0f;
        for (u64 op = p_lo; op < p_hi; ++op)
            for (u64 oq = q_lo; oq < q_hi; ++oq)
                if (am[op * q + oq] == (unsigned)(ih * w + iw)) acc += g[op * q + oq];
        dinp[i] = acc;
    }
}

// out[plane] = mean of the plane, one block per plane.
extern "C" __global__ void global_avgpool_forward(float* out, const float* inp, u64 hw) {
    const float* x = inp + (u64)blockIdx.x * hw;
    double acc = 0.0;
    for (u64 j = threadIdx.x; j < hw; j += blockDim.x) acc += (double)x[j];
    double total;
    BLOCK_REDUCE(double, acc, ADD, total);
    if (threadIdx.x == 0) out[blockIdx.x] = (float)(total / (double)hw);
}

extern "C" __global__ void global_avgpool_backward(float* dinp, const float* dout, u64 hw, u64 n) {
    const float inv = 1.0f / (float)hw;
    GRID_STRIDE(i, n) { dinp[i] = dout[i / hw] * inv; }
}

// out = a + b (the residual sum).
extern "C" __global__ void add(float* out, const float* a, const float* b, u64 n) {
    GRID_STRIDE(i, n) { out[i] = a[i] + b[i]; }
}

// Shake-Shake's shortcut paths (crates/nn/src/layers/subsample.rs): out[i, j] = x[i·stride + o,
// j·stride + o] per plane, 0 where that falls outside; one thread per output value.
extern "C" __global__ void shift_subsample_forward(float* out, const float* inp, u64 planes, u64 h, u64 w, u64 stride, u64 o,
                                                  u64 p, u64 q) {
    GRID_STRIDE(i, planes * p * q) {
        u64 plane = i / (p * q), y = i / q % p * stride + o, x = i % q * stride + o;
        out[i] = (y < h && x < w) ? inp[plane * h * w + y * w + x] : 0.0f;
    }
}

// Its backward, gathered per input value: the output that read it, or 0.
extern "C" __global__ void shift_subsample_backward(float* dinp, const float* dout, u64 planes, u64 h, u64 w, u64 stride,
                                                   u64 o, u64 p, u64 q) {
    GRID_STRIDE(i, planes * h * w) {
        u64 plane = i / (h * w), y = i / w % h, x = i % w;
        bool hit = y >= o && x >= o && (y - o) % stride == 0 && (x - o) % stride == 0 && (y - o) / stride < p &&
                   (x - o) / stride < q;
        dinp[i] = hit ? dout[plane * p * q + (y - o) / stride * q + (x - o) / stride] : 0.0f;
    }
}
