// Kernels on flat buffers: the SAM ascent and the base optimizers' updates over the parameter
// arena, element-wise, one grid-stride loop each. Every expression is written in the CPU
// engine's order (crates/optim) and compiled with --fmad=false, so each element's result is the
// CPU engine's to the bit. Plain CUDA C: it also compiles as C++ under the emulation header
// (crates/kernels-emu), which is how CI checks it without a GPU.

// ρ/‖v‖ from ‖v‖² on the device (0 for a zero vector), in double then float, as the CPU
// engine's `(rho as f64 / norm) as f32`: the host never reads the norm mid-step.
__device__ static inline float scale_to(const double* norm_sq, float target) {
    const double norm = sqrt(*norm_sq);
    return norm > 0.0 ? (float)((double)target / norm) : 0.0f;
}

// w_adv = w + scale·g, scale = ρ/‖g‖ (crates/optim/src/sam.rs ascent_point).
extern "C" __global__ void sam_ascent(float* w_adv, const float* w, const float* g, const double* norm_sq, float rho, u64 n) {
    const float scale = scale_to(norm_sq, rho);
    GRID_STRIDE(i, n) { w_adv[i] = w[i] + scale * g[i]; }
}

// ASAM: w_adv = w + scale·t·t·g with t = |w| + η and scale = ρ/‖t·g‖ (asam_ascent_point).
extern "C" __global__ void asam_ascent(float* w_adv, const float* w, const float* g, const double* tg_norm_sq, float rho,
                                       float eta, u64 n) {
    const float scale = scale_to(tg_norm_sq, rho);
    GRID_STRIDE(i, n) {
        float t = fabsf(w[i]) + eta;
        w_adv[i] = w[i] + scale * t * t * g[i];
    }
}

// Nesterov: m = β·m + g; w −= lr·(g + β·m) (crates/optim/src/base.rs).
extern "C" __global__ void nesterov_update(float* w, const float* g, float* m, float beta, float lr, u64 n) {
    GRID_STRIDE(i, n) {
        float mi = beta * m[i] + g[i];
        m[i] = mi;
        w[i] = w[i] - lr * (g[i] + beta * mi);
    }
}

// Heavy-ball momentum: m = β·m + g; w −= lr·m.
extern "C" __global__ void momentum_update(float* w, const float* g, float* m, float beta, float lr, u64 n) {
    GRID_STRIDE(i, n) {
        float mi = beta * m[i] + g[i];
        m[i] = mi;
        w[i] = w[i] - lr * mi;
    }
}

// RMSProp (the reference's, v starting at 1): v = β₂·v + (1 − β₂)·g²; m = β·m + g/√(v + ε);
// w −= lr·m.
extern "C" __global__ void rmsprop_update(float* w, const float* g, float* m, float* v, float beta, float beta2,
                                          float eps, float lr, u64 n) {
    GRID_STRIDE(i, n) {
        float gi = g[i];
        float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        v[i] = vi;
        float mi = beta * m[i] + gi / sqrtf(vi + eps);
        m[i] = mi;
        w[i] = w[i] - lr * mi;
    }
}

// x *= s (gradient clipping, decoupled weight decay).
extern "C" __global__ void scale(float* x, float s, u64 n) {
    GRID_STRIDE(i, n) { x[i] = x[i] * s; }
}

// Clipping (clip_by_global_norm): x = x·(max/‖x‖) when ‖x‖ ≥ max > 0, the norm from ‖x‖² on the
// device; otherwise x is left as it is.
extern "C" __global__ void clip_to_norm(float* x, const double* norm_sq, float max_norm, u64 n) {
    const double norm = sqrt(*norm_sq);
    if (!(max_norm > 0.0f && norm >= (double)max_norm && norm > 0.0)) return;
    const float s = scale_to(norm_sq, max_norm);
    GRID_STRIDE(i, n) { x[i] = x[i] * s; }
}

// x = v (zeroing an accumulator that a device's memset cannot reach from an operation: col2im's
// input gradient, a gradient arena).
extern "C" __global__ void fill(float* x, float v, u64 n) {
    GRID_STRIDE(i, n) { x[i] = v; }
}

// dst = src (a shortcut's zero-padded channels, a gradient passed through).
extern "C" __global__ void copy(float* dst, const float* src, u64 n) {
    GRID_STRIDE(i, n) { dst[i] = src[i]; }
}

// y += a·x (the L2 term of the gradient: g += wd·w over the decayed ranges).
extern "C" __global__ void axpy(float* y, float a, const float* x, u64 n) {
    GRID_STRIDE(i, n) { y[i] = y[i] + a * x[i]; }
}

// avg = (1 − d)·x + d·avg (the parameters' exponential moving average, crates/optim/src/ema.rs).
extern "C" __global__ void ema_update(float* avg, const float* x, float d, u64 n) {
    GRID_STRIDE(i, n) { avg[i] = (1.0f - d) * x[i] + d * avg[i]; }
}
