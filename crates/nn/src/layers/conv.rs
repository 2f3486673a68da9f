//! Convolution layer (no bias, as every conv in the reference's CIFAR models).

use ringsam_kernels::conv::ConvShape;
use ringsam_kernels::conv_gemm;
use ringsam_tensor::Tensor;
use ringsam_tensor::conv::{Conv2dShape, conv2d_backward, conv2d_forward};

use super::{Buffers, Layer, expect_image, expect_same, host, host_mut};
use crate::device::OnDevice;
use crate::error::KernelContext;
use crate::{NnError, ParamId, ParamLayout, Pass, Workspace};

/// How a convolution pads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// TensorFlow/Flax `'SAME'` (extra padding after the image).
    Same,
    /// Symmetric explicit padding; `Explicit(0)` is `'VALID'`.
    Explicit(usize),
}

/// A convolution's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Square kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Padding rule.
    pub padding: Padding,
    /// Channel groups.
    pub groups: usize,
    /// Whether backward computes the input gradient (false for the first layer of a network).
    pub input_grad: bool,
}

impl Conv2dConfig {
    /// A `k×k` SAME convolution, stride `stride`, one group, with input gradient.
    pub fn same(c_in: usize, c_out: usize, kernel: usize, stride: usize) -> Self {
        Conv2dConfig { c_in, c_out, kernel, stride, padding: Padding::Same, groups: 1, input_grad: true }
    }
}

/// `y = conv(x, kernel)`, kernel `(k, k, c_in/groups, c_out)` named `{name}/kernel`.
#[derive(Debug)]
pub struct Conv2d {
    name: String,
    cfg: Conv2dConfig,
    kernel: ParamId,
    shape: Option<Conv2dShape>,
    buffers: Buffers, // output (c_out, N, P, Q), input gradient (c_in, N, H, W)
    col: Workspace,   // im2col scratch, (k·k·c_in/groups) × (N·P·Q), shared with the model's other convolutions
}

impl Conv2d {
    /// Declares the kernel in `layout` under `{name}/kernel`; the layer gets its own scratch.
    pub fn new(layout: &mut ParamLayout, name: &str, cfg: Conv2dConfig) -> Self {
        Self::with_workspace(layout, name, cfg, &Workspace::new())
    }

    /// Like [`Conv2d::new`], sharing im2col scratch with the other layers given `workspace`.
    pub fn with_workspace(layout: &mut ParamLayout, name: &str, cfg: Conv2dConfig, workspace: &Workspace) -> Self {
        let kernel = layout.push(format!("{name}/kernel"), &[cfg.kernel, cfg.kernel, cfg.c_in / cfg.groups.max(1), cfg.c_out]);
        Conv2d { name: name.to_string(), cfg, kernel, shape: None, buffers: Buffers::default(), col: workspace.clone() }
    }

    /// A depthwise `k×k` SAME convolution over `channels`, with its kernel declared as TensorFlow
    /// and the reference's EfficientNet store it: `{name}/depthwise_kernel` of shape
    /// `(k, k, channels, 1)` — the same bytes as our `(k, k, 1, channels)` grouped kernel.
    pub fn depthwise_tf(
        layout: &mut ParamLayout,
        name: &str,
        channels: usize,
        kernel: usize,
        stride: usize,
        workspace: &Workspace,
    ) -> Self {
        let cfg = Conv2dConfig { groups: channels, ..Conv2dConfig::same(channels, channels, kernel, stride) };
        let id = layout.push(format!("{name}/depthwise_kernel"), &[kernel, kernel, channels, 1]);
        Conv2d { name: name.to_string(), cfg, kernel: id, shape: None, buffers: Buffers::default(), col: workspace.clone() }
    }

    /// The kernel's place in the arena.
    pub fn kernel(&self) -> ParamId {
        self.kernel
    }

    /// The shape of the last forward (None before the first).
    pub fn last_shape(&self) -> Option<Conv2dShape> {
        self.shape
    }

    /// The configuration.
    pub fn config(&self) -> &Conv2dConfig {
        &self.cfg
    }

    /// The output shape `(c_out, N, P, Q)` for an input `(c_in, N, H, W)`, without running.
    pub fn plan(&self, n: usize, h: usize, w: usize) -> Result<Conv2dShape, NnError> {
        let c = &self.cfg;
        match c.padding {
            Padding::Same => Conv2dShape::same(n, c.c_in, h, w, c.c_out, c.kernel, c.kernel, c.stride, c.groups),
            Padding::Explicit(p) => Conv2dShape::padded(n, c.c_in, h, w, c.c_out, c.kernel, c.kernel, c.stride, p, c.groups),
        }
        .in_layer(&self.name)
    }
}

impl Layer for Conv2d {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_device(&self) -> bool {
        true
    }

    fn forward(&mut self, params: &Tensor, _state: &mut Tensor, x: &Tensor, _pass: &Pass) -> Result<(), NnError> {
        let [_, n, h, w] = expect_image(&self.name, x, self.cfg.c_in)?;
        let sh = self.plan(n, h, w)?;
        if let Some(dev) = OnDevice::of(&self.name, x) {
            let ks = ConvShape::from(sh);
            let out = dev.place(&mut self.buffers.out, &[sh.k, sh.n, sh.p, sh.q], x)?;
            let (inp, kernel) = (dev.buf(x)?, dev.buf(params)?.slice(self.kernel.range()));
            let col = dev.scratch(&mut self.col.lock_device(), dev.run(|l| Ok(conv_gemm::scratch_need(l, &ks)))?, x)?;
            dev.run(|l| conv_gemm::forward(l, out, inp, kernel, col, &ks))?;
        } else {
            let params = host(&self.name, params)?;
            self.buffers.out.resize(&[sh.k, sh.n, sh.p, sh.q]);
            conv2d_forward(self.buffers.out.as_mut_slice(), x.as_slice(), &params[self.kernel.range()], &mut self.col.lock(), &sh)
                .in_layer(&self.name)?;
        }
        self.shape = Some(sh);
        Ok(())
    }

    fn backward(&mut self, params: &Tensor, grads: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        let sh = self.shape.ok_or_else(|| NnError::NoForward { layer: self.name.clone() })?;
        expect_same(&self.name, dout, &self.buffers.out)?;
        if let Some(dev) = OnDevice::of(&self.name, x) {
            let ks = ConvShape::from(sh);
            let dinp = if self.cfg.input_grad { Some(dev.place(&mut self.buffers.dinp, x.shape(), x)?) } else { None };
            let (dy, inp) = (dev.buf(dout)?, dev.buf(x)?);
            let (kernel, dkernel) = (dev.buf(params)?.slice(self.kernel.range()), dev.buf(grads)?.slice(self.kernel.range()));
            let col = dev.scratch(&mut self.col.lock_device(), dev.run(|l| Ok(conv_gemm::scratch_need(l, &ks)))?, x)?;
            return dev.run(|l| conv_gemm::backward(l, dinp, dkernel, dy, inp, kernel, col, &ks));
        }
        let params = host(&self.name, params)?;
        let grads = host_mut(&self.name, grads)?;
        let dinp = if self.cfg.input_grad {
            self.buffers.dinp.resize(x.shape());
            Some(self.buffers.dinp.as_mut_slice())
        } else {
            None
        };
        conv2d_backward(
            dinp,
            &mut grads[self.kernel.range()],
            dout.as_slice(),
            x.as_slice(),
            &params[self.kernel.range()],
            &mut self.col.lock(),
            &sh,
        )
        .in_layer(&self.name)
    }

    fn last_macs(&self) -> usize {
        self.shape.map_or(0, |s| s.macs())
    }

    fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }
}
