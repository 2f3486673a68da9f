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
    /// Mean step time over the seeds that measured one, ms.
    pub ms_per_step: Option<f64>,
    /// Mean and standard deviation of the final Hessian λ1, when every seed measured it.
    pub lambda_1: Option<(f64, f64)>,
    /// The same for the m-sharpness.
    pub m_sharpness: Option<(f64, f64)>,
}

/// Mean and sample standard deviation (0 for one value).
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
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
            let (mean, std) = mean_std(&rs.iter().map(|r| r.test_accuracy).collect::<Vec<_>>());
            let timed: Vec<f64> = rs.iter().filter_map(|r| r.ms_per_step).collect();
            let ms = (!timed.is_empty()).then(|| mean_std(&timed).0);
            let measured: Option<Vec<_>> = rs.iter().map(|r| r.sharpness).collect();
            let lambda_1 = measured.as_ref().map(|m| mean_std(&m.iter().map(|s| s.lambda_1).collect::<Vec<_>>()));
            let m_sharpness = measured.as_ref().map(|m| mean_std(&m.iter().map(|s| s.m_sharpness).collect::<Vec<_>>()));
            Group {
                method,
                noise,
                mean,
                std,
                runs: rs.len(),
                passes_per_step: rs[0].passes_per_step,
                ms_per_step: ms,
                lambda_1,
                m_sharpness,
            }
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
    let sharp = groups.iter().all(|g| g.lambda_1.is_some());
    for m in methods {
        out += &format!("{m:<14}");
        let mine: Vec<&Group> = groups.iter().filter(|g| g.method == m).collect();
        for n in &noises {
            out += &match mine.iter().find(|g| g.noise == *n) {
                Some(g) => format!(" {:>15}", format!("{:.2} ± {:.2}", 100.0 * g.mean, 100.0 * g.std)),
                None => format!(" {:>15}", "-"),
            };
        }
        let timed: Vec<f64> = mine.iter().filter_map(|g| g.ms_per_step).collect();
        let ms = if timed.is_empty() { "-".to_string() } else { format!("{:.1}", timed.iter().sum::<f64>() / timed.len() as f64) };
        out += &format!(" {:>12.2} {:>10}\n", mine[0].passes_per_step, ms);
    }
    if sharp {
        out += "\nsharpness of the final weights (mean over seeds): Hessian λ1 / m-sharpness\n";
        for g in groups {
            let (l, m) = (g.lambda_1.unwrap_or_default(), g.m_sharpness.unwrap_or_default());
            out += &format!("{:<14} noise {:<5} λ1 {:>8.3} ± {:<7.3} m-sharpness {:.5} ± {:.5}\n", g.method, g.noise, l.0, l.1, m.0, m.1);
        }
    }
    out
}

/// Every cell, one line each, with a header.
pub fn csv(results: &[CellResult]) -> String {
    let mut out = String::from(
        "method,noise,seed,test_accuracy,test_loss,steps,passes_per_step,ms_per_step,lambda_1,lambda_1_over_k,m_sharpness,run_dir\n",
    );
    for r in results {
        let s = r.sharpness;
        let cell = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
        out += &format!(
            "{},{},{},{:.6},{:.6},{},{},{},{},{},{},{}\n",
            r.method,
            r.noise,
            r.seed,
            r.test_accuracy,
            r.test_loss,
            r.steps,
            r.passes_per_step,
            r.ms_per_step.map_or(String::new(), |ms| format!("{ms:.3}")),
            cell(s.map(|s| s.lambda_1)),
            cell(s.and_then(|s| s.lambda_ratio)),
            cell(s.map(|s| s.m_sharpness)),
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
            ms_per_step: Some(5.0),
            run_dir: "x".into(),
            sharpness: None,
            config: ringsam_train::config::TrainConfig::default(),
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
