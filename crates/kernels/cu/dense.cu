// The rest of a step around the GEMMs (crates/nn/src/layers/{linear,shake}.rs,
// crates/train/src/step.rs): the dense layer's bias, per-plane scaling (ShakeDrop, Shake-Shake,
// drop-connect, squeeze-excite), and counting wrong predictions. Copies, products in the CPU's
// order and in-order double sums: bitwise.

// out (rows × k): every row the bias b.
extern "C" __global__ void broadcast_bias(float* out, const float* b, u64 k, u64 n) {
    GRID_STRIDE(i, n) { out[i] = b[i % k]; }
}

// db[col] += Σ_rows dout[row, col], each column in row order in double (one thread a column).
extern "C" __global__ void add_bias_gradient(float* db, const float* dout, u64 rows, u64 k) {
    GRID_STRIDE(col, k) {
        double acc = 0.0;
        for (u64 r = 0; r < rows; ++r) acc += (double)dout[r * k + col];
        db[col] = db[col] + (float)acc;
    }
}

// out = coef[plane mod ncoef]·x, planes of hw values: per example (ShakeDrop: ncoef = N, in
// (C, N, H, W) plane c·N + n is example n) or per (channel, example) (squeeze-excite: ncoef = C·N).
extern "C" __global__ void scale_planes(float* out, const float* x, const float* coef, u64 hw, u64 ncoef, u64 n) {
    GRID_STRIDE(i, n) { out[i] = coef[(i / hw) % ncoef] * x[i]; }
}

// Shake-Shake's mix: out = g·a + (1 − g)·b, g = coef[plane mod ncoef] (per example).
extern "C" __global__ void mix_planes(float* out, const float* a, const float* b, const float* coef, u64 hw, u64 ncoef, u64 n) {
    GRID_STRIDE(i, n) {
        float g = coef[(i / hw) % ncoef];
        out[i] = g * a[i] + (1.0f - g) * b[i];
    }
}

// wrong[row] = 1 where the row's first largest logit is not the label, else 0.
extern "C" __global__ void count_errors(unsigned* wrong, const float* logits, const unsigned* labels, u64 k, u64 rows) {
    GRID_STRIDE(row, rows) {
        const float* z = logits + row * k;
        u64 best = 0;
        float top = -1.0f / 0.0f;
        for (u64 j = 0; j < k; ++j)
            if (z[j] > top) {
                top = z[j];
                best = j;
            }
        wrong[row] = best != (u64)labels[row] ? 1u : 0u;
    }
}
