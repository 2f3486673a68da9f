//! `ringsam train`'s arguments: the run's configuration ([`TrainConfig`]: every training flag,
//! declared once, with its default and its TOML key) and the few flags that are not part of a
//! run's configuration. This is the low layer: clap checks each value's type;
//! [`resolve_train_config`] merges defaults, the TOML file and the command line and validates the
//! whole (the high layer, in the train crate).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{ArgMatches, Args, FromArgMatches};
use ringsam_train::config::{MAX_CONFIG_BYTES, QUICKSTART_TOML, TrainConfig};

use crate::usage;

/// Training flags.
#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub struct TrainArgs {
    /// TOML file with any of the training flags as keys (command-line flags override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (e.g. 0.0.0.0:9100).
    #[arg(long, env = "RINGSAM_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Where the step runs: cpu, cuda or cuda:N (a build with `--features cuda`). Not part of
    /// the run's configuration: a run resumes on another device. The GPU step refuses, by flag,
    /// what it does not do yet (--sam_m, LookSAM, EMA, mixup, an ascent per micro-batch).
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: String,
    /// A GPU's GEMMs and im2col convolutions: fp32; tf32 (tensor cores; the default on a GPU,
    /// as PyTorch's for convolutions); or bf16 (operands rounded to BF16, FP32 sums, tensors kept
    /// in FP32; with --conv_impl gemm). The CPU engine computes in fp32.
    #[arg(long, value_name = "PRECISION")]
    pub precision: Option<String>,
    /// A GPU's convolutions: gemm (im2col and cuBLAS; the default, checked on a GPU) or cudnn
    /// (shapes it cannot express, and depthwise ones, keep the engine's kernels; not yet run on a
    /// GPU, and the default once the device check has held it to the CPU engine).
    #[arg(long, value_name = "IMPL")]
    pub conv_impl: Option<String>,
    /// The run's configuration.
    #[command(flatten)]
    pub run: TrainConfig,
}

impl TrainArgs {
    /// The device `--device` names, opened: see [`open_device`].
    pub fn open_device(&self, log: &dyn Fn(&str)) -> Result<Option<std::sync::Arc<ringsam_kernels::Gpu>>> {
        open_device(&self.device, self.precision.as_deref(), self.conv_impl.as_deref(), log)
    }
}

/// `--device` (with `--precision` and `--conv_impl`) opened, its kernels compiled: `None` for
/// the CPU. A missing library or GPU is one clear error.
#[cfg_attr(not(feature = "cuda"), allow(unused_variables))] // the CPU is the only device then
pub fn open_device(
    device: &str,
    precision: Option<&str>,
    conv_impl: Option<&str>,
    log: &dyn Fn(&str),
) -> Result<Option<std::sync::Arc<ringsam_kernels::Gpu>>> {
    // The flags first: a pair that cannot go together is named whatever the build has.
    let (precision, conv_impl) = gpu_choices(device, precision, conv_impl)?;
    let parsed: ringsam_tensor::Device = device.parse().map_err(|e| usage(format!("--device: {e}")))?;
    parsed.probe()?;
    match parsed {
        ringsam_tensor::Device::Cpu => Ok(None),
        #[cfg(feature = "cuda")]
        ringsam_tensor::Device::Cuda(ordinal) => {
            log(&format!("compiling the kernels for cuda:{ordinal}"));
            let gpu = ringsam_kernels::Gpu::cuda(ordinal, precision).with_context(|| format!("opening cuda:{ordinal}"))?;
            if let Some(imp) = conv_impl {
                gpu.launcher().set_conv_impl(imp).with_context(|| format!("--conv_impl {imp}"))?;
            }
            log(&format!("convolutions on cuda:{ordinal}: {}", gpu.launcher().conv_impl()));
            Ok(Some(gpu))
        }
    }
}

/// `--precision` and `--conv_impl` for `--device`, checked against each other (cuDNN's
/// convolutions do not take BF16: [`ringsam_kernels::conv_library::check_precision`]).
pub fn gpu_choices(
    device: &str,
    precision: Option<&str>,
    conv_impl: Option<&str>,
) -> Result<(ringsam_kernels::Precision, Option<ringsam_kernels::conv_library::ConvImpl>)> {
    let (p, imp) = (precision_for(device, precision)?, conv_impl_for(device, conv_impl)?);
    if let Some(imp) = imp {
        ringsam_kernels::conv_library::check_precision(imp, p)
            .map_err(|e| usage(format!("--precision {p} with --conv_impl {imp}: {e}")))?;
    }
    Ok((p, imp))
}

/// `--conv_impl` for `--device`: none given keeps the device's default; the CPU has one.
pub fn conv_impl_for(device: &str, conv_impl: Option<&str>) -> Result<Option<ringsam_kernels::conv_library::ConvImpl>> {
    let Some(given) = conv_impl else { return Ok(None) };
    let parsed = given.parse().map_err(|e| usage(format!("--conv_impl: {e}")))?;
    if device == "cpu" {
        return Err(usage(format!("--conv_impl {given}: the CPU engine's convolutions are its own (give it with --device cuda)")));
    }
    Ok(Some(parsed))
}

/// `--precision` for `--device`: a GPU's defaults to tf32; the CPU computes in fp32 only.
pub fn precision_for(device: &str, precision: Option<&str>) -> Result<ringsam_kernels::Precision> {
    use ringsam_kernels::Precision;
    let p = match precision {
        Some(p) => p.parse().map_err(|e| usage(format!("--precision {e}")))?,
        None if device == "cpu" => Precision::Fp32,
        None => Precision::Tf32,
    };
    if device == "cpu" && p != Precision::Fp32 {
        return Err(usage(format!("--precision {p}: the CPU engine computes in fp32")));
    }
    Ok(p)
}

/// The run configuration: defaults, then `--config` (or, with neither `--config` nor
/// `--dataset`, the quickstart), then the command line. `matches` are the subcommand's.
pub fn resolve_train_config(args: &TrainArgs, matches: &ArgMatches) -> Result<TrainConfig> {
    let text = match &args.config {
        Some(path) => Some(read_config(path)?),
        None if !TrainConfig::given(matches, "dataset") => {
            eprintln!("ringsam: no --dataset or --config: running the quickstart (configs/quickstart.toml: SAM on the bundled digits)");
            Some(QUICKSTART_TOML.to_string())
        }
        None => None,
    };
    let which = args.config.as_ref().map_or_else(|| "the quickstart config".to_string(), |p| format!("config {}", p.display()));
    TrainConfig::resolve(matches, text.as_deref()).map_err(|e| usage(if text.is_some() { format!("{which}: {e}") } else { e }))
}

/// Parses and resolves training flags given as words (what `launch` passes its workers, after
/// it has dropped a leading `train`), so a mistake is reported before any worker starts.
pub fn check_train_words(words: &[String]) -> Result<TrainConfig> {
    let cmd = TrainArgs::augment_args(clap::Command::new("train").no_binary_name(true));
    let matches = cmd.try_get_matches_from(ringsam_train::config::normalize_flag_names(words)).map_err(|e| usage(e.to_string()))?;
    let args = TrainArgs::from_arg_matches(&matches).map_err(|e| usage(e.to_string()))?;
    resolve_train_config(&args, &matches)
}

/// Reads a TOML config, refusing more than [`MAX_CONFIG_BYTES`] (`--config /dev/zero` would
/// otherwise read forever).
fn read_config(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path).with_context(|| format!("reading config {}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text).with_context(|| format!("reading config {}", path.display()))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(usage(format!("config {}: larger than {MAX_CONFIG_BYTES} bytes (is it a TOML file?)", path.display())));
    }
    Ok(text)
}
