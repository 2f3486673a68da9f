//! Fully connected layer: features `(C_in, N)` → logits `(N, C_out)`.
//!
//! The input is channel-major because it comes from global average pooling over `(C, N, H, W)`;
//! the output is example-major because the loss reads one row per example. Both are strided views
//! of the same GEMM, so neither needs a transpose copy.

use ringsam_kernels::dense::{DenseShape, dense_backward, dense_forward};
use ringsam_tensor::Tensor;
use ringsam_tensor::gemm::{MatMut, MatRef, gemm};

use super::{Buffers, Layer, expect_same, host, host_mut, shape_error};
use crate::device::OnDevice;
use crate::error::KernelContext;
use crate::{NnError, ParamId, ParamLayout, Pass};

/// `y = xᵀ·W + b`, kernel `(in, out)` at `{name}/kernel`, bias at `{name}/bias` (Flax `Dense`).
#[derive(Debug)]
pub struct Linear {
    name: String,
    c_in: usize,
    c_out: usize,
    kernel: ParamId,
    bias: ParamId,
    buffers: Buffers, // output (N, c_out), input gradient (c_in, N)
}

impl Linear {
    /// Declares kernel and bias.
    pub fn new(layout: &mut ParamLayout, name: &str, c_in: usize, c_out: usize) -> Self {
        let kernel = layout.push(format!("{name}/kernel"), &[c_in, c_out]);
        let bias = layout.push(format!("{name}/bias"), &[c_out]);
        Linear { name: name.to_string(), c_in, c_out, kernel, bias, buffers: Buffers::default() }
    }

    /// Parameter ids `(kernel, bias)`.
    pub fn params(&self) -> (ParamId, ParamId) {
        (self.kernel, self.bias)
    }

    fn batch(&self, x: &Tensor) -> Result<usize, NnError> {
        match *x.shape() {
            [c, n] if c == self.c_in && n > 0 => Ok(n),
            _ => Err(shape_error(&self.name, format!("({}, N)", self.c_in), x)),
        }
    }
}

impl Layer for Linear {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_device(&self) -> bool {
        true
    }

    fn forward(&mut self, params: &Tensor, _state: &mut Tensor, x: &Tensor, _pass: &Pass) -> Result<(), NnError> {
        let n = self.batch(x)?;
        if let Some(dev) = OnDevice::of(&self.name, x) {
            let sh = DenseShape { c: self.c_in, n, k: self.c_out };
            let (out, inp, p) = (dev.place(&mut self.buffers.out, &[n, self.c_out], x)?, dev.buf(x)?, dev.buf(params)?);
            return dev.run(|l| dense_forward(l, out, inp, p.slice(self.kernel.range()), p.slice(self.bias.range()), sh));
        }
        let params = host(&self.name, params)?;
        self.buffers.out.resize(&[n, self.c_out]);
        broadcast_bias(self.buffers.out.as_mut_slice(), &params[self.bias.range()]);
        let w = MatRef::row_major(&params[self.kernel.range()], self.c_in, self.c_out);
        gemm(MatMut::row_major(self.buffers.out.as_mut_slice(), n, self.c_out), MatRef::row_major(x.as_slice(), self.c_in, n).t(), w, true)
            .in_layer(&self.name)
    }

    fn backward(&mut self, params: &Tensor, grads: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        let n = self.batch(x)?;
        expect_same(&self.name, dout, &self.buffers.out)?;
        if let Some(dev) = OnDevice::of(&self.name, x) {
            let sh = DenseShape { c: self.c_in, n, k: self.c_out };
            let (p, g, dy, inp) = (dev.buf(params)?, dev.buf(grads)?, dev.buf(dout)?, dev.buf(x)?);
            let (dw, db) = (g.slice(self.kernel.range()), g.slice(self.bias.range()));
            let dx = dev.place(&mut self.buffers.dinp, &[self.c_in, n], x)?;
            return dev.run(|l| dense_backward(l, dx, dw, db, dy, inp, p.slice(self.kernel.range()), sh));
        }
        let params = host(&self.name, params)?;
        let grads = host_mut(&self.name, grads)?;
        let g = MatRef::row_major(dout.as_slice(), n, self.c_out);
        // dW (in × out) += x (in × N) · dout (N × out)
        gemm(
            MatMut::row_major(&mut grads[self.kernel.range()], self.c_in, self.c_out),
            MatRef::row_major(x.as_slice(), self.c_in, n),
            g,
            true,
        )
        .in_layer(&self.name)?;
        add_bias_gradient(&mut grads[self.bias.range()], dout.as_slice());
        // dx (in × N) = W (in × out) · doutᵀ (out × N)
        self.buffers.dinp.resize(&[self.c_in, n]);
        let w = MatRef::row_major(&params[self.kernel.range()], self.c_in, self.c_out);
        gemm(MatMut::row_major(self.buffers.dinp.as_mut_slice(), self.c_in, n), w, g.t(), false).in_layer(&self.name)
    }

    fn last_macs(&self) -> usize {
        self.buffers.out.shape().first().map_or(0, |n| n * self.c_in * self.c_out)
    }

    fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }
}

/// Every row of `out` (`N × K`) set to the bias `b` (`K`), before the GEMM adds `xᵀ·W`.
pub fn broadcast_bias(out: &mut [f32], b: &[f32]) {
    for row in out.chunks_mut(b.len()) {
        row.copy_from_slice(b);
    }
}

/// `db += Σ_rows dout` (`dout` is `N × K`), each column summed in order in double.
pub fn add_bias_gradient(db: &mut [f32], dout: &[f32]) {
    let k = db.len();
    let n = dout.len() / k.max(1);
    for (col, d) in db.iter_mut().enumerate() {
        *d += (0..n).map(|i| dout[i * k + col] as f64).sum::<f64>() as f32;
    }
}
