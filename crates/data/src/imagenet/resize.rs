//! Bicubic resizing as the reference does it: `tf.compat.v1.image.resize_bicubic` with its
//! defaults (`align_corners=False`, `half_pixel_centers=False`) — Keys' cubic convolution with
//! `a = −0.75`, output pixel `i` sampling the input at `i · in/out` (no half-pixel shift), the four
//! taps clamped to the edge, no antialiasing, float output (values may overshoot 0–255 slightly,
//! as TensorFlow's do; normalisation follows). Chosen over the half-pixel `a = −0.5` variant of
//! `tf.image.resize` because it is what the reference's `_resize` calls.
//!
//! The crop and the resize are one pass: the kernel reads the crop's pixels in place.
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

/// Resizes the `crop` of an interleaved `width`-wide image with `channels` channels to
/// `out_w × out_h`, writing `f32` HWC into `out` (resized to fit).
///
/// Two separable passes: horizontal over only the crop rows some vertical tap reads, then
/// vertical as four-row weighted sums over whole output rows (loops the compiler vectorises).
pub fn resize_bicubic(src: &[u8], width: usize, channels: usize, crop: Rect, out_w: usize, out_h: usize, out: &mut Vec<f32>) {
    let (tx, ty) = (taps(crop.w, out_w), taps(crop.h, out_h));
    let stride = out_w * channels;
    // Which crop rows the vertical taps read, and where each lands in `rows`.
    let mut slot = vec![usize::MAX; crop.h];
    let mut used = 0;
    for (idx, _) in &ty {
        for &i in idx {
            if slot[i] == usize::MAX {
                slot[i] = used;
                used += 1;
            }
        }
    }
    let mut rows = vec![0.0f32; used * stride];
    // Each source value is converted once, not once per tap that reads it; RGB pixels are
    // padded to four lanes so a tap is one vector multiply-add.
    let mut line = vec![0.0f32; crop.w * channels];
    let mut line4 = vec![[0.0f32; 4]; if channels == 3 { crop.w } else { 0 }];
    for (y, &s) in slot.iter().enumerate() {
        if s == usize::MAX {
            continue;
        }
        let src_line = &src[((crop.y + y) * width + crop.x) * channels..][..crop.w * channels];
        let dst = &mut rows[s * stride..(s + 1) * stride];
        if channels == 3 {
            for (d, v) in line4.iter_mut().zip(src_line.chunks_exact(3)) {
                *d = [v[0] as f32, v[1] as f32, v[2] as f32, 0.0];
            }
            horizontal_rgb(&line4, &tx, dst);
        } else {
            for (d, &v) in line.iter_mut().zip(src_line) {
                *d = v as f32;
            }
            horizontal_any(&line, channels, &tx, dst);
        }
    }
    out.clear();
    out.resize(out_h * stride, 0.0);
    for (dst, (idx, wt)) in out.chunks_exact_mut(stride).zip(&ty) {
        let r = idx.map(|i| &rows[slot[i] * stride..(slot[i] + 1) * stride]);
        for ((((d, &a), &b), &c), &e) in dst.iter_mut().zip(r[0]).zip(r[1]).zip(r[2]).zip(r[3]) {
            *d = wt[0] * a + wt[1] * b + wt[2] * c + wt[3] * e;
        }
    }
}

/// One row of the horizontal pass for RGB padded to four lanes.
fn horizontal_rgb(line: &[[f32; 4]], tx: &[([usize; 4], [f32; 4])], dst: &mut [f32]) {
    for (px, (idx, wt)) in dst.chunks_exact_mut(3).zip(tx) {
        let mut acc = [0.0f32; 4];
        for k in 0..4 {
            let p = line[idx[k]];
            for c in 0..4 {
                acc[c] += wt[k] * p[c];
            }
        }
        px.copy_from_slice(&acc[..3]);
    }
}

fn horizontal_any(line: &[f32], channels: usize, tx: &[([usize; 4], [f32; 4])], dst: &mut [f32]) {
    for (px, (idx, wt)) in dst.chunks_exact_mut(channels).zip(tx) {
        for (c, d) in px.iter_mut().enumerate() {
            *d = (0..4).map(|k| wt[k] * line[idx[k] * channels + c]).sum();
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
