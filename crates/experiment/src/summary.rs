//! An experiment's results over seeds: mean and standard deviation per (method, noise), as a
//! table, and every cell as CSV.

use crate::cell::CellResult;

/// One (method, noise) over its seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// Method label.
    pub method: String,
    /// Label noise.
    pub noise: f64,
    /// Mean test accuracy.
    pub mean: f64,
    /// Sample standard deviation over seeds (0 with one).
    pub std: f64,
    /// Seeds.
    pub runs: usize,
    /// Passes per step.
    pub passes_per_step: f64,
    /// Mean step time, ms.
    pub ms_per_step: f64,
}

/// Groups `results` by (method, noise), in the order they first appear.
pub fn groups(results: &[CellResult]) -> Vec<Group> {
    let mut keys: Vec<(String, f64)> = Vec::new();
    for r in results {
        if !keys.iter().any(|(m, n)| *m == r.method && *n == r.noise) {
            keys.push((r.method.clone(), r.noise));
        }
    }
    keys.into_iter()
        .map(|(method, noise)| {
            let rs: Vec<&CellResult> = results.iter().filter(|r| r.method == method && r.noise == noise).collect();
            let n = rs.len() as f64;
            let mean = rs.iter().map(|r| r.test_accuracy).sum::<f64>() / n;
            let var = if rs.len() > 1 { rs.iter().map(|r| (r.test_accuracy - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
            let ms = rs.iter().map(|r| r.ms_per_step).sum::<f64>() / n;
            Group { method, noise, mean, std: var.sqrt(), runs: rs.len(), passes_per_step: rs[0].passes_per_step, ms_per_step: ms }
        })
        .collect()
}

/// A text table: one row per method, one column per noise level (`mean ± std` in %), then passes
/// and milliseconds per step.
pub fn table(groups: &[Group]) -> String {
    let mut noises: Vec<f64> = Vec::new();
    let mut methods: Vec<&str> = Vec::new();
    for g in groups {
        if !noises.contains(&g.noise) {
            noises.push(g.noise);
        }
        if !methods.contains(&g.method.as_str()) {
            methods.push(&g.method);
        }
    }
    noises.sort_by(f64::total_cmp);
    let mut out = format!("{:<14}", "method");
    for n in &noises {
        out += &format!(" {:>15}", format!("noise {n}"));
    }
    out += &format!(" {:>12} {:>10}\n", "passes/step", "ms/step");
    for m in methods {
        out += &format!("{m:<14}");
        let mine: Vec<&Group> = groups.iter().filter(|g| g.method == m).collect();
        for n in &noises {
            out += &match mine.iter().find(|g| g.noise == *n) {
                Some(g) => format!(" {:>15}", format!("{:.2} ± {:.2}", 100.0 * g.mean, 100.0 * g.std)),
                None => format!(" {:>15}", "-"),
            };
        }
        let ms = mine.iter().map(|g| g.ms_per_step).sum::<f64>() / mine.len() as f64;
        out += &format!(" {:>12.2} {:>10.1}\n", mine[0].passes_per_step, ms);
    }
    out
}

/// Every cell, one line each, with a header.
pub fn csv(results: &[CellResult]) -> String {
    let mut out = String::from("method,noise,seed,test_accuracy,test_loss,steps,passes_per_step,ms_per_step,run_dir\n");
    for r in results {
        out += &format!(
            "{},{},{},{:.6},{:.6},{},{},{:.3},{}\n",
            r.method,
            r.noise,
            r.seed,
            r.test_accuracy,
            r.test_loss,
            r.steps,
            r.passes_per_step,
            r.ms_per_step,
            r.run_dir.display()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(method: &str, noise: f64, seed: u64, acc: f64) -> CellResult {
        CellResult {
            method: method.into(),
            noise,
            seed,
            test_accuracy: acc,
            test_loss: 1.0,
            steps: 10,
            passes_per_step: 1.0,
            ms_per_step: 5.0,
            run_dir: "x".into(),
        }
    }

    #[test]
    fn groups_have_the_mean_and_sample_std_over_seeds() {
        let rs = [r("sgd", 0.2, 0, 0.8), r("sgd", 0.2, 1, 0.9), r("sgd", 0.2, 2, 1.0), r("sam", 0.2, 0, 0.5)];
        let g = groups(&rs);
        assert_eq!(g.len(), 2);
        assert!((g[0].mean - 0.9).abs() < 1e-12 && (g[0].std - 0.1).abs() < 1e-12 && g[0].runs == 3);
        assert_eq!((g[1].std, g[1].runs), (0.0, 1));
        let t = table(&g);
        assert!(t.contains("90.00 ± 10.00") && t.contains("noise 0.2"), "{t}");
        assert_eq!(csv(&rs).lines().count(), 5);
    }
}
