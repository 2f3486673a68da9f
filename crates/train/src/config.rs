//! The training configuration: every flag of `ringsam train`, declared once.
//!
//! Each field below is one flag: its doc comment is the `--help` text, its `#[arg]` the flag
//! (the reference's snake_case name; kebab-case is accepted because the binary normalises flag
//! names before parsing) and its default, and its serde name the key a TOML file in `configs/`
//! uses. Values come from three layers, later ones winning: the defaults (the reference's,
//! except `sync_perturbations = true`; see docs/SAM.md), a TOML file (`--config`, or the
//! quickstart when neither `--config` nor `--dataset` is given), then the command line (or the
//! environment, for the few flags that read one). [`TrainConfig::resolve`] merges the layers,
//! deciding precedence with clap's `value_source`, and [`TrainConfig::validate`] checks every
//! value, alone and against the others, before anything starts; its messages name the flag.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches, ValueEnum};
use serde::{Deserialize, Serialize};

/// A dataset ringsam reads (see the README's dataset table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum DatasetName {
    /// scikit-learn's 8×8 handwritten digits, bundled in the binary.
    Digits,
    /// CIFAR-10 binary batches.
    Cifar10,
    /// CIFAR-100 binary files.
    Cifar100,
    /// Fashion-MNIST IDX files.
    FashionMnist,
    /// SVHN `.mat` files.
    Svhn,
    /// Random images with learnable labels (`--image_size`).
    Synthetic,
    /// ImageNet shards (TFDS TFRecord or WebDataset tar).
    Imagenet,
    /// The user's JPEGs: `--data_dir` holds `train/` and `val/` (or `test/`), one folder per
    /// class; read as ImageNet is (packed once into shards beside them).
    Imagefolder,
    /// The user's arrays: `--data_dir` is a safetensors file with `train_images` (N, H, W, C),
    /// `train_labels`, `test_images`, `test_labels`.
    Arrays,
}

impl DatasetName {
    /// The name as flags, TOML files and the data crate spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Digits => "digits",
            DatasetName::Cifar10 => "cifar10",
            DatasetName::Cifar100 => "cifar100",
            DatasetName::FashionMnist => "fashion_mnist",
            DatasetName::Svhn => "svhn",
            DatasetName::Synthetic => "synthetic",
            DatasetName::Imagenet => "imagenet",
            DatasetName::Imagefolder => "imagefolder",
            DatasetName::Arrays => "arrays",
        }
    }

    /// Read from shards by the ImageNet pipeline (not held in memory).
    pub fn is_sharded(self) -> bool {
        matches!(self, DatasetName::Imagenet | DatasetName::Imagefolder)
    }

    /// Image-level augmentations the reference's dataset class for this dataset accepts.
    pub fn image_augmentations(self) -> &'static [ImageAugmentation] {
        use ImageAugmentation::*;
        match self {
            DatasetName::Cifar10 | DatasetName::Cifar100 => &[None, Basic, Autoaugment],
            DatasetName::Svhn => &[None, Basic, Autoaugment, AaOnly],
            DatasetName::Imagenet | DatasetName::Imagefolder => &[Basic, Autoaugment],
            _ => &[None, Basic],
        }
    }

    /// The image-level augmentation a run gets when neither a flag nor a TOML file sets one: the
    /// reference's `basic` (flip, pad, crop), except on the 8×8 digits, which a 4-pixel pad and
    /// crop ruin and a mirror turns into other digits.
    pub fn default_image_augmentation(self) -> ImageAugmentation {
        match self {
            DatasetName::Digits => ImageAugmentation::None,
            _ => ImageAugmentation::Basic,
        }
    }
}

impl std::fmt::Display for DatasetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `--image_level_augmentations`: what each training image gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum ImageAugmentation {
    /// Nothing.
    None,
    /// Flip, 4-pixel reflect pad and crop (ImageNet: the Inception crop and flip).
    Basic,
    /// `basic`, then the dataset's AutoAugment policy (RandAugment on ImageNet).
    Autoaugment,
    /// The AutoAugment policy alone (SVHN).
    #[serde(rename = "aa-only")]
    #[value(name = "aa-only")]
    AaOnly,
}

impl ImageAugmentation {
    /// The name as flags spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageAugmentation::None => "none",
            ImageAugmentation::Basic => "basic",
            ImageAugmentation::Autoaugment => "autoaugment",
            ImageAugmentation::AaOnly => "aa-only",
        }
    }
}

/// `--batch_level_augmentations`: what each training batch gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum BatchAugmentation {
    /// Nothing.
    None,
    /// A `--cutout_length` square zeroed, one centre per batch, as the reference (not on ImageNet).
    Cutout,
}

/// `--lr_schedule`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum LrScheduleName {
    /// Cosine decay to zero over the run.
    Cosine,
    /// The reference's exponential decay (ImageNet).
    Exponential,
    /// The peak rate throughout.
    Constant,
}

/// `--preprocessing`: how pixels are scaled before the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Preprocessing {
    /// `advprop` when the initial checkpoint's path contains "advprop", else `standard`.
    Auto,
    /// `(x/255 − mean)/std` with the dataset's constants.
    Standard,
    /// `x/127.5 − 1` (AdvProp EfficientNets).
    Advprop,
}

/// `--jpeg_decoder`: the shard loader's JPEG decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum JpegDecoderName {
    /// zune-jpeg, full size (always built).
    Zune,
    /// libjpeg-turbo, only the crop decoded (needs `--features turbojpeg`).
    Turbo,
    /// libjpeg-turbo at a reduced DCT scale too (not the reference's pixels).
    #[serde(rename = "turbo-reduced")]
    #[value(name = "turbo-reduced")]
    TurboReduced,
}

impl JpegDecoderName {
    /// The name as flags spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            JpegDecoderName::Zune => "zune",
            JpegDecoderName::Turbo => "turbo",
            JpegDecoderName::TurboReduced => "turbo-reduced",
        }
    }
}

/// Every knob of a training run (see the module docs: one field, one flag, one TOML key).
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
#[command(rename_all = "snake_case", next_help_heading = "Training")]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Dataset (with neither --dataset nor --config: the quickstart on the bundled digits).
    #[arg(long, value_enum, default_value_t = DatasetName::Cifar10)]
    pub dataset: DatasetName,
    /// Directory holding the dataset's files (not needed for digits and synthetic).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Model (`ringsam models` lists them).
    #[arg(long, visible_alias = "model", default_value = "WideResnet28x10")]
    pub model_name: String,
    /// Finetune the published checkpoint at --efficientnet_checkpoint_path (the reference's flag):
    /// every tensor is loaded but a classifier of another number of classes, and batch norm
    /// keeps the checkpoint's running statistics while training (--freeze_batch_norm).
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub from_pretrained_checkpoint: bool,
    /// The Flax checkpoint to finetune: the `checkpoint.tar.gz` as downloaded, the
    /// `checkpoint_<step>` file in it, or its directory (or anything --init_from reads).
    #[arg(long)]
    pub efficientnet_checkpoint_path: Option<PathBuf>,
    /// Initial weights for any model, loaded by name: a ringsam checkpoint or run directory, a
    /// `.safetensors` (`ringsam convert` writes one), or a Flax checkpoint. The optimizer starts
    /// fresh; a classifier of another number of classes keeps its initialisation.
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Batch norm normalises with its running statistics while training and leaves them as they
    /// are (default: on with --from_pretrained_checkpoint, as the reference; off otherwise).
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub freeze_batch_norm: Option<bool>,
    /// Input scaling: `standard` (the dataset's mean and standard deviation), `advprop` (to
    /// [-1, 1], what AdvProp checkpoints were trained on); `auto`: advprop when the initial
    /// checkpoint's path says "advprop".
    #[arg(long, value_enum, default_value_t = Preprocessing::Auto)]
    pub preprocessing: Preprocessing,
    /// Epochs.
    #[arg(long, default_value_t = 200)]
    pub num_epochs: u64,
    /// Global batch size (all replicas together).
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Where run directories go (`output_dir/lr_…/wd_…/rho_…/seed_…`).
    #[arg(long, default_value = "runs")]
    pub output_dir: PathBuf,
    /// Per-image augmentation (default: basic; none on digits).
    #[arg(long, value_enum, default_value_t = ImageAugmentation::Basic)]
    pub image_level_augmentations: ImageAugmentation,
    /// Per-batch augmentation.
    #[arg(long, value_enum, default_value_t = BatchAugmentation::None)]
    pub batch_level_augmentations: BatchAugmentation,
    /// Cutout square side in pixels.
    #[arg(long, default_value_t = 16)]
    pub cutout_length: usize,
    /// Clip the applied gradient to this global norm (0: off).
    #[arg(long, allow_negative_numbers = true, default_value_t = 5.0)]
    pub gradient_clipping: f32,
    /// Peak learning rate.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.1)]
    pub learning_rate: f64,
    /// The global batch --learning_rate is stated for: the run uses learning_rate × batch_size /
    /// this (linear scaling), so a recipe keeps its rate when --batch_size changes.
    #[arg(long)]
    pub learning_rate_batch_size: Option<usize>,
    /// Follow --lr_schedule (false: a constant learning rate).
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = true)]
    pub use_learning_rate_schedule: bool,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value_t = LrScheduleName::Cosine)]
    pub lr_schedule: LrScheduleName,
    /// Linear warm-up epochs (ours; the reference has none).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub warmup_epochs: f64,
    /// Weight decay (L2 in the loss unless --decoupled_weight_decay).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.001)]
    pub weight_decay: f32,
    /// Decoupled weight decay (w ← w − lr·wd·w after the update) instead of L2 in the loss.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub decoupled_weight_decay: bool,
    /// Only tensors with more than one dimension decay.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub no_weight_decay_on_bn: bool,
    /// Seed of the random draws and the data order.
    #[arg(long, default_value_t = 0)]
    pub run_seed: u64,
    /// TF1 RMSProp instead of Nesterov momentum.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub use_rmsprop: bool,
    /// Momentum coefficient (the reference hard-codes 0.9), in [0, 1).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.9)]
    pub momentum: f32,
    /// Label smoothing, in [0, 1).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub label_smoothing: f32,
    /// EMA decay of weights and batch-norm state, in [0, 1) (0: off).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub ema_decay: f32,
    /// SAM radius ρ (0: plain SGD, one pass per step).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub sam_rho: f32,
    /// ASAM (adaptive SAM) instead of SAM.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub adaptive_sam: bool,
    /// ASAM's η in T = |w| + η.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.01)]
    pub asam_eta: f32,
    /// m-sharpness on one replica: examples per ascent (default: the whole batch).
    #[arg(long)]
    pub sam_m: Option<usize>,
    /// Average the ascent gradient over the replicas (false: each replica ascends on its own
    /// batch, the reference's default).
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = true)]
    pub sync_perturbations: bool,
    /// Average the ascent gradient within groups of this many consecutive replicas.
    #[arg(long)]
    pub inner_group_size: Option<usize>,
    /// Cheaper SAM: the SAM step on every K-th step (the global step a multiple of K), plain SGD
    /// (one pass) on the others.
    #[arg(long, default_value_t = 1)]
    pub sam_every: u64,
    /// LookSAM (Liu et al. 2022): the SAM step on every K-th step; the steps between take one pass
    /// and add the last SAM step's gradient component orthogonal to its SGD gradient.
    #[arg(long)]
    pub looksam_k: Option<u64>,
    /// LookSAM's α: the reused component's norm relative to the step's gradient norm.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.7)]
    pub looksam_alpha: f32,
    /// Symmetric label noise: each training label is replaced, with this probability, by a class
    /// drawn uniformly (a fixed draw from --run_seed and the example's index; test labels stay
    /// clean). In-memory datasets only.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub label_noise: f64,
    /// Every this many steps, log the loss Hessian's top eigenvalues and the m-sharpness on a
    /// fixed training batch to TensorBoard (`sharpness/…`; 0: off). Costs up to
    /// 2 × (--sharpness_eigs + 2) × --sharpness_iters gradient evaluations each time.
    #[arg(long, default_value_t = 0)]
    pub log_sharpness_every: u64,
    /// Sharpness diagnostics: examples of the fixed batch (the training split's first, not
    /// augmented; batch norm in training mode, its statistics left alone).
    #[arg(long, default_value_t = 256)]
    pub sharpness_batch: usize,
    /// Sharpness diagnostics: Hessian eigenvalues estimated (subspace iteration; λ1/λ5 needs 5).
    #[arg(long, default_value_t = 5)]
    pub sharpness_eigs: usize,
    /// Sharpness diagnostics: most iterations of the subspace (power) iteration.
    #[arg(long, default_value_t = 20)]
    pub sharpness_iters: usize,
    /// Sharpness diagnostics: the iteration stops when no eigenvalue estimate moves by more than
    /// this fraction of λ1.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1e-3)]
    pub sharpness_tol: f64,
    /// Sharpness diagnostics: m of the m-sharpness (examples per ascent).
    #[arg(long, default_value_t = 32)]
    pub sharpness_m: usize,
    /// Sharpness diagnostics: ρ of the m-sharpness.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.05)]
    pub sharpness_rho: f32,
    /// Evaluate every this many epochs (and after the last).
    #[arg(long, default_value_t = 1)]
    pub evaluate_every: u64,
    /// Record which examples every step takes, in `{run dir}/samples/` (one line per step and
    /// replica): how a run that lost workers shows it repeated and skipped none.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub log_sample_ids: bool,
    /// Also evaluate on the training set.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub also_eval_on_training_set: bool,
    /// Report the top-5 error rate.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub compute_top_5_error_rate: bool,
    /// Evaluate on the test split (false: on a held-out slice of the training split).
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = true)]
    pub use_test_set: bool,
    /// Write a checkpoint when this many seconds have passed since the last one.
    #[arg(long, default_value_t = 3600)]
    pub save_progress_seconds: u64,
    /// Write a checkpoint at the end of every this many epochs (0: off).
    #[arg(long, default_value_t = 1)]
    pub checkpoint_every_epochs: u64,
    /// Newest checkpoints kept.
    #[arg(long, default_value_t = 2)]
    pub keep_checkpoints: usize,
    /// Mixup on ImageNet training batches: λ ~ Beta(α, α), kept ≥ ½, one per batch (0: off).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub imagenet_mixup_alpha: f64,
    /// RandAugment's ops per image (ImageNet with --image_level_augmentations autoaugment).
    #[arg(long, default_value_t = 2)]
    pub randaug_num_layers: usize,
    /// RandAugment's magnitude (0–10 is the reference's scale; up to 30 accepted).
    #[arg(long, allow_negative_numbers = true, default_value_t = 9.0)]
    pub randaug_magnitude: f64,
    /// Image side: synthetic data is made at it, shards are cropped and resized to it, and
    /// in-memory datasets (CIFAR, …) are resized bicubically to it (0: the model's input size for
    /// synthetic and sharded data and for EfficientNets, the dataset's own size otherwise).
    #[arg(long, default_value_t = 0)]
    pub image_size: usize,
    /// Stop after this many global steps (smoke tests, benchmarks).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Batches the loader prepares ahead (1 to 64).
    #[arg(long, default_value_t = 4)]
    pub prefetch: usize,
    /// Decoder threads of the shard loader (0: one per four logical cores, at least one).
    #[arg(long, default_value_t = 0)]
    pub loader_workers: usize,
    /// JPEG decoder of the ImageNet shard loader.
    #[arg(long, value_enum, default_value_t = JpegDecoderName::Zune)]
    pub jpeg_decoder: JpegDecoderName,
    /// Data-parallel: compare the replicas' parameter fingerprints every this many steps (0: only
    /// before checkpoints).
    #[arg(long, default_value_t = 100)]
    pub check_replicas_every: u64,
    /// Data-parallel: gradient bucket size in MiB (DDP's bucket_cap_mb).
    #[arg(long, allow_negative_numbers = true, default_value_t = 25.0)]
    pub bucket_mb: f64,
    /// Data-parallel: size of the first bucket (the last layers) in MiB.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    pub first_bucket_mb: f64,
    /// Data-parallel: send gradient buckets while backward runs (false: after it).
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = true)]
    pub overlap_comm: bool,
    /// Data-parallel: seconds of silence from a peer that owes data before the run fails.
    #[arg(long, default_value_t = 30)]
    pub ring_timeout_seconds: u64,
    /// Micro-batches per replica batch, their gradients summed; the global batch stays
    /// --batch_size and only the summed gradient crosses the ring.
    #[arg(long, default_value_t = 1)]
    pub grad_accum_steps: usize,
    /// Data-parallel: the most replicas this run will have. The global batch is always --max_replicas
    /// × --grad_accum_steps micro-batches (each a batch-norm batch), spread over the replicas
    /// alive, so the math does not depend on how many there are. Default: the world at start.
    #[arg(long)]
    pub max_replicas: Option<usize>,
    /// Print a progress line every this many steps when stderr is not a terminal (0: every ~30 s).
    #[arg(long, default_value_t = 0)]
    pub log_every_steps: u64,
    /// Resume a checkpoint even when this run changes a setting that alters the math.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub allow_config_change: bool,
}

/// The quickstart, used when neither `--config` nor `--dataset` is given.
pub const QUICKSTART_TOML: &str = include_str!("../../../configs/quickstart.toml");

/// The largest TOML file a run reads (configs are a few hundred bytes).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Bounds on values that size allocations or timers (issue-tracked probes found each overflowing).
const MAX_IMAGE_SIZE: usize = 4096;
const MAX_PREFETCH: usize = 64;
const MAX_LOADER_WORKERS: usize = 256;
/// Bound on `--grad_accum_steps` and `--max_replicas` (their product cuts a batch).
pub const MAX_MICRO_BATCHES: u64 = 1 << 16;

/// Bound on `--sam_every` and `--looksam_k`.
const MAX_SAM_PERIOD: u64 = 1 << 20;
/// Bound on `--sharpness_batch` (its activations are held at once).
const MAX_SHARPNESS_BATCH: u64 = 1 << 16;

/// The longest timeout any flag accepts: a week (an `Instant` plus much more overflows).
pub const MAX_TIMEOUT_SECONDS: u64 = 7 * 24 * 3600;

impl Default for TrainConfig {
    /// The defaults the flags declare (there is no second list of them).
    fn default() -> Self {
        let cmd = TrainConfig::augment_args(clap::Command::new("train"));
        let matches = cmd.try_get_matches_from(["train"]).expect("the declared defaults parse");
        TrainConfig::from_arg_matches(&matches).expect("the declared defaults form a config")
    }
}

impl TrainConfig {
    /// Merges the layers (see the module docs): `matches` holds the defaults and the command line
    /// (from a command `TrainConfig::augment_args` built), `toml` the file's text. Validates the
    /// result.
    pub fn resolve(matches: &ArgMatches, toml: Option<&str>) -> Result<TrainConfig, String> {
        let mut cfg = TrainConfig::from_arg_matches(matches).map_err(|e| e.to_string())?;
        let from_user = |id: &str| TrainConfig::given(matches, id);
        let mut toml_keys = Vec::new();
        if let Some(text) = toml {
            let over: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
            let known = TrainConfig::flag_names();
            let mut base = match toml::Value::try_from(&cfg).map_err(|e| e.to_string())? {
                toml::Value::Table(t) => t,
                _ => unreachable!("a struct serializes to a table"),
            };
            for (k, v) in over {
                if !known.contains(&k) {
                    return Err(format!("unknown key `{k}` (keys are `ringsam train` flag names, e.g. sam_rho)"));
                }
                if !from_user(&k) {
                    base.insert(k.clone(), v);
                }
                toml_keys.push(k);
            }
            cfg = toml::Value::Table(base).try_into().map_err(|e: toml::de::Error| e.to_string())?;
        }
        let key = "image_level_augmentations";
        if !from_user(key) && !toml_keys.iter().any(|k| k == key) {
            cfg.image_level_augmentations = cfg.dataset.default_image_augmentation();
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every flag's name (the TOML keys).
    pub fn flag_names() -> Vec<String> {
        let cmd = TrainConfig::augment_args(clap::Command::new("train"));
        cmd.get_arguments().map(|a| a.get_id().to_string()).collect()
    }

    /// Whether the user set `id` on the command line or through the environment (not a default).
    pub fn given(matches: &ArgMatches, id: &str) -> bool {
        matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable))
    }

    /// Parses `args` (flags only, as after `ringsam train`) over `toml`, as a run would: for
    /// tests, and for launchers that check workers' flags before starting any.
    pub fn from_args<I, S>(args: I, toml: Option<&str>) -> Result<TrainConfig, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        let cmd = TrainConfig::augment_args(clap::Command::new("train").no_binary_name(true));
        let matches = cmd.try_get_matches_from(normalize_flag_names(args)).map_err(|e| e.to_string())?;
        TrainConfig::resolve(&matches, toml)
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

    /// Where the initial weights come from, if anywhere (`--init_from`, or the checkpoint of
    /// `--from_pretrained_checkpoint`).
    pub fn initial_weights(&self) -> Option<&std::path::Path> {
        if self.from_pretrained_checkpoint { self.efficientnet_checkpoint_path.as_deref() } else { self.init_from.as_deref() }
    }

    /// Whether batch norm is frozen to its running statistics while training.
    pub fn bn_frozen(&self) -> bool {
        self.freeze_batch_norm.unwrap_or(self.from_pretrained_checkpoint)
    }

    /// The preprocessing `auto` resolves to.
    pub fn preprocessing(&self) -> Preprocessing {
        match self.preprocessing {
            Preprocessing::Auto => {
                let advprop = self.initial_weights().is_some_and(|p| p.to_string_lossy().to_lowercase().contains("advprop"));
                if advprop { Preprocessing::Advprop } else { Preprocessing::Standard }
            }
            p => p,
        }
    }

    /// Checks every value, alone and against the others; the message names the flag to change.
    /// NaN fails every range check (each is written so that it must hold, not so that its
    /// opposite must fail).
    pub fn validate(&self) -> Result<(), String> {
        let at_least_one = [
            ("batch_size", self.batch_size as u64),
            ("keep_checkpoints", self.keep_checkpoints as u64),
            ("evaluate_every", self.evaluate_every),
            ("grad_accum_steps", self.grad_accum_steps as u64),
            ("ring_timeout_seconds", self.ring_timeout_seconds),
            ("prefetch", self.prefetch as u64),
            ("sam_every", self.sam_every),
            ("sharpness_batch", self.sharpness_batch as u64),
            ("sharpness_eigs", self.sharpness_eigs as u64),
            ("sharpness_iters", self.sharpness_iters as u64),
            ("sharpness_m", self.sharpness_m as u64),
        ];
        for (flag, v) in at_least_one {
            if v == 0 {
                return Err(format!("--{flag} must be at least 1"));
            }
        }
        let optional_at_least_one = [
            ("learning_rate_batch_size", self.learning_rate_batch_size),
            ("sam_m", self.sam_m),
            ("inner_group_size", self.inner_group_size),
            ("max_replicas", self.max_replicas),
        ];
        for (flag, v) in optional_at_least_one {
            if v == Some(0) {
                return Err(format!("--{flag} must be at least 1"));
            }
        }
        if self.num_epochs == 0 && self.max_steps.is_none() {
            return Err("--num_epochs must be at least 1".into());
        }
        let at_most = [
            ("image_size", self.image_size as u64, MAX_IMAGE_SIZE as u64),
            ("cutout_length", self.cutout_length as u64, MAX_IMAGE_SIZE as u64),
            ("prefetch", self.prefetch as u64, MAX_PREFETCH as u64),
            ("loader_workers", self.loader_workers as u64, MAX_LOADER_WORKERS as u64),
            ("ring_timeout_seconds", self.ring_timeout_seconds, MAX_TIMEOUT_SECONDS),
            ("randaug_num_layers", self.randaug_num_layers as u64, 16),
            ("grad_accum_steps", self.grad_accum_steps as u64, MAX_MICRO_BATCHES),
            ("max_replicas", self.max_replicas.unwrap_or(1) as u64, MAX_MICRO_BATCHES),
            ("sam_every", self.sam_every, MAX_SAM_PERIOD),
            ("looksam_k", self.looksam_k.unwrap_or(2), MAX_SAM_PERIOD),
            ("sharpness_batch", self.sharpness_batch as u64, MAX_SHARPNESS_BATCH),
            ("sharpness_eigs", self.sharpness_eigs as u64, 64),
            ("sharpness_iters", self.sharpness_iters as u64, 10_000),
        ];
        for (flag, v, max) in at_most {
            if v > max {
                return Err(format!("--{flag} {v} is larger than {max}"));
            }
        }
        let in_range = [
            ("learning_rate", self.learning_rate, f64::MIN_POSITIVE, f64::MAX),
            ("warmup_epochs", self.warmup_epochs, 0.0, f64::MAX),
            ("sam_rho", self.sam_rho as f64, 0.0, f64::MAX),
            ("weight_decay", self.weight_decay as f64, 0.0, f64::MAX),
            ("gradient_clipping", self.gradient_clipping as f64, 0.0, f64::MAX),
            ("asam_eta", self.asam_eta as f64, 0.0, f64::MAX),
            ("imagenet_mixup_alpha", self.imagenet_mixup_alpha, 0.0, 100.0),
            ("randaug_magnitude", self.randaug_magnitude, 0.0, 30.0),
            ("bucket_mb", self.bucket_mb, f64::MIN_POSITIVE, 4096.0),
            ("first_bucket_mb", self.first_bucket_mb, f64::MIN_POSITIVE, 4096.0),
            ("looksam_alpha", self.looksam_alpha as f64, 0.0, f64::MAX),
            ("label_noise", self.label_noise, 0.0, 1.0),
            ("sharpness_tol", self.sharpness_tol, f64::MIN_POSITIVE, 1.0),
            ("sharpness_rho", self.sharpness_rho as f64, f64::MIN_POSITIVE, f64::MAX),
        ];
        for (flag, v, lo, hi) in in_range {
            if !(v >= lo && v <= hi) {
                let range = match (lo, hi) {
                    (f64::MIN_POSITIVE, f64::MAX) => "a finite number above 0".to_string(),
                    (lo, f64::MAX) => format!("a finite number of at least {lo}"),
                    (f64::MIN_POSITIVE, hi) => format!("a number above 0 and at most {hi}"),
                    (lo, hi) => format!("a number in [{lo}, {hi}]"),
                };
                return Err(format!("--{flag} {v} must be {range}"));
            }
        }
        let below_one = [("momentum", self.momentum), ("label_smoothing", self.label_smoothing), ("ema_decay", self.ema_decay)];
        for (flag, v) in below_one {
            if !(0.0..1.0).contains(&v) {
                return Err(format!("--{flag} {v} must be in [0, 1)"));
            }
        }
        self.validate_data()?;
        if self.grad_accum_steps > 1 && self.sam_m.is_some() {
            return Err("--grad_accum_steps cannot be combined with --sam_m (each m-sharpness chunk is one pass)".into());
        }
        self.validate_cheaper_sam()?;
        if self.sharpness_m > self.sharpness_batch {
            return Err(format!("--sharpness_m {} is larger than --sharpness_batch {}", self.sharpness_m, self.sharpness_batch));
        }
        self.validate_initial_weights()
    }

    /// `--sam_every` and LookSAM pick which steps take SAM's two passes: they need SAM, and one of
    /// them at a time; LookSAM's one reused direction needs one ascent over the whole batch.
    fn validate_cheaper_sam(&self) -> Result<(), String> {
        let flag = match (self.sam_every > 1, self.looksam_k) {
            (true, Some(_)) => return Err("--sam_every and --looksam_k each choose the SAM steps: give one".into()),
            (_, Some(k)) if k < 2 => return Err(format!("--looksam_k {k} is SAM on every step: omit --looksam_k, or give 2 or more")),
            (_, Some(_)) => "--looksam_k",
            (_, None) if self.looksam_alpha != TrainConfig::default().looksam_alpha => {
                return Err("--looksam_alpha is LookSAM's: give --looksam_k too".into());
            }
            (true, None) => "--sam_every",
            (false, None) => return Ok(()),
        };
        if self.sam_rho == 0.0 {
            return Err(format!("{flag} chooses which steps take SAM, and --sam_rho is 0 (every step is SGD): give --sam_rho"));
        }
        if flag == "--looksam_k" {
            if self.sam_m.is_some() {
                return Err("--looksam_k reuses one direction for the whole batch: omit --sam_m".into());
            }
            if !self.sync_perturbations || self.inner_group_size.is_some() {
                return Err("--looksam_k reuses one direction for the whole global batch: it needs --sync_perturbations true \
                            and no --inner_group_size"
                    .into());
            }
        }
        Ok(())
    }

    /// The reference's pair of finetuning flags, and `--init_from`, make sense only together
    /// as the reference defines them.
    fn validate_initial_weights(&self) -> Result<(), String> {
        match (self.from_pretrained_checkpoint, &self.efficientnet_checkpoint_path, &self.init_from) {
            (true, None, _) => {
                Err("--from_pretrained_checkpoint needs --efficientnet_checkpoint_path (the checkpoint.tar.gz to finetune)".into())
            }
            (false, Some(_), _) => {
                Err("--efficientnet_checkpoint_path is read only with --from_pretrained_checkpoint true (or give it as --init_from)".into())
            }
            (true, Some(_), Some(_)) => Err("--init_from and --from_pretrained_checkpoint both name initial weights: give one".into()),
            _ if self.freeze_batch_norm == Some(true) && self.initial_weights().is_none() => Err(
                "--freeze_batch_norm would freeze batch norm at its initialisation (mean 0, variance 1): give --init_from or --from_pretrained_checkpoint too".into(),
            ),
            _ => Ok(()),
        }
    }

    /// The data settings against the dataset: which augmentations the reference's dataset class
    /// for it accepts, and which settings only the ImageNet loader reads.
    fn validate_data(&self) -> Result<(), String> {
        let allowed = self.dataset.image_augmentations();
        if !allowed.contains(&self.image_level_augmentations) {
            let names: Vec<_> = allowed.iter().map(|a| a.as_str()).collect();
            return Err(format!(
                "--image_level_augmentations {}: dataset {} takes {} (as the reference's dataset class asserts; \
                 `autoaugment` is the dataset's AutoAugment policy, RandAugment on ImageNet)",
                self.image_level_augmentations.as_str(),
                self.dataset,
                names.join(", ")
            ));
        }
        let imagenet = self.dataset.is_sharded();
        if imagenet && self.batch_level_augmentations == BatchAugmentation::Cutout {
            return Err("--batch_level_augmentations cutout: the reference applies no batch-level cutout on ImageNet".into());
        }
        if !imagenet && self.imagenet_mixup_alpha > 0.0 {
            return Err(format!("--imagenet_mixup_alpha: mixup is the reference's ImageNet option; dataset {} takes none", self.dataset));
        }
        if imagenet && self.label_noise > 0.0 {
            return Err(format!("--label_noise: dataset {} is read from shards; label noise is for the in-memory datasets", self.dataset));
        }
        if !imagenet && self.jpeg_decoder != JpegDecoderName::Zune {
            return Err(format!(
                "--jpeg_decoder {}: only the ImageNet shard loader decodes JPEGs; dataset {} has none",
                self.jpeg_decoder.as_str(),
                self.dataset
            ));
        }
        ringsam_data::imagenet::JpegDecoder::parse(self.jpeg_decoder.as_str()).map_err(|e| format!("--jpeg_decoder: {e}"))?;
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

/// Flag names in snake_case: `--weight-decay=0.1` becomes `--weight_decay=0.1`. Every subcommand
/// declares its flags once, in the reference's snake_case; this is how kebab-case is accepted
/// too. Only the name of a `--name` or `--name=value` word changes; values and a bare `--` do not.
pub fn normalize_flag_names<I, S>(args: I) -> Vec<std::ffi::OsString>
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString>,
{
    args.into_iter()
        .map(|a| {
            let a: std::ffi::OsString = a.into();
            match a.to_str() {
                Some(s) if s.starts_with("--") && s.len() > 2 => {
                    let (name, value) = s.split_at(s.find('=').unwrap_or(s.len()));
                    format!("{}{value}", name.replace('-', "_").replacen("__", "--", 1)).into()
                }
                _ => a,
            }
        })
        .collect()
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
    fn advprop_checkpoints_choose_their_preprocessing_and_the_flag_overrides() {
        let cfg = |args: &[&str]| TrainConfig::from_args(["--dataset", "imagenet"].iter().chain(args), None).unwrap();
        let advprop = ["--from_pretrained_checkpoint", "--efficientnet_checkpoint_path", "ckpts/advprop/efficientnet-b3/checkpoint.tar.gz"];
        assert_eq!(cfg(&advprop).preprocessing(), Preprocessing::Advprop);
        assert!(cfg(&advprop).bn_frozen());
        assert_eq!(cfg(&[&advprop[..], &["--preprocessing", "standard"]].concat()).preprocessing(), Preprocessing::Standard);
        assert_eq!(cfg(&["--init_from", "noisystudent/b0.safetensors"]).preprocessing(), Preprocessing::Standard);
        assert!(!cfg(&["--init_from", "b0.safetensors"]).bn_frozen());
        assert!(cfg(&["--init_from", "b0.safetensors", "--freeze_batch_norm"]).bn_frozen());
        let both = TrainConfig::from_args(["--dataset", "digits", "--init_from", "a"].iter().chain(&advprop), None);
        assert!(both.unwrap_err().contains("give one"));
        let frozen_alone = TrainConfig::from_args(["--dataset", "digits", "--freeze_batch_norm"], None);
        assert!(frozen_alone.unwrap_err().contains("--freeze_batch_norm would freeze batch norm at its initialisation"));
    }

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
    fn flag_names_become_snake_case_and_nothing_else_changes() {
        let got = normalize_flag_names(["--weight-decay=1e-5", "--a-b", "x-y", "-h", "--", "--sam_rho", "--x=a-b"]);
        let want = ["--weight_decay=1e-5", "--a_b", "x-y", "-h", "--", "--sam_rho", "--x=a-b"];
        assert_eq!(got, want.map(std::ffi::OsString::from));
    }

    #[test]
    fn defaults_are_the_references() {
        let c = TrainConfig::default();
        assert_eq!((c.dataset, c.model_name.as_str(), c.num_epochs, c.batch_size), (DatasetName::Cifar10, "WideResnet28x10", 200, 128));
        assert_eq!((c.sam_rho, c.weight_decay, c.gradient_clipping, c.momentum), (0.0, 0.001, 5.0, 0.9));
        assert!(c.sync_perturbations && c.use_test_set && c.use_learning_rate_schedule);
        c.validate().unwrap();
    }

    #[test]
    fn command_line_beats_toml_beats_defaults() {
        let toml = "sam_rho = 0.05\nnum_epochs = 3\nbatch_size = 64";
        let c = TrainConfig::from_args(["--num_epochs", "7", "--weight-decay", "0.0005"], Some(toml)).unwrap();
        assert_eq!((c.sam_rho, c.num_epochs, c.batch_size, c.weight_decay), (0.05, 7, 64, 0.0005));
        // A flag given with its default value still wins over the file.
        let c = TrainConfig::from_args(["--num_epochs", "200"], Some(toml)).unwrap();
        assert_eq!(c.num_epochs, 200);
    }

    #[test]
    fn toml_rejects_unknown_keys_and_wrong_types() {
        let err = TrainConfig::from_args(Vec::<String>::new(), Some("sam_rhoo = 0.05")).unwrap_err();
        assert!(err.contains("sam_rhoo"), "{err}");
        let err = TrainConfig::from_args(Vec::<String>::new(), Some("dataset = \"cifar11\"")).unwrap_err();
        assert!(err.contains("cifar11"), "{err}");
        TrainConfig::from_args(Vec::<String>::new(), Some(QUICKSTART_TOML)).unwrap();
    }

    #[test]
    fn digits_default_to_no_image_augmentation_unless_asked() {
        let c = TrainConfig::from_args(["--dataset", "digits"], None).unwrap();
        assert_eq!(c.image_level_augmentations, ImageAugmentation::None);
        let c = TrainConfig::from_args(["--dataset", "digits", "--image_level_augmentations", "basic"], None).unwrap();
        assert_eq!(c.image_level_augmentations, ImageAugmentation::Basic);
        let c = TrainConfig::from_args(["--dataset", "cifar10"], None).unwrap();
        assert_eq!(c.image_level_augmentations, ImageAugmentation::Basic);
    }

    #[test]
    fn every_value_is_checked_with_its_flag_named() {
        for (args, flag) in [
            (&["--momentum", "1.5"][..], "--momentum"),
            (&["--ema_decay", "2"], "--ema_decay"),
            (&["--asam_eta", "-1"], "--asam_eta"),
            (&["--warmup_epochs", "NaN"], "--warmup_epochs"),
            (&["--learning_rate", "inf"], "--learning_rate"),
            (&["--sam_rho", "NaN"], "--sam_rho"),
            (&["--label_smoothing", "1"], "--label_smoothing"),
            (&["--prefetch", "1000000000"], "--prefetch"),
            (&["--cutout_length", "18446744073709551615"], "--cutout_length"),
            (&["--image_size", "100000"], "--image_size"),
            (&["--ring_timeout_seconds", "18446744073709551615"], "--ring_timeout_seconds"),
            (&["--sam_m", "0"], "--sam_m"),
            (&["--sam_every", "0"], "--sam_every"),
            (&["--sam_every", "2"], "--sam_rho"),
            (&["--looksam_k", "5"], "--sam_rho"),
            (&["--looksam_k", "1", "--sam_rho", "0.05"], "--looksam_k"),
            (&["--looksam_k", "5", "--sam_every", "2", "--sam_rho", "0.05"], "give one"),
            (&["--looksam_k", "5", "--sam_rho", "0.05", "--sam_m", "8"], "--sam_m"),
            (&["--looksam_k", "5", "--sam_rho", "0.05", "--sync_perturbations", "false"], "--sync_perturbations"),
            (&["--looksam_alpha", "-1"], "--looksam_alpha"),
            (&["--label_noise", "1.5"], "--label_noise"),
            (&["--label_noise", "0.2", "--dataset", "imagenet"], "--label_noise"),
            (&["--sharpness_eigs", "0"], "--sharpness_eigs"),
            (&["--sharpness_batch", "100000000"], "--sharpness_batch"),
            (&["--sharpness_tol", "0"], "--sharpness_tol"),
            (&["--sharpness_m", "64", "--sharpness_batch", "32"], "--sharpness_m"),
            (&["--looksam_alpha", "0.5", "--sam_rho", "0.05"], "--looksam_k"),
            (&["--jpeg_decoder", "turbo", "--dataset", "cifar10"], "--jpeg_decoder"),
            (&["--batch_level_augmentations", "mixup"], "batch_level_augmentations"),
            (&["--dataset", "imagenet", "--image_level_augmentations", "none"], "--image_level_augmentations"),
        ] {
            let err = TrainConfig::from_args(args.iter().copied(), None).unwrap_err();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
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
            // Finetuning configs leave the checkpoint to the command line, as their comments say.
            let finetune = text.contains("from_pretrained_checkpoint = true");
            let args: &[&str] = if finetune { &["--efficientnet_checkpoint_path", "checkpoint.tar.gz"] } else { &[] };
            let c = TrainConfig::from_args(args, Some(&text)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(c.bn_frozen(), finetune, "{}", path.display());
            assert!(
                ringsam_models::list().iter().any(|m| m.name == c.model_name),
                "{}: model {} is not registered",
                path.display(),
                c.model_name
            );
            seen += 1;
        }
        assert!(seen >= 14, "found only {seen} configs in {}", dir.display());
    }
}
