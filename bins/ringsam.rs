//! `ringsam`: the command line. Thin glue: parse flags, build configs, call into the crates.
//!
//! `main` is tiny: `run(parse())` returns an exit code and errors print their whole chain
//! (`{:#}`), exit code 2. No training logic lives here.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use ringsam_models::{ModelConfig, build, list};
use ringsam_train::bench_step::{self, BenchStepConfig};

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
    /// List models with parameter counts.
    Models(ModelsArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
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
