//! `ringsam`: the command line. Thin glue: parse flags, build configs, call into the crates.
//!
//! `main` is tiny: flag names are normalised (kebab-case to snake_case), clap parses, `run`
//! dispatches, and an error prints its whole chain (`{:#}`) and exits with the code
//! docs/ARCHITECTURE.md defines ("Exit codes"). No training logic lives here.

mod cluster_cmds;
mod train_args;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use ringsam_models::{ModelConfig, build, forward_gflops, list};
use ringsam_train::TrainError;
use ringsam_train::bench_step::{self, BenchStepConfig};
use ringsam_train::config::normalize_flag_names;
use ringsam_train::run::{RunOptions, train};
use train_args::{TrainArgs, resolve_train_config};

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
    Train(Box<TrainArgs>),
    /// Evaluate a checkpoint on its dataset's test split.
    Eval(EvalArgs),
    /// Dataset utilities.
    #[command(subcommand)]
    Data(DataCommand),
    /// List models with parameter counts.
    Models(ModelsArgs),
    /// Make a development cluster CA and per-node certificates for QUIC rings.
    Certs(CertsArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run one replica of a data-parallel job (rank and peers from flags or the environment).
    Worker(Box<cluster_cmds::WorkerArgs>),
    /// Train data-parallel on this machine: N local workers joined by a ring on loopback.
    Launch(cluster_cmds::LaunchArgs),
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
struct EvalArgs {
    /// A checkpoint directory (`…/checkpoints/checkpoint_N`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Directory of the dataset's files (default: the one the run used).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Evaluation batch size.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum DataCommand {
    /// Check a dataset's files against the official checksums.
    Verify(VerifyArgs),
    /// Write shards (WebDataset tar or TFRecord) from an image folder (one sub-folder per class).
    Pack(PackArgs),
    /// Summarise shards: samples, labels, bytes, and any damaged records (with offsets).
    Inspect(InspectArgs),
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
struct PackArgs {
    /// The image folder: one sub-folder of JPEGs per class (classes numbered in name order).
    #[arg(long)]
    from: PathBuf,
    /// Directory for the shards.
    #[arg(long)]
    to: PathBuf,
    /// wds (WebDataset tar) or tfrecord (TFDS-style tf.Example records).
    #[arg(long, default_value = "wds")]
    format: String,
    /// Samples per shard.
    #[arg(long, default_value_t = 1000)]
    shard_size: usize,
    /// Shard name prefix.
    #[arg(long, default_value = "train")]
    prefix: String,
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
struct InspectArgs {
    /// Shard files (*.tar or *.tfrecord*).
    #[arg(required = true)]
    shards: Vec<PathBuf>,
    /// Print one JSON object per shard.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
struct VerifyArgs {
    /// The directory holding the files.
    dir: PathBuf,
    /// cifar10, cifar100, fashion_mnist or svhn.
    #[arg(long)]
    dataset: String,
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
struct CertsArgs {
    /// Directory to write ca.pem, node-{i}.pem and node-{i}.key into.
    #[arg(long)]
    out: PathBuf,
    /// Number of node certificates.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
struct ModelsArgs {
    /// Classifier outputs to count parameters for.
    #[arg(long, default_value_t = 10)]
    num_classes: usize,
    /// Print a JSON list instead of a table.
    #[arg(long)]
    json: bool,
    /// Also count forward GFLOPs per image by running one image through each model at its input
    /// size (about two minutes on 2 cores: EfficientNet-L2 at 800 px alone is ~950 GFLOPs).
    #[arg(long)]
    gflops: bool,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Time SGD and SAM training steps on synthetic data.
    Step(BenchStepArgs),
    /// All-reduce bandwidth over the ring (nccl-tests style: size, time, algbw, busbw).
    Allreduce(BenchAllreduceArgs),
    /// Loader throughput: decode + random crop + flip (+ resize) of every sample in some shards.
    Loader(BenchLoaderArgs),
    /// Single-stream TCP throughput between two hosts: the line rate the ring is compared with.
    Link(BenchLinkArgs),
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
struct BenchLinkArgs {
    /// Receive one transfer on this address and print its rate.
    #[arg(long, conflicts_with = "connect")]
    listen: Option<std::net::SocketAddr>,
    /// Send to this address and print the receiver's measurement.
    #[arg(long)]
    connect: Option<std::net::SocketAddr>,
    /// Seconds to send.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Print one JSON object (bytes, seconds, gbit_s, gbyte_s).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
struct BenchLoaderArgs {
    /// A directory of shards (*.tar, *.tfrecord*), or shard files.
    #[arg(long, required = true, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Decoder threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Output side in pixels.
    #[arg(long, default_value_t = 224)]
    image_size: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Classes the labels must fall below.
    #[arg(long, default_value_t = 1000)]
    num_classes: usize,
    /// JPEG decoder: zune, turbo or turbo-reduced (the last two need --features turbojpeg).
    #[arg(long, default_value = "zune")]
    decoder: String,
    /// Per-image augmentation after the crop: none, autoaugment (ImageNet policy) or randaugment (N 2, M 9).
    #[arg(long, default_value = "none")]
    augment: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
struct BenchAllreduceArgs {
    /// Ranks: local processes (tcp) or threads (inproc) started by this command.
    #[arg(long, default_value_t = 4)]
    nproc: usize,
    /// tcp, quic or inproc, or a comma list to compare them in one run.
    #[arg(long, default_value = "tcp")]
    transport: String,
    /// Sizes in bytes: LOW..HIGH (doubling) or a comma list; K, M, G are powers of 1024.
    #[arg(long, default_value = "1K..64M")]
    sizes: String,
    /// Timed operations per size (after one warm-up).
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Chunk size in f32 values (the unit frames carry and pipelining works at).
    #[arg(long, default_value_t = 262144)]
    chunk: usize,
    /// Seconds to form the ring and to wait on a silent peer.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Join an existing ring as this rank instead of starting local processes (needs --peers).
    #[arg(long)]
    rank: Option<usize>,
    /// Every rank's listen address, in rank order (with --rank).
    #[arg(long, value_delimiter = ',')]
    peers: Vec<std::net::SocketAddr>,
    /// Cluster CA certificate (QUIC, with --rank).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// This node's certificate (QUIC, with --rank).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// This node's private key (QUIC, with --rank).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Write a PNG of busbw against size (one line per transport).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// QUIC per-stream flow-control window in bytes. Larger than half the UDP receive buffer
    /// (4 MiB here), bursts overflow it while a receiver waits for a core; larger than the link's
    /// queue, the sender keeps that queue full (docs/BENCHMARKS.md, "The ring on shaped links").
    #[arg(long, default_value_t = 1 << 20)]
    quic_window: u32,
    /// QUIC connection flow-control window and send buffer in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    quic_conn_window: u32,
    /// QUIC UDP socket buffer size to ask the OS for, each way, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    quic_udp_buffer: usize,
    /// QUIC congestion controller: cubic, newreno or bbr.
    #[arg(long, default_value = "cubic")]
    quic_cc: String,
    /// Ask QUIC peers to acknowledge every N packets (default: QUIC's every second packet).
    #[arg(long)]
    quic_ack_every: Option<u32>,
    /// Print each rank's QUIC path statistics (RTT, congestion window, losses) at the end.
    #[arg(long)]
    quic_stats: bool,
    /// All-reduces in flight per timed operation: the buffer is cut into this many equal parts,
    /// submitted together (as gradient buckets are).
    #[arg(long, default_value_t = 1)]
    inflight: usize,
    /// Largest UDP payload the network carries, for QUIC's MTU discovery (default: 65000 on
    /// loopback, 1452 otherwise; 8952 suits a 9000-byte jumbo-frame network).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1200..=65000))]
    quic_mtu: Option<u16>,
    /// QUIC connections per ring neighbour, chunks striped over them: each connection's crypto
    /// runs on one task, so stripes (with --ring-threads above 1) spread it over cores.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16))]
    quic_stripes: u64,
    /// Threads each rank's ring runs on (socket reads, reductions, writes, QUIC's crypto). 0
    /// (default): the cores this host has per local rank, 1 to 4 (one rank per host with
    /// --rank); docs/BENCHMARKS.md has what each count measured.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=64))]
    ring_threads: u64,
    /// Print one JSON object per size.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
struct BenchStepArgs {
    /// Model (see `ringsam models`).
    #[arg(long, visible_alias = "model", default_value = "WideResnet16x4")]
    model_name: String,
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

/// Exit codes, as docs/ARCHITECTURE.md ("Exit codes") defines them: Kubernetes and supervisors
/// act on them.
mod exit {
    /// Training finished (or the command did its work).
    pub const OK: u8 = 0;
    /// A runtime failure: retrying may help.
    pub const RUNTIME: u8 = 1;
    /// A usage or configuration error (clap's own code too): retrying cannot help.
    pub const USAGE: u8 = 2;
    /// Stopped by SIGTERM/SIGINT after writing a checkpoint: resumable (128 + SIGTERM).
    pub const STOPPED: u8 = 143;
}

/// An error that carries its exit code: a usage error (2) or a stop after a checkpoint (143)
/// that a command learned of by other means than a `TrainError` (from its workers, from clap).
#[derive(Debug)]
struct CodedError {
    code: u8,
    message: String,
}

impl std::fmt::Display for CodedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CodedError {}

/// A usage error (exit code 2): the message says what to change.
pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(CodedError { code: exit::USAGE, message: message.into() })
}

/// A stop after a checkpoint (exit code 143).
pub(crate) fn stopped(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(CodedError { code: exit::STOPPED, message: message.into() })
}

/// The exit code for `err`: what its outermost recognised cause says. Usage errors are those a
/// flag or a file the user names must change: a value out of range, an unknown model, a data
/// directory missing the dataset's files, a device this build or machine lacks.
fn exit_code(err: &anyhow::Error) -> u8 {
    use ringsam_data::DataError;
    use ringsam_tensor::TensorError;
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<CodedError>() {
            return e.code;
        }
        if cause.is::<ringsam_models::ModelError>() {
            return exit::USAGE;
        }
        if let Some(e) = cause.downcast_ref::<DataError>() {
            return if matches!(e, DataError::Missing { .. } | DataError::Config(_)) { exit::USAGE } else { exit::RUNTIME };
        }
        if let Some(TensorError::Device { .. } | TensorError::CudaNotImplemented { .. } | TensorError::Threads(_)) =
            cause.downcast_ref::<TensorError>()
        {
            return exit::USAGE;
        }
        match cause.downcast_ref::<TrainError>() {
            Some(TrainError::Interrupted { .. }) => return exit::STOPPED,
            Some(TrainError::Config(_) | TrainError::Model(_)) => return exit::USAGE,
            Some(TrainError::Data(DataError::Missing { .. } | DataError::Config(_))) => return exit::USAGE,
            Some(TrainError::Tensor(TensorError::Device { .. } | TensorError::CudaNotImplemented { .. })) => return exit::USAGE,
            Some(_) => return exit::RUNTIME,
            None => {}
        }
    }
    exit::RUNTIME
}

fn main() -> ExitCode {
    keep_freed_memory();
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

/// Training and the ring free and reallocate the same large buffers (gradient chunks, quinn's
/// stream buffers, decoded images) thousands of times. glibc's defaults hand freed memory at the
/// top of a heap back to the OS and map larger blocks afresh, so each reuse pays page faults and
/// zeroed pages: ~15 % of a loopback QUIC all-reduce's CPU, measured with perf. Keeping up to
/// 1 GiB of freed memory per heap, and serving blocks up to glibc's 32 MiB ceiling from the heap,
/// trades a higher resident size for a steady state without faults (QUIC busbw 1.4-1.5x,
/// alternating runs; docs/BENCHMARKS.md, "Allocator").
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it runs before any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

fn run(cli: Cli, matches: &ArgMatches) -> Result<()> {
    let sub = |name: &str| matches.subcommand_matches(name).expect("clap parsed this subcommand");
    let threads =
        ringsam_tensor::threads::configure(cli.threads).context("configuring the engine's threads (--threads / RINGSAM_THREADS)")?;
    match cli.command {
        Command::Train(args) => cmd_train(&args, sub("train")),
        Command::Eval(args) => cmd_eval(&args),
        Command::Data(DataCommand::Verify(args)) => cmd_data_verify(&args),
        Command::Data(DataCommand::Pack(args)) => cmd_data_pack(&args),
        Command::Data(DataCommand::Inspect(args)) => cmd_data_inspect(&args),
        Command::Models(args) => cmd_models(&args),
        Command::Certs(args) => {
            ringsam_collective::certs::write_dev_certs(&args.out, args.nodes)
                .with_context(|| format!("writing certificates to {}", args.out.display()))?;
            println!("wrote {}/ca.pem and {} node certificates (node-N.pem, node-N.key)", args.out.display(), args.nodes);
            Ok(())
        }
        Command::Bench(BenchCommand::Step(args)) => cmd_bench_step(&args, threads),
        Command::Bench(BenchCommand::Allreduce(args)) => cmd_bench_allreduce(&args),
        Command::Bench(BenchCommand::Loader(args)) => cmd_bench_loader(&args),
        Command::Bench(BenchCommand::Link(args)) => cmd_bench_link(&args),
        Command::Worker(args) => cluster_cmds::cmd_worker(&args, sub("worker")),
        Command::Launch(args) => cluster_cmds::cmd_launch(&args),
    }
}

fn cmd_models(args: &ModelsArgs) -> Result<()> {
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

fn cmd_bench_step(args: &BenchStepArgs, threads: usize) -> Result<()> {
    let cfg = BenchStepConfig {
        model: args.model_name.clone(),
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
    .with_context(|| format!("benchmarking {} at batch {}", args.model_name, args.batch))?;
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

/// A flag SIGTERM and SIGINT set: the run checkpoints and stops.
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing the signal handler")?;
    }
    Ok(stop)
}

fn print_summary(summary: &ringsam_train::run::RunSummary) {
    println!("run directory: {}", summary.run_dir.display());
    println!("steps: {}  time: {:.1} s", summary.steps, summary.seconds);
    if let (Some(err), Some(loss)) = (summary.test_error_rate, summary.test_loss) {
        println!("test accuracy: {:.2}%  test error: {:.2}%  test loss: {loss:.4}", 100.0 * (1.0 - err), 100.0 * err);
    }
}

/// Starts the Prometheus endpoint when `--metrics_addr` is given.
fn serve_metrics(args: &TrainArgs, rank: usize, log: &dyn Fn(&str)) -> Result<()> {
    if let Some(addr) = args.metrics_addr {
        let bound = ringsam_train::telemetry::serve_prometheus(addr, rank)?;
        log(&format!("metrics on http://{bound}/metrics"));
    }
    Ok(())
}

fn cmd_train(args: &TrainArgs, matches: &ArgMatches) -> Result<()> {
    let cfg = resolve_train_config(args, matches)?;
    serve_metrics(args, 0, &|l| eprintln!("ringsam: {l}"))?;
    let opts = RunOptions { progress: std::io::stderr().is_terminal(), stop: stop_on_signals()? };
    let summary = train(&cfg, &opts, &mut |line| eprintln!("ringsam: {line}"))
        .with_context(|| format!("training {} on {}", cfg.model_name, cfg.dataset))?;
    print_summary(&summary);
    Ok(())
}

fn cmd_eval(args: &EvalArgs) -> Result<()> {
    let (cfg, r) = ringsam_train::eval::evaluate_checkpoint(&args.checkpoint, args.data_dir.clone(), args.batch_size)
        .with_context(|| format!("evaluating {}", args.checkpoint.display()))?;
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

fn cmd_bench_loader(args: &BenchLoaderArgs) -> Result<()> {
    use ringsam_data::shard_loader::{ShardLoader, ShardLoaderConfig};
    let mut shards = Vec::new();
    for p in &args.data {
        if p.is_dir() {
            shards.extend(ringsam_data::shards::layout::shard_files(p)?);
        } else {
            shards.push(p.clone());
        }
    }
    if shards.is_empty() {
        bail!("no shards (*.tar, *.tfrecord*) in {:?}", args.data);
    }
    let cfg = ShardLoaderConfig {
        shards,
        batch_size: args.batch,
        image_size: args.image_size,
        train: true,
        num_classes: args.num_classes,
        normalization: ringsam_data::normalize::Normalization::for_dataset("imagenet"),
        seed: 0,
        workers: args.workers,
        shuffle_buffer: 256,
        in_flight: 4 * args.batch.max(args.workers),
        rank: 0,
        world: 1,
        samples: None,
        start_sample: 0,
        decoder: ringsam_data::imagenet::JpegDecoder::parse(&args.decoder).map_err(anyhow::Error::msg)?,
        augment: ringsam_data::autoaugment::Augment::parse(&args.augment).map_err(anyhow::Error::msg)?,
        mixup_alpha: 0.0,
    };
    let t = std::time::Instant::now();
    let loader = ShardLoader::new(&cfg, 0, Arc::new(|line| eprintln!("ringsam: loader: {line}")))?;
    let stats = loader.stats.clone();
    let images: usize = loader.map(|b| b.n).sum();
    // A skipped sample's slot holds a copy of another: it was not decoded, so it must not count.
    let skipped = stats.skipped.load(std::sync::atomic::Ordering::Relaxed);
    if skipped > 0 {
        bail!("{skipped} of {images} samples could not be decoded (see above): no throughput to report");
    }
    let seconds = t.elapsed().as_secs_f64();
    let rate = images as f64 / seconds;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"workers": args.workers, "decoder": args.decoder, "augment": args.augment, "images": images, "seconds": seconds, "images_per_s": rate, "images_per_s_per_worker": rate / args.workers as f64})
        );
    } else {
        println!(
            "{images} images in {seconds:.2} s: {rate:.1} images/s with {} decoder(s), {:.1} per decoder (decode + crop + bicubic {}px + flip + normalise)",
            args.workers,
            rate / args.workers as f64,
            args.image_size
        );
    }
    Ok(())
}

fn cmd_bench_link(args: &BenchLinkArgs) -> Result<()> {
    use ringsam_collective::link::{receive_one, send_for};
    let report = match (args.listen, args.connect) {
        (Some(addr), _) => {
            let listener = std::net::TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
            receive_one(&listener).context("receiving")?
        }
        (None, Some(addr)) => {
            if !(args.seconds > 0.0 && args.seconds <= 3600.0) {
                bail!("--seconds {} must be in (0, 3600]", args.seconds);
            }
            send_for(addr, args.seconds, std::time::Duration::from_secs(30)).with_context(|| format!("sending to {addr}"))?
        }
        (None, None) => bail!("give --listen ADDR (receiver) or --connect ADDR (sender)"),
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({"bytes": report.bytes, "seconds": report.seconds, "gbit_s": report.gbit_s(), "gbyte_s": report.gbyte_s()})
        );
    } else {
        println!("{} bytes in {:.3} s: {:.3} Gbit/s ({:.4} GB/s)", report.bytes, report.seconds, report.gbit_s(), report.gbyte_s());
    }
    Ok(())
}

fn cmd_data_pack(args: &PackArgs) -> Result<()> {
    use ringsam_data::shards::{ShardFormat, pack_folder};
    let format = ShardFormat::parse(&args.format)?;
    let shards = pack_folder(&args.from, &args.to, format, args.shard_size, &args.prefix, 0)
        .with_context(|| format!("packing {} into {}", args.from.display(), args.to.display()))?;
    println!("wrote {} shard(s) to {}", shards.len(), args.to.display());
    Ok(())
}

fn cmd_data_inspect(args: &InspectArgs) -> Result<()> {
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

/// The cluster secret for TCP rings: `RINGSAM_CLUSTER_SECRET` (at least 16 bytes).
/// A random cluster secret (48 hex digits) for rings this command starts on loopback.
fn fresh_cluster_secret() -> Result<String> {
    let mut secret = [0u8; 24];
    getrandom::getrandom(&mut secret).map_err(|e| anyhow::anyhow!("drawing a cluster secret: {e}"))?;
    Ok(secret.iter().map(|b| format!("{b:02x}")).collect())
}

fn cluster_secret() -> Result<Vec<u8>> {
    match std::env::var("RINGSAM_CLUSTER_SECRET") {
        Ok(s) if s.len() >= 16 => Ok(s.into_bytes()),
        Ok(_) => Err(usage("RINGSAM_CLUSTER_SECRET must be at least 16 bytes")),
        Err(_) => {
            Err(usage("no cluster secret: set RINGSAM_CLUSTER_SECRET (at least 16 bytes) on every rank; without a secret there is no ring"))
        }
    }
}

/// Ring threads per rank: `asked` unless 0; for 0, when `ranks` ranks share this host, its
/// cores per rank, 1 to 4 (4 is the most that was measured).
fn ring_threads_for(asked: u64, ranks: usize) -> usize {
    if asked > 0 {
        return asked as usize;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / ranks.max(1)).clamp(1, 4)
}

/// The QUIC settings `bench allreduce` was asked for.
fn quic_tuning(args: &BenchAllreduceArgs) -> Result<ringsam_collective::quic::QuicTuning> {
    Ok(ringsam_collective::quic::QuicTuning {
        stream_window: args.quic_window,
        conn_window: args.quic_conn_window,
        udp_buffer: args.quic_udp_buffer,
        max_mtu: args.quic_mtu,
        congestion: ringsam_collective::quic::Congestion::parse(&args.quic_cc).map_err(anyhow::Error::msg).context("--quic-cc")?,
        ack_every: args.quic_ack_every,
        stripes: args.quic_stripes as usize,
    })
}

fn cmd_bench_allreduce(args: &BenchAllreduceArgs) -> Result<()> {
    use ringsam_collective::RingConfig;
    use ringsam_collective::bench::{BlockingRing, parse_sizes, run};
    let sizes = parse_sizes(&args.sizes).map_err(anyhow::Error::msg).context("--sizes")?;
    if args.nproc == 0 || args.iters == 0 || args.chunk == 0 {
        bail!("--nproc, --iters and --chunk must be at least 1");
    }
    if args.chunk > RingConfig::MAX_CHUNK {
        bail!("--chunk {}: at most {} values (a frame's length is a 32-bit byte count)", args.chunk, RingConfig::MAX_CHUNK);
    }
    let ring_cfg = |rank: usize, world: usize| RingConfig {
        chunk: args.chunk,
        peer_timeout: std::time::Duration::from_secs(args.timeout),
        ..RingConfig::new(rank, world)
    };
    let transports: Vec<&str> = args.transport.split(',').map(str::trim).collect();
    if let Some(t) = transports.iter().find(|t| !["tcp", "quic", "inproc"].contains(t)) {
        bail!("--transport {t:?}: expected tcp, quic or inproc (or a comma list)");
    }

    // Worker mode: this process is one rank of a ring; rank 0 reports.
    if let Some(rank) = args.rank {
        let [transport] = transports[..] else { bail!("--rank takes exactly one --transport (tcp or quic)") };
        let world = args.peers.len();
        if rank >= world || transport == "inproc" {
            bail!("--rank {rank} needs --transport tcp or quic and --peers listing every rank's address (rank indexes it)");
        }
        let (listen, next, timeout) = (args.peers[rank], args.peers[(rank + 1) % world], std::time::Duration::from_secs(args.timeout));
        // The launcher passes its own choice (cores per local rank); a rank started by hand is
        // alone on its host.
        let threads = ring_threads_for(args.ring_threads, 1);
        let runtime = if threads <= 1 {
            tokio::runtime::Builder::new_current_thread().enable_all().build()
        } else {
            tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
        }
        .context("starting the async runtime")?;
        let mut quic_links = None;
        let ring = if transport == "tcp" {
            let cfg = ringsam_collective::tcp::TcpConfig {
                ring: ring_cfg(rank, world),
                listen,
                next,
                secret: cluster_secret()?,
                connect_timeout: timeout,
            };
            runtime.block_on(ringsam_collective::tcp::connect(cfg)).with_context(|| format!("rank {rank}: forming the TCP ring"))?
        } else {
            use ringsam_collective::certs::{read_certs, read_key};
            let need =
                |p: &Option<PathBuf>, flag: &str| p.clone().ok_or_else(|| anyhow::anyhow!("--transport quic with --rank needs {flag}"));
            let ca = read_certs(&need(&args.ca, "--ca")?)?.remove(0);
            let cfg = ringsam_collective::quic::QuicConfig {
                ring: ring_cfg(rank, world),
                listen,
                next,
                ca,
                cert_chain: read_certs(&need(&args.cert, "--cert")?)?,
                key: read_key(&need(&args.key, "--key")?)?,
                connect_timeout: timeout,
                tuning: quic_tuning(args)?,
            };
            let (ring, links) = runtime
                .block_on(ringsam_collective::quic::connect_observed(cfg))
                .with_context(|| format!("rank {rank}: forming the QUIC ring"))?;
            quic_links = links;
            ring
        };
        let mut ar = BlockingRing { runtime, ring };
        let rows =
            run(&mut ar, rank, world, transport, &sizes, args.iters, args.inflight).with_context(|| format!("rank {rank}: all-reduce"))?;
        let BlockingRing { runtime, ring } = ar;
        if let (true, Some(links)) = (args.quic_stats, &quic_links) {
            // One write for the whole line: the ranks share the launcher's stderr, and eprintln!
            // writes a line in pieces, which other ranks' lines then split.
            use std::io::Write as _;
            let _ = std::io::stderr().write_all(format!("rank {rank}: QUIC to the next rank: {}\n", links.summary()).as_bytes());
        }
        runtime.block_on(ring.close());
        if rank == 0 {
            report_allreduce(args, &rows)?;
        }
        return Ok(());
    }

    // Launcher mode: every transport in turn, all ranks on this machine.
    let mut all = Vec::new();
    for t in transports {
        let rows = match t {
            "inproc" => {
                let rings = ringsam_collective::inproc::InprocRing::connect((0..args.nproc).map(|r| ring_cfg(r, args.nproc)).collect());
                let handles: Vec<_> = rings
                    .into_iter()
                    .enumerate()
                    .map(|(r, mut ring)| {
                        let (sizes, iters, world, inflight) = (sizes.clone(), args.iters, args.nproc, args.inflight);
                        std::thread::spawn(move || run(&mut ring, r, world, "inproc", &sizes, iters, inflight))
                    })
                    .collect();
                let mut first = None;
                for h in handles {
                    let rows = h.join().map_err(|_| anyhow::anyhow!("a rank thread panicked"))?.context("all-reduce")?;
                    first.get_or_insert(rows);
                }
                first.unwrap_or_default()
            }
            _ => launch_local_ranks(args, t)?,
        };
        all.extend(rows);
    }
    report_allreduce(args, &all)
}

/// Starts `--nproc` ranks of `transport` as local processes on loopback and returns rank 0's
/// rows: a fresh secret (TCP, through the environment) or a fresh CA and node certificates
/// (QUIC, in a private temporary directory).
fn launch_local_ranks(args: &BenchAllreduceArgs, transport: &str) -> Result<Vec<ringsam_collective::bench::BenchRow>> {
    let ports: Vec<std::net::SocketAddr> = if transport == "tcp" {
        (0..args.nproc).map(|_| std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr())).collect::<std::io::Result<_>>()
    } else {
        (0..args.nproc).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").and_then(|l| l.local_addr())).collect::<std::io::Result<_>>()
    }
    .context("finding free loopback ports")?;
    // A private directory (mode 0700, an unpredictable name), removed when this function
    // returns, whether the ranks succeeded or not.
    let certs = tempfile::Builder::new().prefix("ringsam-certs-").tempdir().context("making a directory for ephemeral certificates")?;
    let certs_dir = certs.path();
    if transport == "quic" {
        ringsam_collective::certs::write_dev_certs(certs_dir, args.nproc).context("making ephemeral certificates")?;
    }
    let secret = fresh_cluster_secret()?;
    let peers = ports.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
    let exe = std::env::current_exe().context("locating the ringsam binary")?;
    let mut children = Vec::new();
    for r in 0..args.nproc {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["bench", "allreduce", "--transport", transport, "--sizes", &args.sizes, "--iters", &args.iters.to_string(), "--json"])
            .args(["--chunk", &args.chunk.to_string(), "--timeout", &args.timeout.to_string(), "--rank", &r.to_string(), "--peers", &peers])
            .args(["--quic-window", &args.quic_window.to_string(), "--quic-conn-window", &args.quic_conn_window.to_string()])
            .args([
                "--quic-udp-buffer",
                &args.quic_udp_buffer.to_string(),
                "--quic-cc",
                &args.quic_cc,
                "--inflight",
                &args.inflight.to_string(),
                "--ring-threads",
                &ring_threads_for(args.ring_threads, args.nproc).to_string(),
                "--quic-stripes",
                &args.quic_stripes.to_string(),
            ])
            .args(args.quic_ack_every.map(|n| ["--quic-ack-every".to_string(), n.to_string()]).into_iter().flatten())
            .args(args.quic_mtu.map(|m| ["--quic-mtu".to_string(), m.to_string()]).into_iter().flatten())
            .args(args.quic_stats.then_some("--quic-stats"))
            .env("RINGSAM_CLUSTER_SECRET", &secret)
            .env("RINGSAM_THREADS", "1")
            .stdout(if r == 0 { std::process::Stdio::piped() } else { std::process::Stdio::null() });
        if transport == "quic" {
            let f = |name: String| certs_dir.join(name).display().to_string();
            cmd.args(["--ca", &f("ca.pem".into()), "--cert", &f(format!("node-{r}.pem")), "--key", &f(format!("node-{r}.key"))]);
        }
        children.push(cmd.spawn().with_context(|| format!("starting rank {r}"))?);
    }
    let mut failed = Vec::new();
    let mut rows = Vec::new();
    for (r, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().with_context(|| format!("waiting for rank {r}"))?;
        if !out.status.success() {
            failed.push(r);
        } else if r == 0 {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                rows.push(serde_json::from_str(line).with_context(|| format!("rank 0 printed {line:?}"))?);
            }
        }
    }
    if !failed.is_empty() {
        bail!("{transport}: rank(s) {failed:?} failed (see their messages above)");
    }
    Ok(rows)
}

fn report_allreduce(args: &BenchAllreduceArgs, rows: &[ringsam_collective::bench::BenchRow]) -> Result<()> {
    if args.json {
        for r in rows {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        let largest = rows.iter().map(|r| r.bytes).max().unwrap_or(0);
        let memcpy = ringsam_collective::bench::memcpy_gbs(largest.max(4));
        println!(
            "# ringsam all-reduce: chunk {} values, {} iterations per size; single-thread memcpy of {largest} bytes: {memcpy:.2} GB/s",
            args.chunk, args.iters
        );
        println!(
            "{:>8} {:>6} {:>12} {:>12} {:>12} {:>10} {:>10} {:>8} {:>6}",
            "transport", "nproc", "size(B)", "count", "time(us)", "algbw", "busbw", "/memcpy", "ok"
        );
        for r in rows {
            println!(
                "{:>8} {:>6} {:>12} {:>12} {:>12.1} {:>10.3} {:>10.3} {:>8.3} {:>6}",
                r.transport,
                r.nproc,
                r.bytes,
                r.count,
                r.time_us,
                r.algbw_gbs,
                r.busbw_gbs,
                r.busbw_gbs / memcpy,
                if r.ok { "yes" } else { "WRONG" }
            );
        }
    }
    if let Some(path) = &args.plot {
        ringsam_collective::plot::busbw_png(path, rows)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("plotting to {}", path.display()))?;
        eprintln!("ringsam: wrote {}", path.display());
    }
    if rows.iter().any(|r| !r.ok) {
        bail!("some all-reduce results were wrong (see the ok column)");
    }
    Ok(())
}
