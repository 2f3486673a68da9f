//! Where a device's time goes: each launch and GEMM timed while profiling is on (CUDA events
//! around it on a GPU, the host's clock under emulation, whose launches are synchronous), summed
//! by kernel, and GEMMs by shape, so that their rate can be read against the device's.
//!
//! Profiling costs two events per launch, so `bench step --profile` times its steps without it
//! first and profiles one more step of each kind afterwards.

use std::collections::BTreeMap;

/// One kernel's (or one GEMM shape's) launches.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KernelTime {
    /// Launches.
    pub count: u64,
    /// Their time on the device, summed.
    pub seconds: f64,
    /// Their floating-point operations (GEMMs: 2·m·n·k; 0 for the other kernels).
    pub flops: f64,
}

/// Launches timed since profiling started, by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelTimes {
    /// By kernel name, or `sgemm m×n×k NT` for a GEMM.
    pub by_name: BTreeMap<String, KernelTime>,
}

impl KernelTimes {
    /// Records one launch.
    pub fn add(&mut self, name: &str, seconds: f64, flops: f64) {
        let t = self.by_name.entry(name.to_string()).or_default();
        t.count += 1;
        t.seconds += seconds;
        t.flops += flops;
    }

    /// Time on the device, all launches together.
    pub fn total_seconds(&self) -> f64 {
        self.by_name.values().map(|t| t.seconds).sum()
    }

    /// A GEMM's name in the profile: its shape and whether each operand is transposed.
    pub fn gemm_name(m: usize, n: usize, k: usize, transa: bool, transb: bool) -> String {
        let t = |b: bool| if b { 'T' } else { 'N' };
        format!("sgemm {m}×{n}×{k} {}{}", t(transa), t(transb))
    }

    /// The `top` names that took longest, as a table, beside `wall_seconds` (the step's time
    /// on the host's clock): their share of it, launches, and GEMMs' rate in TFLOP/s. The gap
    /// between the kernels' sum and the wall is time the device was idle (host work, copies,
    /// synchronisation).
    pub fn table(&self, wall_seconds: f64, top: usize) -> String {
        let mut rows: Vec<(&String, &KernelTime)> = self.by_name.iter().collect();
        rows.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));
        let total = self.total_seconds();
        let gemm: f64 = self.by_name.iter().filter(|(n, _)| n.starts_with("sgemm")).map(|(_, t)| t.seconds).sum();
        let share = |s: f64| if wall_seconds > 0.0 { 100.0 * s / wall_seconds } else { 0.0 };
        let mut out = format!(
            "  in kernels {:.2} ms of {:.2} ms wall ({:.0}%); GEMMs {:.2} ms ({:.0}%), {} kinds of launch\n",
            total * 1e3,
            wall_seconds * 1e3,
            share(total),
            gemm * 1e3,
            share(gemm),
            rows.len()
        );
        for (name, t) in rows.iter().take(top) {
            let rate = if t.flops > 0.0 && t.seconds > 0.0 { format!("{:8.1} TFLOP/s", t.flops / t.seconds / 1e12) } else { String::new() };
            out.push_str(&format!("  {:>9.3} ms {:>5.1}% {:>6}×  {name:<40}{rate}\n", t.seconds * 1e3, share(t.seconds), t.count));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_by_name_and_orders_the_table_by_time() {
        let mut p = KernelTimes::default();
        p.add("relu_forward", 0.001, 0.0);
        p.add(&KernelTimes::gemm_name(64, 128, 9, false, true), 0.004, 2.0 * 64.0 * 128.0 * 9.0);
        p.add("relu_forward", 0.002, 0.0);
        assert_eq!(p.by_name["relu_forward"], KernelTime { count: 2, seconds: 0.003, flops: 0.0 });
        assert!((p.total_seconds() - 0.007).abs() < 1e-12);
        let table = p.table(0.010, 10);
        let gemm_row = table.find("sgemm 64×128×9 NT").unwrap();
        assert!(gemm_row < table.find("relu_forward").unwrap(), "the longest first:\n{table}");
        assert!(table.contains("in kernels 7.00 ms of 10.00 ms wall (70%)"), "{table}");
        assert!(table.contains("GEMMs 4.00 ms (40%)"), "{table}");
    }
}
