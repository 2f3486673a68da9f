// Image patches as GEMM operands (crates/tensor/src/im2col.rs), (C, N, H, W) activations, HWIO
// kernels: im2col writes col (R·S·Cg × N·P·Q), row (r, s, ci), column (n, p, q), the input value
// or zero outside the image; col2im adds it back. One thread per col value forward; col2im
// gathers per input value over (r, s) in the CPU's order, so no two threads write one value and
// the sums are the CPU's, bit for bit. Both are copies and adds: bitwise.

// Index arithmetic is 32-bit (conv.rs refuses sizes past u32): on a GPU a 64-bit division is a
// long software routine and these kernels are mostly index arithmetic (on an H200, im2col with
// 64-bit indices took 44 % of a WRN-28-10 step). The loop index stays u64.

// col for the channel group starting at c0.
extern "C" __global__ void im2col(float* col, const float* inp, CONV_SHAPE, u64 c0) {
    const unsigned cg = (unsigned)(c / groups), S = (unsigned)s, P = (unsigned)p, Q = (unsigned)q;
    const unsigned H = (unsigned)h, W = (unsigned)w, N = (unsigned)n, st = (unsigned)stride;
    const unsigned pq = P * Q, npq = N * pq;
    GRID_STRIDE(i, r * s * cg * npq) {
        const unsigned ii = (unsigned)i;
        const unsigned row = ii / npq, j = ii - row * npq;
        const unsigned ci = row % cg, tap = row / cg, ks = tap % S, kr = tap / S;
        const unsigned ni = j / pq, pqj = j - ni * pq, pi = pqj / Q, qi = pqj - pi * Q;
        const int ih = (int)(pi * st + kr) - (int)pad_h;
        const int iw = (int)(qi * st + ks) - (int)pad_w;
        const bool inside = ih >= 0 && ih < (int)H && iw >= 0 && iw < (int)W;
        col[i] = inside ? inp[((((unsigned)c0 + ci) * N + ni) * H + (unsigned)ih) * W + (unsigned)iw] : 0.0f;
    }
}

// The output index a tap of stride `st` reached input offset `off` from, or P (none).
__device__ static inline unsigned tap_source(int off, unsigned st, unsigned P) {
    if (off < 0) return P;
    const unsigned o = (unsigned)off, src = st == 1 ? o : o / st;
    return src * st == o && src < P ? src : P;
}

// dinp (the group's channels) += the col values that came from each input value.
extern "C" __global__ void col2im(float* dinp, const float* col, CONV_SHAPE, u64 c0) {
    const unsigned cg = (unsigned)(c / groups), R = (unsigned)r, S = (unsigned)s, P = (unsigned)p, Q = (unsigned)q;
    const unsigned H = (unsigned)h, W = (unsigned)w, N = (unsigned)n, st = (unsigned)stride;
    const unsigned hw = H * W, nhw = N * hw, npq = N * P * Q, base = (unsigned)c0 * nhw;
    GRID_STRIDE(i, (u64)cg * nhw) {
        const unsigned ii = (unsigned)i;
        const unsigned ci = ii / nhw, rem = ii - ci * nhw, ni = rem / hw, pix = rem - ni * hw;
        const unsigned ih = pix / W, iw = pix - ih * W;
        float acc = dinp[base + ii];
        for (unsigned kr = 0; kr < R; ++kr) {
            const unsigned pi = tap_source((int)(ih + (unsigned)pad_h) - (int)kr, st, P);
            if (pi == P) continue;
            for (unsigned ks = 0; ks < S; ++ks) {
                const unsigned qi = tap_source((int)(iw + (unsigned)pad_w) - (int)ks, st, Q);
                if (qi == Q) continue;
                const unsigned row = (kr * S + ks) * cg + ci;
                acc += col[row * npq + (ni * P + pi) * Q + qi];
            }
        }
        dinp[base + ii] = acc;
    }
}
