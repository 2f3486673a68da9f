//! `ringsam`: the command line. Thin glue: parse flags, build configs, call into the crates.
//!
//! `main` is tiny: flag names are normalised (kebab-case to snake_case), clap parses, `run`
//! dispatches to one `cmd_*` per subcommand (in `*_cmds.rs`, by family), and an error prints its
//! whole chain (`{:#}`) and exits with the code docs/ARCHITECTURE.md defines ("Exit codes",
//! `process.rs`). No training, benchmarking or launching logic lives here: the crates own it.

mod bench_cmds;
mod bench_conv;
mod experiment_cmds;
mod process;
mod selftest_cmds;
mod tool_cmds;
mod train_args;
mod train_cmds;
mod worker_elastic;
mod worker_local;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use ringsam_train::config::normalize_flag_names;

use bench_cmds::BenchCommand;
use process::{exit, exit_code, usage};
use tool_cmds::DataCommand;

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
    Train(Box<train_args::TrainArgs>),
    /// Evaluate a checkpoint on its dataset's test split.
    Eval(train_cmds::EvalArgs),
    /// Sharpness of a checkpoint: the loss Hessian's top eigenvalues and the m-sharpness on a
    /// fixed training batch.
    Sharpness(train_cmds::SharpnessArgs),
    /// Top classes of JPEG images under a trained checkpoint.
    Predict(train_cmds::PredictArgs),
    /// Dataset utilities.
    #[command(subcommand)]
    Data(DataCommand),
    /// Convert a checkpoint made elsewhere (a published Flax EfficientNet) into a model.safetensors.
    Convert(tool_cmds::ConvertArgs),
    /// List models with parameter counts.
    Models(tool_cmds::ModelsArgs),
    /// Make a development cluster CA and per-node certificates for QUIC rings.
    Certs(tool_cmds::CertsArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run one replica of a data-parallel job (rank and peers from flags or the environment).
    Worker(Box<train_cmds::WorkerArgs>),
    /// Train data-parallel on this machine: N local workers joined by a ring on loopback.
    Launch(train_cmds::LaunchArgs),
    /// Grids of training runs compared: the label-noise experiment, cheaper SAM.
    #[command(subcommand)]
    Experiment(experiment_cmds::ExperimentCommand),
    /// Check the GPU engine against the CPU engine on a GPU (the device check).
    #[command(subcommand)]
    Selftest(selftest_cmds::SelftestCommand),
}

fn main() -> ExitCode {
    process::keep_freed_memory();
    let matches = match Cli::command().try_get_matches_from(normalize_flag_names(std::env::args_os())) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::OK });
        }
    };
    let result = Cli::from_arg_matches(&matches).map_err(|e| usage(e.to_string())).and_then(|cli| run(cli, &matches));
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => {
            let code = exit_code(&err);
            if code == exit::STOPPED {
                eprintln!("ringsam: {err:#}: stopped by a signal; run the same command again to resume");
            } else {
                eprintln!("ringsam: {err:#}");
            }
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli, matches: &ArgMatches) -> Result<()> {
    let sub = |name: &str| matches.subcommand_matches(name).expect("clap parsed this subcommand");
    let threads =
        ringsam_tensor::threads::configure(cli.threads).context("configuring the engine's threads (--threads / RINGSAM_THREADS)")?;
    match cli.command {
        Command::Train(args) => train_cmds::cmd_train(&args, sub("train")),
        Command::Eval(args) => train_cmds::cmd_eval(&args),
        Command::Predict(args) => train_cmds::cmd_predict(&args),
        Command::Sharpness(args) => train_cmds::cmd_sharpness(&args),
        Command::Experiment(command) => experiment_cmds::cmd_experiment(command),
        Command::Worker(args) => train_cmds::cmd_worker(&args, sub("worker")),
        Command::Launch(args) => train_cmds::cmd_launch(&args),
        Command::Selftest(selftest_cmds::SelftestCommand::Kernels(args)) => selftest_cmds::cmd_selftest_kernels(&args),
        Command::Selftest(selftest_cmds::SelftestCommand::Engine(args)) => selftest_cmds::cmd_selftest_engine(&args),
        Command::Data(DataCommand::Verify(args)) => tool_cmds::cmd_data_verify(&args),
        Command::Data(DataCommand::Pack(args)) => tool_cmds::cmd_data_pack(&args),
        Command::Data(DataCommand::Inspect(args)) => tool_cmds::cmd_data_inspect(&args),
        Command::Models(args) => tool_cmds::cmd_models(&args),
        Command::Convert(args) => tool_cmds::cmd_convert(&args),
        Command::Certs(args) => tool_cmds::cmd_certs(&args),
        Command::Bench(BenchCommand::Step(args)) => bench_cmds::cmd_bench_step(&args, threads),
        Command::Bench(BenchCommand::Allreduce(args)) => bench_cmds::cmd_bench_allreduce(&args),
        Command::Bench(BenchCommand::Loader(args)) => bench_cmds::cmd_bench_loader(&args),
        Command::Bench(BenchCommand::Link(args)) => bench_cmds::cmd_bench_link(&args),
        Command::Bench(BenchCommand::Cipher(args)) => bench_cmds::cmd_bench_cipher(&args),
        Command::Bench(BenchCommand::Recovery(args)) => bench_cmds::cmd_bench_recovery(&args),
        Command::Bench(BenchCommand::Conv(args)) => bench_conv::cmd_bench_conv(&args),
    }
}
