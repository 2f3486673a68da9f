//! The sums where a residual block's paths meet, forward and backward.

use ringsam_nn::NnError;
use ringsam_nn::device::OnDevice;
use ringsam_tensor::Tensor;
use ringsam_tensor::elementwise::add_forward;

/// `out = a + b`, `out` taking `a`'s shape (and place). `layer` is named if the lengths differ.
pub(crate) fn sum_into(out: &mut Tensor, a: &Tensor, b: &Tensor, layer: &str) -> Result<(), NnError> {
    if let Some(dev) = OnDevice::of(layer, a) {
        let (o, a_buf, b_buf) = (dev.place(out, a.shape(), a)?, dev.buf(a)?, dev.buf(b)?);
        return dev.run(|l| ringsam_kernels::pool::add(l, o, a_buf, b_buf));
    }
    out.resize(a.shape());
    add_forward(out.as_mut_slice(), a.as_slice(), b.as_slice()).map_err(|source| NnError::Kernel { layer: layer.to_string(), source })
}

/// `out = a`, where `a` is (a block without a shortcut passing its branch on).
pub(crate) fn copy_into(out: &mut Tensor, a: &Tensor, layer: &str) -> Result<(), NnError> {
    if let Some(dev) = OnDevice::of(layer, a) {
        let (o, a_buf) = (dev.place(out, a.shape(), a)?, dev.buf(a)?);
        return dev.run(|l| ringsam_kernels::flat::copy(l, o, a_buf));
    }
    out.resize(a.shape());
    out.as_mut_slice().copy_from_slice(a.as_slice());
    Ok(())
}

/// How a residual block's forward ends: `out = branch + shortcut`. The two must have the same
/// shape; if not, the error names `layer`, the branch's last layer.
pub(crate) fn residual_sum(out: &mut Tensor, branch: &Tensor, shortcut: &Tensor, layer: &str) -> Result<(), NnError> {
    if branch.shape() != shortcut.shape() {
        return Err(NnError::Shape {
            layer: layer.to_string(),
            expected: format!("{:?} (the shortcut's shape)", shortcut.shape()),
            got: branch.shape().to_vec(),
        });
    }
    sum_into(out, branch, shortcut, layer)
}
