//! The kernels against the CPU engine, on whatever runs them: the same checks under emulation
//! (crates/kernels-emu's tests, in CI) and on a GPU (`ringsam selftest kernels --device cuda`,
//! the device check), so the GPU run is rehearsed before GPU time is spent on it.
//!
//! Each check runs one operation of [`crate::flat`] and its `ringsam-optim` counterpart on the
//! same random data. Element-wise results must agree to the bit; norms to 1e-12 relative (double
//! sums in another order), and the element-wise part is then checked bitwise against the CPU's
//! formula at the device's norm.

use std::time::Instant;

use ringsam_optim::{BaseOptimizer, Ema, OptimizerKind};

use crate::flat::{self, OptimizerState};
use crate::launch::{KernelError, Launcher, Memory};

/// One check's outcome.
#[derive(Clone, Debug)]
pub struct Check {
    /// The operation.
    pub name: &'static str,
    /// Elements that differ from the CPU engine (bitwise), or 1 for a norm out of tolerance.
    pub differ: usize,
    /// Elements compared.
    pub elements: usize,
    /// Largest relative difference of a norm (0 where none is compared).
    pub norm_rel: f64,
    /// Seconds the device took for one more run of the operation, or 0 when not timed.
    pub seconds: f64,
    /// Bytes that run reads and writes (its memory traffic, for GB/s).
    pub bytes: usize,
}

impl Check {
    /// Whether the device agreed with the CPU engine.
    pub fn passed(&self) -> bool {
        self.differ == 0
    }
}

/// Norms may differ by double rounding in another order of summation.
pub const NORM_TOLERANCE: f64 = 1e-12;

/// Deterministic test data (a splitmix64 stream mapped to [-1, 1)).
fn data(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn bitwise(got: &[f32], want: &[f32]) -> usize {
    got.iter().zip(want).filter(|(a, b)| a.to_bits() != b.to_bits()).count() + got.len().abs_diff(want.len())
}

fn rel(got: f64, want: f64) -> f64 {
    if got == want { 0.0 } else { (got - want).abs() / want.abs().max(f64::MIN_POSITIVE) }
}

/// Runs every check on `n` elements.
pub fn run<L: Launcher + Memory>(l: &mut L, n: usize) -> Result<Vec<Check>, KernelError> {
    let mut checks = vec![ascent(l, n)?, asam(l, n)?];
    for kind in [
        OptimizerKind::Nesterov { beta: 0.9 },
        OptimizerKind::Momentum { beta: 0.9 },
        OptimizerKind::RmsProp { beta: 0.9, beta2: 0.99, eps: 1e-3 },
    ] {
        checks.push(update(l, kind, n)?);
    }
    checks.push(clip(l, n)?);
    checks.push(l2_and_ema(l, n)?);
    Ok(checks)
}

fn timed<L: Launcher + Memory>(l: &mut L, op: impl Fn(&mut L) -> Result<(), KernelError>) -> Result<f64, KernelError> {
    l.finish()?;
    let t = Instant::now();
    op(l)?;
    l.finish()?;
    Ok(t.elapsed().as_secs_f64())
}

fn ascent<L: Launcher + Memory>(l: &mut L, n: usize) -> Result<Check, KernelError> {
    let (w, g) = (data(1, n), data(2, n));
    let mut cpu = vec![0.0; n];
    let want = ringsam_optim::ascent_point(&mut cpu, &w, &g, 0.05);
    let (dw, dg, dout) = (l.upload(&w)?, l.upload(&g)?, l.upload(&vec![0.0; n])?);
    let (bw, bg, bout) = (l.buf(&dw), l.buf(&dg), l.buf(&dout));
    let got = flat::ascent_point(l, bout, bw, bg, 0.05)?;
    let seconds = timed(l, |l| flat::ascent_point(l, bout, bw, bg, 0.05).map(drop))?;
    let scale = (0.05f32 as f64 / got) as f32; // ρ is an f32 flag, widened as the CPU engine widens it
    let formula: Vec<f32> = w.iter().zip(&g).map(|(&w, &g)| w + scale * g).collect();
    let norm_rel = rel(got, want);
    let differ = bitwise(&l.download(&dout)?, &formula) + usize::from(norm_rel > NORM_TOLERANCE);
    // The norm reads g; the ascent reads w and g and writes w_adv.
    Ok(Check { name: "SAM ascent w + ρ·g/‖g‖", differ, elements: n, norm_rel, seconds, bytes: 16 * n })
}

fn asam<L: Launcher + Memory>(l: &mut L, n: usize) -> Result<Check, KernelError> {
    let (w, g) = (data(3, n), data(4, n));
    let mut cpu = vec![0.0; n];
    let want = ringsam_optim::asam_ascent_point(&mut cpu, &w, &g, 0.5, 0.01);
    let (dw, dg, dout) = (l.upload(&w)?, l.upload(&g)?, l.upload(&vec![0.0; n])?);
    let got = flat::asam_ascent_point(l, l.buf(&dout), l.buf(&dw), l.buf(&dg), 0.5, 0.01)?;
    let scale = (0.5f32 as f64 / got) as f32;
    let formula: Vec<f32> = w
        .iter()
        .zip(&g)
        .map(|(&w, &g)| {
            let t = w.abs() + 0.01;
            w + scale * t * t * g
        })
        .collect();
    let norm_rel = rel(got, want);
    let differ = bitwise(&l.download(&dout)?, &formula) + usize::from(norm_rel > NORM_TOLERANCE);
    Ok(Check { name: "ASAM ascent", differ, elements: n, norm_rel, seconds: 0.0, bytes: 0 })
}

fn update<L: Launcher + Memory>(l: &mut L, kind: OptimizerKind, n: usize) -> Result<Check, KernelError> {
    let mut cpu = BaseOptimizer::new(kind, n);
    let mut w = data(6, n);
    let (dw, dm) = (l.upload(&w)?, l.upload(&cpu.momentum)?);
    let dv = if cpu.second_moment.is_empty() { None } else { Some(l.upload(&cpu.second_moment)?) };
    let state = OptimizerState { momentum: l.buf(&dm), second_moment: dv.as_ref().map(|v| l.buf(v)) };
    let bw = l.buf(&dw);
    for step in 0..3 {
        let g = data(10 + step, n);
        let dg = l.upload(&g)?;
        cpu.update(&mut w, &g, 0.1);
        flat::update(l, kind, bw, l.buf(&dg), state, 0.1)?;
        l.finish()?; // `dg` is freed at the end of this iteration
    }
    let mut differ = bitwise(&l.download(&dw)?, &w) + bitwise(&l.download(&dm)?, &cpu.momentum);
    if let Some(v) = &dv {
        differ += bitwise(&l.download(v)?, &cpu.second_moment);
    }
    // Timed on the state reached, with a fixed gradient.
    let dg = l.upload(&data(20, n))?;
    let bg = l.buf(&dg);
    let seconds = timed(l, |l| flat::update(l, kind, bw, bg, state, 0.1))?;
    // Reads w, g and the state, writes w and the state.
    let (name, bytes) = match kind {
        OptimizerKind::Nesterov { .. } => ("Nesterov update, 3 steps", 20 * n),
        OptimizerKind::Momentum { .. } => ("momentum update, 3 steps", 20 * n),
        OptimizerKind::RmsProp { .. } => ("RMSProp update, 3 steps", 28 * n),
    };
    Ok(Check { name, differ, elements: n, norm_rel: 0.0, seconds, bytes })
}

fn clip<L: Launcher + Memory>(l: &mut L, n: usize) -> Result<Check, KernelError> {
    let g = data(21, n);
    let mut cpu = g.clone();
    let want = ringsam_optim::clip_by_global_norm(&mut cpu, 1.0);
    let dg = l.upload(&g)?;
    let got = flat::clip_by_global_norm(l, l.buf(&dg), 1.0)?;
    let s = (1.0f64 / got) as f32;
    let formula: Vec<f32> = g.iter().map(|&v| v * s).collect();
    let norm_rel = rel(got, want);
    let differ = bitwise(&l.download(&dg)?, &formula) + usize::from(norm_rel > NORM_TOLERANCE);
    Ok(Check { name: "clip to norm 1", differ, elements: n, norm_rel, seconds: 0.0, bytes: 0 })
}

fn l2_and_ema<L: Launcher + Memory>(l: &mut L, n: usize) -> Result<Check, KernelError> {
    let (w, mut g) = (data(22, n), data(23, n));
    let ranges = [0..n / 3, n / 2..n];
    let (dw, dg) = (l.upload(&w)?, l.upload(&g)?);
    ringsam_optim::weight_decay::add_l2_gradient(&mut g, &w, 5e-4, &ranges);
    flat::add_l2_gradient(l, l.buf(&dg), l.buf(&dw), 5e-4, &ranges)?;
    let mut differ = bitwise(&l.download(&dg)?, &g);
    let mut ema = Ema::new(0.999, 2, &w, &[]);
    let davg = l.upload(&w)?;
    for (step, x) in [(1, &g), (5, &w)] {
        let d = ema.decay_at(step);
        ema.update(step, x, &[]);
        let dx = l.upload(x)?;
        flat::ema_update(l, l.buf(&davg), l.buf(&dx), d)?;
        l.finish()?;
    }
    differ += bitwise(&l.download(&davg)?, &ema.params);
    Ok(Check { name: "L2 gradient over ranges, EMA", differ, elements: n, norm_rel: 0.0, seconds: 0.0, bytes: 0 })
}

/// The checks as a table, one line each.
pub fn report(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let timing = if c.seconds > 0.0 {
            format!("  {:8.3} ms  {:7.1} GB/s", c.seconds * 1e3, c.bytes as f64 / c.seconds / 1e9)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{:<32} {:>10} elements  {}  norm rel {:.1e}{timing}\n",
            c.name,
            c.elements,
            if c.passed() { "bitwise".to_string() } else { format!("{} DIFFER", c.differ) },
            c.norm_rel
        ));
    }
    out
}
