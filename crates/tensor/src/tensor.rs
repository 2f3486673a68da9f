//! [`Tensor`]: a row-major shape plus `f32` storage, on the host or on a device.
//!
//! The shape is the physical, row-major shape: an image activation is `[C, N, H, W]` (see the crate
//! docs for why channels come first). Kernels work on the storage as a flat slice; the shape is
//! carried so that layers can check what they are given and name the mismatch.
//!
//! Where the storage lives decides where an operation runs: a device tensor carries its
//! [`Gpu`] (launcher and memory), so an operation given device tensors runs there, as a
//! PyTorch operation runs on its operands' device. The CPU kernels read host tensors through
//! [`Tensor::as_slice`]; device tensors give kernel arguments through [`Tensor::device_buf`].

use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};
use ringsam_kernels::{Buf, DeviceVec, Gpu, PinnedVec};

use crate::{Device, TensorError};

/// A dense `f32` tensor.
pub struct Tensor {
    shape: Vec<usize>,
    storage: Storage,
}

/// Host storage is an ndarray in standard layout, of the tensor's shape.
enum Storage {
    Host(ArrayD<f32>),
    Device { data: DeviceVec<f32>, gpu: Arc<Gpu> },
}

impl Tensor {
    /// A zero-filled host tensor. A GPU's tensors are made with [`Tensor::zeros_on`], from the
    /// device's [`Gpu`], which a [`Device`] value does not carry.
    pub fn zeros(shape: &[usize], device: Device) -> Result<Self, TensorError> {
        match device {
            Device::Cpu => Ok(Tensor { shape: shape.to_vec(), storage: Storage::Host(ArrayD::zeros(IxDyn(shape))) }),
            #[cfg(feature = "cuda")]
            Device::Cuda(_) => Err(TensorError::CudaNotImplemented { op: "Tensor::zeros (use Tensor::zeros_on)" }),
        }
    }

    /// A zero-filled tensor on `gpu`.
    pub fn zeros_on(shape: &[usize], gpu: &Arc<Gpu>) -> Result<Self, TensorError> {
        let data = gpu.memory().zeros(shape.iter().product()).map_err(device_error(gpu, "Tensor::zeros_on"))?;
        Ok(Tensor { shape: shape.to_vec(), storage: Storage::Device { data, gpu: gpu.clone() } })
    }

    /// An empty host tensor (shape `[0]`), the starting point of a buffer a layer sizes on first use.
    pub fn empty() -> Self {
        Tensor { shape: vec![0], storage: Storage::Host(ArrayD::zeros(IxDyn(&[0]))) }
    }

    /// A host tensor owning `data`, which must hold `shape.iter().product()` elements.
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Result<Self, TensorError> {
        let n: usize = shape.iter().product();
        crate::check_len("Tensor::from_vec", "data", data.len(), n)?;
        let data =
            ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|e| TensorError::Shape { op: "Tensor::from_vec", msg: e.to_string() })?;
        Ok(Tensor { shape: shape.to_vec(), storage: Storage::Host(data) })
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

    /// Writes a CNHW host activation out as NCHW.
    pub fn to_nchw(&self) -> Result<Vec<f32>, TensorError> {
        let [c, n, h, w] = self.dims4("Tensor::to_nchw")?;
        let hw = h * w;
        let src = self.host_slice("Tensor::to_nchw")?;
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
        &self.shape
    }

    /// The device holding the storage, or None on the host.
    pub fn gpu(&self) -> Option<&Arc<Gpu>> {
        match &self.storage {
            Storage::Host(_) => None,
            Storage::Device { gpu, .. } => Some(gpu),
        }
    }

    /// Whether the storage is host memory.
    pub fn is_host(&self) -> bool {
        matches!(self.storage, Storage::Host(_))
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.storage {
            Storage::Host(v) => v.len(),
            Storage::Device { data, .. } => data.len(),
        }
    }

    /// True when the tensor holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape as four dimensions, or a shape error naming `op`.
    pub fn dims4(&self, op: &'static str) -> Result<[usize; 4], TensorError> {
        match *self.shape() {
            [a, b, c, d] => Ok([a, b, c, d]),
            ref s => Err(TensorError::Shape { op, msg: format!("expected a 4-d (C, N, H, W) tensor, got shape {s:?}") }),
        }
    }

    /// A host tensor's storage as a flat slice (row-major).
    ///
    /// # Panics
    /// On a device tensor: the CPU kernels are given host tensors only (an operation dispatches
    /// on where its operands are, and [`Tensor::host_slice`] is the checked form).
    pub fn as_slice(&self) -> &[f32] {
        match &self.storage {
            Storage::Host(v) => v.as_slice().expect("host tensors are always standard-layout"),
            Storage::Device { gpu, .. } => panic!("{}", on_device(gpu, "Tensor::as_slice")),
        }
    }

    /// A host tensor's storage as a flat mutable slice (row-major). Panics as [`Tensor::as_slice`].
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        match &mut self.storage {
            Storage::Host(v) => v.as_slice_mut().expect("host tensors are always standard-layout"),
            Storage::Device { gpu, .. } => panic!("{}", on_device(gpu, "Tensor::as_mut_slice")),
        }
    }

    /// The host storage, or an error naming `op` for a device tensor.
    pub fn host_slice(&self, op: &'static str) -> Result<&[f32], TensorError> {
        match &self.storage {
            Storage::Host(v) => Ok(v.as_slice().expect("host tensors are always standard-layout")),
            Storage::Device { gpu, .. } => Err(TensorError::Placement { op, why: on_device(gpu, "the host storage") }),
        }
    }

    /// The host storage, mutably, or an error naming `op` for a device tensor.
    pub fn host_slice_mut(&mut self, op: &'static str) -> Result<&mut [f32], TensorError> {
        match &mut self.storage {
            Storage::Host(v) => Ok(v.as_slice_mut().expect("host tensors are always standard-layout")),
            Storage::Device { gpu, .. } => Err(TensorError::Placement { op, why: on_device(gpu, "the host storage") }),
        }
    }

    /// A device tensor's storage as a kernel argument (None on the host).
    pub fn device_buf(&self) -> Option<Buf<f32>> {
        match &self.storage {
            Storage::Host(_) => None,
            Storage::Device { data, .. } => Some(data.buf()),
        }
    }

    /// Gives the host tensor `shape`, reallocating only when the element count changes. The
    /// contents are unspecified afterwards: callers overwrite them. The CPU layers call this at
    /// the top of every forward, so buffers are allocated on the first step and reused after. A
    /// device tensor becomes a host tensor (device code places buffers with [`Tensor::place_like`]).
    pub fn resize(&mut self, shape: &[usize]) {
        if self.shape() == shape && self.is_host() {
            return;
        }
        let n: usize = shape.iter().product();
        let mut v = match std::mem::replace(&mut self.storage, Storage::Host(ArrayD::zeros(IxDyn(&[0])))) {
            Storage::Host(a) => a.into_raw_vec_and_offset().0,
            Storage::Device { .. } => Vec::new(),
        };
        if v.capacity() < n
            && let Some(kept) = crate::spare::take(n)
        {
            crate::spare::give(std::mem::replace(&mut v, kept));
        }
        if v.len() >= n {
            v.truncate(n);
        } else {
            v.resize(n, 0.0);
        }
        self.storage = Storage::Host(ArrayD::from_shape_vec(IxDyn(shape), v).expect("length was just set to the product of the shape"));
        self.shape = shape.to_vec();
    }

    /// Gives the storage up and leaves the tensor empty: a host tensor's storage is kept for a
    /// later [`Tensor::resize`] to reuse (see [`crate::spare`]), a device tensor's goes back to
    /// its allocator.
    pub fn release(&mut self) {
        if let Storage::Host(a) = std::mem::replace(&mut self.storage, Storage::Host(ArrayD::zeros(IxDyn(&[0])))) {
            crate::spare::give(a.into_raw_vec_and_offset().0);
        }
        self.shape = vec![0];
    }

    /// Gives the tensor `shape`, its storage where `like`'s is (the host, or `like`'s device),
    /// reallocating only when the element count or the place changes. Contents are unspecified
    /// afterwards, as with [`Tensor::resize`].
    pub fn place_like(&mut self, shape: &[usize], like: &Tensor) -> Result<(), TensorError> {
        let Some(gpu) = like.gpu() else {
            self.resize(shape);
            return Ok(());
        };
        let n: usize = shape.iter().product();
        let reuse = matches!(&self.storage, Storage::Device { data, gpu: mine } if data.len() == n && Gpu::same(mine, gpu));
        if !reuse {
            // Free the old block first: the allocator may hand it straight back.
            self.storage = Storage::Host(ArrayD::zeros(IxDyn(&[0])));
            let data = gpu.memory().alloc(n).map_err(device_error(gpu, "Tensor::place_like"))?;
            self.storage = Storage::Device { data, gpu: gpu.clone() };
        }
        self.shape = shape.to_vec();
        Ok(())
    }

    /// Copies `values` (as many as the tensor has) into it, wherever it is.
    pub fn write_from(&mut self, values: &[f32]) -> Result<(), TensorError> {
        crate::check_len("Tensor::write_from", "values", values.len(), self.len())?;
        match &mut self.storage {
            Storage::Host(a) => a.as_slice_mut().expect("host tensors are always standard-layout").copy_from_slice(values),
            Storage::Device { data, gpu } => data.write(values).map_err(device_error(gpu, "Tensor::write_from"))?,
        }
        Ok(())
    }

    /// Queues a copy of `src` (as many values as the tensor has) into this device tensor without
    /// waiting for it ([`ringsam_kernels::DeviceVec::write_async`]); a host tensor copies at once.
    pub fn write_async_from(&mut self, src: &mut PinnedVec<f32>) -> Result<(), TensorError> {
        crate::check_len("Tensor::write_async_from", "values", src.len(), self.len())?;
        match &mut self.storage {
            Storage::Host(a) => a.as_slice_mut().expect("host tensors are always standard-layout").copy_from_slice(src.as_slice()),
            Storage::Device { data, gpu } => data.write_async(src).map_err(device_error(gpu, "Tensor::write_async_from"))?,
        }
        Ok(())
    }

    /// A copy on the host.
    pub fn to_host(&self) -> Result<Tensor, TensorError> {
        match &self.storage {
            Storage::Host(a) => Ok(Tensor { shape: self.shape.clone(), storage: Storage::Host(a.clone()) }),
            Storage::Device { data, gpu } => Tensor::from_vec(&self.shape, data.download().map_err(device_error(gpu, "Tensor::to_host"))?),
        }
    }

    /// A copy on `gpu`.
    pub fn to_gpu(&self, gpu: &Arc<Gpu>) -> Result<Tensor, TensorError> {
        let to = device_error(gpu, "Tensor::to_gpu");
        let data = match &self.storage {
            Storage::Host(_) => gpu.memory().upload(self.as_slice()).map_err(to)?,
            Storage::Device { data, gpu: from } if Gpu::same(from, gpu) => data.duplicate().map_err(to)?,
            Storage::Device { data, gpu: from } => {
                let host = data.download().map_err(device_error(from, "Tensor::to_gpu"))?;
                gpu.memory().upload(&host).map_err(to)?
            }
        };
        Ok(Tensor { shape: self.shape.clone(), storage: Storage::Device { data, gpu: gpu.clone() } })
    }

    /// A host tensor's ndarray, for interop (None on a device).
    pub fn array(&self) -> Option<&ArrayD<f32>> {
        match &self.storage {
            Storage::Host(a) => Some(a),
            Storage::Device { .. } => None,
        }
    }

    /// A copy in the same place.
    pub fn try_clone(&self) -> Result<Tensor, TensorError> {
        match self.gpu() {
            None => self.to_host(),
            Some(gpu) => self.to_gpu(gpu),
        }
    }
}

/// A host tensor reads as its values, so the CPU engine's arena (parameters, gradients,
/// statistics) indexes and slices like the `Vec<f32>` it is. Like [`Tensor::as_slice`] this panics
/// on a device tensor: device code takes [`Tensor::device_buf`] and CPU code holds host tensors.
impl std::ops::Deref for Tensor {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        self.as_slice()
    }
}

impl std::ops::DerefMut for Tensor {
    fn deref_mut(&mut self) -> &mut [f32] {
        self.as_mut_slice()
    }
}

/// A host tensor's values in order (as a `Vec`'s; panics on a device tensor, as `Deref` does).
impl<'a> IntoIterator for &'a Tensor {
    type Item = &'a f32;
    type IntoIter = std::slice::Iter<'a, f32>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl<'a> IntoIterator for &'a mut Tensor {
    type Item = &'a mut f32;
    type IntoIter = std::slice::IterMut<'a, f32>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_mut_slice().iter_mut()
    }
}

/// A 1-D host tensor: a parameter arena, its gradients, batch-norm statistics.
impl From<Vec<f32>> for Tensor {
    fn from(values: Vec<f32>) -> Self {
        Tensor { shape: vec![values.len()], storage: Storage::Host(ArrayD::from_shape_vec(IxDyn(&[values.len()]), values).expect("1-d")) }
    }
}

/// The empty host tensor.
impl Default for Tensor {
    fn default() -> Self {
        Tensor::empty()
    }
}

/// Host tensors clone as data does. Cloning a device tensor copies it on the device and panics if
/// the device cannot (out of memory): engine code uses [`Tensor::try_clone`].
impl Clone for Tensor {
    fn clone(&self) -> Self {
        self.try_clone().unwrap_or_else(|e| panic!("cloning a tensor: {e}"))
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.storage {
            Storage::Host(a) => f.debug_struct("Tensor").field("shape", &self.shape).field("data", a).finish(),
            Storage::Device { data, gpu } => {
                f.debug_struct("Tensor").field("shape", &self.shape).field("on", gpu).field("data", data).finish()
            }
        }
    }
}

fn on_device(gpu: &Gpu, what: &str) -> String {
    format!("{what}: the tensor is on {}; copy it to the host first (Tensor::to_host)", gpu.name())
}

fn device_error<'a>(gpu: &'a Gpu, op: &'static str) -> impl Fn(ringsam_kernels::KernelError) -> TensorError + 'a {
    move |e| TensorError::Kernel { op, device: gpu.name().to_string(), source: e }
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
