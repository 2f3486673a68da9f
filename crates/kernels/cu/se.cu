// Squeeze-excite's own steps around its two small GEMMs (crates/kernels/src/squeeze_excite.rs;
// the CPU's crates/nn/src/layers/squeeze_excite.rs). The pooled map, the reduced and expanded
// maps and the gates are (features, N), as on the CPU; the forward's per-plane scaling is
// scale_planes (dense.cu). Sums in double, in the CPU's order.

// out (rows × n) += b[row]: the 1×1 convolutions' bias on a (features, N) map.
extern "C" __global__ void add_row_bias(float* out, const float* b, u64 n, u64 total) {
    GRID_STRIDE(i, total) { out[i] = out[i] + b[i / n]; }
}

// db[row] += Σ_n d[row, n]: that bias's gradient, one thread a row.
extern "C" __global__ void add_row_sums(float* db, const float* d, u64 n, u64 rows) {
    GRID_STRIDE(row, rows) {
        double acc = 0.0;
        for (u64 j = 0; j < n; ++j) acc += (double)d[row * n + j];
        db[row] = db[row] + (float)acc;
    }
}

// out[plane] = Σ_hw dout·x over the plane (the gate's gradient), one block a plane.
extern "C" __global__ void plane_dot(float* out, const float* dout, const float* x, u64 hw) {
    const u64 base = (u64)blockIdx.x * hw;
    double acc = 0.0;
    for (u64 j = threadIdx.x; j < hw; j += blockDim.x) acc += (double)dout[base + j] * (double)x[base + j];
    double total;
    BLOCK_REDUCE(double, acc, ADD, total);
    if (threadIdx.x == 0) out[blockIdx.x] = (float)total;
}

// dinp = dout·g[plane] + ds[plane]/hw: the gated path and the pooled path's gradient together.
extern "C" __global__ void se_input_backward(float* dinp, const float* dout, const float* g, const float* ds, u64 hw, u64 n) {
    GRID_STRIDE(i, n) {
        const u64 p = i / hw;
        dinp[i] = dout[i] * g[p] + ds[p] / (float)hw;
    }
}
