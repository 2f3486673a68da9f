//! Bicubic resizing as the reference does it: `tf.compat.v1.image.resize_bicubic` with its
//! defaults (`align_corners=False`, `half_pixel_centers=False`) — Keys' cubic convolution with
//! `a = −0.75`, output pixel `i` sampling the input at `i · in/out` (no half-pixel shift), the four
//! taps clamped to the edge, no antialiasing, float output (values may overshoot 0–255 slightly,
//! as TensorFlow's do; normalisation follows). Chosen over the half-pixel `a = −0.5` variant of
//! `tf.image.resize` because it is what the reference's `_resize` calls.
//!
//! The crop and the resize are one pass: the kernel reads the crop's pixels in place, and hands
//! out channel rows so the loader normalises them into planes while they are in cache.
//! [`resize_bicubic_ref`] is the direct four-by-four form, kept beside the fast one as the
//! reference the tests hold it to.

use super::crop::Rect;

const A: f32 = -0.75;

/// Keys' cubic weights for the four taps around a sample at fractional offset `t` ∈ [0, 1).
fn weights(t: f32) -> [f32; 4] {
    let w = |x: f32| {
        let x = x.abs();
        if x <= 1.0 {
            ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
        } else {
            0.0
        }
    };
    [w(t + 1.0), w(t), w(1.0 - t), w(2.0 - t)]
}

/// For each output index, the four clamped input indices and their weights.
fn taps(in_len: usize, out_len: usize) -> Vec<([usize; 4], [f32; 4])> {
    let scale = in_len as f32 / out_len as f32;
    (0..out_len)
        .map(|i| {
            let pos = i as f32 * scale;
            let base = pos.floor();
            let idx = |d: i64| (base as i64 + d).clamp(0, in_len as i64 - 1) as usize;
            ([idx(-1), idx(0), idx(1), idx(2)], weights(pos - base))
        })
        .collect()
}

/// Buffers one resizing thread keeps from image to image: a fresh megabyte of rows per image
/// costs a zero fill and page faults that showed up at ~10 % of the loader's time.
#[derive(Debug, Default)]
pub struct ResizeScratch {
    slot: Vec<usize>,
    rows: Vec<f32>,
    line: Vec<f32>,
    line4: Vec<[f32; 4]>,
    row: Vec<f32>,
}

/// Resizes the `crop` of an interleaved `width`-wide image with `channels` channels to
/// `out_w × out_h`, writing `f32` HWC into `out` (resized to fit).
pub fn resize_bicubic(src: &[u8], width: usize, channels: usize, crop: Rect, out_w: usize, out_h: usize, out: &mut Vec<f32>) {
    resize_bicubic_with(src, width, channels, crop, out_w, out_h, &mut ResizeScratch::default(), out);
}

/// [`resize_bicubic`] with a thread's reusable buffers.
#[allow(clippy::too_many_arguments)]
pub fn resize_bicubic_with(
    src: &[u8],
    width: usize,
    channels: usize,
    crop: Rect,
    out_w: usize,
    out_h: usize,
    scratch: &mut ResizeScratch,
    out: &mut Vec<f32>,
) {
    out.clear();
    out.resize(out_h * out_w * channels, 0.0);
    resize_bicubic_planar(src, width, channels, crop, out_w, out_h, false, scratch, |c, y, row| {
        for (x, &v) in row.iter().enumerate() {
            out[(y * out_w + x) * channels + c] = v;
        }
    });
}

/// [`resize_bicubic`] handing each output row of each channel (`out_w` floats) to
/// `emit(channel, y, row)`, so the caller can normalise it into a channel plane while it is in
/// cache; `flip` mirrors the output left to right. Every value is computed exactly as
/// [`resize_bicubic`] computes it (flipping reorders the taps, not the arithmetic).
///
/// Two separable passes: horizontal over only the crop rows some vertical tap reads, into one
/// row per channel, then vertical as four-row weighted sums over whole output rows (contiguous
/// loops the compiler vectorises).
#[allow(clippy::too_many_arguments)]
pub fn resize_bicubic_planar(
    src: &[u8],
    width: usize,
    channels: usize,
    crop: Rect,
    out_w: usize,
    out_h: usize,
    flip: bool,
    scratch: &mut ResizeScratch,
    mut emit: impl FnMut(usize, usize, &[f32]),
) {
    let (mut tx, ty) = (taps(crop.w, out_w), taps(crop.h, out_h));
    if flip {
        tx.reverse();
    }
    // A used crop row becomes `channels` rows of `out_w` values, one per channel.
    let stride = out_w * channels;
    let ResizeScratch { slot, rows, line, line4, row } = scratch;
    // Which crop rows the vertical taps read, and where each lands in `rows`.
    slot.clear();
    slot.resize(crop.h, usize::MAX);
    let mut used = 0;
    for (idx, _) in &ty {
        for &i in idx {
            if slot[i] == usize::MAX {
                slot[i] = used;
                used += 1;
            }
        }
    }
    // Every used row is written below before it is read: growing is the only fill needed.
    grow(rows, used * stride, 0.0);
    grow(row, out_w, 0.0);
    // Each source value is converted once, not once per tap that reads it; RGB pixels are
    // padded to four lanes so a tap is one vector multiply-add.
    grow(line, crop.w * channels, 0.0);
    grow(line4, if channels == 3 { crop.w } else { 0 }, [0.0; 4]);
    for (y, &s) in slot.iter().enumerate() {
        if s == usize::MAX {
            continue;
        }
        let src_line = &src[((crop.y + y) * width + crop.x) * channels..][..crop.w * channels];
        let dst = &mut rows[s * stride..(s + 1) * stride];
        if channels == 3 {
            let line4 = &mut line4[..crop.w];
            rgb_to_lanes(src_line, line4);
            horizontal_rgb(line4, &tx, dst);
        } else {
            for (d, &v) in line.iter_mut().zip(src_line) {
                *d = v as f32;
            }
            horizontal_any(&line[..crop.w * channels], channels, &tx, dst);
        }
    }
    let row = &mut row[..out_w];
    for c in 0..channels {
        for (y, (idx, wt)) in ty.iter().enumerate() {
            let r = idx.map(|i| &rows[slot[i] * stride + c * out_w..][..out_w]);
            for ((((d, &a), &b), &c), &e) in row.iter_mut().zip(r[0]).zip(r[1]).zip(r[2]).zip(r[3]) {
                *d = wt[0] * a + wt[1] * b + wt[2] * c + wt[3] * e;
            }
            emit(c, y, row);
        }
    }
}

/// Lengthens `v` to at least `len` (filling only the new part), never shortens it.
fn grow<T: Clone>(v: &mut Vec<T>, len: usize, fill: T) {
    if v.len() < len {
        v.resize(len, fill);
    }
}

/// RGB bytes to four-lane floats (the fourth lane is padding: whatever it holds only ever lands
/// in an accumulator lane that is dropped).
fn rgb_to_lanes(src: &[u8], dst: &mut [[f32; 4]]) {
    #[cfg(target_arch = "x86_64")]
    sse2::rgb_to_lanes(src, dst);
    #[cfg(not(target_arch = "x86_64"))]
    rgb_to_lanes_ref(src, dst);
}

/// The portable form of [`rgb_to_lanes`] (the reference its SSE2 form is tested against).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn rgb_to_lanes_ref(src: &[u8], dst: &mut [[f32; 4]]) {
    for (d, v) in dst.iter_mut().zip(src.chunks_exact(3)) {
        *d = [v[0] as f32, v[1] as f32, v[2] as f32, 0.0];
    }
}

/// One row of the horizontal pass for RGB padded to four lanes, into three channel rows.
fn horizontal_rgb(line: &[[f32; 4]], tx: &[([usize; 4], [f32; 4])], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    sse2::horizontal_rgb(line, tx, dst);
    #[cfg(not(target_arch = "x86_64"))]
    horizontal_rgb_ref(line, tx, dst);
}

/// The portable form of [`horizontal_rgb`]: the same additions in the same order, so the two
/// agree bit for bit.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn horizontal_rgb_ref(line: &[[f32; 4]], tx: &[([usize; 4], [f32; 4])], dst: &mut [f32]) {
    let out_w = tx.len();
    let (r, gb) = dst.split_at_mut(out_w);
    let (g, b) = gb.split_at_mut(out_w);
    for (((r, g), b), (idx, wt)) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()).zip(tx) {
        let mut acc = [0.0f32; 4];
        for k in 0..4 {
            let p = line[idx[k]];
            for c in 0..4 {
                acc[c] += wt[k] * p[c];
            }
        }
        (*r, *g, *b) = (acc[0], acc[1], acc[2]);
    }
}

/// SSE2 forms (part of every x86-64 CPU, so no run-time detection). Written with intrinsics
/// because the compiler scalarises the portable loops: only three of the four lanes are stored.
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::*;

    pub(super) fn rgb_to_lanes(src: &[u8], dst: &mut [[f32; 4]]) {
        let n = dst.len().min(src.len() / 3);
        if n == 0 {
            return;
        }
        // Four bytes at a time (this pixel and the next one's red) except for the last pixel,
        // whose fourth byte may lie past the slice.
        assert!(src.len() >= 3 * n);
        for (i, d) in dst[..n - 1].iter_mut().enumerate() {
            // SAFETY: i < n − 1, so bytes 3i .. 3i + 4 lie inside the 3n checked above; SSE2 is
            // baseline on x86-64; the store is to a 16-byte `[f32; 4]`.
            unsafe {
                let word = std::ptr::read_unaligned(src.as_ptr().add(3 * i) as *const i32);
                let zero = _mm_setzero_si128();
                let ints = _mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(word), zero), zero);
                _mm_storeu_ps(d.as_mut_ptr(), _mm_cvtepi32_ps(ints));
            }
        }
        let last = 3 * (n - 1);
        dst[n - 1] = [src[last] as f32, src[last + 1] as f32, src[last + 2] as f32, 0.0];
    }

    pub(super) fn horizontal_rgb(line: &[[f32; 4]], tx: &[([usize; 4], [f32; 4])], dst: &mut [f32]) {
        let out_w = tx.len();
        let (r, gb) = dst.split_at_mut(out_w);
        let (g, b) = gb.split_at_mut(out_w);
        for (x, (idx, wt)) in tx.iter().enumerate() {
            let taps = idx.map(|i| &line[i]); // bounds-checked once per tap
            let mut out = [0.0f32; 4];
            // SAFETY: SSE2 is baseline on x86-64; loads and the store are of 16-byte `[f32; 4]`s.
            unsafe {
                let mut acc = _mm_setzero_ps();
                for k in 0..4 {
                    acc = _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(wt[k]), _mm_loadu_ps(taps[k].as_ptr())));
                }
                _mm_storeu_ps(out.as_mut_ptr(), acc);
            }
            (r[x], g[x], b[x]) = (out[0], out[1], out[2]);
        }
    }
}

fn horizontal_any(line: &[f32], channels: usize, tx: &[([usize; 4], [f32; 4])], dst: &mut [f32]) {
    let out_w = tx.len();
    for (x, (idx, wt)) in tx.iter().enumerate() {
        for c in 0..channels {
            dst[c * out_w + x] = (0..4).map(|k| wt[k] * line[idx[k] * channels + c]).sum();
        }
    }
}

/// Resizes one `h × w` float plane to `out_h × out_w` (the same kernel; separable: rows, then
/// columns). What the reference's `_resize` does to a normalised batch when it finetunes an
/// EfficientNet on 32-px CIFAR images: [`resize_bicubic_ref`] is its reference too.
pub fn resize_plane_bicubic(src: &[f32], h: usize, w: usize, out_h: usize, out_w: usize, dst: &mut [f32]) {
    let (tx, ty) = (taps(w, out_w), taps(h, out_h));
    let mut rows = vec![0.0f32; h * out_w]; // every input row, resized horizontally
    for (y, row) in rows.chunks_exact_mut(out_w).enumerate() {
        let line = &src[y * w..(y + 1) * w];
        for (o, (idx, wt)) in row.iter_mut().zip(&tx) {
            *o = wt[0] * line[idx[0]] + wt[1] * line[idx[1]] + wt[2] * line[idx[2]] + wt[3] * line[idx[3]];
        }
    }
    for (out_row, (idx, wt)) in dst.chunks_exact_mut(out_w).zip(&ty) {
        let r = |k: usize| &rows[idx[k] * out_w..(idx[k] + 1) * out_w];
        let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
        for x in 0..out_w {
            out_row[x] = wt[0] * r0[x] + wt[1] * r1[x] + wt[2] * r2[x] + wt[3] * r3[x];
        }
    }
}

/// The direct form: each output value a 4×4 weighted sum of crop pixels (slow; for tests).
pub fn resize_bicubic_ref(src: &[u8], width: usize, channels: usize, crop: Rect, out_w: usize, out_h: usize) -> Vec<f32> {
    let (tx, ty) = (taps(crop.w, out_w), taps(crop.h, out_h));
    let mut out = vec![0.0f32; out_h * out_w * channels];
    for (y, (iy, wy)) in ty.iter().enumerate() {
        for (x, (ix, wx)) in tx.iter().enumerate() {
            for c in 0..channels {
                let mut acc = 0.0f64;
                for a in 0..4 {
                    for b in 0..4 {
                        let v = src[((crop.y + iy[a]) * width + crop.x + ix[b]) * channels + c] as f64;
                        acc += wy[a] as f64 * wx[b] as f64 * v;
                    }
                }
                out[(y * out_w + x) * channels + c] = acc as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_float_plane_resizes_as_the_direct_form() {
        let (w, h, channels) = (32, 32, 3);
        let src: Vec<u8> = (0..w * h * channels).map(|i| ((i * 97 + i / 7) % 256) as u8).collect();
        for (oh, ow) in [(64, 64), (224, 224), (20, 45)] {
            let want = resize_bicubic_ref(&src, w, channels, Rect { x: 0, y: 0, w, h }, ow, oh);
            for c in 0..channels {
                let plane: Vec<f32> = src.iter().skip(c).step_by(channels).map(|&v| f32::from(v)).collect();
                let mut got = vec![0.0; oh * ow];
                resize_plane_bicubic(&plane, h, w, oh, ow, &mut got);
                for (i, g) in got.iter().enumerate() {
                    let r = want[i * channels + c];
                    assert!((g - r).abs() <= 1e-3 * r.abs().max(1.0), "({oh}, {ow}) channel {c} value {i}: {g} vs {r}");
                }
            }
        }
    }

    #[test]
    fn fast_form_matches_the_direct_form() {
        let (w, h) = (37, 29);
        let src: Vec<u8> = (0..w * h * 3).map(|i| ((i * 131) % 256) as u8).collect();
        for (crop, ow, oh) in [
            (Rect { x: 3, y: 2, w: 30, h: 25 }, 13, 11),
            (Rect { x: 0, y: 0, w: 37, h: 29 }, 50, 41),
            (Rect { x: 5, y: 9, w: 4, h: 3 }, 9, 9),
        ] {
            let mut fast = Vec::new();
            resize_bicubic(&src, w, 3, crop, ow, oh, &mut fast);
            let slow = resize_bicubic_ref(&src, w, 3, crop, ow, oh);
            let worst = fast.iter().zip(&slow).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-3, "{crop:?} → {ow}×{oh}: max diff {worst}");
        }
    }

    #[test]
    fn planar_rows_flipped_or_not_are_the_interleaved_result_bit_for_bit() {
        let (w, h) = (41, 23);
        let src: Vec<u8> = (0..w * h * 3).map(|i| ((i * 89 + i / 7) % 256) as u8).collect();
        let mut scratch = ResizeScratch::default();
        // Big then small through one scratch: left-over rows must not matter.
        for (crop, ow, oh) in [(Rect { x: 0, y: 0, w: 41, h: 23 }, 60, 50), (Rect { x: 7, y: 3, w: 20, h: 15 }, 9, 12)] {
            let mut hwc = Vec::new();
            resize_bicubic(&src, w, 3, crop, ow, oh, &mut hwc);
            for flip in [false, true] {
                let mut seen = 0;
                resize_bicubic_planar(&src, w, 3, crop, ow, oh, flip, &mut scratch, |c, y, row| {
                    for (x, &v) in row.iter().enumerate() {
                        let sx = if flip { ow - 1 - x } else { x };
                        assert_eq!(v.to_bits(), hwc[(y * ow + sx) * 3 + c].to_bits(), "{crop:?} flip {flip} c{c} ({x}, {y})");
                    }
                    seen += 1;
                });
                assert_eq!(seen, 3 * oh);
            }
        }
    }

    #[test]
    fn fast_kernels_equal_their_portable_forms_bit_for_bit() {
        let src: Vec<u8> = (0..3 * 37).map(|i| ((i * 53 + 11) % 256) as u8).collect();
        let (mut fast, mut slow) = (vec![[0.0f32; 4]; 37], vec![[0.0f32; 4]; 37]);
        rgb_to_lanes(&src, &mut fast);
        rgb_to_lanes_ref(&src, &mut slow);
        assert!(fast.iter().zip(&slow).all(|(a, b)| a[..3] == b[..3]), "{fast:?}");
        for out_w in [1, 9, 80] {
            let tx = taps(37, out_w);
            let (mut a, mut b) = (vec![f32::NAN; 3 * out_w], vec![f32::NAN; 3 * out_w]);
            horizontal_rgb(&fast, &tx, &mut a);
            horizontal_rgb_ref(&slow, &tx, &mut b);
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{out_w}: {a:?} vs {b:?}");
        }
    }

    #[test]
    fn keys_weights_sum_to_one_and_interpolate() {
        for t in [0.0, 0.25, 0.5, 0.9] {
            let w = weights(t);
            assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{t}: {w:?}");
        }
        assert_eq!(weights(0.0), [0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn same_size_is_the_identity_and_ramps_stay_linear() {
        let (w, h) = (6, 5);
        let src: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let mut out = Vec::new();
        resize_bicubic(&src, w, 3, Rect { x: 0, y: 0, w, h }, w, h, &mut out);
        assert!(src.iter().zip(&out).all(|(&a, &b)| (a as f32 - b).abs() < 1e-4));
        // A horizontal ramp 0, 10, 20, … halved: interior samples land on 0, 20, 40, … exactly.
        let ramp: Vec<u8> = (0..8).flat_map(|_| (0..8).map(|x| (x * 10) as u8)).collect();
        resize_bicubic(&ramp, 8, 1, Rect { x: 0, y: 0, w: 8, h: 8 }, 4, 4, &mut out);
        for x in 1..3 {
            assert!((out[x] - (20 * x) as f32).abs() < 1e-3, "{out:?}");
        }
    }

    #[test]
    fn crop_offsets_are_honoured() {
        // A 4×4 image whose bottom-right 2×2 block is 200: resizing that block alone gives 200s.
        let mut src = vec![0u8; 16];
        for (y, x) in [(2, 2), (2, 3), (3, 2), (3, 3)] {
            src[y * 4 + x] = 200;
        }
        let mut out = Vec::new();
        resize_bicubic(&src, 4, 1, Rect { x: 2, y: 2, w: 2, h: 2 }, 3, 3, &mut out);
        assert!(out.iter().all(|&v| (v - 200.0).abs() < 1e-3), "{out:?}");
    }
}
