//! Strided subsampling with an optional one-pixel shift: the two paths of the Shake-Shake
//! shortcut.
//!
//! The reference's path 1 is `avg_pool(x, (1,1), strides=(s,s), 'VALID')` — a 1×1 window, i.e.
//! taking every s-th pixel; path 2 first shifts the image up and left by one pixel (pad one zero
//! row and column at the bottom and right, drop the first row and column), then does the same.
//! Both come to `y[i, j] = x[i·s + o, j·s + o]` with offset `o` of 0 or 1, and zero where that
//! falls outside the image. Output side: `(H − 1)/s + 1`.

use ringsam_kernels::pool::{shift_subsample_backward, shift_subsample_forward};
use ringsam_tensor::Tensor;

use super::{Buffers, Layer, expect_image, expect_same};
use crate::device::OnDevice;
use crate::{NnError, Pass};

/// See the module docs.
#[derive(Debug)]
pub struct ShiftSubsample {
    name: String,
    channels: usize,
    stride: usize,
    offset: usize,
    buffers: Buffers,
}

impl ShiftSubsample {
    /// Every `stride`-th pixel starting at (`offset`, `offset`); `channels` is checked on input.
    pub fn new(name: &str, channels: usize, stride: usize, offset: usize) -> Self {
        assert!(stride >= 1 && offset <= 1, "{name}: stride {stride}, offset {offset}");
        ShiftSubsample { name: name.to_string(), channels, stride, offset, buffers: Buffers::default() }
    }

    fn out_side(&self, side: usize) -> usize {
        (side - 1) / self.stride + 1
    }
}

impl Layer for ShiftSubsample {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_device(&self) -> bool {
        true
    }

    fn forward(&mut self, _p: &Tensor, _s: &mut Tensor, x: &Tensor, _pass: &Pass) -> Result<(), NnError> {
        let [c, n, h, w] = expect_image(&self.name, x, self.channels)?;
        let (p, q) = (self.out_side(h), self.out_side(w));
        let (s, o) = (self.stride, self.offset);
        if let Some(dev) = OnDevice::of(&self.name, x) {
            let (out, inp) = (dev.place(&mut self.buffers.out, &[c, n, p, q], x)?, dev.buf(x)?);
            return dev.run(|l| shift_subsample_forward(l, out, inp, [c * n, h, w], s, o, [p, q]));
        }
        self.buffers.out.resize(&[c, n, p, q]);
        for (dst, src) in self.buffers.out.as_mut_slice().chunks_mut(p * q).zip(x.as_slice().chunks(h * w)) {
            for i in 0..p {
                for j in 0..q {
                    let (y, xx) = (i * s + o, j * s + o);
                    dst[i * q + j] = if y < h && xx < w { src[y * w + xx] } else { 0.0 };
                }
            }
        }
        Ok(())
    }

    fn backward(&mut self, _p: &Tensor, _g: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        expect_same(&self.name, dout, &self.buffers.out)?;
        let [c, n, h, w] = expect_image(&self.name, x, self.channels)?;
        let (p, q) = (self.out_side(h), self.out_side(w));
        if let Some(dev) = OnDevice::of(&self.name, x) {
            let (dinp, dy) = (dev.place(&mut self.buffers.dinp, x.shape(), x)?, dev.buf(dout)?);
            let (s, o) = (self.stride, self.offset);
            return dev.run(|l| shift_subsample_backward(l, dinp, dy, [c * n, h, w], s, o, [p, q]));
        }
        self.buffers.dinp.resize(x.shape());
        self.buffers.dinp.as_mut_slice().fill(0.0);
        let (s, o) = (self.stride, self.offset);
        for (dst, src) in self.buffers.dinp.as_mut_slice().chunks_mut(h * w).zip(dout.as_slice().chunks(p * q)) {
            for i in 0..p {
                for j in 0..q {
                    let (y, xx) = (i * s + o, j * s + o);
                    if y < h && xx < w {
                        dst[y * w + xx] = src[i * q + j];
                    }
                }
            }
        }
        Ok(())
    }

    fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }
}
