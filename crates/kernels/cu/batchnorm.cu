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
