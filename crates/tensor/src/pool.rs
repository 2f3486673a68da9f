//! Pooling over `(C, N, H, W)` activations, viewed as `C·N` independent `H × W` planes.
//!
//! Average pooling divides by the full window even where it overlaps padding (Flax's `avg_pool`
//! counts padded zeros); max pooling treats padding as −∞ and remembers the winning input of each
//! output (`argmax`, an index into its plane) for backward.

use rayon::prelude::*;

use crate::{TensorError, check_len};

/// Sizes of a pooling call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    /// Independent planes (`C·N`).
    pub planes: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window height.
    pub r: usize,
    /// Window width.
    pub s: usize,
    /// Stride.
    pub stride: usize,
    /// Padding rows above.
    pub pad_h: usize,
    /// Padding columns left.
    pub pad_w: usize,
    /// Output height.
    pub p: usize,
    /// Output width.
    pub q: usize,
}

impl PoolShape {
    /// `padding='VALID'`: no padding, output `(H − R)/stride + 1`.
    pub fn valid(planes: usize, h: usize, w: usize, window: usize, stride: usize) -> Result<Self, TensorError> {
        if stride == 0 || window == 0 || window > h || window > w {
            return Err(TensorError::Shape { op: "pool", msg: format!("window {window} stride {stride} on {h}x{w}") });
        }
        Ok(PoolShape {
            planes,
            h,
            w,
            r: window,
            s: window,
            stride,
            pad_h: 0,
            pad_w: 0,
            p: (h - window) / stride + 1,
            q: (w - window) / stride + 1,
        })
    }

    /// `padding='SAME'` as TensorFlow/Flax: output `ceil(H/stride)`, extra padding after.
    pub fn same(planes: usize, h: usize, w: usize, window: usize, stride: usize) -> Result<Self, TensorError> {
        if stride == 0 || window == 0 || h == 0 || w == 0 {
            return Err(TensorError::Shape { op: "pool", msg: format!("window {window} stride {stride} on {h}x{w}") });
        }
        let (p, q) = (h.div_ceil(stride), w.div_ceil(stride));
        let pad_h = ((p - 1) * stride + window).saturating_sub(h) / 2;
        let pad_w = ((q - 1) * stride + window).saturating_sub(w) / 2;
        Ok(PoolShape { planes, h, w, r: window, s: window, stride, pad_h, pad_w, p, q })
    }

    /// Input elements.
    pub fn input_len(&self) -> usize {
        self.planes * self.h * self.w
    }
    /// Output elements.
    pub fn output_len(&self) -> usize {
        self.planes * self.p * self.q
    }

    /// Input positions `(ih, iw)` under output `(p, q)`'s window, clipped to the image.
    fn window(&self, p: usize, q: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let h0 = (p * self.stride) as isize - self.pad_h as isize;
        let w0 = (q * self.stride) as isize - self.pad_w as isize;
        let hr = h0.max(0) as usize..((h0 + self.r as isize).min(self.h as isize)).max(0) as usize;
        let wr = w0.max(0) as usize..((w0 + self.s as isize).min(self.w as isize)).max(0) as usize;
        (hr, wr)
    }
}

fn check(op: &'static str, sh: &PoolShape, inp: usize, out: usize) -> Result<(), TensorError> {
    check_len(op, "input", inp, sh.input_len())?;
    check_len(op, "output", out, sh.output_len())
}

/// Average pooling.
pub fn avgpool_forward(out: &mut [f32], inp: &[f32], sh: &PoolShape) -> Result<(), TensorError> {
    crate::profile::timed("average pool forward", 0.0, || {
        check("avgpool_forward", sh, inp.len(), out.len())?;
        let inv = 1.0 / (sh.r * sh.s) as f32;
        out.par_chunks_mut(sh.p * sh.q).zip(inp.par_chunks(sh.h * sh.w)).for_each(|(o, x)| {
            for p in 0..sh.p {
                for q in 0..sh.q {
                    let (hr, wr) = sh.window(p, q);
                    let mut acc = 0.0;
                    for ih in hr {
                        for iw in wr.clone() {
                            acc += x[ih * sh.w + iw];
                        }
                    }
                    o[p * sh.q + q] = acc * inv;
                }
            }
        });
        Ok(())
    })
}

/// Backward of [`avgpool_forward`]; `dinp` is overwritten.
pub fn avgpool_backward(dinp: &mut [f32], dout: &[f32], sh: &PoolShape) -> Result<(), TensorError> {
    crate::profile::timed("average pool backward", 0.0, || {
        check("avgpool_backward", sh, dinp.len(), dout.len())?;
        let inv = 1.0 / (sh.r * sh.s) as f32;
        dinp.par_chunks_mut(sh.h * sh.w).zip(dout.par_chunks(sh.p * sh.q)).for_each(|(dx, g)| {
            dx.fill(0.0);
            for p in 0..sh.p {
                for q in 0..sh.q {
                    let (hr, wr) = sh.window(p, q);
                    let v = g[p * sh.q + q] * inv;
                    for ih in hr {
                        for iw in wr.clone() {
                            dx[ih * sh.w + iw] += v;
                        }
                    }
                }
            }
        });
        Ok(())
    })
}

/// Max pooling; `argmax` receives, per output, the index of the winning input in its plane.
pub fn maxpool_forward(out: &mut [f32], argmax: &mut [u32], inp: &[f32], sh: &PoolShape) -> Result<(), TensorError> {
    crate::profile::timed("max pool forward", 0.0, || {
        check("maxpool_forward", sh, inp.len(), out.len())?;
        check_len("maxpool_forward", "argmax", argmax.len(), sh.output_len())?;
        out.par_chunks_mut(sh.p * sh.q).zip(argmax.par_chunks_mut(sh.p * sh.q)).zip(inp.par_chunks(sh.h * sh.w)).for_each(
            |((o, am), x)| {
                for p in 0..sh.p {
                    for q in 0..sh.q {
                        let (hr, wr) = sh.window(p, q);
                        let (mut best, mut at) = (f32::NEG_INFINITY, (hr.start * sh.w + wr.start) as u32);
                        for ih in hr {
                            for iw in wr.clone() {
                                let v = x[ih * sh.w + iw];
                                if v > best {
                                    best = v;
                                    at = (ih * sh.w + iw) as u32;
                                }
                            }
                        }
                        o[p * sh.q + q] = best;
                        am[p * sh.q + q] = at;
                    }
                }
            },
        );
        Ok(())
    })
}

/// Backward of [`maxpool_forward`]: each output's gradient goes to its winning input. `dinp` is
/// overwritten.
pub fn maxpool_backward(dinp: &mut [f32], dout: &[f32], argmax: &[u32], sh: &PoolShape) -> Result<(), TensorError> {
    crate::profile::timed("max pool backward", 0.0, || {
        check("maxpool_backward", sh, dinp.len(), dout.len())?;
        check_len("maxpool_backward", "argmax", argmax.len(), sh.output_len())?;
        let plane = sh.h * sh.w;
        dinp.par_chunks_mut(plane).zip(dout.par_chunks(sh.p * sh.q).zip(argmax.par_chunks(sh.p * sh.q))).for_each(|(dx, (g, am))| {
            dx.fill(0.0);
            for (v, &i) in g.iter().zip(am) {
                // argmax came from our own forward and is < plane; `get_mut` keeps a bad caller from panicking.
                if let Some(d) = dx.get_mut(i as usize) {
                    *d += v;
                }
            }
        });
        Ok(())
    })
}

/// Global average pooling: `(C, N, H, W)` → `(C, N)`, the mean of each plane.
pub fn global_avgpool_forward(out: &mut [f32], inp: &[f32], planes: usize, hw: usize) -> Result<(), TensorError> {
    crate::profile::timed("global average pool forward", 0.0, || {
        check_len("global_avgpool_forward", "input", inp.len(), planes * hw)?;
        check_len("global_avgpool_forward", "output", out.len(), planes)?;
        out.par_iter_mut()
            .zip(inp.par_chunks(hw.max(1)))
            .for_each(|(o, x)| *o = (x.iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32);
        Ok(())
    })
}

/// Backward of [`global_avgpool_forward`]; `dinp` is overwritten.
pub fn global_avgpool_backward(dinp: &mut [f32], dout: &[f32], planes: usize, hw: usize) -> Result<(), TensorError> {
    crate::profile::timed("global average pool backward", 0.0, || {
        check_len("global_avgpool_backward", "input gradient", dinp.len(), planes * hw)?;
        check_len("global_avgpool_backward", "output gradient", dout.len(), planes)?;
        let inv = 1.0 / hw as f32;
        dinp.par_chunks_mut(hw.max(1)).zip(dout.par_iter()).for_each(|(dx, &g)| dx.fill(g * inv));
        Ok(())
    })
}
