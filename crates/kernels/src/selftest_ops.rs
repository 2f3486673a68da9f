//! The self-test's checks of composed operations (several launches and GEMMs each): the
//! convolution through im2col and GEMM, and the dense layer. They are held to the CPU engine's
//! reference formulas (double accumulation), within [`GEMM_TOLERANCE`] of the sum of the terms'
//! magnitudes: a sum's rounding error in another order is bounded by that sum (Higham's
//! forward error bound), not by the result, which cancellation can make arbitrarily small. The
//! magnitudes are the same reference run on the operands' absolute values.

use crate::conv::ConvShape;
use crate::conv_gemm;
use crate::dense::{self, DenseShape};
use crate::launch::{KernelError, Launcher, Memory};
use crate::selftest::{Check, CpuReference, GEMM_TOLERANCE, data, within_bound};

/// The convolutions the zoo has: `(name by GEMM, name by the library, c, k, kernel, stride,
/// groups)`. The stride-2 3×3 (SAME padding one row after) is not one the library fits: it runs
/// by GEMM either way. The depthwise one runs by the depthwise kernels (checked on their own in
/// `selftest::depthwise` too) or by the library as a grouped convolution.
const CONVS: [(&str, &str, usize, usize, usize, usize, usize); 5] = [
    ("depthwise 3×3/1 by its kernels, fwd+bwd", "depthwise 3×3/1 via library (8 groups), fwd+bwd", 8, 8, 3, 1, 8),
    ("conv 3×3/1 SAME via GEMM, fwd+bwd", "conv 3×3/1 SAME via library, fwd+bwd", 8, 12, 3, 1, 1),
    ("conv 3×3/2 SAME (pad 0,1), fwd+bwd", "conv 3×3/2 SAME (pad 0,1), library's fallback", 8, 12, 3, 2, 1),
    ("conv 1×1/1 (no im2col), fwd+bwd", "conv 1×1/1 via library, fwd+bwd", 16, 8, 1, 1, 1),
    ("conv 1×1/2 + 3×3 in 2 groups", "conv 1×1/2 + 3×3 in 2 groups via library", 8, 8, 1, 2, 1),
];

/// Every case of [`CONVS`] (the last also runs a grouped 3×3), forward and both gradients, by
/// the launcher's convolution as it is set.
pub(crate) fn convs<L: Launcher + Memory>(l: &mut L, n: usize, cpu: &CpuReference) -> Result<Vec<Check>, KernelError> {
    let h = 10;
    let by_library = l.conv_impl() == crate::conv_library::ConvImpl::Library;
    let mut checks = Vec::new();
    for (i, &(gemm_name, library_name, c, k, kernel, stride, groups)) in CONVS.iter().enumerate() {
        let name = if by_library { library_name } else { gemm_name };
        let batch = (n / (c * h * h)).clamp(1, 64);
        let mut shapes = vec![(cpu.conv_same)(batch, c, h, h, k, kernel, stride, groups)];
        if i == CONVS.len() - 1 {
            shapes.push((cpu.conv_same)(batch, c, h, h, k, 3, 1, 2));
        }
        let (mut differ, mut worst, mut elements) = (0, 0.0f64, 0);
        for (j, sh) in shapes.iter().enumerate() {
            // A shape the library fits but refused ran by im2col: not what the check is named
            // for, so it fails (the reason is in `Launcher::library_refusals`).
            let refused = by_library && sh.library_fits() && !l.library_takes(sh);
            let (d, w, e) = conv(l, sh, 200 + 10 * (i + j) as u64, cpu)?;
            let (d, w) = if refused { (e, f64::INFINITY) } else { (d, w) };
            differ += d;
            worst = worst.max(w);
            elements += e;
        }
        checks.push(Check { name, differ, elements, tolerance: GEMM_TOLERANCE, max_rel: worst, seconds: 0.0, bytes: 0 });
    }
    Ok(checks)
}

/// One convolution against the CPU's reference: (values beyond tolerance, worst, values compared).
fn conv<L: Launcher + Memory>(l: &mut L, sh: &ConvShape, seed: u64, cpu: &CpuReference) -> Result<(usize, f64, usize), KernelError> {
    let (x, wt, dy) = (data(seed, sh.n * sh.c * sh.h * sh.w), data(seed + 1, sh.weight_len()), data(seed + 2, sh.out_len()));
    let dw0 = data(seed + 3, wt.len()); // the kernel gradient accumulates onto this
    let reference = |x: &[f32], wt: &[f32], dy: &[f32], dw0: &[f32]| {
        let (mut y, mut dx, mut dw) = (vec![0.0; dy.len()], vec![0.0; x.len()], dw0.to_vec());
        (cpu.conv_forward)(&mut y, x, wt, sh);
        (cpu.conv_backward)(&mut dx, &mut dw, dy, x, wt, sh);
        (y, dx, dw)
    };
    let (y, dx, dw) = reference(&x, &wt, &dy, &dw0);
    let (y_mag, dx_mag, dw_mag) = reference(&abs(&x), &abs(&wt), &abs(&dy), &abs(&dw0));
    let (gx, gwt, gdy) = (l.upload(&x)?, l.upload(&wt)?, l.upload(&dy)?);
    // Outputs start as garbage (NaN), as a reused block would: the operations must overwrite.
    let (gy, gdx, gdw) = (l.upload(&vec![f32::NAN; y.len()])?, l.upload(&vec![f32::NAN; x.len()])?, l.upload(&dw0)?);
    let need = conv_gemm::scratch_need(l, sh);
    let col = l.zeros::<f32>(need)?;
    conv_gemm::forward(l, l.buf(&gy), l.buf(&gx), l.buf(&gwt), l.buf(&col), sh)?;
    conv_gemm::backward(l, Some(l.buf(&gdx)), l.buf(&gdw), l.buf(&gdy), l.buf(&gx), l.buf(&gwt), l.buf(&col), sh)?;
    let mut differ = 0;
    let mut worst = 0.0f64;
    for (got, want, mag) in [(l.download(&gy)?, &y, &y_mag), (l.download(&gdx)?, &dx, &dx_mag), (l.download(&gdw)?, &dw, &dw_mag)] {
        let (d, w) = within_bound(&got, want, mag, GEMM_TOLERANCE);
        differ += d;
        worst = worst.max(w);
    }
    l.finish()?; // the buffers are freed on return
    Ok((differ, worst, y.len() + x.len() + wt.len()))
}

/// The dense layer, forward and backward, against the CPU's bias and reference GEMM.
pub(crate) fn dense_layer<L: Launcher + Memory>(l: &mut L, n: usize, cpu: &CpuReference) -> Result<Check, KernelError> {
    let (c, k) = (64, 10);
    let sh = DenseShape { c, n: (n / c).clamp(1, 256), k };
    let rows = sh.n;
    let (x, w, b, dy) = (data(300, c * rows), data(301, c * k), data(302, k), data(303, rows * k));
    let (dw0, db0) = (data(304, c * k), data(305, k));
    let view = |r: usize, cols: usize| (r, cols, cols, 1);
    let x_t = (rows, c, 1, rows); // x (C × N) read as its transpose
    let reference = |x: &[f32], w: &[f32], b: &[f32], dy: &[f32], dw0: &[f32], db0: &[f32]| {
        let mut y = vec![0.0; rows * k];
        (cpu.bias[0])(&mut y, b);
        (cpu.gemm)(&mut y, view(rows, k), x, x_t, w, view(c, k), true);
        let (mut dw, mut db, mut dx) = (dw0.to_vec(), db0.to_vec(), vec![0.0; c * rows]);
        (cpu.gemm)(&mut dw, view(c, k), x, view(c, rows), dy, view(rows, k), true);
        (cpu.bias[1])(&mut db, dy);
        (cpu.gemm)(&mut dx, view(c, rows), w, view(c, k), dy, (k, rows, 1, k), false);
        [y, dx, dw, db]
    };
    let [y, dx, dw, db] = reference(&x, &w, &b, &dy, &dw0, &db0);
    let mags = reference(&abs(&x), &abs(&w), &abs(&b), &abs(&dy), &abs(&dw0), &abs(&db0));
    let (gx, gw, gb, gdy) = (l.upload(&x)?, l.upload(&w)?, l.upload(&b)?, l.upload(&dy)?);
    let (gy, gdx) = (l.upload(&vec![f32::NAN; y.len()])?, l.upload(&vec![f32::NAN; dx.len()])?);
    let (gdw, gdb) = (l.upload(&dw0)?, l.upload(&db0)?);
    dense::dense_forward(l, l.buf(&gy), l.buf(&gx), l.buf(&gw), l.buf(&gb), sh)?;
    dense::dense_backward(l, l.buf(&gdx), l.buf(&gdw), l.buf(&gdb), l.buf(&gdy), l.buf(&gx), l.buf(&gw), sh)?;
    let (mut differ, mut worst) = (0, 0.0f64);
    let got = [l.download(&gy)?, l.download(&gdx)?, l.download(&gdw)?, l.download(&gdb)?];
    for ((got, want), mag) in got.iter().zip([&y, &dx, &dw, &db]).zip(&mags) {
        let (d, r) = within_bound(got, want, mag, GEMM_TOLERANCE);
        differ += d;
        worst = worst.max(r);
    }
    let elements = y.len() + dx.len() + dw.len() + db.len();
    Ok(Check { name: "dense layer, fwd+bwd", differ, elements, tolerance: GEMM_TOLERANCE, max_rel: worst, seconds: 0.0, bytes: 0 })
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}
