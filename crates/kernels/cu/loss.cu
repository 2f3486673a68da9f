// Softmax cross-entropy with label smoothing (crates/tensor/src/loss.rs): logits (n × k) row
// major, one block per example. The log-sum-exp and the loss are in double, as on the CPU; the
// sums run as trees instead of in class order, so results agree with the CPU to rounding.

// The smoothed one-hot target of `label` at class j: ε/k, plus 1 − ε at the label.
__device__ double smoothed_target(unsigned label, u64 j, float smoothing, u64 k) {
    return (double)smoothing / (double)k + (j == (u64)label ? 1.0 - (double)smoothing : 0.0);
}

// probs = softmax(z); losses[i] = −Σ_j t_j·log p_j (and in double, for the mean).
extern "C" __global__ void softmax_xent_forward(const float* logits, const unsigned* labels, float smoothing, u64 k,
                                                float* probs, float* losses, double* losses64) {
    const u64 row = blockIdx.x;
    const float* z = logits + row * k;
    float m = NEG_HUGE; // below every finite logit (NVRTC has no <math.h> INFINITY)
    for (u64 j = threadIdx.x; j < k; j += blockDim.x) m = fmaxf(m, z[j]);
    float zmax;
    BLOCK_REDUCE(float, m, MAXF, zmax);
    double s = 0.0;
    for (u64 j = threadIdx.x; j < k; j += blockDim.x) s += exp((double)z[j] - (double)zmax);
    double sum;
    BLOCK_REDUCE(double, s, ADD, sum);
    const double lse = (double)zmax + log(sum);
    double loss = 0.0;
    for (u64 j = threadIdx.x; j < k; j += blockDim.x) {
        double logp = (double)z[j] - lse;
        probs[row * k + j] = (float)exp(logp);
        loss -= smoothed_target(labels[row], j, smoothing, k) * logp;
    }
    double total;
    BLOCK_REDUCE(double, loss, ADD, total);
    if (threadIdx.x == 0) {
        losses[row] = (float)total;
        losses64[row] = total;
    }
}

// dlogits = (probs − t)·scale, element-wise over n·k (scale is 1/N for the mean loss).
extern "C" __global__ void softmax_xent_backward(float* dlogits, const float* probs, const unsigned* labels, float smoothing,
                                                 float scale, u64 k, u64 nk) {
    GRID_STRIDE(i, nk) {
        u64 row = i / k, j = i % k;
        dlogits[i] = (probs[i] - (float)smoothed_target(labels[row], j, smoothing, k)) * scale;
    }
}
