// Depthwise convolution (crates/tensor/src/depthwise/): (C, N, H, W) activations, weights
// (R, S, C) as Flax stores them, TensorFlow's SAME padding. Forward one thread per output over
// (r, s); the input gradient one thread per input, gathered over (r, s). The weight gradient has
// two forms: the reference, one thread per (channel, tap) summing all (n, p, q) in order; and
// the block form used for kernels up to 5×5, blocks over chunks of a channel's outputs, every
// tap summed at once (a tree in shared memory), chunks added in order. The reference left most
// of a GPU idle: its c·r·s threads each walked the whole batch (89 % of an EfficientNet-B0 step
// on an H200). The self-test holds both to the CPU's vectorised sums within the GEMM tolerance.

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

// The reference: dweight[tap, ch] += Σ_{n, p, q} dout·x, summed in float in (n, p, q) order.
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

// The block form's largest kernel (crates/kernels/src/conv.rs DW_MAX_SIDE): each thread keeps
// one sum per tap in registers (the tap loops unroll to constant indices).
#define DW_MAX_SIDE 5
#define DW_MAX_TAPS (DW_MAX_SIDE * DW_MAX_SIDE)

// Block b sums, for channel b / parts, the taps' products over chunk b % parts of its n·p·q
// outputs: each thread its strided share in float, then one tree over the block for all taps
// at once. With one part the block adds its sums to dweight; otherwise it leaves them in
// partials[b·r·s + tap] for depthwise_weight_add. 32-bit positions (conv.rs checks the sizes).
extern "C" __global__ void depthwise_weight_parts(float* dweight, double* partials, const float* dout, const float* inp,
                                                  CONV_SHAPE, u64 parts) {
    (void)groups;  // = c: one group per channel
    __shared__ float sums[DW_MAX_TAPS * REDUCE_BLOCK];
    const unsigned b = blockIdx.x, ch = b / (unsigned)parts, part = b % (unsigned)parts;
    const unsigned m = (unsigned)(n * p * q), chunk = (m + (unsigned)parts - 1) / (unsigned)parts;
    const unsigned lo = part * chunk, hi = lo + chunk < m ? lo + chunk : m;
    const unsigned taps = (unsigned)(r * s), hw = (unsigned)(h * w), pq = (unsigned)(p * q);
    float acc[DW_MAX_TAPS];
    for (unsigned t = 0; t < DW_MAX_TAPS; ++t) acc[t] = 0.0f;
    for (unsigned j = lo + threadIdx.x; j < hi; j += blockDim.x) {
        const unsigned ni = j / pq, pi = j % pq / (unsigned)q, qi = j % (unsigned)q;
        const float g = dout[((unsigned)ch * (unsigned)n + ni) * pq + pi * (unsigned)q + qi];
        const float* x = inp + ((unsigned)ch * (unsigned)n + ni) * hw;
#pragma unroll
        for (unsigned kr = 0; kr < DW_MAX_SIDE; ++kr) {
            const int ih = (int)(pi * (unsigned)stride + kr) - (int)pad_h;
            if (kr >= r || ih < 0 || ih >= (int)h) continue;
#pragma unroll
            for (unsigned ks = 0; ks < DW_MAX_SIDE; ++ks) {
                const int iw = (int)(qi * (unsigned)stride + ks) - (int)pad_w;
                if (ks >= s || iw < 0 || iw >= (int)w) continue;
                acc[kr * DW_MAX_SIDE + ks] += g * x[(unsigned)ih * (unsigned)w + (unsigned)iw];
            }
        }
    }
#pragma unroll
    for (unsigned kr = 0; kr < DW_MAX_SIDE; ++kr) {
#pragma unroll
        for (unsigned ks = 0; ks < DW_MAX_SIDE; ++ks) {
            if (kr < r && ks < s) sums[(kr * (unsigned)s + ks) * REDUCE_BLOCK + threadIdx.x] = acc[kr * DW_MAX_SIDE + ks];
        }
    }
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
        for (unsigned u = threadIdx.x; u < taps * half; u += blockDim.x) {
            const unsigned at = u / half * REDUCE_BLOCK + u % half;
            sums[at] += sums[at + half];
        }
        __syncthreads();
    }
    if (threadIdx.x < taps) {
        const float total = sums[threadIdx.x * REDUCE_BLOCK];
        if (parts == 1) {
            dweight[threadIdx.x * c + ch] += total;
        } else {
            partials[(u64)b * taps + threadIdx.x] = (double)total;
        }
    }
}

// One thread per (tap, channel): dweight[tap, ch] += its parts' sums, added in order in double.
extern "C" __global__ void depthwise_weight_add(float* dweight, const double* partials, u64 c, u64 taps, u64 parts) {
    GRID_STRIDE(i, c * taps) {
        const u64 tap = i / c, ch = i % c;
        double total = 0.0;
        for (u64 part = 0; part < parts; ++part) total += partials[(ch * parts + part) * taps + tap];
        dweight[i] = dweight[i] + (float)total;
    }
}
