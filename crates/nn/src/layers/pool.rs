//! Pooling layers: average, max (with padding, for the ResNet stem) and global average.

use ringsam_kernels::DeviceVec;
use ringsam_kernels::pool as device;
use ringsam_tensor::Tensor;
use ringsam_tensor::pool::{
    PoolShape, avgpool_backward, avgpool_forward, global_avgpool_backward, global_avgpool_forward, maxpool_backward, maxpool_forward,
};

use super::{Buffers, Layer, expect_same, shape_error};
use crate::device::OnDevice;
use crate::error::KernelContext;
use crate::{NnError, Pass};

fn image_dims(name: &str, x: &Tensor) -> Result<[usize; 4], NnError> {
    match *x.shape() {
        [c, n, h, w] if c > 0 && n > 0 && h > 0 && w > 0 => Ok([c, n, h, w]),
        _ => Err(shape_error(name, "(C, N, H, W)".into(), x)),
    }
}

/// How a windowed pool's backward starts: the last forward's window, and `dout` checked against
/// the output.
fn window_backward(name: &str, window: Option<PoolShape>, buffers: &Buffers, dout: &Tensor) -> Result<PoolShape, NnError> {
    let sh = window.ok_or_else(|| NnError::NoForward { layer: name.to_string() })?;
    expect_same(name, dout, &buffers.out)?;
    Ok(sh)
}

/// Average pooling with `padding='VALID'` (the WRN shortcut's `avg_pool(x, (s, s), (s, s))`).
#[derive(Debug)]
pub struct AvgPool2d {
    name: String,
    window: usize,
    stride: usize,
    shape: Option<PoolShape>,
    buffers: Buffers,
}

impl AvgPool2d {
    /// A `window × window` average pool with the given stride.
    pub fn new(name: &str, window: usize, stride: usize) -> Self {
        AvgPool2d { name: name.to_string(), window, stride, shape: None, buffers: Buffers::default() }
    }
}

impl Layer for AvgPool2d {
    fn name(&self) -> &str {
        &self.name
    }
    fn forward(&mut self, _p: &Tensor, _s: &mut Tensor, x: &Tensor, _pass: &Pass) -> Result<(), NnError> {
        let [c, n, h, w] = image_dims(&self.name, x)?;
        let sh = PoolShape::valid(c * n, h, w, self.window, self.stride).in_layer(&self.name)?;
        self.shape = Some(sh);
        if let Some(dev) = OnDevice::of(&self.name, x) {
            let (out, inp) = (dev.place(&mut self.buffers.out, &[c, n, sh.p, sh.q], x)?, dev.buf(x)?);
            return dev.run(|l| device::avgpool_forward(l, out, inp, &sh.into()));
        }
        self.buffers.out.resize(&[c, n, sh.p, sh.q]);
        avgpool_forward(self.buffers.out.as_mut_slice(), x.as_slice(), &sh).in_layer(&self.name)
    }
    fn backward(&mut self, _p: &Tensor, _g: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        let sh = window_backward(&self.name, self.shape, &self.buffers, dout)?;
        if let Some(dev) = OnDevice::of(&self.name, x) {
            let (dinp, dy) = (dev.place(&mut self.buffers.dinp, x.shape(), x)?, dev.buf(dout)?);
            return dev.run(|l| device::avgpool_backward(l, dinp, dy, &sh.into()));
        }
        self.buffers.dinp.resize(x.shape());
        avgpool_backward(self.buffers.dinp.as_mut_slice(), dout.as_slice(), &sh).in_layer(&self.name)
    }

    fn on_device(&self) -> bool {
        true
    }

    fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }
}

/// Max pooling with `padding='SAME'` (padding never wins: it counts as −∞).
#[derive(Debug)]
pub struct MaxPool2d {
    name: String,
    window: usize,
    stride: usize,
    shape: Option<PoolShape>,
    argmax: Vec<u32>,                         // (C·N·P·Q,) winning input index within its plane
    argmax_on_device: Option<DeviceVec<u32>>, // the same, when the layer runs on a device
    buffers: Buffers,
}

impl MaxPool2d {
    /// A `window × window` SAME max pool with the given stride.
    pub fn new(name: &str, window: usize, stride: usize) -> Self {
        MaxPool2d {
            name: name.to_string(),
            window,
            stride,
            shape: None,
            argmax: Vec::new(),
            argmax_on_device: None,
            buffers: Buffers::default(),
        }
    }
}

impl Layer for MaxPool2d {
    fn name(&self) -> &str {
        &self.name
    }
    fn forward(&mut self, _p: &Tensor, _s: &mut Tensor, x: &Tensor, _pass: &Pass) -> Result<(), NnError> {
        let [c, n, h, w] = image_dims(&self.name, x)?;
        let sh = PoolShape::same(c * n, h, w, self.window, self.stride).in_layer(&self.name)?;
        self.shape = Some(sh);
        if let Some(dev) = OnDevice::of(&self.name, x) {
            let argmax = dev.keep(&mut self.argmax_on_device, sh.output_len())?;
            let (out, inp) = (dev.place(&mut self.buffers.out, &[c, n, sh.p, sh.q], x)?, dev.buf(x)?);
            return dev.run(|l| device::maxpool_forward(l, out, argmax, inp, &sh.into()));
        }
        self.argmax.resize(sh.output_len(), 0);
        self.buffers.out.resize(&[c, n, sh.p, sh.q]);
        maxpool_forward(self.buffers.out.as_mut_slice(), &mut self.argmax, x.as_slice(), &sh).in_layer(&self.name)
    }
    fn backward(&mut self, _p: &Tensor, _g: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        let sh = window_backward(&self.name, self.shape, &self.buffers, dout)?;
        if let Some(dev) = OnDevice::of(&self.name, x) {
            let argmax = dev.keep(&mut self.argmax_on_device, sh.output_len())?;
            let (dinp, dy) = (dev.place(&mut self.buffers.dinp, x.shape(), x)?, dev.buf(dout)?);
            return dev.run(|l| device::maxpool_backward(l, dinp, dy, argmax, &sh.into()));
        }
        self.buffers.dinp.resize(x.shape());
        maxpool_backward(self.buffers.dinp.as_mut_slice(), dout.as_slice(), &self.argmax, &sh).in_layer(&self.name)
    }

    fn on_device(&self) -> bool {
        true
    }

    fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }
}

/// Global average pooling `(C, N, H, W)` → features `(C, N)`.
#[derive(Debug)]
pub struct GlobalAvgPool {
    name: String,
    buffers: Buffers,
}

impl GlobalAvgPool {
    /// A global average pool.
    pub fn new(name: &str) -> Self {
        GlobalAvgPool { name: name.to_string(), buffers: Buffers::default() }
    }
}

impl Layer for GlobalAvgPool {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_device(&self) -> bool {
        true
    }
    fn forward(&mut self, _p: &Tensor, _s: &mut Tensor, x: &Tensor, _pass: &Pass) -> Result<(), NnError> {
        let [c, n, h, w] = image_dims(&self.name, x)?;
        if let Some(dev) = OnDevice::of(&self.name, x) {
            let (out, inp) = (dev.place(&mut self.buffers.out, &[c, n], x)?, dev.buf(x)?);
            return dev.run(|l| device::global_avgpool_forward(l, out, inp, h * w));
        }
        self.buffers.out.resize(&[c, n]);
        global_avgpool_forward(self.buffers.out.as_mut_slice(), x.as_slice(), c * n, h * w).in_layer(&self.name)
    }
    fn backward(&mut self, _p: &Tensor, _g: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        let [c, n, h, w] = image_dims(&self.name, x)?;
        expect_same(&self.name, dout, &self.buffers.out)?;
        if let Some(dev) = OnDevice::of(&self.name, x) {
            let (dinp, dy) = (dev.place(&mut self.buffers.dinp, x.shape(), x)?, dev.buf(dout)?);
            return dev.run(|l| device::global_avgpool_backward(l, dinp, dy, h * w));
        }
        self.buffers.dinp.resize(x.shape());
        global_avgpool_backward(self.buffers.dinp.as_mut_slice(), dout.as_slice(), c * n, h * w).in_layer(&self.name)
    }

    fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }
}
