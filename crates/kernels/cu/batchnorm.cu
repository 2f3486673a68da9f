// Batch norm (crates/tensor/src/batchnorm.rs), one block per channel. The layout is given by two
// strides: element j of channel c is at c·cstride + j·estride, so one kernel serves the CPU
// engine's (C, N, H, W) (cstride = m, estride = 1) and NHWC (cstride = 1, estride = C). The
// per-channel sums are trees in double where the CPU sums eight float lanes per 1024 values, so
// results agree with the CPU's to rounding, not to the bit.

#define AT(p, c, j) (p)[(u64)(c) * cstride + (u64)(j) * estride]

// out = [relu]((x − mean)·rstd·scale + bias); mean, var (biased) and rstd per channel.
extern "C" __global__ void batchnorm_forward_train(float* out, float* mean, float* var, float* rstd, const float* inp,
                                                   const float* scale, const float* bias, float eps, unsigned relu, u64 m,
                                                   u64 cstride, u64 estride) {
    const unsigned c = blockIdx.x;
    double s = 0.0;
    for (u64 j = threadIdx.x; j < m; j += blockDim.x) s += (double)AT(inp, c, j);
    double sum;
    BLOCK_REDUCE(double, s, ADD, sum);
    const double mu = sum / (double)m;
    const float muf = (float)mu;
    double q = 0.0;
    for (u64 j = threadIdx.x; j < m; j += blockDim.x) {
        float d = AT(inp, c, j) - muf;
        q += (double)(d * d);
    }
    double sq;
    BLOCK_REDUCE(double, q, ADD, sq);
    const double v = sq / (double)m;
    const double r = 1.0 / sqrt(v + (double)eps);
    if (threadIdx.x == 0) {
        mean[c] = (float)mu;
        var[c] = (float)v;
        rstd[c] = (float)r;
    }
    const float a = (float)(r * (double)scale[c]);
    const float b = (float)((double)bias[c] - mu * r * (double)scale[c]);
    for (u64 j = threadIdx.x; j < m; j += blockDim.x) {
        float y = AT(inp, c, j) * a + b;
        AT(out, c, j) = relu ? fmaxf(y, 0.0f) : y;
    }
}

// With running statistics (evaluation, frozen statistics).
extern "C" __global__ void batchnorm_forward_eval(float* out, const float* inp, const float* scale, const float* bias,
                                                  const float* running_mean, const float* running_var, float eps,
                                                  unsigned relu, u64 m, u64 cstride, u64 estride) {
    const unsigned c = blockIdx.x;
    const double r = 1.0 / sqrt((double)running_var[c] + (double)eps);
    const float a = (float)(r * (double)scale[c]);
    const float b = (float)((double)bias[c] - (double)running_mean[c] * r * (double)scale[c]);
    for (u64 j = threadIdx.x; j < m; j += blockDim.x) {
        float y = AT(inp, c, j) * a + b;
        AT(out, c, j) = relu ? fmaxf(y, 0.0f) : y;
    }
}

// Backward of the training forward: dinp overwritten, dscale and dbias accumulated. With relu,
// the forward's output masks the incoming gradient.
extern "C" __global__ void batchnorm_backward(float* dinp, float* dscale, float* dbias, const float* dout, const float* out,
                                              const float* inp, const float* mean, const float* rstd, const float* scale,
                                              unsigned relu, u64 m, u64 cstride, u64 estride) {
    const unsigned c = blockIdx.x;
    const float mu = mean[c], rs = rstd[c];
    double sg = 0.0, sgx = 0.0;
    for (u64 j = threadIdx.x; j < m; j += blockDim.x) {
        float g = (relu && !(AT(out, c, j) > 0.0f)) ? 0.0f : AT(dout, c, j);
        sg += (double)g;
        sgx += (double)(g * (AT(inp, c, j) - mu));
    }
    double sum_g, sum_gx;
    BLOCK_REDUCE(double, sg, ADD, sum_g);
    BLOCK_REDUCE(double, sgx, ADD, sum_gx);
    const double sum_g_xhat = sum_gx * (double)rs;
    if (threadIdx.x == 0) {
        dscale[c] += (float)sum_g_xhat;
        dbias[c] += (float)sum_g;
    }
    const float k = scale[c] * rs;
    const float mean_g = (float)(sum_g / (double)m);
    const float mean_gxhat = (float)(sum_g_xhat / (double)m);
    const float kx = k * rs * mean_gxhat;
    for (u64 j = threadIdx.x; j < m; j += blockDim.x) {
        float g = (relu && !(AT(out, c, j) > 0.0f)) ? 0.0f : AT(dout, c, j);
        AT(dinp, c, j) = k * (g - mean_g) - kx * (AT(inp, c, j) - mu);
    }
}

// The backward of the evaluation forward (frozen statistics: finetuning): the running statistics
// are constants, so per value dinp = g·scale·rs, and dscale += Σ g·(x − μ)·rs, dbias += Σ g
// (crates/tensor/src/batchnorm.rs batchnorm_backward_eval, each product in its order; the sums in
// double as a tree). `mean` and `var` are the running statistics the forward used.
extern "C" __global__ void batchnorm_backward_eval(float* dinp, float* dscale, float* dbias, const float* dout,
                                                   const float* out, const float* inp, const float* mean,
                                                   const float* var, const float* scale, float eps, unsigned relu,
                                                   u64 m, u64 cstride, u64 estride) {
    const unsigned c = blockIdx.x;
    const float mu = mean[c], rs = 1.0f / sqrtf(var[c] + eps);
    double sg = 0.0, sgx = 0.0;
    for (u64 j = threadIdx.x; j < m; j += blockDim.x) {
        float g = (relu && AT(out, c, j) <= 0.0f) ? 0.0f : AT(dout, c, j);
        sg += (double)g;
        sgx += (double)(g * (AT(inp, c, j) - mu) * rs);
        AT(dinp, c, j) = g * scale[c] * rs;
    }
    double sum_g, sum_gx;
    BLOCK_REDUCE(double, sg, ADD, sum_g);
    BLOCK_REDUCE(double, sgx, ADD, sum_gx);
    if (threadIdx.x == 0) {
        dscale[c] += (float)sum_gx;
        dbias[c] += (float)sum_g;
    }
}

// The same forward and backward for channels of many values, split: one block per channel
// leaves most of a GPU idle when channels are few and long (on an H200, ResNet-50's batch norms
// at batch 256 took 45 % of its step that way). Each channel's values are cut into `parts`
// chunks, one block each, whose sums go to `partials` (double, in the launcher's scratch); one
// thread per channel then adds its parts in order, and the per-value work is one thread per
// value. `scratch` holds, after the C·parts partials (2·C·parts in the backward), per-channel
// doubles: the mean, then two coefficients.

// partials[c·parts + part] = Σ over the part's values of x, or of (x − (float)center[c])².
extern "C" __global__ void bn_part_sums(double* partials, const double* center, const float* inp, unsigned square, u64 parts,
                                        u64 m, u64 cstride, u64 estride) {
    const u64 b = blockIdx.x, c = b / parts, part = b % parts, chunk = (m + parts - 1) / parts;
    const u64 lo = part * chunk, hi = lo + chunk < m ? lo + chunk : m;
    const float mu = square ? (float)center[c] : 0.0f;
    double s = 0.0;
    for (u64 j = lo + threadIdx.x; j < hi; j += blockDim.x) {
        float d = AT(inp, c, j) - mu;
        s += square ? (double)(d * d) : (double)d;
    }
    double total;
    BLOCK_REDUCE(double, s, ADD, total);
    if (threadIdx.x == 0) partials[b] = total;
}

// Per channel, its parts added in order. Stage 0: the mean into scratch (center). Stage 1: the
// variance, rstd and the statistics out, and the affine coefficients a = rstd·γ, b = β − μ·a
// into scratch, as the one-block kernel computes them.
extern "C" __global__ void bn_part_stats(double* scratch, float* mean, float* var, float* rstd, const float* scale,
                                         const float* bias, float eps, unsigned stage, u64 parts, u64 m, u64 channels) {
    double* center = scratch + channels * parts;
    double* coef = center + channels;
    GRID_STRIDE(c, channels) {
        double t = 0.0;
        for (u64 k = 0; k < parts; ++k) t += scratch[c * parts + k];
        if (stage == 0) {
            center[c] = t / (double)m;
        } else {
            const double mu = center[c], v = t / (double)m, r = 1.0 / sqrt(v + (double)eps);
            mean[c] = (float)mu;
            var[c] = (float)v;
            rstd[c] = (float)r;
            coef[c] = r * (double)scale[c];
            coef[channels + c] = (double)bias[c] - mu * r * (double)scale[c];
        }
    }
}

// The channel of the value at offset i: (C, N, H, W) when estride is 1, else NHWC (estride = C).
// In 32 bits (batchnorm.rs refuses more values): a 64-bit division is a long routine on a GPU.
#define CHANNEL_OF(i) ((estride == 1) ? (unsigned)(i) / (unsigned)m : (unsigned)(i) % (unsigned)estride)

// out = [relu](x·a + b) per value, a and b its channel's.
extern "C" __global__ void bn_part_apply(float* out, const float* inp, const double* coef, unsigned relu, u64 channels, u64 m,
                                         u64 cstride, u64 estride) {
    (void)cstride;
    GRID_STRIDE(i, channels * m) {
        const u64 c = CHANNEL_OF(i);
        float y = inp[i] * (float)coef[c] + (float)coef[channels + c];
        out[i] = relu ? fmaxf(y, 0.0f) : y;
    }
}

// The backward's sums, per part: partials[2b] = Σ g, partials[2b + 1] = Σ g·(x − μ), g masked
// by the forward's output with relu.
extern "C" __global__ void bn_part_grad_sums(double* partials, const float* dout, const float* out, const float* inp,
                                             const float* mean, unsigned relu, u64 parts, u64 m, u64 cstride, u64 estride) {
    const u64 b = blockIdx.x, c = b / parts, part = b % parts, chunk = (m + parts - 1) / parts;
    const u64 lo = part * chunk, hi = lo + chunk < m ? lo + chunk : m;
    const float mu = mean[c];
    double sg = 0.0, sgx = 0.0;
    for (u64 j = lo + threadIdx.x; j < hi; j += blockDim.x) {
        float g = (relu && !(AT(out, c, j) > 0.0f)) ? 0.0f : AT(dout, c, j);
        sg += (double)g;
        sgx += (double)(g * (AT(inp, c, j) - mu));
    }
    double sum_g, sum_gx;
    BLOCK_REDUCE(double, sg, ADD, sum_g);
    BLOCK_REDUCE(double, sgx, ADD, sum_gx);
    if (threadIdx.x == 0) {
        partials[2 * b] = sum_g;
        partials[2 * b + 1] = sum_gx;
    }
}

// Per channel: dscale and dbias accumulated, and the coefficients of dinp = k·(g − mean_g) −
// kx·(x − μ) into scratch (after the 2·C·parts partials: k, mean_g, kx per channel), as the
// one-block kernel computes them.
extern "C" __global__ void bn_part_grad_stats(double* scratch, float* dscale, float* dbias, const float* rstd,
                                              const float* scale, u64 parts, u64 m, u64 channels) {
    double* coef = scratch + 2 * channels * parts;
    GRID_STRIDE(c, channels) {
        double sum_g = 0.0, sum_gx = 0.0;
        for (u64 k = 0; k < parts; ++k) {
            sum_g += scratch[2 * (c * parts + k)];
            sum_gx += scratch[2 * (c * parts + k) + 1];
        }
        const float rs = rstd[c];
        const double sum_g_xhat = sum_gx * (double)rs;
        dscale[c] += (float)sum_g_xhat;
        dbias[c] += (float)sum_g;
        const float k = scale[c] * rs;
        const float mean_gxhat = (float)(sum_g_xhat / (double)m);
        coef[c] = (double)k;
        coef[channels + c] = (double)(float)(sum_g / (double)m);
        coef[2 * channels + c] = (double)(k * rs * mean_gxhat);
    }
}

extern "C" __global__ void bn_part_grad_apply(float* dinp, const float* dout, const float* out, const float* inp,
                                              const float* mean, const double* coef, unsigned relu, u64 channels, u64 m,
                                              u64 cstride, u64 estride) {
    (void)cstride;
    GRID_STRIDE(i, channels * m) {
        const u64 c = CHANNEL_OF(i);
        float g = (relu && !(out[i] > 0.0f)) ? 0.0f : dout[i];
        const float k = (float)coef[c], mean_g = (float)coef[channels + c], kx = (float)coef[2 * channels + c];
        dinp[i] = k * (g - mean_g) - kx * (inp[i] - mean[c]);
    }
}
