//! SAM and the base optimizers on flat buffers (the parameter arena, its gradient, the
//! optimizer's state), as kernels: the GPU side of `ringsam-optim`, with the same arguments and
//! the same results. Element-wise results are the CPU engine's to the bit (`cu/flat.cu`); norms
//! are summed in double in another order, so they agree to rounding, and so do the scalars
//! derived from them (ρ/‖g‖, the clipping factor).

use ringsam_optim::OptimizerKind;

use crate::launch::{Arg, Buf, KernelError, Launch, Launcher};

fn same_len(op: &'static str, want: usize, bufs: &[usize]) -> Result<(), KernelError> {
    match bufs.iter().find(|&&n| n != want) {
        Some(&got) => Err(KernelError::Length { op, got, want }),
        None => Ok(()),
    }
}

/// Runs a reduction's two passes (`first` writes one partial per block), the total into `out[0]`
/// on the device: nothing waits for it.
fn reduce_into(l: &mut impl Launcher, first: &'static str, n: usize, inputs: &[Arg], out: Buf<f64>) -> Result<(), KernelError> {
    if out.is_empty() {
        return Err(KernelError::Length { op: first, got: 0, want: 1 });
    }
    let (partials, _) = l.reduction_scratch()?;
    let at = Launch::reduction(n);
    let mut args = inputs.to_vec();
    args.extend([Arg::U64(n as u64), partials.into()]);
    l.launch(first, at, &args)?;
    l.launch("sum_partials", Launch::final_sum(), &[partials.into(), Arg::U64(at.grid as u64), out.into()])
}

/// Runs `op` with the launcher's one-double scratch total as its output, then reads the total
/// (the host waits for the stream): the form the self-test and one-off callers use.
fn read_back<L: Launcher>(l: &mut L, op: impl FnOnce(&mut L, Buf<f64>) -> Result<(), KernelError>) -> Result<f64, KernelError> {
    let (_, total) = l.reduction_scratch()?;
    op(l, total)?;
    Ok(l.read_f64(total)?[0])
}

/// Σ x², in double, into `out[0]`.
pub fn sum_squares_into(l: &mut impl Launcher, x: Buf<f32>, out: Buf<f64>) -> Result<(), KernelError> {
    reduce_into(l, "sum_squares_blocks", x.len(), &[x.into()], out)
}

/// Σ x², in double.
pub fn sum_squares(l: &mut impl Launcher, x: Buf<f32>) -> Result<f64, KernelError> {
    read_back(l, |l, out| sum_squares_into(l, x, out))
}

/// ‖x‖₂ (ringsam_optim::global_norm).
pub fn global_norm(l: &mut impl Launcher, x: Buf<f32>) -> Result<f64, KernelError> {
    Ok(sum_squares(l, x)?.sqrt())
}

/// `w_adv = w + ρ·g/‖g‖`, with ‖g‖² left in `norm_sq[0]` and read there by the ascent's kernel,
/// so the host does not wait between SAM's passes (ringsam_optim::ascent_point).
pub fn ascent_point_into(
    l: &mut impl Launcher,
    w_adv: Buf<f32>,
    w: Buf<f32>,
    g: Buf<f32>,
    rho: f32,
    norm_sq: Buf<f64>,
) -> Result<(), KernelError> {
    same_len("ascent_point", w.len(), &[w_adv.len(), g.len()])?;
    sum_squares_into(l, g, norm_sq)?;
    let n = Arg::U64(w.len() as u64);
    l.launch("sam_ascent", Launch::elementwise(w.len()), &[w_adv.into(), w.into(), g.into(), norm_sq.into(), Arg::F32(rho), n])
}

/// [`ascent_point_into`], returning ‖g‖.
pub fn ascent_point(l: &mut impl Launcher, w_adv: Buf<f32>, w: Buf<f32>, g: Buf<f32>, rho: f32) -> Result<f64, KernelError> {
    Ok(read_back(l, |l, out| ascent_point_into(l, w_adv, w, g, rho, out))?.sqrt())
}

/// ASAM's ascent, ‖T·g‖² (T = |w| + η) left in `tg_norm_sq[0]` (ringsam_optim::asam_ascent_point).
pub fn asam_ascent_point_into(
    l: &mut impl Launcher,
    [w_adv, w, g]: [Buf<f32>; 3],
    rho: f32,
    eta: f32,
    tg_norm_sq: Buf<f64>,
) -> Result<(), KernelError> {
    same_len("asam_ascent_point", w.len(), &[w_adv.len(), g.len()])?;
    reduce_into(l, "asam_norm_blocks", w.len(), &[w.into(), g.into(), Arg::F32(eta)], tg_norm_sq)?;
    let (n, rho, eta) = (Arg::U64(w.len() as u64), Arg::F32(rho), Arg::F32(eta));
    l.launch("asam_ascent", Launch::elementwise(w.len()), &[w_adv.into(), w.into(), g.into(), tg_norm_sq.into(), rho, eta, n])
}

/// [`asam_ascent_point_into`], returning ‖T·g‖.
pub fn asam_ascent_point(l: &mut impl Launcher, w_adv: Buf<f32>, w: Buf<f32>, g: Buf<f32>, rho: f32, eta: f32) -> Result<f64, KernelError> {
    Ok(read_back(l, |l, out| asam_ascent_point_into(l, [w_adv, w, g], rho, eta, out))?.sqrt())
}

/// The optimizer's state on the device: momentum, and RMSProp's second moment.
#[derive(Clone, Copy, Debug)]
pub struct OptimizerState {
    /// The first moment (every kind).
    pub momentum: Buf<f32>,
    /// RMSProp's second moment (starts at 1); None for the others.
    pub second_moment: Option<Buf<f32>>,
}

/// One update of `w` by `g` at learning rate `lr` (ringsam_optim::BaseOptimizer::update).
pub fn update(
    l: &mut impl Launcher,
    kind: OptimizerKind,
    w: Buf<f32>,
    g: Buf<f32>,
    state: OptimizerState,
    lr: f32,
) -> Result<(), KernelError> {
    let m = state.momentum;
    same_len("update", w.len(), &[g.len(), m.len()])?;
    let (at, n) = (Launch::elementwise(w.len()), Arg::U64(w.len() as u64));
    match kind {
        OptimizerKind::Nesterov { beta } => {
            l.launch("nesterov_update", at, &[w.into(), g.into(), m.into(), Arg::F32(beta), Arg::F32(lr), n])
        }
        OptimizerKind::Momentum { beta } => {
            l.launch("momentum_update", at, &[w.into(), g.into(), m.into(), Arg::F32(beta), Arg::F32(lr), n])
        }
        OptimizerKind::RmsProp { beta, beta2, eps } => {
            let v = state.second_moment.ok_or(KernelError::Length { op: "update (RMSProp's second moment)", got: 0, want: w.len() })?;
            same_len("update", w.len(), &[v.len()])?;
            let args = [w.into(), g.into(), m.into(), v.into(), Arg::F32(beta), Arg::F32(beta2), Arg::F32(eps), Arg::F32(lr), n];
            l.launch("rmsprop_update", at, &args)
        }
    }
}

/// `x *= s`.
pub fn scale(l: &mut impl Launcher, x: Buf<f32>, s: f32) -> Result<(), KernelError> {
    l.launch("scale", Launch::elementwise(x.len()), &[x.into(), Arg::F32(s), Arg::U64(x.len() as u64)])
}

/// `x = v` everywhere.
pub fn fill(l: &mut impl Launcher, x: Buf<f32>, v: f32) -> Result<(), KernelError> {
    l.launch("fill", Launch::elementwise(x.len()), &[x.into(), Arg::F32(v), Arg::U64(x.len() as u64)])
}

/// `dst = src`.
pub fn copy(l: &mut impl Launcher, dst: Buf<f32>, src: Buf<f32>) -> Result<(), KernelError> {
    same_len("copy", dst.len(), &[src.len()])?;
    l.launch("copy", Launch::elementwise(dst.len()), &[dst.into(), src.into(), Arg::U64(dst.len() as u64)])
}

/// `y += a·x`.
pub fn axpy(l: &mut impl Launcher, y: Buf<f32>, a: f32, x: Buf<f32>) -> Result<(), KernelError> {
    same_len("axpy", y.len(), &[x.len()])?;
    l.launch("axpy", Launch::elementwise(y.len()), &[y.into(), Arg::F32(a), x.into(), Arg::U64(y.len() as u64)])
}

/// Scales `g` to norm `max_norm` when it is longer (`max_norm > 0`), deciding on the device
/// from ‖g‖², which it leaves in `norm_sq[0]` (ringsam_optim::clip_by_global_norm).
pub fn clip_by_global_norm_into(l: &mut impl Launcher, g: Buf<f32>, max_norm: f32, norm_sq: Buf<f64>) -> Result<(), KernelError> {
    sum_squares_into(l, g, norm_sq)?;
    if max_norm > 0.0 {
        let args = [g.into(), norm_sq.into(), Arg::F32(max_norm), Arg::U64(g.len() as u64)];
        l.launch("clip_to_norm", Launch::elementwise(g.len()), &args)?;
    }
    Ok(())
}

/// [`clip_by_global_norm_into`], returning the norm before.
pub fn clip_by_global_norm(l: &mut impl Launcher, g: Buf<f32>, max_norm: f32) -> Result<f64, KernelError> {
    Ok(read_back(l, |l, out| clip_by_global_norm_into(l, g, max_norm, out))?.sqrt())
}

/// `g += wd·w` over each decayed range (ringsam_optim::add_l2_gradient).
pub fn add_l2_gradient(
    l: &mut impl Launcher,
    g: Buf<f32>,
    w: Buf<f32>,
    wd: f32,
    decayed: &[std::ops::Range<usize>],
) -> Result<(), KernelError> {
    same_len("add_l2_gradient", w.len(), &[g.len()])?;
    for r in decayed {
        axpy(l, g.slice(r.clone()), wd, w.slice(r.clone()))?;
    }
    Ok(())
}

/// `avg = (1 − d)·x + d·avg` (one buffer of ringsam_optim::Ema::update; the caller computes `d`
/// from the step, as the CPU engine does).
pub fn ema_update(l: &mut impl Launcher, avg: Buf<f32>, x: Buf<f32>, d: f32) -> Result<(), KernelError> {
    same_len("ema_update", avg.len(), &[x.len()])?;
    l.launch("ema_update", Launch::elementwise(avg.len()), &[avg.into(), x.into(), Arg::F32(d), Arg::U64(avg.len() as u64)])
}
