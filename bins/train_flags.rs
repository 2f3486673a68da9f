//! `ringsam train` flags: the reference's names (snake_case), kebab-case accepted too.
//!
//! Every flag is optional here: an absent flag leaves the value from `--config` (or the
//! defaults) alone. This is the low-level layer (values only); `TrainConfig::validate` checks
//! them against each other.

use clap::Args;
use ringsam_train::config::TrainConfig;

/// Training flags.
#[derive(Args, Debug, Default)]
pub struct TrainFlags {
    /// TOML file with any of these keys (command-line flags override it).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics on this address (e.g. 0.0.0.0:9100); not part of the run's config.
    #[arg(long = "metrics_addr", visible_alias = "metrics-addr", env = "RINGSAM_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Dataset: digits, cifar10, cifar100, fashion_mnist, svhn, synthetic.
    #[arg(long = "dataset", value_name = "DATASET")]
    pub dataset: Option<String>,
    /// Directory holding the dataset's files.
    #[arg(long = "data_dir", visible_alias = "data-dir", value_name = "DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// Model (see `ringsam models`).
    #[arg(long = "model_name", visible_alias = "model-name", value_name = "MODEL_NAME")]
    pub model_name: Option<String>,
    /// Epochs.
    #[arg(long = "num_epochs", visible_alias = "num-epochs", value_name = "NUM_EPOCHS")]
    pub num_epochs: Option<u64>,
    /// Global batch size.
    #[arg(long = "batch_size", visible_alias = "batch-size", value_name = "BATCH_SIZE")]
    pub batch_size: Option<usize>,
    /// Where run directories are created.
    #[arg(long = "output_dir", visible_alias = "output-dir", value_name = "OUTPUT_DIR")]
    pub output_dir: Option<std::path::PathBuf>,
    /// none | basic | autoaugment | aa-only.
    #[arg(long = "image_level_augmentations", visible_alias = "image-level-augmentations", value_name = "IMAGE_LEVEL_AUGMENTATIONS")]
    pub image_level_augmentations: Option<String>,
    /// none | cutout | mixup | mixcut.
    #[arg(long = "batch_level_augmentations", visible_alias = "batch-level-augmentations", value_name = "BATCH_LEVEL_AUGMENTATIONS")]
    pub batch_level_augmentations: Option<String>,
    /// Cutout square side.
    #[arg(long = "cutout_length", visible_alias = "cutout-length", value_name = "CUTOUT_LENGTH")]
    pub cutout_length: Option<usize>,
    /// Clip gradients to this global norm (0: off).
    #[arg(long = "gradient_clipping", visible_alias = "gradient-clipping", value_name = "GRADIENT_CLIPPING")]
    pub gradient_clipping: Option<f32>,
    /// Peak learning rate.
    #[arg(long = "learning_rate", visible_alias = "learning-rate", value_name = "LEARNING_RATE")]
    pub learning_rate: Option<f64>,
    /// The global batch --learning_rate is stated for: the run scales it by batch_size / this.
    #[arg(long = "learning_rate_batch_size", visible_alias = "learning-rate-batch-size", value_name = "BATCH")]
    pub learning_rate_batch_size: Option<usize>,
    /// cosine | exponential | constant.
    #[arg(long = "lr_schedule", visible_alias = "lr-schedule", value_name = "LR_SCHEDULE")]
    pub lr_schedule: Option<String>,
    /// Linear warm-up epochs.
    #[arg(long = "warmup_epochs", visible_alias = "warmup-epochs", value_name = "WARMUP_EPOCHS")]
    pub warmup_epochs: Option<f64>,
    /// Weight decay (L2 in the loss unless --decoupled_weight_decay).
    #[arg(long = "weight_decay", visible_alias = "weight-decay", value_name = "WEIGHT_DECAY")]
    pub weight_decay: Option<f32>,
    /// Seed of data order and random draws.
    #[arg(long = "run_seed", visible_alias = "run-seed", value_name = "RUN_SEED")]
    pub run_seed: Option<u64>,
    /// Momentum coefficient.
    #[arg(long = "momentum", value_name = "MOMENTUM")]
    pub momentum: Option<f32>,
    /// Label smoothing.
    #[arg(long = "label_smoothing", visible_alias = "label-smoothing", value_name = "LABEL_SMOOTHING")]
    pub label_smoothing: Option<f32>,
    /// EMA decay of weights and BN state (0: off).
    #[arg(long = "ema_decay", visible_alias = "ema-decay", value_name = "EMA_DECAY")]
    pub ema_decay: Option<f32>,
    /// SAM radius rho (0: plain SGD).
    #[arg(long = "sam_rho", visible_alias = "sam-rho", value_name = "SAM_RHO")]
    pub sam_rho: Option<f32>,
    /// ASAM's eta.
    #[arg(long = "asam_eta", visible_alias = "asam-eta", value_name = "ASAM_ETA")]
    pub asam_eta: Option<f32>,
    /// m-sharpness: examples per ascent on one replica.
    #[arg(long = "sam_m", visible_alias = "sam-m", value_name = "SAM_M")]
    pub sam_m: Option<usize>,
    /// Average the ascent gradient within groups of this many replicas.
    #[arg(long = "inner_group_size", visible_alias = "inner-group-size", value_name = "INNER_GROUP_SIZE")]
    pub inner_group_size: Option<usize>,
    /// Evaluate every N epochs.
    #[arg(long = "evaluate_every", visible_alias = "evaluate-every", value_name = "EVALUATE_EVERY")]
    pub evaluate_every: Option<u64>,
    /// Checkpoint when this many seconds have passed.
    #[arg(long = "save_progress_seconds", visible_alias = "save-progress-seconds", value_name = "SAVE_PROGRESS_SECONDS")]
    pub save_progress_seconds: Option<u64>,
    /// Checkpoint every N epochs (0: off).
    #[arg(long = "checkpoint_every_epochs", visible_alias = "checkpoint-every-epochs", value_name = "CHECKPOINT_EVERY_EPOCHS")]
    pub checkpoint_every_epochs: Option<u64>,
    /// Newest checkpoints kept.
    #[arg(long = "keep_checkpoints", visible_alias = "keep-checkpoints", value_name = "KEEP_CHECKPOINTS")]
    pub keep_checkpoints: Option<usize>,
    /// Image side for synthetic and sharded (ImageNet) data (0: the model's input size).
    #[arg(long = "image_size", visible_alias = "image-size", value_name = "IMAGE_SIZE")]
    pub image_size: Option<usize>,
    /// Stop after this many steps.
    #[arg(long = "max_steps", visible_alias = "max-steps", value_name = "MAX_STEPS")]
    pub max_steps: Option<u64>,
    /// Batches the loader prepares ahead.
    #[arg(long = "prefetch", value_name = "PREFETCH")]
    pub prefetch: Option<usize>,
    /// Decoder threads of the shard loader (0: one per four logical cores, at least one).
    #[arg(long = "loader_workers", visible_alias = "loader-workers", value_name = "LOADER_WORKERS")]
    pub loader_workers: Option<usize>,
    /// Mixup on ImageNet: Beta(α, α) weight per batch, kept ≥ ½ (0: off).
    #[arg(long = "imagenet_mixup_alpha", visible_alias = "imagenet-mixup-alpha", value_name = "ALPHA")]
    pub imagenet_mixup_alpha: Option<f64>,
    /// RandAugment ops per image (ImageNet with --image_level_augmentations autoaugment).
    #[arg(long = "randaug_num_layers", visible_alias = "randaug-num-layers", value_name = "N")]
    pub randaug_num_layers: Option<usize>,
    /// RandAugment magnitude (the reference's 0–10 scale).
    #[arg(long = "randaug_magnitude", visible_alias = "randaug-magnitude", value_name = "M")]
    pub randaug_magnitude: Option<f64>,
    /// JPEG decoder of the shard loader: zune, turbo or turbo-reduced (the last two need --features turbojpeg).
    #[arg(long = "jpeg_decoder", visible_alias = "jpeg-decoder", value_name = "DECODER")]
    pub jpeg_decoder: Option<String>,
    /// Data-parallel: compare replica parameter fingerprints every N steps (0: before checkpoints only).
    #[arg(long = "check_replicas_every", visible_alias = "check-replicas-every", value_name = "STEPS")]
    pub check_replicas_every: Option<u64>,
    /// Micro-batches per replica batch (gradient accumulation; the global batch stays --batch_size).
    #[arg(long = "grad_accum_steps", visible_alias = "grad-accum-steps", value_name = "STEPS")]
    pub grad_accum_steps: Option<usize>,
    /// Data-parallel: gradient bucket size in MiB.
    #[arg(long = "bucket_mb", visible_alias = "bucket-mb", value_name = "MIB")]
    pub bucket_mb: Option<f64>,
    /// Data-parallel: first (last-layer) bucket size in MiB.
    #[arg(long = "first_bucket_mb", visible_alias = "first-bucket-mb", value_name = "MIB")]
    pub first_bucket_mb: Option<f64>,
    /// Data-parallel: seconds of silence from a peer before the run fails.
    #[arg(long = "ring_timeout_seconds", visible_alias = "ring-timeout-seconds", value_name = "SECONDS")]
    pub ring_timeout_seconds: Option<u64>,
    /// Data-parallel: send gradient buckets while backward runs (`--overlap_comm=false`: after it).
    #[arg(long = "overlap_comm", visible_alias = "overlap-comm", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub overlap_comm: Option<bool>,
    /// Use the schedule (false: constant learning rate) (`--use_learning_rate_schedule`, `--use_learning_rate_schedule=false`).
    #[arg(long = "use_learning_rate_schedule", visible_alias = "use-learning-rate-schedule", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub use_learning_rate_schedule: Option<bool>,
    /// Decoupled weight decay instead of L2 in the loss (`--decoupled_weight_decay`, `--decoupled_weight_decay=false`).
    #[arg(long = "decoupled_weight_decay", visible_alias = "decoupled-weight-decay", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub decoupled_weight_decay: Option<bool>,
    /// Only tensors with more than one dimension decay (`--no_weight_decay_on_bn`, `--no_weight_decay_on_bn=false`).
    #[arg(long = "no_weight_decay_on_bn", visible_alias = "no-weight-decay-on-bn", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub no_weight_decay_on_bn: Option<bool>,
    /// TF1 RMSProp instead of Nesterov momentum (`--use_rmsprop`, `--use_rmsprop=false`).
    #[arg(long = "use_rmsprop", visible_alias = "use-rmsprop", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub use_rmsprop: Option<bool>,
    /// ASAM instead of SAM (`--adaptive_sam`, `--adaptive_sam=false`).
    #[arg(long = "adaptive_sam", visible_alias = "adaptive-sam", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub adaptive_sam: Option<bool>,
    /// Average the ascent gradient across replicas (`--sync_perturbations`, `--sync_perturbations=false`).
    #[arg(long = "sync_perturbations", visible_alias = "sync-perturbations", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub sync_perturbations: Option<bool>,
    /// Also evaluate on the training set (`--also_eval_on_training_set`, `--also_eval_on_training_set=false`).
    #[arg(long = "also_eval_on_training_set", visible_alias = "also-eval-on-training-set", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub also_eval_on_training_set: Option<bool>,
    /// Report top-5 error (`--compute_top_5_error_rate`, `--compute_top_5_error_rate=false`).
    #[arg(long = "compute_top_5_error_rate", visible_alias = "compute-top-5-error-rate", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub compute_top_5_error_rate: Option<bool>,
    /// Evaluate on the test split (false: a held-out slice of train) (`--use_test_set`, `--use_test_set=false`).
    #[arg(long = "use_test_set", visible_alias = "use-test-set", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub use_test_set: Option<bool>,
}

impl TrainFlags {
    /// Sets every flag that was given on `cfg`.
    pub fn apply(&self, cfg: &mut TrainConfig) {
        if let Some(v) = &self.dataset {
            cfg.dataset = v.clone();
        }
        if let Some(v) = &self.data_dir {
            cfg.data_dir = Some(v.clone());
        }
        if let Some(v) = &self.model_name {
            cfg.model_name = v.clone();
        }
        if let Some(v) = &self.num_epochs {
            cfg.num_epochs = *v;
        }
        if let Some(v) = &self.batch_size {
            cfg.batch_size = *v;
        }
        if let Some(v) = &self.output_dir {
            cfg.output_dir = v.clone();
        }
        if let Some(v) = &self.image_level_augmentations {
            cfg.image_level_augmentations = v.clone();
        }
        if let Some(v) = &self.batch_level_augmentations {
            cfg.batch_level_augmentations = v.clone();
        }
        if let Some(v) = &self.cutout_length {
            cfg.cutout_length = *v;
        }
        if let Some(v) = &self.gradient_clipping {
            cfg.gradient_clipping = *v;
        }
        if let Some(v) = &self.learning_rate {
            cfg.learning_rate = *v;
        }
        if let Some(v) = &self.learning_rate_batch_size {
            cfg.learning_rate_batch_size = Some(*v);
        }
        if let Some(v) = &self.lr_schedule {
            cfg.lr_schedule = v.clone();
        }
        if let Some(v) = &self.warmup_epochs {
            cfg.warmup_epochs = *v;
        }
        if let Some(v) = &self.weight_decay {
            cfg.weight_decay = *v;
        }
        if let Some(v) = &self.run_seed {
            cfg.run_seed = *v;
        }
        if let Some(v) = &self.momentum {
            cfg.momentum = *v;
        }
        if let Some(v) = &self.label_smoothing {
            cfg.label_smoothing = *v;
        }
        if let Some(v) = &self.ema_decay {
            cfg.ema_decay = *v;
        }
        if let Some(v) = &self.sam_rho {
            cfg.sam_rho = *v;
        }
        if let Some(v) = &self.asam_eta {
            cfg.asam_eta = *v;
        }
        if let Some(v) = &self.sam_m {
            cfg.sam_m = Some(*v);
        }
        if let Some(v) = &self.inner_group_size {
            cfg.inner_group_size = Some(*v);
        }
        if let Some(v) = &self.evaluate_every {
            cfg.evaluate_every = *v;
        }
        if let Some(v) = &self.save_progress_seconds {
            cfg.save_progress_seconds = *v;
        }
        if let Some(v) = &self.checkpoint_every_epochs {
            cfg.checkpoint_every_epochs = *v;
        }
        if let Some(v) = &self.keep_checkpoints {
            cfg.keep_checkpoints = *v;
        }
        if let Some(v) = &self.image_size {
            cfg.image_size = *v;
        }
        if let Some(v) = &self.max_steps {
            cfg.max_steps = Some(*v);
        }
        if let Some(v) = &self.prefetch {
            cfg.prefetch = *v;
        }
        if let Some(v) = &self.loader_workers {
            cfg.loader_workers = *v;
        }
        if let Some(v) = &self.imagenet_mixup_alpha {
            cfg.imagenet_mixup_alpha = *v;
        }
        if let Some(v) = &self.randaug_num_layers {
            cfg.randaug_num_layers = *v;
        }
        if let Some(v) = &self.randaug_magnitude {
            cfg.randaug_magnitude = *v;
        }
        if let Some(v) = &self.jpeg_decoder {
            cfg.jpeg_decoder.clone_from(v);
        }
        if let Some(v) = &self.check_replicas_every {
            cfg.check_replicas_every = *v;
        }
        if let Some(v) = &self.grad_accum_steps {
            cfg.grad_accum_steps = *v;
        }
        if let Some(v) = &self.bucket_mb {
            cfg.bucket_mb = *v;
        }
        if let Some(v) = &self.first_bucket_mb {
            cfg.first_bucket_mb = *v;
        }
        if let Some(v) = &self.ring_timeout_seconds {
            cfg.ring_timeout_seconds = *v;
        }
        if let Some(v) = self.overlap_comm {
            cfg.overlap_comm = v;
        }
        if let Some(v) = self.use_learning_rate_schedule {
            cfg.use_learning_rate_schedule = v;
        }
        if let Some(v) = self.decoupled_weight_decay {
            cfg.decoupled_weight_decay = v;
        }
        if let Some(v) = self.no_weight_decay_on_bn {
            cfg.no_weight_decay_on_bn = v;
        }
        if let Some(v) = self.use_rmsprop {
            cfg.use_rmsprop = v;
        }
        if let Some(v) = self.adaptive_sam {
            cfg.adaptive_sam = v;
        }
        if let Some(v) = self.sync_perturbations {
            cfg.sync_perturbations = v;
        }
        if let Some(v) = self.also_eval_on_training_set {
            cfg.also_eval_on_training_set = v;
        }
        if let Some(v) = self.compute_top_5_error_rate {
            cfg.compute_top_5_error_rate = v;
        }
        if let Some(v) = self.use_test_set {
            cfg.use_test_set = v;
        }
    }
}
