//! Bicubic resizing as the reference does it: `tf.compat.v1.image.resize_bicubic` with its
//! defaults (`align_corners=False`, `half_pixel_centers=False`) — Keys' cubic convolution with
//! `a = −0.75`, output pixel `i` sampling the input at `i · in/out` (no half-pixel shift), the four
//! taps clamped to the edge, no antialiasing, float output (values may overshoot 0–255 slightly,
//! as TensorFlow's do; normalisation follows). Chosen over the half-pixel `a = −0.5` variant of
//! `tf.image.resize` because it is what the reference's `_resize` calls.
//!
//! The crop and the resize are one pass: the kernel reads the crop's pixels in place.

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
pub fn resize_bicubic(src: &[u8], width: usize, channels: usize, crop: Rect, out_w: usize, out_h: usize, out: &mut Vec<f32>) {
    let (tx, ty) = (taps(crop.w, out_w), taps(crop.h, out_h));
    // Horizontal pass over the rows the vertical taps need (all rows of the crop).
    let mut rows = vec![0.0f32; crop.h * out_w * channels];
    for y in 0..crop.h {
        let line = &src[((crop.y + y) * width + crop.x) * channels..];
        let dst = &mut rows[y * out_w * channels..(y + 1) * out_w * channels];
        for (x, (idx, wt)) in tx.iter().enumerate() {
            for c in 0..channels {
                dst[x * channels + c] = (0..4).map(|k| wt[k] * line[idx[k] * channels + c] as f32).sum();
            }
        }
    }
    out.clear();
    out.resize(out_h * out_w * channels, 0.0);
    let stride = out_w * channels;
    for (y, (idx, wt)) in ty.iter().enumerate() {
        let dst = &mut out[y * stride..(y + 1) * stride];
        for (j, d) in dst.iter_mut().enumerate() {
            *d = (0..4).map(|k| wt[k] * rows[idx[k] * stride + j]).sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
