//! Whether a checkpoint may be resumed by this run: its saved configuration against this one.
//!
//! `state.json` holds the configuration a checkpoint's run resolved. Resuming it under settings
//! that change the math (another ρ, label smoothing, ASAM, `sam_m`, batch, seed, schedule, …)
//! would silently splice two different experiments into one curve, so such a change is refused,
//! with every changed setting listed, unless `--allow_config_change`. Settings that do not change
//! what is computed — where data and outputs live, how often to evaluate, log or checkpoint, how
//! the work is spread (threads, loader workers, prefetch, buckets, gradient accumulation, world
//! size, transport) — are accepted and logged, and so is a longer `--num_epochs` (a run extended).
//! A different model or dataset can never be resumed: the tensors or the data cursor would not
//! fit.

use crate::config::TrainConfig;

/// Settings that do not change what a run computes (see the module docs).
const NOT_MATH: &[&str] = &[
    "data_dir",
    "output_dir",
    "evaluate_every",
    "also_eval_on_training_set",
    "log_sample_ids",
    "compute_top_5_error_rate",
    "save_progress_seconds",
    "checkpoint_every_epochs",
    "keep_checkpoints",
    "max_steps",
    "prefetch",
    "loader_workers",
    "check_replicas_every",
    "bucket_mb",
    "first_bucket_mb",
    "overlap_comm",
    "ring_timeout_seconds",
    "log_every_steps",
    "allow_config_change",
    "log_sharpness_every",
    "sharpness_batch",
    "sharpness_eigs",
    "sharpness_iters",
    "sharpness_tol",
    "sharpness_m",
    "sharpness_rho",
    // Initial weights are read only by a fresh run, never by a resume; what they decide for the
    // math (AdvProp's preprocessing under `auto`) is compared resolved, below.
    "init_from",
    "efficientnet_checkpoint_path",
    "from_pretrained_checkpoint",
];

/// Settings no flag can let a resume change.
const NEVER: &[&str] = &["model_name", "dataset"];

/// How this run's configuration differs from a checkpoint's, one `key: saved -> now` per setting.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigChange {
    /// Changes that alter the math (refused unless `--allow_config_change`).
    pub math: Vec<String>,
    /// Changes that cannot be resumed at all (model, dataset).
    pub never: Vec<String>,
    /// Changes accepted as they are (logged).
    pub accepted: Vec<String>,
}

impl ConfigChange {
    /// Compares two resolved configurations.
    pub fn between(saved: &TrainConfig, now: &TrainConfig) -> ConfigChange {
        let (a, b) = (as_map(saved), as_map(now));
        let mut change = ConfigChange::default();
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let (x, y) = (a.get(key).unwrap_or(&serde_json::Value::Null), b.get(key).unwrap_or(&serde_json::Value::Null));
            if x == y {
                continue;
            }
            let line = format!("{key}: {x} -> {y}");
            let longer_run = key == "num_epochs" && now.num_epochs > saved.num_epochs;
            if NEVER.contains(&key.as_str()) {
                change.never.push(line);
            } else if NOT_MATH.contains(&key.as_str()) || longer_run {
                change.accepted.push(line);
            } else {
                change.math.push(line);
            }
        }
        change
    }

    /// The refusal, if any: the message lists what changed and says what to do.
    pub fn refusal(&self, allow: bool) -> Option<String> {
        if !self.never.is_empty() {
            return Some(format!("it holds a run of another model or dataset ({}): use another --output_dir", self.never.join(", ")));
        }
        if !self.math.is_empty() && !allow {
            return Some(format!(
                "this run changes settings that alter the math ({}): use another --output_dir, the same settings, or --allow_config_change",
                self.math.join(", ")
            ));
        }
        None
    }
}

/// The configuration as compared: settings that follow from others (`--preprocessing auto`,
/// `--freeze_batch_norm` unset) resolved, so a change of what they resolve to shows.
fn as_map(cfg: &TrainConfig) -> serde_json::Map<String, serde_json::Value> {
    let mut m = match serde_json::to_value(cfg) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => unreachable!("a config serializes to an object"),
    };
    m.insert("preprocessing".into(), serde_json::to_value(cfg.preprocessing()).expect("an enum serializes"));
    m.insert("freeze_batch_norm".into(), serde_json::Value::Bool(cfg.bn_frozen()));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> TrainConfig {
        TrainConfig::from_args(["--dataset", "digits"].iter().chain(args), None).unwrap().resolved()
    }

    #[test]
    fn math_changes_are_refused_with_each_listed() {
        let c = ConfigChange::between(&cfg(&[]), &cfg(&["--adaptive_sam", "--sam_m", "8", "--label_smoothing", "0.1"]));
        assert_eq!(c.math.len(), 3, "{c:?}");
        let why = c.refusal(false).unwrap();
        for key in ["adaptive_sam", "sam_m", "label_smoothing", "--allow_config_change"] {
            assert!(why.contains(key), "{why}");
        }
        assert_eq!(c.refusal(true), None);
    }

    #[test]
    fn moved_initial_weights_are_accepted_unless_what_they_decide_changes() {
        let ckpt = |path: &str| cfg(&["--from_pretrained_checkpoint", "--efficientnet_checkpoint_path", path]);
        let moved = ConfigChange::between(&ckpt("/a/efficientnet-b0/checkpoint.tar.gz"), &ckpt("/b/b0.tar.gz"));
        assert!(moved.math.is_empty() && moved.accepted.len() == 1, "{moved:?}");
        let flipped = ConfigChange::between(&ckpt("/a/advprop/b0.tar.gz"), &ckpt("/a/b0.tar.gz"));
        assert_eq!(flipped.math, vec!["preprocessing: \"advprop\" -> \"standard\"".to_string()], "{flipped:?}");
        let no_weights = ConfigChange::between(&ckpt("/a/b0.tar.gz"), &cfg(&[]));
        assert!(no_weights.math.iter().any(|l| l.starts_with("freeze_batch_norm: true -> false")), "{no_weights:?}");
    }

    #[test]
    fn operational_changes_and_a_longer_run_are_accepted() {
        let saved = cfg(&["--num_epochs", "3"]);
        let now = cfg(&["--num_epochs", "5", "--log_every_steps", "2", "--prefetch", "8", "--loader_workers", "3"]);
        let c = ConfigChange::between(&saved, &now);
        assert!(c.math.is_empty() && c.never.is_empty(), "{c:?}");
        assert_eq!(c.accepted.len(), 4);
        assert_eq!(c.refusal(false), None);
        let shorter = ConfigChange::between(&now, &saved);
        assert_eq!(shorter.math.len(), 1, "a shorter run changes the schedule: {shorter:?}");
    }

    #[test]
    fn another_model_is_never_resumed() {
        let c = ConfigChange::between(&cfg(&["--model_name", "WideResnet10x1"]), &cfg(&["--model_name", "WideResnet10x2"]));
        assert!(c.refusal(true).unwrap().contains("model_name"));
    }
}
