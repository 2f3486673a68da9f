// Image patches as GEMM operands (crates/tensor/src/im2col.rs), (C, N, H, W) activations, HWIO
// kernels: im2col writes col (R·S·Cg × N·P·Q), row (r, s, ci), column (n, p, q), the input value
// or zero outside the image; col2im adds it back. One thread per col value forward; col2im
// gathers per input value over (r, s) in the CPU's order, so no two threads write one value and
// the sums are the CPU's, bit for bit. Both are copies and adds: bitwise.

// col for the channel group starting at c0.
extern "C" __global__ void im2col(float* col, const float* inp, CONV_SHAPE, u64 c0) {
    const u64 cg = c / groups, npq = n * p * q;
    GRID_STRIDE(i, r * s * cg * npq) {
        u64 row = i / npq, j = i % npq;
        u64 ci = row % cg, ks = row / cg % s, kr = row / (cg * s);
        u64 ni = j / (p * q), pi = j / q % p, qi = j % q;
        long long ih = (long long)(pi * stride + kr) - (long long)pad_h;
        long long iw = (long long)(qi * stride + ks) - (long long)pad_w;
        bool inside = ih >= 0 && ih < (long long)h && iw >= 0 && iw < (long long)w;
        col[i] = inside ? inp[(((c0 + ci) * n + ni) * h + (u64)ih) * w + (u64)iw] : 0.0f;
    }
}

// dinp (the group's channels) += the col values that came from each input value.
extern "C" __global__ void col2im(float* dinp, const float* col, CONV_SHAPE, u64 c0) {
    const u64 cg = c / groups, npq = n * p * q;
    GRID_STRIDE(i, cg * n * h * w) {
        u64 ci = i / (n * h * w), ni = i / (h * w) % n, ih = i / w % h, iw = i % w;
        float acc = dinp[c0 * n * h * w + i];
        for (u64 kr = 0; kr < r; ++kr) {
            long long ph = (long long)(ih + pad_h) - (long long)kr;  // = pi·stride
            if (ph < 0 || ph % (long long)stride != 0 || (u64)ph / stride >= p) continue;
            u64 pi = (u64)ph / stride;
            for (u64 ks = 0; ks < s; ++ks) {
                long long qw = (long long)(iw + pad_w) - (long long)ks;
                if (qw < 0 || qw % (long long)stride != 0 || (u64)qw / stride >= q) continue;
                u64 qi = (u64)qw / stride;
                u64 row = (kr * s + ks) * cg + ci;
                acc += col[row * npq + (ni * p + pi) * q + qi];
            }
        }
        dinp[c0 * n * h * w + i] = acc;
    }
}
