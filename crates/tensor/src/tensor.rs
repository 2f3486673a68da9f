//! [`Tensor`]: a row-major shape plus `f32` storage on a device.
//!
//! The shape is the physical, row-major shape: an image activation is `[C, N, H, W]` (see the crate
//! docs for why channels come first). Kernels work on the storage as a flat slice; the shape is
//! carried so that layers can check what they are given and name the mismatch.

use ndarray::{ArrayD, IxDyn};

use crate::{Device, TensorError};

/// A dense `f32` tensor.
#[derive(Clone, Debug)]
pub struct Tensor {
    data: ArrayD<f32>,
    device: Device,
}

impl Tensor {
    /// A zero-filled tensor. On a CUDA device this is [`TensorError::CudaNotImplemented`] until the
    /// CUDA kernels exist.
    pub fn zeros(shape: &[usize], device: Device) -> Result<Self, TensorError> {
        match device {
            Device::Cpu => Ok(Tensor { data: ArrayD::zeros(IxDyn(shape)), device }),
            #[cfg(feature = "cuda")]
            Device::Cuda(_) => Err(TensorError::CudaNotImplemented { op: "Tensor::zeros" }),
        }
    }

    /// An empty CPU tensor (shape `[0]`), the starting point of a buffer a layer sizes on first use.
    pub fn empty() -> Self {
        Tensor { data: ArrayD::zeros(IxDyn(&[0])), device: Device::Cpu }
    }

    /// A CPU tensor owning `data`, which must hold `shape.iter().product()` elements.
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Result<Self, TensorError> {
        let n: usize = shape.iter().product();
        crate::check_len("Tensor::from_vec", "data", data.len(), n)?;
        let data =
            ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|e| TensorError::Shape { op: "Tensor::from_vec", msg: e.to_string() })?;
        Ok(Tensor { data, device: Device::Cpu })
    }

    /// Reads an NCHW buffer into the engine's CNHW layout.
    pub fn from_nchw(n: usize, c: usize, h: usize, w: usize, nchw: &[f32]) -> Result<Self, TensorError> {
        crate::check_len("Tensor::from_nchw", "data", nchw.len(), n * c * h * w)?;
        let hw = h * w;
        let mut out = vec![0.0; nchw.len()];
        for ni in 0..n {
            for ci in 0..c {
                out[(ci * n + ni) * hw..][..hw].copy_from_slice(&nchw[(ni * c + ci) * hw..][..hw]);
            }
        }
        Tensor::from_vec(&[c, n, h, w], out)
    }

    /// Writes a CNHW activation out as NCHW.
    pub fn to_nchw(&self) -> Result<Vec<f32>, TensorError> {
        let [c, n, h, w] = self.dims4("Tensor::to_nchw")?;
        let hw = h * w;
        let src = self.as_slice();
        let mut out = vec![0.0; src.len()];
        for ni in 0..n {
            for ci in 0..c {
                out[(ni * c + ci) * hw..][..hw].copy_from_slice(&src[(ci * n + ni) * hw..][..hw]);
            }
        }
        Ok(out)
    }

    /// The physical shape.
    pub fn shape(&self) -> &[usize] {
        self.data.shape()
    }

    /// The device the storage is on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor holds no element.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The shape as four dimensions, or a shape error naming `op`.
    pub fn dims4(&self, op: &'static str) -> Result<[usize; 4], TensorError> {
        match *self.shape() {
            [a, b, c, d] => Ok([a, b, c, d]),
            ref s => Err(TensorError::Shape { op, msg: format!("expected a 4-d (C, N, H, W) tensor, got shape {s:?}") }),
        }
    }

    /// The storage as a flat slice (row-major).
    pub fn as_slice(&self) -> &[f32] {
        self.data.as_slice().expect("tensors are always standard-layout")
    }

    /// The storage as a flat mutable slice (row-major).
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        self.data.as_slice_mut().expect("tensors are always standard-layout")
    }

    /// Gives the tensor `shape`, reallocating only when the element count changes. The contents
    /// are unspecified afterwards: callers overwrite them. Layers call this at the top of every
    /// forward, so buffers are allocated on the first step and reused after.
    pub fn resize(&mut self, shape: &[usize]) {
        if self.shape() == shape {
            return;
        }
        let n: usize = shape.iter().product();
        let mut v = std::mem::replace(&mut self.data, ArrayD::zeros(IxDyn(&[0]))).into_raw_vec_and_offset().0;
        v.resize(n, 0.0);
        self.data = ArrayD::from_shape_vec(IxDyn(shape), v).expect("length was just set to the product of the shape");
    }

    /// Sets every element to zero.
    pub fn fill_zero(&mut self) {
        self.data.fill(0.0);
    }

    /// The underlying ndarray, for interop.
    pub fn array(&self) -> &ArrayD<f32> {
        &self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nchw_round_trip() {
        let v: Vec<f32> = (0..2 * 3 * 4 * 5).map(|i| i as f32).collect();
        let t = Tensor::from_nchw(2, 3, 4, 5, &v).unwrap();
        assert_eq!(t.shape(), &[3, 2, 4, 5]);
        // element (n=1, c=2, h=3, w=4) of NCHW sits at (c=2, n=1, h=3, w=4) in CNHW
        assert_eq!(t.as_slice()[((2 * 2 + 1) * 4 + 3) * 5 + 4], v[((3 + 2) * 4 + 3) * 5 + 4]);
        assert_eq!(t.to_nchw().unwrap(), v);
    }

    #[test]
    fn from_vec_checks_length() {
        assert!(Tensor::from_vec(&[2, 3], vec![0.0; 5]).is_err());
    }
}
