//! The parameter-free shortcut of WideResNet (and PyramidNet): when a block changes width,
//! `avg_pool(x, stride, stride)` then zero channels appended (reference `_output_add`).

use ringsam_kernels::flat::{copy, fill};
use ringsam_kernels::pool as device;
use ringsam_tensor::Tensor;
use ringsam_tensor::pad::{channel_pad_backward, channel_pad_forward};
use ringsam_tensor::pool::{PoolShape, avgpool_backward, avgpool_forward};

use super::{Buffers, Layer, expect_image, expect_same};
use crate::device::OnDevice;
use crate::error::KernelContext;
use crate::{NnError, Pass};

/// `(C_in, N, H, W)` → `(C_out, N, H/s, W/s)`: average pool by the stride, then zero-pad channels.
#[derive(Debug)]
pub struct PoolPadShortcut {
    name: String,
    c_in: usize,
    c_out: usize,
    stride: usize,
    pool: Option<PoolShape>,
    pooled: Tensor,  // (C_in, N, H/s, W/s); unused when stride is 1
    dpooled: Tensor, // gradient of `pooled`
    buffers: Buffers,
}

impl PoolPadShortcut {
    /// A shortcut from `c_in` to `c_out ≥ c_in` channels with the given stride.
    pub fn new(name: &str, c_in: usize, c_out: usize, stride: usize) -> Self {
        assert!(c_out >= c_in && stride >= 1, "shortcut {name}: {c_in}->{c_out} channels, stride {stride}");
        PoolPadShortcut {
            name: name.to_string(),
            c_in,
            c_out,
            stride,
            pool: None,
            pooled: Tensor::empty(),
            dpooled: Tensor::empty(),
            buffers: Buffers::default(),
        }
    }
}

impl Layer for PoolPadShortcut {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_device(&self) -> bool {
        true
    }

    fn forward(&mut self, _p: &Tensor, _s: &mut Tensor, x: &Tensor, _pass: &Pass) -> Result<(), NnError> {
        let [c, n, h, w] = expect_image(&self.name, x, self.c_in)?;
        if let Some(dev) = OnDevice::of(&self.name, x) {
            let inp = dev.buf(x)?;
            self.pool =
                (self.stride > 1).then(|| PoolShape::valid(c * n, h, w, self.stride, self.stride)).transpose().in_layer(&self.name)?;
            let (src, p, q) = match self.pool {
                Some(sh) => {
                    let pooled = dev.place(&mut self.pooled, &[c, n, sh.p, sh.q], x)?;
                    dev.run(|l| device::avgpool_forward(l, pooled, inp, &sh.into()))?;
                    (pooled, sh.p, sh.q)
                }
                None => (inp, h, w),
            };
            let out = dev.place(&mut self.buffers.out, &[self.c_out, n, p, q], x)?;
            let kept = self.c_in * n * p * q;
            return dev.run(|l| {
                copy(l, out.slice(0..kept), src)?;
                fill(l, out.slice(kept..out.len()), 0.0)
            });
        }
        let src = if self.stride > 1 {
            let sh = PoolShape::valid(c * n, h, w, self.stride, self.stride).in_layer(&self.name)?;
            self.pooled.resize(&[c, n, sh.p, sh.q]);
            avgpool_forward(self.pooled.as_mut_slice(), x.as_slice(), &sh).in_layer(&self.name)?;
            self.pool = Some(sh);
            &self.pooled
        } else {
            self.pool = None;
            x
        };
        let [_, _, p, q] = src.dims4("shortcut").in_layer(&self.name)?;
        self.buffers.out.resize(&[self.c_out, n, p, q]);
        channel_pad_forward(self.buffers.out.as_mut_slice(), src.as_slice(), self.c_in, self.c_out, n * p * q).in_layer(&self.name)
    }

    fn backward(&mut self, _p: &Tensor, _g: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        expect_same(&self.name, dout, &self.buffers.out)?;
        let [_, n, p, q] = self.buffers.out.dims4("shortcut").in_layer(&self.name)?;
        if let Some(dev) = OnDevice::of(&self.name, x) {
            let kept = dev.buf(dout)?.slice(0..self.c_in * n * p * q);
            let dinp = dev.place(&mut self.buffers.dinp, x.shape(), x)?;
            return match self.pool {
                Some(sh) => {
                    let dpooled = dev.place(&mut self.dpooled, &[self.c_in, n, p, q], x)?;
                    dev.run(|l| {
                        copy(l, dpooled, kept)?;
                        device::avgpool_backward(l, dinp, dpooled, &sh.into())
                    })
                }
                None => dev.run(|l| copy(l, dinp, kept)),
            };
        }
        self.buffers.dinp.resize(x.shape());
        match self.pool {
            Some(sh) => {
                self.dpooled.resize(self.pooled.shape());
                channel_pad_backward(self.dpooled.as_mut_slice(), dout.as_slice(), self.c_in, self.c_out, n * p * q)
                    .in_layer(&self.name)?;
                avgpool_backward(self.buffers.dinp.as_mut_slice(), self.dpooled.as_slice(), &sh).in_layer(&self.name)
            }
            None => channel_pad_backward(self.buffers.dinp.as_mut_slice(), dout.as_slice(), self.c_in, self.c_out, n * p * q)
                .in_layer(&self.name),
        }
    }

    fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }
}
