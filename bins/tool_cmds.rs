//! `ringsam data …`, `ringsam models` and `ringsam certs`: the tools around training.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ringsam_models::{ModelConfig, build, forward_gflops, list};

#[derive(Subcommand, Debug)]
pub(crate) enum DataCommand {
    /// Check a dataset's files against the official checksums.
    Verify(VerifyArgs),
    /// Write shards (WebDataset tar or TFRecord) from an image folder (one sub-folder per class).
    Pack(PackArgs),
    /// Summarise shards: samples, labels, bytes, and any damaged records (with offsets).
    Inspect(InspectArgs),
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub(crate) struct PackArgs {
    /// The image folder: one sub-folder of JPEGs per class (classes numbered in name order).
    #[arg(long)]
    pub(crate) from: PathBuf,
    /// Directory for the shards.
    #[arg(long)]
    pub(crate) to: PathBuf,
    /// wds (WebDataset tar) or tfrecord (TFDS-style tf.Example records).
    #[arg(long, default_value = "wds")]
    pub(crate) format: String,
    /// Samples per shard.
    #[arg(long, default_value_t = 1000)]
    pub(crate) shard_size: usize,
    /// Shard name prefix.
    #[arg(long, default_value = "train")]
    pub(crate) prefix: String,
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub(crate) struct InspectArgs {
    /// Shard files (*.tar or *.tfrecord*).
    #[arg(required = true)]
    pub(crate) shards: Vec<PathBuf>,
    /// Print one JSON object per shard.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub(crate) struct VerifyArgs {
    /// The directory holding the files.
    pub(crate) dir: PathBuf,
    /// cifar10, cifar100, fashion_mnist or svhn.
    #[arg(long)]
    pub(crate) dataset: String,
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub(crate) struct ConvertArgs {
    /// The checkpoint: a Flax checkpoint (`checkpoint.tar.gz` as the SAM reference publishes
    /// it, the `checkpoint_<step>` file, or its directory), a `.safetensors`, or a ringsam
    /// checkpoint directory.
    #[arg(long)]
    pub(crate) from: PathBuf,
    /// The `model.safetensors` to write.
    #[arg(long)]
    pub(crate) to: PathBuf,
    /// The model to check it against (default: the registered model it fits).
    #[arg(long, visible_alias = "model")]
    pub(crate) model_name: Option<String>,
    /// Classes of the model (default: the checkpoint's; another number keeps a fresh classifier).
    #[arg(long)]
    pub(crate) num_classes: Option<usize>,
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub(crate) struct CertsArgs {
    /// Directory to write ca.pem, node-{i}.pem and node-{i}.key into.
    #[arg(long, required_unless_present_any = ["secret", "k8s_secret"])]
    pub(crate) out: Option<PathBuf>,
    /// Number of node certificates.
    #[arg(long, default_value_t = 4)]
    pub(crate) nodes: usize,
    /// Print a fresh cluster secret for TCP rings (256 random bits as hex) instead (with
    /// --k8s-secret: add it to the Secret as `cluster-secret`).
    #[arg(long, conflicts_with = "out")]
    pub(crate) secret: bool,
    /// Print a Kubernetes Secret of this name holding a fresh CA and the node certificates, for
    /// `kubectl apply -f -` (nothing is written to disk).
    #[arg(long, value_name = "NAME", conflicts_with = "out")]
    pub(crate) k8s_secret: Option<String>,
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub(crate) struct ModelsArgs {
    /// Classifier outputs to count parameters for.
    #[arg(long, default_value_t = 10)]
    pub(crate) num_classes: usize,
    /// Print a JSON list instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also count forward GFLOPs per image by running one image through each model at its input
    /// size (about two minutes on 2 cores: EfficientNet-L2 at 800 px alone is ~950 GFLOPs).
    #[arg(long)]
    pub(crate) gflops: bool,
}

pub(crate) fn cmd_models(args: &ModelsArgs) -> Result<()> {
    let cfg = ModelConfig { num_classes: args.num_classes, in_channels: 3 };
    let mut rows = Vec::new();
    for info in list() {
        let mut model = build(info.name, &cfg).with_context(|| format!("building {}", info.name))?;
        let gflops = if args.gflops {
            let g = forward_gflops(model.as_mut(), info.input_size).with_context(|| format!("counting {}'s FLOPs", info.name))?;
            serde_json::json!((g * 1e4).round() / 1e4)
        } else {
            serde_json::Value::Null
        };
        rows.push(serde_json::json!({
            "name": info.name,
            "num_classes": args.num_classes,
            "params": model.layout().total(),
            "gflops": gflops,
            "input_size": info.input_size,
            "summary": info.summary,
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{:<26} {:>12} {:>6} {:>8}  summary", "model", "params", "input", "GFLOPs");
        for r in &rows {
            let gflops = r["gflops"].as_f64().map_or_else(|| "-".to_string(), |g| format!("{g:.3}"));
            println!(
                "{:<26} {:>12} {:>6} {:>8}  {}",
                r["name"].as_str().unwrap_or(""),
                r["params"].as_u64().unwrap_or(0),
                r["input_size"].as_u64().unwrap_or(0),
                gflops,
                r["summary"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

pub(crate) fn cmd_data_pack(args: &PackArgs) -> Result<()> {
    use ringsam_data::shards::{ShardFormat, pack_folder};
    let format = ShardFormat::parse(&args.format)?;
    let shards = pack_folder(&args.from, &args.to, format, args.shard_size, &args.prefix, 0)
        .with_context(|| format!("packing {} into {}", args.from.display(), args.to.display()))?;
    println!("wrote {} shard(s) to {}", shards.len(), args.to.display());
    Ok(())
}

pub(crate) fn cmd_data_inspect(args: &InspectArgs) -> Result<()> {
    let mut damaged = false;
    for path in &args.shards {
        let (mut labels, mut bytes, mut first) = (std::collections::BTreeMap::<i64, usize>::new(), 0usize, None);
        let report = ringsam_data::shards::read_shard(path, |_, s| {
            *labels.entry(s.label).or_default() += 1;
            bytes += s.image.len();
            first.get_or_insert(s.key);
            true
        })
        .with_context(|| format!("reading {}", path.display()))?;
        damaged |= !report.skipped.is_empty();
        let (lo, hi) = (labels.keys().next().copied(), labels.keys().last().copied());
        if args.json {
            let skipped: Vec<_> = report.skipped.iter().map(|(at, why)| serde_json::json!({"offset": at, "why": why})).collect();
            println!(
                "{}",
                serde_json::json!({"shard": path, "samples": report.samples, "image_bytes": bytes, "classes": labels.len(), "label_min": lo, "label_max": hi, "first_key": first, "skipped": skipped})
            );
        } else {
            println!(
                "{}: {} samples, {} image bytes, {} classes (labels {}..={}), first key {:?}, {} skipped",
                path.display(),
                report.samples,
                bytes,
                labels.len(),
                lo.map_or("-".into(), |v| v.to_string()),
                hi.map_or("-".into(), |v| v.to_string()),
                first.unwrap_or_default(),
                report.skipped.len()
            );
            for (at, why) in &report.skipped {
                println!("  skipped at offset {at}: {why}");
            }
        }
    }
    if damaged {
        bail!("some records were damaged (listed above)");
    }
    Ok(())
}

pub(crate) fn cmd_data_verify(args: &VerifyArgs) -> Result<()> {
    use ringsam_data::verify::{CheckStatus, verify};
    let checks = verify(&args.dir, &args.dataset).with_context(|| format!("verifying {} in {}", args.dataset, args.dir.display()))?;
    let mut bad = 0;
    for c in &checks {
        let status = match c.status {
            CheckStatus::Ok => "ok",
            CheckStatus::Mismatch => {
                bad += 1;
                "MISMATCH"
            }
            CheckStatus::Missing => "missing",
            CheckStatus::NoOfficialChecksum => "no official checksum",
        };
        println!("{:<32} {:<22} {}", c.file, status, c.detail);
    }
    if bad > 0 {
        bail!("{bad} file(s) do not match the official checksums: re-download them");
    }
    let missing = checks.iter().filter(|c| c.status == CheckStatus::Missing).count();
    let ok = checks.iter().filter(|c| c.status == CheckStatus::Ok).count();
    println!("{ok} file(s) match, {missing} missing, 0 mismatched");
    Ok(())
}

pub(crate) fn cmd_certs(args: &CertsArgs) -> Result<()> {
    if let Some(name) = &args.k8s_secret {
        let secret = if args.secret { Some(ringsam_collective::tcp::fresh_secret()?) } else { None };
        let yaml = ringsam_collective::k8s_secret::secret_manifest(name, args.nodes, secret.as_deref()).map_err(|e| match e {
            ringsam_collective::k8s_secret::SecretError::Cert(_) => anyhow::Error::new(e),
            _ => crate::usage(e.to_string()),
        })?;
        print!("{yaml}");
        return Ok(());
    }
    let Some(out) = &args.out else {
        println!("{}", ringsam_collective::tcp::fresh_secret()?);
        return Ok(());
    };
    ringsam_collective::certs::write_dev_certs(out, args.nodes).with_context(|| format!("writing certificates to {}", out.display()))?;
    println!("wrote {}/ca.pem and {} node certificates (node-N.pem, node-N.key)", out.display(), args.nodes);
    Ok(())
}

/// `ringsam convert`: a checkpoint made elsewhere, checked and written as a ringsam model file.
pub(crate) fn cmd_convert(args: &ConvertArgs) -> Result<()> {
    if args.num_classes == Some(0) {
        return Err(crate::usage("--num_classes must be at least 1"));
    }
    let done = ringsam_train::convert::convert(&args.from, &args.to, args.model_name.as_deref(), args.num_classes)
        .with_context(|| format!("converting {}", args.from.display()))?;
    for line in &done.lines {
        println!("{line}");
    }
    Ok(())
}
