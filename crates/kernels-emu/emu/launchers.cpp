// One C entry point per kernel for the Rust side (src/lib.rs): the launch shape, then the
// kernel's own parameters. The kernels are the very files NVRTC compiles.
#include "cuda_emu.h"

#include "../../kernels/cu/common.cuh"
#include "../../kernels/cu/flat.cu"
#include "../../kernels/cu/reduce.cu"
#include "../../kernels/cu/activation.cu"
#include "../../kernels/cu/loss.cu"
#include "../../kernels/cu/dropout.cu"

#define LAUNCHER(kernel, params, ...) \
    extern "C" void emu_##kernel(unsigned grid, unsigned block, params) { emu::launch(kernel, grid, block, __VA_ARGS__); }
#define P(...) __VA_ARGS__

LAUNCHER(sam_ascent, P(float* a, const float* w, const float* g, float s, u64 n), a, w, g, s, n)
LAUNCHER(asam_ascent, P(float* a, const float* w, const float* g, float s, float eta, u64 n), a, w, g, s, eta, n)
LAUNCHER(nesterov_update, P(float* w, const float* g, float* m, float beta, float lr, u64 n), w, g, m, beta, lr, n)
LAUNCHER(momentum_update, P(float* w, const float* g, float* m, float beta, float lr, u64 n), w, g, m, beta, lr, n)
LAUNCHER(rmsprop_update, P(float* w, const float* g, float* m, float* v, float b, float b2, float eps, float lr, u64 n),
         w, g, m, v, b, b2, eps, lr, n)
LAUNCHER(scale, P(float* x, float s, u64 n), x, s, n)
LAUNCHER(axpy, P(float* y, float a, const float* x, u64 n), y, a, x, n)
LAUNCHER(ema_update, P(float* avg, const float* x, float d, u64 n), avg, x, d, n)
LAUNCHER(sum_squares_blocks, P(const float* x, u64 n, double* partials), x, n, partials)
LAUNCHER(asam_norm_blocks, P(const float* w, const float* g, float eta, u64 n, double* partials), w, g, eta, n, partials)
LAUNCHER(sum_partials, P(const double* partials, u64 n, double* out), partials, n, out)
LAUNCHER(relu_forward, P(float* out, const float* inp, u64 n), out, inp, n)
LAUNCHER(relu_backward, P(float* dinp, const float* dout, const float* out, u64 n), dinp, dout, out, n)
LAUNCHER(sigmoid_forward, P(float* out, const float* inp, u64 n), out, inp, n)
LAUNCHER(sigmoid_backward, P(float* dinp, const float* dout, const float* out, u64 n), dinp, dout, out, n)
LAUNCHER(silu_forward, P(float* out, const float* inp, u64 n), out, inp, n)
LAUNCHER(silu_backward, P(float* dinp, const float* dout, const float* inp, u64 n), dinp, dout, inp, n)
LAUNCHER(softmax_xent_forward,
         P(const float* z, const unsigned* labels, float eps, u64 k, float* probs, float* losses, double* losses64),
         z, labels, eps, k, probs, losses, losses64)
LAUNCHER(softmax_xent_backward, P(float* d, const float* probs, const unsigned* labels, float eps, float scale, u64 k, u64 nk),
         d, probs, labels, eps, scale, k, nk)
LAUNCHER(dropout_forward, P(float* out, float* mask, const float* inp, u64 base, float rate, float keep, u64 n),
         out, mask, inp, base, rate, keep, n)
LAUNCHER(dropout_backward, P(float* dinp, const float* dout, const float* mask, u64 n), dinp, dout, mask, n)
