//! One image of one channel, zero-padded and split into column phases.
//!
//! Output pixel `(p, q)` of a stride-`t` convolution reads input column `q·t + s − pad` for tap
//! `s`. Stored as is, a stride-2 row would be read every other value. Stored as `t` phases (phase
//! `φ` holds the padded columns `φ, φ + t, φ + 2t, …`), tap `s` of outputs `q … q + 15` reads
//! sixteen consecutive values of phase `s mod t`, from column `q + s div t`. Rows are padded too,
//! so no tap ever tests a bound. Backward's input gradient is accumulated in the same layout (a
//! transposed convolution is a scatter into it) and unpacked at the end.
//!
//! Buffer layout: `(row, phase, col)`, `rows × stride × cols`, with `cols` large enough for the
//! last lane block of every output row and for every input column.

use crate::conv::Conv2dShape;
use crate::simd::LANES;

/// Sizes of the padded, phase-split image of a convolution.
#[derive(Clone, Copy, Debug)]
pub(super) struct Phases {
    /// Stride, which is also the number of phases.
    pub stride: usize,
    /// Padded rows.
    pub rows: usize,
    /// Values per phase row.
    pub cols: usize,
    /// Output columns rounded up to whole lane blocks.
    pub q_blocks: usize,
    pad_h: usize,
    pad_w: usize,
    h: usize,
    w: usize,
}

impl Phases {
    pub fn of(sh: &Conv2dShape) -> Phases {
        let t = sh.stride;
        let q_blocks = sh.q.next_multiple_of(LANES);
        Phases {
            stride: t,
            rows: ((sh.p - 1) * t + sh.r).max(sh.pad_h + sh.h),
            cols: (q_blocks + (sh.s - 1) / t).max((sh.pad_w + sh.w).div_ceil(t)),
            q_blocks,
            pad_h: sh.pad_h,
            pad_w: sh.pad_w,
            h: sh.h,
            w: sh.w,
        }
    }

    /// Values in one padded image.
    pub fn len(&self) -> usize {
        self.rows * self.stride * self.cols
    }

    /// Where tap `(r, s)` of output row `p` starts reading: the value under output column 0.
    #[inline(always)]
    pub fn tap(&self, p: usize, r: usize, s: usize) -> usize {
        ((p * self.stride + r) * self.stride + s % self.stride) * self.cols + s / self.stride
    }

    /// Where output row `p`'s taps start: [`Phases::tap`] of tap `(0, 0)`.
    #[inline(always)]
    pub fn row_start(&self, p: usize) -> usize {
        p * self.stride * self.stride * self.cols
    }

    /// Each tap's [`Phases::tap`] relative to its output row, taps in `(R, S)` order.
    pub fn offsets(&self, r_taps: usize, s_taps: usize) -> Vec<usize> {
        (0..r_taps * s_taps).map(|t| self.tap(0, t / s_taps, t % s_taps)).collect()
    }

    /// Input columns `iw` with `(iw + pad_w) mod stride == phase`: the first one, and the phase
    /// column it lands in.
    fn phase_start(&self, phase: usize) -> (usize, usize) {
        let t = self.stride;
        let first = (phase + t - self.pad_w % t) % t;
        (first, (first + self.pad_w) / t)
    }

    /// `buf` = image `img` (`H × W`) padded with zeros and split into phases, each value of the
    /// buffer written once.
    pub fn pack(&self, buf: &mut [f32], img: &[f32]) {
        let (t, cols) = (self.stride, self.cols);
        for (row, dst) in buf[..self.len()].chunks_exact_mut(t * cols).enumerate() {
            let Some(ih) = row.checked_sub(self.pad_h).filter(|&ih| ih < self.h) else {
                dst.fill(0.0);
                continue;
            };
            let src = &img[ih * self.w..(ih + 1) * self.w];
            if t == 2 {
                self.pack_pairs(dst, src);
                continue;
            }
            for (phase, dst) in dst.chunks_exact_mut(cols).enumerate() {
                let (first, col) = self.phase_start(phase);
                let n = (self.w.saturating_sub(first)).div_ceil(t);
                dst[..col].fill(0.0);
                if t == 1 {
                    dst[col..col + n].copy_from_slice(src);
                } else {
                    for (d, &v) in dst[col..col + n].iter_mut().zip(src[first.min(self.w)..].iter().step_by(t)) {
                        *d = v;
                    }
                }
                dst[col + n..].fill(0.0);
            }
        }
    }

    /// [`Phases::pack`] of one row at stride 2, the common case after stride 1: consecutive
    /// pairs of values go one to each phase, at the same column, which the compiler turns into
    /// vector shuffles (a stride-2 row is otherwise copied one value at a time).
    fn pack_pairs(&self, dst: &mut [f32], src: &[f32]) {
        let (even, odd) = dst.split_at_mut(self.cols);
        // The first value of phase 0, where the pairs start, and its column in both phases.
        let (first, col) = self.phase_start(0);
        let pairs = (self.w - first) / 2;
        even[..col].fill(0.0);
        odd[..col].fill(0.0);
        if first == 1 {
            // src[0] lies in phase 1, one column before the pairs.
            odd[col - 1] = src[0];
        }
        for ((e, o), pair) in even[col..col + pairs].iter_mut().zip(&mut odd[col..col + pairs]).zip(src[first..].chunks_exact(2)) {
            *e = pair[0];
            *o = pair[1];
        }
        let mut end = col + pairs;
        if (self.w - first) % 2 == 1 {
            even[end] = src[self.w - 1];
            odd[end] = 0.0;
            end += 1;
        }
        even[end..].fill(0.0);
        odd[end..].fill(0.0);
    }

    /// `img` (`H × W`) = the unpadded part of `buf`, the inverse of [`Phases::pack`].
    pub fn unpack(&self, img: &mut [f32], buf: &[f32]) {
        let t = self.stride;
        for (ih, row) in img.chunks_exact_mut(self.w).take(self.h).enumerate() {
            let base = (ih + self.pad_h) * t * self.cols;
            for phase in 0..t {
                let (first, col) = self.phase_start(phase);
                let src = &buf[base + phase * self.cols + col..];
                for (d, &v) in row.iter_mut().skip(first).step_by(t).zip(src) {
                    *d = v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tap reads the input value the convolution's definition names, or a zero of the
    /// padding; unpack inverts pack.
    #[test]
    fn taps_read_the_right_values() {
        for (h, w, k, stride) in
            [(9, 9, 3, 1), (8, 8, 3, 2), (7, 9, 5, 2), (8, 8, 5, 2), (9, 10, 5, 2), (6, 5, 5, 1), (11, 10, 7, 3), (5, 5, 1, 2)]
        {
            let sh = Conv2dShape::same(1, 1, h, w, 1, k, k, stride, 1).unwrap();
            let g = Phases::of(&sh);
            let img: Vec<f32> = (0..h * w).map(|i| i as f32 + 1.0).collect();
            let mut buf = vec![f32::NAN; g.len()];
            g.pack(&mut buf, &img);
            for p in 0..sh.p {
                for q in 0..sh.q {
                    for r in 0..k {
                        for s in 0..k {
                            let (ih, iw) = ((p * stride + r) as isize - sh.pad_h as isize, (q * stride + s) as isize - sh.pad_w as isize);
                            let inside = (0..h as isize).contains(&ih) && (0..w as isize).contains(&iw);
                            let want = if inside { img[ih as usize * w + iw as usize] } else { 0.0 };
                            assert_eq!(buf[g.tap(p, r, s) + q], want, "{sh:?} p {p} q {q} r {r} s {s}");
                        }
                    }
                }
            }
            // The last lane block of every output row stays inside the buffer.
            assert!(g.tap(sh.p - 1, k - 1, k - 1) + g.q_blocks <= g.len(), "{sh:?}");
            let mut back = vec![0.0; h * w];
            g.unpack(&mut back, &buf);
            assert_eq!(back, img);
        }
    }
}
