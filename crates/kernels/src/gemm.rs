//! GEMM on the device: the CPU engine's strided row/column views turned into the one call cuBLAS
//! (column-major) takes. The planning is plain arithmetic, checked against the CPU's reference
//! GEMM through [`sgemm_reference`] (BLAS's definition of SGEMM, which the emulation runs in
//! cuBLAS's place); only the cuBLAS call itself needs a GPU.

use crate::launch::{Buf, KernelError, Precision};

/// A matrix on the device: `rows × cols`, element `(i, j)` at `i·rs + j·cs` (one stride 1), as
/// the CPU engine's `MatRef`/`MatMut` describe theirs.
#[derive(Clone, Copy, Debug)]
pub struct Mat {
    /// The storage.
    pub buf: Buf<f32>,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Distance between rows.
    pub rs: usize,
    /// Distance between columns.
    pub cs: usize,
}

impl Mat {
    /// `rows × cols` stored row after row.
    pub fn row_major(buf: Buf<f32>, rows: usize, cols: usize) -> Mat {
        Mat { buf, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose (a view: strides swapped).
    pub fn t(self) -> Mat {
        Mat { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }

    /// As a column-major operand: (transposed?, leading dimension). Column-major when rows are
    /// adjacent (`rs == 1`); row-major storage is the column-major transpose.
    fn operand(&self) -> Result<(bool, usize), String> {
        if self.rs == 1 && self.cs >= self.rows.max(1) {
            Ok((false, self.cs))
        } else if self.cs == 1 && self.rs >= self.cols.max(1) {
            Ok((true, self.rs))
        } else if self.rows == 1 || self.cols == 1 {
            // A vector: either reading works; take it as column-major with a valid ld.
            let stride = if self.rows == 1 { self.cs } else { self.rs };
            if stride == 1 { Ok((false, self.rows.max(1))) } else { Err(format!("a vector with stride {stride}")) }
        } else {
            Err(format!("strides ({}, {}) for {} × {}: one must be 1", self.rs, self.cs, self.rows, self.cols))
        }
    }

    fn last(&self) -> usize {
        if self.rows == 0 || self.cols == 0 { 0 } else { (self.rows - 1) * self.rs + (self.cols - 1) * self.cs + 1 }
    }
}

/// One column-major SGEMM: `C = α·op(A)·op(B) + β·C`, `C` being `m × n` with leading dimension
/// `ldc`, as `cublasSgemm` takes it (α is 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgemmCall {
    /// op(A) = Aᵀ.
    pub transa: bool,
    /// op(B) = Bᵀ.
    pub transb: bool,
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// The inner dimension.
    pub k: usize,
    /// A's address and leading dimension.
    pub a: (u64, usize),
    /// B's.
    pub b: (u64, usize),
    /// C's.
    pub c: (u64, usize),
    /// 0 to overwrite C, 1 to add to it.
    pub beta: f32,
}

/// The call computing `c (+)= a·b` for the CPU engine's views.
///
/// Column-major `C` is computed as is. Row-major `C` is column-major `Cᵀ`, so the call computes
/// `Cᵀ = Bᵀ·Aᵀ`, with the operands swapped and each one's transposition flipped.
pub fn plan(c: &Mat, a: &Mat, b: &Mat, accumulate: bool) -> Result<SgemmCall, KernelError> {
    let err = |why: String| KernelError::Launch { kernel: "sgemm", why };
    if a.rows != c.rows || b.cols != c.cols || a.cols != b.rows {
        return Err(err(format!("({} × {})·({} × {}) into {} × {}", a.rows, a.cols, b.rows, b.cols, c.rows, c.cols)));
    }
    for (what, m) in [("A", a), ("B", b), ("C", c)] {
        if m.last() > m.buf.len() {
            return Err(err(format!("{what} ({} × {}, strides {}, {}) passes its buffer of {}", m.rows, m.cols, m.rs, m.cs, m.buf.len())));
        }
    }
    let (c_t, ldc) = c.operand().map_err(|w| err(format!("C: {w}")))?;
    let beta = if accumulate { 1.0 } else { 0.0 };
    let k = a.cols;
    if !c_t {
        let ((ta, lda), (tb, ldb)) = (a.operand().map_err(err)?, b.operand().map_err(err)?);
        Ok(SgemmCall {
            transa: ta,
            transb: tb,
            m: c.rows,
            n: c.cols,
            k,
            a: (a.buf.addr(), lda),
            b: (b.buf.addr(), ldb),
            c: (c.buf.addr(), ldc),
            beta,
        })
    } else {
        // Cᵀ (n × m) = Bᵀ·Aᵀ: the transposes' operands are the originals' with the flag flipped.
        let ((tb, ldb), (ta, lda)) = (b.t().operand().map_err(err)?, a.t().operand().map_err(err)?);
        Ok(SgemmCall {
            transa: tb,
            transb: ta,
            m: c.cols,
            n: c.rows,
            k,
            a: (b.buf.addr(), ldb),
            b: (a.buf.addr(), lda),
            c: (c.buf.addr(), ldc),
            beta,
        })
    }
}

/// `x` rounded to the nearest BF16 (ties to even), as an `f32`: the top 16 bits of its pattern.
/// Products of two such values are exact in FP32 (8 + 8 mantissa bits).
pub fn round_to_bf16(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let bits = x.to_bits();
    let halfway_up = 0x7fff + ((bits >> 16) & 1); // a tie rounds to the even upper half
    f32::from_bits(bits.wrapping_add(halfway_up) & 0xffff_0000)
}

/// BLAS's SGEMM by its definition, on host memory at the call's addresses: what the emulation
/// runs where a GPU runs cuBLAS. Sums in double (the CPU reference GEMM's precision); with
/// `products` [`Precision::Bf16`] each operand is first rounded to BF16 ([`round_to_bf16`]), as
/// cuBLAS's `COMPUTE_32F_FAST_16BF` does. TF32's rounding is cuBLAS's own and is not modelled.
///
/// # Safety
/// The call's addresses must be host memory holding the matrices it describes.
pub unsafe fn sgemm_reference(call: &SgemmCall, products: Precision) {
    let operand: fn(f32) -> f32 = if products == Precision::Bf16 { round_to_bf16 } else { |v| v };
    let at = |(addr, ld): (u64, usize), trans: bool, i: usize, j: usize| {
        let idx = if trans { j + i * ld } else { i + j * ld };
        // SAFETY: the caller's contract: the matrices are there.
        operand(unsafe { *(addr as *const f32).add(idx) })
    };
    for j in 0..call.n {
        for i in 0..call.m {
            let mut acc = 0.0f64;
            for l in 0..call.k {
                acc += at(call.a, call.transa, i, l) as f64 * at(call.b, call.transb, l, j) as f64;
            }
            // SAFETY: as above, for C.
            let dst = unsafe { &mut *(call.c.0 as *mut f32).add(i + j * call.c.1) };
            *dst = if call.beta == 0.0 { acc as f32 } else { (*dst as f64 + acc) as f32 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::round_to_bf16;

    /// Held to the `half` crate's conversion (round to nearest, ties to even) over a spread of
    /// bit patterns, and to hand-made ties.
    #[test]
    fn bf16_rounding_is_to_nearest_with_ties_to_even() {
        let one_ulp = 2f32.powi(-7); // BF16's spacing at 1
        assert_eq!(round_to_bf16(1.0 + one_ulp / 2.0), 1.0, "a tie rounds down to the even 1.0");
        assert_eq!(round_to_bf16(1.0 + 1.5 * one_ulp), 1.0 + 2.0 * one_ulp, "a tie rounds up to the even pattern");
        assert_eq!(round_to_bf16(1.0 + one_ulp / 2.0 + 2f32.powi(-20)), 1.0 + one_ulp, "past the tie rounds up");
        assert_eq!(round_to_bf16(f32::MAX), f32::INFINITY);
        assert!(round_to_bf16(f32::NAN).is_nan());
        let mut bits = 0x9e37_79b9u32;
        for _ in 0..200_000 {
            bits = bits.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
            let x = f32::from_bits(bits);
            let want = half::bf16::from_f32(x).to_f32();
            assert!(x.is_nan() || round_to_bf16(x).to_bits() == want.to_bits(), "{x:e} ({bits:#x}): {} vs {want}", round_to_bf16(x));
        }
    }
}
