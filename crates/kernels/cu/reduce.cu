// Reductions in double precision, as the CPU engine's norms are: each block sums its grid-stride
// share into one partial (a tree in shared memory), and `sum_partials` adds the partials in one
// block. Two launches, no atomics: the result does not depend on scheduling, so a step is
// repeatable on one GPU. The block size is REDUCE_BLOCK (common.cuh). Plain CUDA C; see flat.cu
// on the emulation.

// partials[block] = Σ x² over the block's share (the global norm, before its square root).
extern "C" __global__ void sum_squares_blocks(const float* x, u64 n, double* partials) {
    double acc = 0.0;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        double v = (double)x[i];
        acc += v * v;
    }
    double total;
    BLOCK_REDUCE(double, acc, ADD, total);
    if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// partials[block] = Σ ((|w| + η)·g)² (ASAM's normalised gradient norm; t formed in float, as the
// CPU engine forms it).
extern "C" __global__ void asam_norm_blocks(const float* w, const float* g, float eta, u64 n, double* partials) {
    double acc = 0.0;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        double v = (double)(fabsf(w[i]) + eta) * (double)g[i];
        acc += v * v;
    }
    double total;
    BLOCK_REDUCE(double, acc, ADD, total);
    if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// out[0] = Σ partials, in one block.
extern "C" __global__ void sum_partials(const double* partials, u64 n, double* out) {
    double acc = 0.0;
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) acc += partials[i];
    double total;
    BLOCK_REDUCE(double, acc, ADD, total);
    if (threadIdx.x == 0) out[0] = total;
}

// out[0] = the number of non-zero flags (a count of misclassified examples), in one block.
extern "C" __global__ void count_flags(const unsigned* flags, u64 n, double* out) {
    double acc = 0.0;
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) acc += flags[i] != 0 ? 1.0 : 0.0;
    double total;
    BLOCK_REDUCE(double, acc, ADD, total);
    if (threadIdx.x == 0) out[0] = total;
}
