// Put before every kernel source (crates/kernels/src/lib.rs does so for NVRTC; the emulation's
// launchers.cpp includes it once): the types and block-level helpers the kernels share.

typedef unsigned long long u64;

// Threads per block of the reductions and the per-row kernels: REDUCE_BLOCK in
// crates/kernels/src/launch.rs, a power of two.
#define REDUCE_BLOCK 256

// One grid-stride loop over n elements.
#define GRID_STRIDE(i, n) \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (u64)gridDim.x * blockDim.x)

// Combines every thread's `value` over the block with OP (a tree in shared memory of TYPE);
// every thread then reads the result from `out`. Called by all threads of the block.
#define BLOCK_REDUCE(TYPE, value, OP, out)                                   \
    do {                                                                     \
        __shared__ TYPE part[REDUCE_BLOCK];                                  \
        part[threadIdx.x] = (value);                                         \
        __syncthreads();                                                     \
        for (unsigned half_ = blockDim.x / 2; half_ > 0; half_ /= 2) {       \
            if (threadIdx.x < half_) part[threadIdx.x] = OP(part[threadIdx.x], part[threadIdx.x + half_]); \
            __syncthreads();                                                 \
        }                                                                    \
        (out) = part[0];                                                     \
        __syncthreads();                                                     \
    } while (0)

#define ADD(a, b) ((a) + (b))
#define MAXF(a, b) fmaxf((a), (b))

// The most negative finite float: the neutral start of a max.
#define NEG_HUGE (-3.402823466e+38f)

// A convolution's sizes as kernel parameters (crates/kernels/src/conv.rs ConvShape::args).
#define CONV_SHAPE u64 n, u64 c, u64 h, u64 w, u64 r, u64 s, u64 stride, u64 pad_h, u64 pad_w, u64 p, u64 q, u64 groups
