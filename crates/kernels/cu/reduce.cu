// Reductions in double precision, as the CPU engine's norms are: each block sums its grid-stride
// share into one partial (a tree in shared memory), and `sum_partials` adds the partials in one
// block. Two launches, no atomics: the result does not depend on scheduling, so a step is
// repeatable on one GPU. The block size is REDUCE_BLOCK (crates/kernels/src/launch.rs), a power
// of two. Plain CUDA C; see flat.cu on the emulation.

typedef unsigned long long u64;

#define REDUCE_BLOCK 256

// Adds every thread's `acc` over the block; thread 0 gets the total.
#define BLOCK_SUM(acc, out)                                        \
    do {                                                           \
        __shared__ double part[REDUCE_BLOCK];                      \
        part[threadIdx.x] = (acc);                                 \
        __syncthreads();                                           \
        for (unsigned s = blockDim.x / 2; s > 0; s /= 2) {         \
            if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s]; \
            __syncthreads();                                       \
        }                                                          \
        if (threadIdx.x == 0) (out) = part[0];                     \
    } while (0)

// partials[block] = Σ x² over the block's share (the global norm, before its square root).
extern "C" __global__ void sum_squares_blocks(const float* x, u64 n, double* partials) {
    double acc = 0.0;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        double v = (double)x[i];
        acc += v * v;
    }
    BLOCK_SUM(acc, partials[blockIdx.x]);
}

// partials[block] = Σ ((|w| + η)·g)² (ASAM's normalised gradient norm; t formed in float, as the
// CPU engine forms it).
extern "C" __global__ void asam_norm_blocks(const float* w, const float* g, float eta, u64 n, double* partials) {
    double acc = 0.0;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        double v = (double)(fabsf(w[i]) + eta) * (double)g[i];
        acc += v * v;
    }
    BLOCK_SUM(acc, partials[blockIdx.x]);
}

// out[0] = Σ partials, in one block.
extern "C" __global__ void sum_partials(const double* partials, u64 n, double* out) {
    double acc = 0.0;
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) acc += partials[i];
    BLOCK_SUM(acc, out[0]);
}
