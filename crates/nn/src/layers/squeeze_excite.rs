//! Squeeze-and-excitation as the reference's EfficientNet builds it (`SqueezeExcite_0`): global
//! average pool → 1×1 conv to `R` channels with bias (`reduce_conv2d_0`) → swish → 1×1 conv back
//! to `C` with bias (`expand_conv2d_1`) → sigmoid → scale each channel of the input.
//!
//! On a pooled `(C, N)` map a 1×1 convolution is a small matrix product; the kernels keep the
//! reference's shapes `(1, 1, C, R)` and `(1, 1, R, C)` so checkpoints load by name and shape.
//!
//! Backward, with `s` the pooled input, `z` the reduced pre-activation, `a = swish(z)`, `e` the
//! expanded pre-activation and `g = σ(e)`:
//! `dg = Σ_hw dy·x`, `de = dg·g(1−g)`, `da = W₂·de`, `dz = da·σ(z)(1 + z(1−σ(z)))`,
//! `ds = W₁·dz`, and `dx = dy·g + ds/(H·W)`; kernel and bias gradients are the usual outer
//! products and sums over the batch.

use ringsam_kernels::Buf;
use ringsam_kernels::squeeze_excite::{self as se, SeParams, SeSaved, SeScratch, SeShape};
use ringsam_tensor::Tensor;
use ringsam_tensor::planes::{plane_affine, plane_dots, plane_means};

use super::{Buffers, Layer, expect_image, expect_same, host, host_mut};
use crate::device::OnDevice;
use crate::error::KernelContext;
use crate::{NnError, ParamId, ParamLayout, Pass};

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// See the module docs.
#[derive(Debug)]
pub struct SqueezeExcite {
    name: String,
    channels: usize,
    reduced: usize,
    w1: ParamId, // (1, 1, C, R)
    b1: ParamId, // (R,)
    w2: ParamId, // (1, 1, R, C)
    b2: ParamId, // (C,)
    s: Vec<f32>, // (C, N) pooled input
    z: Vec<f32>, // (R, N)
    a: Vec<f32>, // (R, N)
    g: Vec<f32>, // (C, N) gates
    on_gpu: OnGpu,
    examples: usize, // N of the last forward (for the MAC count)
    buffers: Buffers,
}

/// The same maps on a device ([`se::SeSaved`]), and the backward's scratch.
#[derive(Debug, Default)]
struct OnGpu {
    s: Tensor,
    z: Tensor,
    a: Tensor,
    g: Tensor,
    dg: Tensor,
    da: Tensor,
    ds: Tensor,
}

impl SqueezeExcite {
    /// `{name}/reduce_conv2d_0/{kernel,bias}` and `{name}/expand_conv2d_1/{kernel,bias}`.
    pub fn new(layout: &mut ParamLayout, name: &str, channels: usize, reduced: usize) -> Self {
        assert!(channels > 0 && reduced > 0, "{name}: {channels} channels squeezed to {reduced}");
        SqueezeExcite {
            name: name.to_string(),
            channels,
            reduced,
            w1: layout.push(format!("{name}/reduce_conv2d_0/kernel"), &[1, 1, channels, reduced]),
            b1: layout.push(format!("{name}/reduce_conv2d_0/bias"), &[reduced]),
            w2: layout.push(format!("{name}/expand_conv2d_1/kernel"), &[1, 1, reduced, channels]),
            b2: layout.push(format!("{name}/expand_conv2d_1/bias"), &[channels]),
            s: Vec::new(),
            z: Vec::new(),
            a: Vec::new(),
            g: Vec::new(),
            on_gpu: OnGpu::default(),
            examples: 0,
            buffers: Buffers::default(),
        }
    }

    fn params_of(&self, p: Buf<f32>) -> SeParams {
        SeParams { w1: p.slice(self.w1.range()), b1: p.slice(self.b1.range()), w2: p.slice(self.w2.range()), b2: p.slice(self.b2.range()) }
    }

    fn saved(&self, dev: &OnDevice) -> Result<SeSaved, NnError> {
        let t = &self.on_gpu;
        Ok(SeSaved { s: dev.buf(&t.s)?, z: dev.buf(&t.z)?, a: dev.buf(&t.a)?, g: dev.buf(&t.g)? })
    }
}

impl Layer for SqueezeExcite {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_device(&self) -> bool {
        true
    }

    fn forward(&mut self, params: &Tensor, _s: &mut Tensor, x: &Tensor, _pass: &Pass) -> Result<(), NnError> {
        let [c, n, h, w] = expect_image(&self.name, x, self.channels)?;
        let (r, hw) = (self.reduced, h * w);
        self.examples = n;
        if let Some(dev) = OnDevice::of(&self.name, x) {
            let t = &mut self.on_gpu;
            for (map, len) in [(&mut t.s, c * n), (&mut t.z, r * n), (&mut t.a, r * n), (&mut t.g, c * n)] {
                dev.place(map, &[len], x)?;
            }
            let (out, inp, p) = (dev.place(&mut self.buffers.out, x.shape(), x)?, dev.buf(x)?, dev.buf(params)?);
            let (p, keep, sh) = (self.params_of(p), self.saved(&dev)?, SeShape { c, r, n, hw });
            return dev.run(|l| se::forward(l, out, inp, &p, &keep, sh));
        }
        let params = host(&self.name, params)?;
        let (w1, b1, w2, b2) = (&params[self.w1.range()], &params[self.b1.range()], &params[self.w2.range()], &params[self.b2.range()]);
        self.s.resize(c * n, 0.0);
        plane_means(&mut self.s, x.as_slice(), hw).in_layer(&self.name)?;
        self.z = vec![0.0; r * n];
        for ci in 0..c {
            for ri in 0..r {
                let wv = w1[ci * r + ri];
                for ni in 0..n {
                    self.z[ri * n + ni] += wv * self.s[ci * n + ni];
                }
            }
        }
        for (ri, &b) in b1[..r].iter().enumerate() {
            self.z[ri * n..(ri + 1) * n].iter_mut().for_each(|v| *v += b);
        }
        self.a = self.z.iter().map(|&v| v * sigmoid(v)).collect();
        let mut e = vec![0.0f32; c * n];
        for ri in 0..r {
            for ci in 0..c {
                let wv = w2[ri * c + ci];
                for ni in 0..n {
                    e[ci * n + ni] += wv * self.a[ri * n + ni];
                }
            }
        }
        self.g = e.iter().enumerate().map(|(i, &v)| sigmoid(v + b2[i / n])).collect();
        self.buffers.out.resize(x.shape());
        plane_affine(self.buffers.out.as_mut_slice(), x.as_slice(), &self.g, &[], hw).in_layer(&self.name)
    }

    fn backward(&mut self, params: &Tensor, grads: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        expect_same(&self.name, dout, &self.buffers.out)?;
        let [c, n, h, w] = expect_image(&self.name, x, self.channels)?;
        let (r, hw) = (self.reduced, h * w);
        if let Some(dev) = OnDevice::of(&self.name, x) {
            let t = &mut self.on_gpu;
            let tmp = SeScratch {
                dg: dev.place(&mut t.dg, &[c * n], x)?,
                da: dev.place(&mut t.da, &[r * n], x)?,
                ds: dev.place(&mut t.ds, &[c * n], x)?,
            };
            let dinp = dev.place(&mut self.buffers.dinp, x.shape(), x)?;
            let (p, g) = (self.params_of(dev.buf(params)?), self.params_of(dev.buf(grads)?));
            let (dy, inp, saved, sh) = (dev.buf(dout)?, dev.buf(x)?, self.saved(&dev)?, SeShape { c, r, n, hw });
            return dev.run(|l| se::backward(l, dinp, &g, dy, inp, &p, &saved, &tmp, sh));
        }
        let params = host(&self.name, params)?;
        let grads = host_mut(&self.name, grads)?;
        // dg and de, per (channel, example).
        let mut de = vec![0.0f32; c * n];
        plane_dots(&mut de, dout.as_slice(), x.as_slice(), hw).in_layer(&self.name)?;
        de.iter_mut().zip(&self.g).for_each(|(d, &g)| *d *= g * (1.0 - g));
        let (w1, w2) = (&params[self.w1.range()], &params[self.w2.range()]);
        let mut da = vec![0.0f32; r * n];
        for ri in 0..r {
            for ci in 0..c {
                let wv = w2[ri * c + ci];
                for ni in 0..n {
                    da[ri * n + ni] += wv * de[ci * n + ni];
                }
            }
        }
        let dz: Vec<f32> = da
            .iter()
            .zip(&self.z)
            .map(|(&d, &z)| {
                let sg = sigmoid(z);
                d * sg * (1.0 + z * (1.0 - sg))
            })
            .collect();
        let mut ds = vec![0.0f32; c * n];
        for ci in 0..c {
            for ri in 0..r {
                let wv = w1[ci * r + ri];
                for ni in 0..n {
                    ds[ci * n + ni] += wv * dz[ri * n + ni];
                }
            }
        }
        // Parameter gradients.
        let gw2 = self.w2.range();
        for ri in 0..r {
            for ci in 0..c {
                grads[gw2.start + ri * c + ci] += (0..n).map(|ni| self.a[ri * n + ni] * de[ci * n + ni]).sum::<f32>();
            }
        }
        let gb2 = self.b2.range();
        for ci in 0..c {
            grads[gb2.start + ci] += de[ci * n..(ci + 1) * n].iter().sum::<f32>();
        }
        let gw1 = self.w1.range();
        for ci in 0..c {
            for ri in 0..r {
                grads[gw1.start + ci * r + ri] += (0..n).map(|ni| self.s[ci * n + ni] * dz[ri * n + ni]).sum::<f32>();
            }
        }
        let gb1 = self.b1.range();
        for ri in 0..r {
            grads[gb1.start + ri] += dz[ri * n..(ri + 1) * n].iter().sum::<f32>();
        }
        // dx = dy·g + ds/(H·W).
        ds.iter_mut().for_each(|v| *v /= hw as f32);
        self.buffers.dinp.resize(x.shape());
        plane_affine(self.buffers.dinp.as_mut_slice(), dout.as_slice(), &self.g, &ds, hw).in_layer(&self.name)
    }

    /// The two 1×1 convolutions.
    fn last_macs(&self) -> usize {
        2 * self.channels * self.reduced * self.examples
    }

    fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }
}
