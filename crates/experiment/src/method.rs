//! The training methods an experiment compares, each a setting of the ordinary step.

use ringsam_train::config::TrainConfig;

/// A method: SGD, SAM, or a cheaper SAM schedule; every SAM-family method uses the run's ρ.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// Plain SGD (ρ = 0).
    Sgd,
    /// SAM on every step.
    Sam,
    /// SAM on every K-th step (`--sam_every K`).
    SamEvery(u64),
    /// LookSAM with period k (`--looksam_k k`, α from the run's configuration).
    LookSam(u64),
}

impl Method {
    /// Parses `sgd`, `sam`, `sam_every:K`, `looksam:K` (K from 2 to 1000).
    pub fn parse(s: &str) -> Result<Method, String> {
        let period = |k: &str| k.parse::<u64>().ok().filter(|k| (2..=1000).contains(k));
        let bad = || format!("method {s:?}: expected sgd, sam, sam_every:K or looksam:K with K from 2 to 1000");
        match s.split_once(':') {
            None if s == "sgd" => Ok(Method::Sgd),
            None if s == "sam" => Ok(Method::Sam),
            Some(("sam_every", k)) => period(k).map(Method::SamEvery).ok_or_else(bad),
            Some(("looksam", k)) => period(k).map(Method::LookSam).ok_or_else(bad),
            _ => Err(bad()),
        }
    }

    /// A comma-separated list of methods, each once.
    pub fn parse_list(s: &str) -> Result<Vec<Method>, String> {
        let mut out: Vec<Method> = Vec::new();
        for m in s.split(',').map(str::trim).filter(|m| !m.is_empty()).map(Method::parse) {
            let m = m?;
            if out.contains(&m) {
                return Err(format!("method {} is listed twice", m.label()));
            }
            out.push(m);
        }
        if out.is_empty() {
            return Err("no methods given".into());
        }
        Ok(out)
    }

    /// The name in tables, file names and plots: `sgd`, `sam`, `sam_every_2`, `looksam_5`.
    pub fn label(self) -> String {
        match self {
            Method::Sgd => "sgd".into(),
            Method::Sam => "sam".into(),
            Method::SamEvery(k) => format!("sam_every_{k}"),
            Method::LookSam(k) => format!("looksam_{k}"),
        }
    }

    /// Forward-backward passes per step, on average.
    pub fn passes_per_step(self) -> f64 {
        match self {
            Method::Sgd => 1.0,
            Method::Sam => 2.0,
            Method::SamEvery(k) | Method::LookSam(k) => 1.0 + 1.0 / k as f64,
        }
    }

    /// Sets `cfg` to this method, keeping its ρ (`rho`) for the SAM family.
    pub fn apply(self, cfg: &mut TrainConfig, rho: f32) {
        (cfg.sam_every, cfg.looksam_k) = (1, None);
        cfg.sam_rho = rho;
        match self {
            Method::Sgd => cfg.sam_rho = 0.0,
            Method::Sam => {}
            Method::SamEvery(k) => cfg.sam_every = k,
            Method::LookSam(k) => cfg.looksam_k = Some(k),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse_and_set_the_step() {
        let ms = Method::parse_list("sgd,sam,sam_every:2,looksam:5").unwrap();
        assert_eq!(ms, [Method::Sgd, Method::Sam, Method::SamEvery(2), Method::LookSam(5)]);
        assert!(Method::parse_list("sam,sam").is_err() && Method::parse("looksam:1").is_err() && Method::parse("adam").is_err());
        let mut cfg = TrainConfig::default();
        Method::LookSam(5).apply(&mut cfg, 0.1);
        assert_eq!((cfg.sam_rho, cfg.looksam_k, cfg.sam_every), (0.1, Some(5), 1));
        Method::Sgd.apply(&mut cfg, 0.1);
        assert_eq!((cfg.sam_rho, cfg.looksam_k), (0.0, None));
        assert_eq!(Method::SamEvery(5).passes_per_step(), 1.2);
    }
}
