//! Batch normalization (optionally fused with the following ReLU), with running statistics.

use ringsam_kernels::batchnorm::{self as device, BnLayout, BnParams, BnStats};
use ringsam_kernels::flat::{copy, ema_update};
use ringsam_tensor::Tensor;
use ringsam_tensor::batchnorm::{BnShape, batchnorm_backward, batchnorm_backward_eval, batchnorm_forward_eval, batchnorm_forward_train};

use super::{Buffers, Layer, expect_same, host, host_mut, shape_error};
use crate::device::OnDevice;
use crate::error::KernelContext;
use crate::{NnError, ParamId, ParamLayout, Pass, StateLayout};

/// Batch-norm hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormConfig {
    /// Channels.
    pub channels: usize,
    /// Running-statistics momentum, Flax convention: `running = m·running + (1 − m)·batch`.
    pub momentum: f32,
    /// Added to the variance.
    pub eps: f32,
    /// Apply ReLU to the output (fused).
    pub relu: bool,
}

impl BatchNormConfig {
    /// The reference's CIFAR models: momentum 0.9, eps 1e-5 (sam_jax/models/utils.py).
    pub fn cifar(channels: usize, relu: bool) -> Self {
        BatchNormConfig { channels, momentum: 0.9, eps: 1e-5, relu }
    }
}

/// Batch norm over `(C, N, H, W)` or `(C, N)`; parameters `{name}/scale`, `{name}/bias`, state
/// `{name}/mean`, `{name}/var`.
#[derive(Debug)]
pub struct BatchNorm {
    name: String,
    cfg: BatchNormConfig,
    scale: ParamId,
    bias: ParamId,
    running_mean: ParamId,
    running_var: ParamId,
    last_train: Option<bool>,
    mean: Vec<f32>,    // (C,) batch mean of the last training forward
    var: Vec<f32>,     // (C,) biased batch variance
    rstd: Vec<f32>,    // (C,) 1/sqrt(var + eps)
    on_device: Tensor, // mean, var and rstd, (3·C,), when the layer runs on a device
    buffers: Buffers,
}

impl BatchNorm {
    /// Declares scale and bias in `params`, running mean and variance in `state`.
    pub fn new(params: &mut ParamLayout, state: &mut StateLayout, name: &str, cfg: BatchNormConfig) -> Self {
        let c = cfg.channels;
        BatchNorm {
            name: name.to_string(),
            cfg,
            scale: params.push(format!("{name}/scale"), &[c]),
            bias: params.push(format!("{name}/bias"), &[c]),
            running_mean: state.push(format!("{name}/mean"), &[c]),
            running_var: state.push(format!("{name}/var"), &[c]),
            last_train: None,
            mean: vec![0.0; c],
            var: vec![0.0; c],
            rstd: vec![0.0; c],
            on_device: Tensor::empty(),
            buffers: Buffers::default(),
        }
    }

    /// Parameter ids `(scale, bias)`.
    pub fn params(&self) -> (ParamId, ParamId) {
        (self.scale, self.bias)
    }

    /// State ids `(running mean, running variance)`.
    pub fn state(&self) -> (ParamId, ParamId) {
        (self.running_mean, self.running_var)
    }

    fn shape(&self, x: &Tensor) -> Result<BnShape, NnError> {
        match x.shape() {
            [c, rest @ ..] if *c == self.cfg.channels && !rest.is_empty() && rest.iter().all(|&d| d > 0) => {
                Ok(BnShape { c: *c, m: rest.iter().product() })
            }
            _ => Err(shape_error(&self.name, format!("({}, N, ...)", self.cfg.channels), x)),
        }
    }
}

impl Layer for BatchNorm {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_device(&self) -> bool {
        true
    }

    fn forward(&mut self, params: &Tensor, state: &mut Tensor, x: &Tensor, pass: &Pass) -> Result<(), NnError> {
        let sh = self.shape(x)?;
        let BatchNormConfig { momentum, eps, relu, .. } = self.cfg;
        let batch_stats = pass.train && !pass.frozen_bn;
        if let Some(dev) = OnDevice::of(&self.name, x) {
            let (lay, c) = (BnLayout::cnhw(sh.c, sh.m), sh.c);
            let (out, inp) = (dev.place(&mut self.buffers.out, x.shape(), x)?, dev.buf(x)?);
            let all = dev.scratch(&mut self.on_device, 3 * c, x)?;
            let stats = BnStats { mean: all.slice(0..c), var: all.slice(c..2 * c), rstd: all.slice(2 * c..3 * c) };
            let p = dev.buf(params)?;
            let p = BnParams { scale: p.slice(self.scale.range()), bias: p.slice(self.bias.range()) };
            let st = dev.buf(state)?;
            let (rm, rv) = (st.slice(self.running_mean.range()), st.slice(self.running_var.range()));
            dev.run(|l| {
                if !batch_stats {
                    // Backward in eval mode needs the running statistics as they were here.
                    device::forward_eval(l, lay, out, inp, p, rm, rv, eps, relu)?;
                    copy(l, stats.mean, rm)?;
                    return copy(l, stats.var, rv);
                }
                device::forward_train(l, lay, out, stats, inp, p, eps, relu)?;
                if pass.update_bn_stats {
                    ema_update(l, rm, stats.mean, momentum)?;
                    ema_update(l, rv, stats.var, momentum)?;
                }
                Ok(())
            })?;
            self.last_train = Some(batch_stats);
            return Ok(());
        }
        let params = host(&self.name, params)?;
        let state = host_mut(&self.name, state)?;
        self.buffers.out.resize(x.shape());
        let (scale, bias) = (&params[self.scale.range()], &params[self.bias.range()]);
        if batch_stats {
            batchnorm_forward_train(
                self.buffers.out.as_mut_slice(),
                &mut self.mean,
                &mut self.var,
                &mut self.rstd,
                x.as_slice(),
                scale,
                bias,
                eps,
                relu,
                &sh,
            )
            .in_layer(&self.name)?;
            if pass.update_bn_stats {
                for (r, b) in state[self.running_mean.range()].iter_mut().zip(&self.mean) {
                    *r = momentum * *r + (1.0 - momentum) * b;
                }
                for (r, b) in state[self.running_var.range()].iter_mut().zip(&self.var) {
                    *r = momentum * *r + (1.0 - momentum) * b;
                }
            }
        } else {
            let (rm, rv) = (&state[self.running_mean.range()], &state[self.running_var.range()]);
            batchnorm_forward_eval(self.buffers.out.as_mut_slice(), x.as_slice(), scale, bias, rm, rv, eps, relu, &sh)
                .in_layer(&self.name)?;
            // Backward in eval mode needs the running statistics as they were in this forward.
            self.mean.copy_from_slice(rm);
            self.var.copy_from_slice(rv);
        }
        self.last_train = Some(batch_stats);
        Ok(())
    }

    fn backward(&mut self, params: &Tensor, grads: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        let train = self.last_train.ok_or_else(|| NnError::NoForward { layer: self.name.clone() })?;
        let sh = self.shape(x)?;
        expect_same(&self.name, dout, &self.buffers.out)?;
        if let Some(dev) = OnDevice::of(&self.name, x) {
            let (lay, c) = (BnLayout::cnhw(sh.c, sh.m), sh.c);
            let all = dev.buf(&self.on_device)?;
            let stats = BnStats { mean: all.slice(0..c), var: all.slice(c..2 * c), rstd: all.slice(2 * c..3 * c) };
            let (g, scale) = (dev.buf(grads)?, dev.buf(params)?.slice(self.scale.range()));
            let (dscale, dbias) = (g.slice(self.scale.range()), g.slice(self.bias.range()));
            let (dy, y, inp) = (dev.buf(dout)?, dev.buf(&self.buffers.out)?, dev.buf(x)?);
            let dinp = dev.place(&mut self.buffers.dinp, x.shape(), x)?;
            let (eps, relu) = (self.cfg.eps, self.cfg.relu);
            return dev.run(|l| {
                if train {
                    device::backward(l, lay, dinp, dscale, dbias, dy, y, inp, stats, scale, relu)
                } else {
                    // The forward kept the running statistics it used in `mean` and `var`.
                    device::backward_eval(l, lay, [dinp, dscale, dbias], [dy, y, inp], [stats.mean, stats.var], scale, eps, relu)
                }
            });
        }
        let params = host(&self.name, params)?;
        let grads = host_mut(&self.name, grads)?;
        self.buffers.dinp.resize(x.shape());
        let scale = &params[self.scale.range()];
        // scale and bias are adjacent in the arena (declared one after the other).
        let (gs, gb) = grads[self.scale.range().start..self.bias.range().end].split_at_mut(self.cfg.channels);
        let (dx, dy, y, xs) = (self.buffers.dinp.as_mut_slice(), dout.as_slice(), self.buffers.out.as_slice(), x.as_slice());
        if train {
            batchnorm_backward(dx, gs, gb, dy, y, xs, &self.mean, &self.rstd, scale, self.cfg.relu, &sh)
        } else {
            batchnorm_backward_eval(dx, gs, gb, dy, y, xs, &self.mean, &self.var, scale, self.cfg.eps, self.cfg.relu, &sh)
        }
        .in_layer(&self.name)
    }

    fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }
}
