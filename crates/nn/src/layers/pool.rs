//! Pooling layers: average, max (with padding, for the ResNet stem) and global average.

use ringsam_tensor::Tensor;
use ringsam_tensor::pool::{
    PoolShape, avgpool_backward, avgpool_forward, global_avgpool_backward, global_avgpool_forward, maxpool_backward, maxpool_forward,
};

use super::{Layer, expect_same, shape_error};
use crate::error::KernelContext;
use crate::{NnError, Pass};

fn image_dims(name: &str, x: &Tensor) -> Result<[usize; 4], NnError> {
    match *x.shape() {
        [c, n, h, w] if c > 0 && n > 0 && h > 0 && w > 0 => Ok([c, n, h, w]),
        _ => Err(shape_error(name, "(C, N, H, W)".into(), x)),
    }
}

/// Average pooling with `padding='VALID'` (the WRN shortcut's `avg_pool(x, (s, s), (s, s))`).
#[derive(Debug)]
pub struct AvgPool2d {
    name: String,
    window: usize,
    stride: usize,
    shape: Option<PoolShape>,
    out: Tensor,
    dinp: Tensor,
}

impl AvgPool2d {
    /// A `window × window` average pool with the given stride.
    pub fn new(name: &str, window: usize, stride: usize) -> Self {
        AvgPool2d { name: name.to_string(), window, stride, shape: None, out: Tensor::empty(), dinp: Tensor::empty() }
    }
}

impl Layer for AvgPool2d {
    fn name(&self) -> &str {
        &self.name
    }
    fn forward(&mut self, _p: &[f32], _s: &mut [f32], x: &Tensor, _pass: &Pass) -> Result<(), NnError> {
        let [c, n, h, w] = image_dims(&self.name, x)?;
        let sh = PoolShape::valid(c * n, h, w, self.window, self.stride).in_layer(&self.name)?;
        self.out.resize(&[c, n, sh.p, sh.q]);
        avgpool_forward(self.out.as_mut_slice(), x.as_slice(), &sh).in_layer(&self.name)?;
        self.shape = Some(sh);
        Ok(())
    }
    fn backward(&mut self, _p: &[f32], _g: &mut [f32], x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        let sh = self.shape.ok_or_else(|| NnError::NoForward { layer: self.name.clone() })?;
        expect_same(&self.name, dout, &self.out)?;
        self.dinp.resize(x.shape());
        avgpool_backward(self.dinp.as_mut_slice(), dout.as_slice(), &sh).in_layer(&self.name)
    }
    fn output(&self) -> &Tensor {
        &self.out
    }
    fn dinput(&self) -> &Tensor {
        &self.dinp
    }

    fn release_dinput(&mut self) {
        self.dinp = Tensor::empty();
    }
}

/// Max pooling with `padding='SAME'` (padding never wins: it counts as −∞).
#[derive(Debug)]
pub struct MaxPool2d {
    name: String,
    window: usize,
    stride: usize,
    shape: Option<PoolShape>,
    argmax: Vec<u32>, // (C·N·P·Q,) winning input index within its plane
    out: Tensor,
    dinp: Tensor,
}

impl MaxPool2d {
    /// A `window × window` SAME max pool with the given stride.
    pub fn new(name: &str, window: usize, stride: usize) -> Self {
        MaxPool2d { name: name.to_string(), window, stride, shape: None, argmax: Vec::new(), out: Tensor::empty(), dinp: Tensor::empty() }
    }
}

impl Layer for MaxPool2d {
    fn name(&self) -> &str {
        &self.name
    }
    fn forward(&mut self, _p: &[f32], _s: &mut [f32], x: &Tensor, _pass: &Pass) -> Result<(), NnError> {
        let [c, n, h, w] = image_dims(&self.name, x)?;
        let sh = PoolShape::same(c * n, h, w, self.window, self.stride).in_layer(&self.name)?;
        self.out.resize(&[c, n, sh.p, sh.q]);
        self.argmax.resize(sh.output_len(), 0);
        maxpool_forward(self.out.as_mut_slice(), &mut self.argmax, x.as_slice(), &sh).in_layer(&self.name)?;
        self.shape = Some(sh);
        Ok(())
    }
    fn backward(&mut self, _p: &[f32], _g: &mut [f32], x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        let sh = self.shape.ok_or_else(|| NnError::NoForward { layer: self.name.clone() })?;
        expect_same(&self.name, dout, &self.out)?;
        self.dinp.resize(x.shape());
        maxpool_backward(self.dinp.as_mut_slice(), dout.as_slice(), &self.argmax, &sh).in_layer(&self.name)
    }
    fn output(&self) -> &Tensor {
        &self.out
    }
    fn dinput(&self) -> &Tensor {
        &self.dinp
    }

    fn release_dinput(&mut self) {
        self.dinp = Tensor::empty();
    }
}

/// Global average pooling `(C, N, H, W)` → features `(C, N)`.
#[derive(Debug)]
pub struct GlobalAvgPool {
    name: String,
    out: Tensor,
    dinp: Tensor,
}

impl GlobalAvgPool {
    /// A global average pool.
    pub fn new(name: &str) -> Self {
        GlobalAvgPool { name: name.to_string(), out: Tensor::empty(), dinp: Tensor::empty() }
    }
}

impl Layer for GlobalAvgPool {
    fn name(&self) -> &str {
        &self.name
    }
    fn forward(&mut self, _p: &[f32], _s: &mut [f32], x: &Tensor, _pass: &Pass) -> Result<(), NnError> {
        let [c, n, h, w] = image_dims(&self.name, x)?;
        self.out.resize(&[c, n]);
        global_avgpool_forward(self.out.as_mut_slice(), x.as_slice(), c * n, h * w).in_layer(&self.name)
    }
    fn backward(&mut self, _p: &[f32], _g: &mut [f32], x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        let [c, n, h, w] = image_dims(&self.name, x)?;
        expect_same(&self.name, dout, &self.out)?;
        self.dinp.resize(x.shape());
        global_avgpool_backward(self.dinp.as_mut_slice(), dout.as_slice(), c * n, h * w).in_layer(&self.name)
    }
    fn output(&self) -> &Tensor {
        &self.out
    }
    fn dinput(&self) -> &Tensor {
        &self.dinp
    }

    fn release_dinput(&mut self) {
        self.dinp = Tensor::empty();
    }
}
