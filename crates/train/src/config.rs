//! The training configuration: the reference's flags, with its defaults.
//!
//! Values come from three layers, later ones winning: the defaults below (the reference's,
//! reference/sam.md §1.1, except `sync_perturbations = true` as DESIGN.md decides), a TOML file
//! (`--config`, keys are the flag names), then command-line flags. The binary does the merging
//! ([`TrainConfig::merge_toml`] and field assignment); [`TrainConfig::validate`] checks values
//! against each other and says which flag to change.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Every knob of a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Dataset name (digits, cifar10, cifar100, fashion_mnist, svhn, synthetic).
    pub dataset: String,
    /// Directory holding the dataset's files (not needed for digits and synthetic).
    pub data_dir: Option<PathBuf>,
    /// Model name (see `ringsam models`).
    pub model_name: String,
    /// Epochs.
    pub num_epochs: u64,
    /// Global batch size.
    pub batch_size: usize,
    /// Where run directories go (`output_dir/lr_…/wd_…/rho_…/seed_…`).
    pub output_dir: PathBuf,
    /// none | basic | autoaugment | aa-only.
    pub image_level_augmentations: String,
    /// none | cutout | mixup | mixcut.
    pub batch_level_augmentations: String,
    /// Cutout square side.
    pub cutout_length: usize,
    /// Clip gradients to this global norm (0: off).
    pub gradient_clipping: f32,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// The global batch `learning_rate` is stated for (ours): when set, the run uses
    /// `learning_rate × batch_size / this` (linear scaling, Goyal et al. 2017), so a recipe's
    /// config keeps its rate when `--batch_size` changes. Applied by [`TrainConfig::resolved`].
    pub learning_rate_batch_size: Option<usize>,
    /// Use the schedule (false: constant learning rate).
    pub use_learning_rate_schedule: bool,
    /// cosine | exponential | constant.
    pub lr_schedule: String,
    /// Linear warm-up epochs (ours; the reference has none).
    pub warmup_epochs: f64,
    /// Weight decay.
    pub weight_decay: f32,
    /// Decoupled weight decay instead of L2 in the loss (ours).
    pub decoupled_weight_decay: bool,
    /// Only tensors with more than one dimension decay.
    pub no_weight_decay_on_bn: bool,
    /// Seed of the random draws and the data order.
    pub run_seed: u64,
    /// TF1 RMSProp instead of Nesterov momentum.
    pub use_rmsprop: bool,
    /// Momentum coefficient (the reference hard-codes 0.9).
    pub momentum: f32,
    /// Label smoothing.
    pub label_smoothing: f32,
    /// EMA decay of weights and BN state (0: off).
    pub ema_decay: f32,
    /// SAM radius (0: plain SGD).
    pub sam_rho: f32,
    /// ASAM instead of SAM (ours).
    pub adaptive_sam: bool,
    /// ASAM's η.
    pub asam_eta: f32,
    /// m-sharpness on one replica: examples per ascent (ours).
    pub sam_m: Option<usize>,
    /// Average the ascent gradient across replicas (ringsam's default: true).
    pub sync_perturbations: bool,
    /// Average the ascent gradient within groups of this many replicas.
    pub inner_group_size: Option<usize>,
    /// Evaluate every this many epochs.
    pub evaluate_every: u64,
    /// Also evaluate on the training set.
    pub also_eval_on_training_set: bool,
    /// Report top-5 error.
    pub compute_top_5_error_rate: bool,
    /// Hold-out validation instead of the test split when false.
    pub use_test_set: bool,
    /// Write a checkpoint when this many seconds have passed since the last one.
    pub save_progress_seconds: u64,
    /// Write a checkpoint at the end of every this many epochs (ours; 0: off).
    pub checkpoint_every_epochs: u64,
    /// Newest checkpoints kept.
    pub keep_checkpoints: usize,
    /// Mixup on ImageNet training batches: λ ~ Beta(α, α), kept ≥ ½, one per batch (0: off).
    pub imagenet_mixup_alpha: f64,
    /// RandAugment's number of ops per image (ImageNet `autoaugment`).
    pub randaug_num_layers: usize,
    /// RandAugment's magnitude (0–10 is the reference's scale; the paper studies up to 30).
    pub randaug_magnitude: f64,
    /// Image side for the synthetic dataset and sharded data (ours; 0: the model's input size,
    /// `ringsam models` lists it).
    pub image_size: usize,
    /// Stop after this many steps (ours; for smoke tests and benchmarks).
    pub max_steps: Option<u64>,
    /// Batches the loader prepares ahead.
    pub prefetch: usize,
    /// Decoder threads of the shard loader (ours; 0: one per four logical cores, at least one).
    pub loader_workers: usize,
    /// JPEG decoder of the shard loader (ours): `zune` (default), `turbo` (libjpeg-turbo, only the
    /// crop decoded), `turbo-reduced` (also at a reduced DCT scale; not the reference's pixels).
    pub jpeg_decoder: String,
    /// Data-parallel: compare the replicas' parameter fingerprints every this many steps
    /// (ours; 0: only before checkpoints).
    pub check_replicas_every: u64,
    /// Data-parallel: gradient bucket size in MiB (DDP's `bucket_cap_mb`).
    pub bucket_mb: f64,
    /// Data-parallel: size of the first bucket (the last layers) in MiB.
    pub first_bucket_mb: f64,
    /// Data-parallel: send buckets while backward runs (false: after it, to measure the overlap).
    pub overlap_comm: bool,
    /// Data-parallel: seconds of silence from a peer that owes data before the run fails.
    pub ring_timeout_seconds: u64,
    /// Micro-batches per replica batch, gradients summed (ours): the global batch is replicas ×
    /// micro-batch × this; only the summed gradient crosses the ring.
    pub grad_accum_steps: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            dataset: "cifar10".into(),
            data_dir: None,
            model_name: "WideResnet28x10".into(),
            num_epochs: 200,
            batch_size: 128,
            output_dir: PathBuf::from("runs"),
            image_level_augmentations: "basic".into(),
            batch_level_augmentations: "none".into(),
            cutout_length: 16,
            gradient_clipping: 5.0,
            learning_rate: 0.1,
            learning_rate_batch_size: None,
            use_learning_rate_schedule: true,
            lr_schedule: "cosine".into(),
            warmup_epochs: 0.0,
            weight_decay: 0.001,
            decoupled_weight_decay: false,
            no_weight_decay_on_bn: false,
            run_seed: 0,
            use_rmsprop: false,
            momentum: 0.9,
            label_smoothing: 0.0,
            ema_decay: 0.0,
            sam_rho: 0.0,
            adaptive_sam: false,
            asam_eta: 0.01,
            sam_m: None,
            sync_perturbations: true,
            inner_group_size: None,
            evaluate_every: 1,
            also_eval_on_training_set: false,
            compute_top_5_error_rate: false,
            use_test_set: true,
            save_progress_seconds: 3600,
            checkpoint_every_epochs: 1,
            keep_checkpoints: 2,
            imagenet_mixup_alpha: 0.0,
            randaug_num_layers: 2,
            randaug_magnitude: 9.0,
            image_size: 0,
            max_steps: None,
            prefetch: 4,
            loader_workers: 0,
            jpeg_decoder: "zune".into(),
            check_replicas_every: 100,
            bucket_mb: 25.0,
            first_bucket_mb: 1.0,
            overlap_comm: true,
            ring_timeout_seconds: 30,
            grad_accum_steps: 1,
        }
    }
}

/// The quickstart, used when neither `--config` nor `--dataset` is given.
pub const QUICKSTART_TOML: &str = include_str!("../../../configs/quickstart.toml");

impl TrainConfig {
    /// Applies a TOML document on top of `self` (keys not present keep their value).
    pub fn merge_toml(&self, text: &str) -> Result<TrainConfig, String> {
        let mut base = match toml::Value::try_from(self).map_err(|e| e.to_string())? {
            toml::Value::Table(t) => t,
            _ => unreachable!("a struct serializes to a table"),
        };
        let over: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        for (k, v) in over {
            base.insert(k, v);
        }
        toml::Value::Table(base).try_into().map_err(|e: toml::de::Error| e.to_string())
    }

    /// The configuration a run uses: the learning rate scaled to the batch when
    /// `learning_rate_batch_size` asks for it (the run directory is named by the rate used).
    pub fn resolved(&self) -> TrainConfig {
        let mut c = self.clone();
        if let Some(b) = c.learning_rate_batch_size.take()
            && b > 0
        {
            c.learning_rate *= c.batch_size as f64 / b as f64;
        }
        c
    }

    /// Checks values against each other; the message names the flag to change.
    #[allow(clippy::neg_cmp_op_on_partial_ord)] // written so that NaN fails the check
    pub fn validate(&self) -> Result<(), String> {
        let fail = |m: String| Err(m);
        if self.batch_size == 0 {
            return fail("--batch_size must be at least 1".into());
        }
        if self.num_epochs == 0 && self.max_steps.is_none() {
            return fail("--num_epochs must be at least 1".into());
        }
        if !["none", "basic", "autoaugment", "aa-only"].contains(&self.image_level_augmentations.as_str()) {
            return fail(format!(
                "--image_level_augmentations {:?}: expected none, basic, autoaugment or aa-only",
                self.image_level_augmentations
            ));
        }
        if self.image_size > 4096 {
            return fail(format!("--image_size {} is larger than 4096", self.image_size));
        }
        // Which datasets take which augmentations: as the reference's dataset classes assert.
        let aug = self.image_level_augmentations.as_str();
        let allowed: &[&str] = match self.dataset.as_str() {
            "cifar10" | "cifar100" => &["none", "basic", "autoaugment"],
            "svhn" => &["none", "basic", "autoaugment", "aa-only"],
            "imagenet" => &["basic", "autoaugment"],
            _ => &["none", "basic"],
        };
        if !allowed.contains(&aug) {
            return fail(format!(
                "--image_level_augmentations {aug}: dataset {} takes {} (as the reference's dataset class asserts; \
                 `autoaugment` is the dataset's AutoAugment policy, RandAugment on ImageNet)",
                self.dataset,
                allowed.join(", ")
            ));
        }
        match self.batch_level_augmentations.as_str() {
            "none" => {}
            "cutout" if self.dataset != "imagenet" => {}
            "cutout" => return fail("--batch_level_augmentations cutout: the reference applies no batch-level cutout on ImageNet".into()),
            "mixup" | "mixcut" => {
                return fail(format!(
                    "--batch_level_augmentations {}: the reference's dataset classes accept only none or cutout; \
                     mixup on ImageNet is --imagenet_mixup_alpha",
                    self.batch_level_augmentations
                ));
            }
            other => return fail(format!("--batch_level_augmentations {other:?}: expected none, cutout, mixup or mixcut")),
        }
        if !(self.imagenet_mixup_alpha >= 0.0 && self.imagenet_mixup_alpha <= 100.0) {
            return fail(format!("--imagenet_mixup_alpha {} must be in [0, 100]", self.imagenet_mixup_alpha));
        }
        if self.imagenet_mixup_alpha > 0.0 && self.dataset != "imagenet" {
            return fail(format!("--imagenet_mixup_alpha: mixup is the reference's ImageNet option; dataset {} takes none", self.dataset));
        }
        if self.randaug_num_layers > 16 || !(0.0..=30.0).contains(&self.randaug_magnitude) {
            return fail(format!(
                "--randaug_num_layers {} (at most 16) and --randaug_magnitude {} (0 to 30) out of range",
                self.randaug_num_layers, self.randaug_magnitude
            ));
        }
        if !["cosine", "exponential", "constant"].contains(&self.lr_schedule.as_str()) {
            return fail(format!("--lr_schedule {:?}: expected cosine, exponential or constant", self.lr_schedule));
        }
        if !(self.learning_rate > 0.0) || !self.learning_rate.is_finite() {
            return fail(format!("--learning_rate {} must be a positive number", self.learning_rate));
        }
        if self.learning_rate_batch_size == Some(0) {
            return fail("--learning_rate_batch_size must be at least 1".into());
        }
        if self.keep_checkpoints == 0 {
            return fail("--keep_checkpoints must be at least 1".into());
        }
        if self.evaluate_every == 0 {
            return fail("--evaluate_every must be at least 1".into());
        }
        if let Some(g) = self.inner_group_size
            && g == 0
        {
            return fail("--inner_group_size must be at least 1".into());
        }
        if !(self.bucket_mb > 0.0 && self.bucket_mb <= 4096.0) || !(self.first_bucket_mb > 0.0 && self.first_bucket_mb <= 4096.0) {
            return fail(format!("--bucket_mb {} and --first_bucket_mb {} must be in (0, 4096]", self.bucket_mb, self.first_bucket_mb));
        }
        if self.grad_accum_steps == 0 {
            return fail("--grad_accum_steps must be at least 1".into());
        }
        if self.ring_timeout_seconds == 0 {
            return fail("--ring_timeout_seconds must be at least 1".into());
        }
        Ok(())
    }

    /// `lr_{lr}/wd_{wd}/rho_{rho}/seed_{seed}` with numbers as Python's `str(float)` prints them.
    pub fn run_subdir(&self) -> PathBuf {
        PathBuf::from(format!("lr_{}", py_float(self.learning_rate)))
            .join(format!("wd_{}", py_float(self.weight_decay as f64)))
            .join(format!("rho_{}", py_float(self.sam_rho as f64)))
            .join(format!("seed_{}", self.run_seed))
    }
}

/// Formats like Python's `str(float)`: shortest round-trip digits, `.0` on integers, and
/// scientific notation below 1e-4 or from 1e16 (`1e-05`, `0.0001`, `0.1`, `1.0`, `1e+16`).
/// Floats that arrived as f32 are widened through their shortest f32 text first, so `1e-5f32`
/// prints `1e-05` as the user typed it, not `9.999999747378752e-06`.
pub fn py_float(v: f64) -> String {
    let v = if (v as f32) as f64 == v { format!("{}", v as f32).parse::<f64>().unwrap_or(v) } else { v };
    if v == 0.0 {
        return if v.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    let a = v.abs();
    if (1e-4..1e16).contains(&a) {
        let s = format!("{v}");
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        let s = format!("{v:e}"); // e.g. "1e-5", "1.5e-7", "1e16"
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        format!("{mant}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_formatting() {
        for (v, want) in [
            (0.1, "0.1"),
            (1.0, "1.0"),
            (0.0, "0.0"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (5e-4, "0.0005"),
            (0.05, "0.05"),
            (2.5e-7, "2.5e-07"),
            (1e16, "1e+16"),
            (123.0, "123.0"),
        ] {
            assert_eq!(py_float(v), want, "{v}");
        }
        assert_eq!(py_float(1e-5f32 as f64), "1e-05");
        assert_eq!(py_float(0.05f32 as f64), "0.05");
    }

    #[test]
    fn run_subdir_matches_the_reference_layout() {
        let c = TrainConfig { learning_rate: 0.1, weight_decay: 1e-5, sam_rho: 0.0, run_seed: 3, ..TrainConfig::default() };
        assert_eq!(c.run_subdir(), PathBuf::from("lr_0.1/wd_1e-05/rho_0.0/seed_3"));
    }

    #[test]
    fn learning_rate_scales_linearly_with_the_batch_when_asked() {
        let c = TrainConfig { learning_rate: 1.0, learning_rate_batch_size: Some(4096), batch_size: 1024, ..TrainConfig::default() };
        let r = c.resolved();
        assert_eq!((r.learning_rate, r.learning_rate_batch_size), (0.25, None));
        assert_eq!(r.resolved().learning_rate, 0.25, "resolving twice changes nothing");
        assert_eq!(TrainConfig { batch_size: 1024, ..TrainConfig::default() }.resolved().learning_rate, 0.1);
    }

    #[test]
    fn toml_overrides_and_rejects_unknown_keys() {
        let c = TrainConfig::default().merge_toml("sam_rho = 0.05\nnum_epochs = 3").unwrap();
        assert_eq!((c.sam_rho, c.num_epochs, c.batch_size), (0.05, 3, 128));
        let err = TrainConfig::default().merge_toml("sam_rhoo = 0.05").unwrap_err();
        assert!(err.contains("sam_rhoo"), "{err}");
        TrainConfig::default().merge_toml(QUICKSTART_TOML).unwrap().validate().unwrap();
    }

    #[test]
    fn every_bundled_config_validates_and_names_a_registered_model() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let c = TrainConfig::default().merge_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            c.validate().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                ringsam_models::list().iter().any(|m| m.name == c.model_name),
                "{}: model {} is not registered",
                path.display(),
                c.model_name
            );
            seen += 1;
        }
        assert!(seen >= 7, "found only {seen} configs in {}", dir.display());
    }
}
