//! `ringsam`: the command line. Thin glue: parse flags, build configs, call into the crates.
//!
//! `main` is tiny: `run(parse())` returns an exit code and errors print their whole chain
//! (`{:#}`), exit code 2. No training logic lives here.

mod train_flags;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use ringsam_models::{ModelConfig, build, list};
use ringsam_train::bench_step::{self, BenchStepConfig};
use ringsam_train::config::{QUICKSTART_TOML, TrainConfig};
use ringsam_train::run::{RunOptions, load_splits, train};
use train_flags::TrainFlags;

/// Sharpness-Aware Minimization trainer.
#[derive(Parser, Debug)]
#[command(name = "ringsam", version, about)]
struct Cli {
    /// Engine threads (default: all logical cores).
    #[arg(long, global = true, env = "RINGSAM_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model (with no --dataset and no --config: the quickstart on the bundled digits).
    Train(Box<TrainFlags>),
    /// Evaluate a checkpoint on its dataset's test split.
    Eval(EvalArgs),
    /// Dataset utilities.
    #[command(subcommand)]
    Data(DataCommand),
    /// List models with parameter counts.
    Models(ModelsArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// A checkpoint directory (`…/checkpoints/checkpoint_N`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Directory of the dataset's files (default: the one the run used).
    #[arg(long = "data_dir", visible_alias = "data-dir")]
    data_dir: Option<PathBuf>,
    /// Evaluation batch size.
    #[arg(long = "batch_size", visible_alias = "batch-size", default_value_t = 128)]
    batch_size: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum DataCommand {
    /// Check a dataset's files against the official checksums.
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// The directory holding the files.
    dir: PathBuf,
    /// cifar10, cifar100, fashion_mnist or svhn.
    #[arg(long)]
    dataset: String,
}

#[derive(Args, Debug)]
struct ModelsArgs {
    /// Classifier outputs to count parameters for.
    #[arg(long, default_value_t = 10)]
    num_classes: usize,
    /// Print a JSON list instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Time SGD and SAM training steps on synthetic data.
    Step(BenchStepArgs),
}

#[derive(Args, Debug)]
struct BenchStepArgs {
    /// Model name (see `ringsam models`).
    #[arg(long, default_value = "WideResnet16x4")]
    model: String,
    /// Images per step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Square image side.
    #[arg(long, default_value_t = 32)]
    image_size: usize,
    /// Classes.
    #[arg(long, default_value_t = 10)]
    num_classes: usize,
    /// Timed steps per variant (after one warm-up step).
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// SAM radius for the SAM variant.
    #[arg(long, default_value_t = 0.05)]
    rho: f32,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ringsam: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let threads =
        ringsam_tensor::threads::configure(cli.threads).context("configuring the engine's threads (--threads / RINGSAM_THREADS)")?;
    match cli.command {
        Command::Train(flags) => cmd_train(&flags),
        Command::Eval(args) => cmd_eval(&args),
        Command::Data(DataCommand::Verify(args)) => cmd_data_verify(&args),
        Command::Models(args) => cmd_models(&args),
        Command::Bench(BenchCommand::Step(args)) => cmd_bench_step(&args, threads),
    }
}

fn cmd_models(args: &ModelsArgs) -> Result<()> {
    let cfg = ModelConfig { num_classes: args.num_classes, in_channels: 3 };
    let mut rows = Vec::new();
    for info in list() {
        let model = build(info.name, &cfg).with_context(|| format!("building {}", info.name))?;
        rows.push(serde_json::json!({
            "name": info.name,
            "num_classes": args.num_classes,
            "params": model.layout().total(),
            "input_size": info.input_size,
            "summary": info.summary,
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{:<18} {:>12} {:>6}  summary", "model", "params", "input");
        for r in &rows {
            println!(
                "{:<18} {:>12} {:>6}  {}",
                r["name"].as_str().unwrap_or(""),
                r["params"].as_u64().unwrap_or(0),
                r["input_size"].as_u64().unwrap_or(0),
                r["summary"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

fn cmd_bench_step(args: &BenchStepArgs, threads: usize) -> Result<()> {
    let cfg = BenchStepConfig {
        model: args.model.clone(),
        batch: args.batch,
        image_size: args.image_size,
        num_classes: args.num_classes,
        iters: args.iters,
        rho: args.rho,
        device: args.device.parse().context("--device")?,
    };
    let show_progress = std::io::stderr().is_terminal() && !args.json;
    let report = bench_step::run(&cfg, |line| {
        if show_progress {
            eprint!("\r\x1b[2K{line}");
        }
    })
    .with_context(|| format!("benchmarking {} at batch {}", args.model, args.batch))?;
    if show_progress {
        eprintln!();
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "model {} batch {} image {}x{} threads {threads} gemm {}",
            report.model,
            report.batch,
            report.image_size,
            report.image_size,
            ringsam_tensor::gemm::backend_name()
        );
        println!(
            "  SGD step  {:>9.1} ms  {:>8.1} images/s  {:>6.1} GFLOP/s",
            report.sgd_ms, report.sgd_images_per_s, report.sgd_gflops_per_s
        );
        println!("  SAM step  {:>9.1} ms  {:>8.1} images/s", report.sam_ms, report.sam_images_per_s);
        println!("  SAM/SGD   {:>9.2}x   forward {:.2} GMAC per step", report.sam_over_sgd, report.forward_gmacs);
    }
    Ok(())
}

fn cmd_train(flags: &TrainFlags) -> Result<()> {
    let mut cfg = TrainConfig::default();
    if let Some(path) = &flags.config {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        cfg = cfg.merge_toml(&text).map_err(anyhow::Error::msg).with_context(|| format!("config {}", path.display()))?;
    } else if flags.dataset.is_none() {
        eprintln!("ringsam: no --dataset or --config: running the quickstart (configs/quickstart.toml: SAM on the bundled digits)");
        cfg = cfg.merge_toml(QUICKSTART_TOML).map_err(anyhow::Error::msg).context("the built-in quickstart config")?;
    }
    flags.apply(&mut cfg);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing the signal handler")?;
    }
    let opts = RunOptions { progress: std::io::stderr().is_terminal(), stop };
    let summary = train(&cfg, &opts, &mut |line| eprintln!("ringsam: {line}"))
        .with_context(|| format!("training {} on {}", cfg.model_name, cfg.dataset))?;
    println!("run directory: {}", summary.run_dir.display());
    println!("steps: {}  time: {:.1} s", summary.steps, summary.seconds);
    if let (Some(err), Some(loss)) = (summary.test_error_rate, summary.test_loss) {
        println!("test accuracy: {:.2}%  test error: {:.2}%  test loss: {loss:.4}", 100.0 * (1.0 - err), 100.0 * err);
    }
    Ok(())
}

fn cmd_eval(args: &EvalArgs) -> Result<()> {
    let state_path = args.checkpoint.join("state.json");
    let text = std::fs::read(&state_path).with_context(|| format!("reading {}", state_path.display()))?;
    let training: ringsam_train::checkpoint::TrainingState =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", state_path.display()))?;
    let mut cfg = training.config;
    if let Some(d) = &args.data_dir {
        cfg.data_dir = Some(d.clone());
    }
    let (_, test) = load_splits(&cfg).with_context(|| format!("loading {}", cfg.dataset))?;
    let mut model = build(&cfg.model_name, &ModelConfig { num_classes: test.num_classes, in_channels: test.channels })?;
    let ckpt = ringsam_train::checkpoint::load(&args.checkpoint, model.layout(), model.state_layout()).context("loading the checkpoint")?;
    let (params, mut state) = match ckpt.ema {
        Some((p, s)) => (p, s),
        None => (ckpt.params, ckpt.state),
    };
    let r = ringsam_train::eval::evaluate(model.as_mut(), &params, &mut state, &test, args.batch_size)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"checkpoint": args.checkpoint, "dataset": cfg.dataset, "examples": r.examples, "loss": r.loss, "error_rate": r.error_rate, "top5_error_rate": r.top5_error_rate})
        );
    } else {
        println!(
            "{} on {} test ({} examples): loss {:.4}, error {:.2}%, accuracy {:.2}%",
            cfg.model_name,
            cfg.dataset,
            r.examples,
            r.loss,
            100.0 * r.error_rate,
            100.0 * (1.0 - r.error_rate)
        );
    }
    Ok(())
}

fn cmd_data_verify(args: &VerifyArgs) -> Result<()> {
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
