//! `ringsam bench …`: the flags, and the calls into `ringsam-bench` that do the measuring.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use clap::ValueEnum;
use ringsam_train::config::{JpegDecoderName, MAX_TIMEOUT_SECONDS};

use crate::process::{self, usage};

/// The smallest QUIC window or buffer accepted: one full-size datagram (a zero window never
/// lets a byte through, and the ring would only fail later as "not formed").
const MIN_QUIC_WINDOW: i64 = 65_536;

/// `bench allreduce --transport`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum BenchTransport {
    /// TCP with the HMAC handshake.
    Tcp,
    /// QUIC with mutual TLS.
    Quic,
    /// In-process channels between threads (no sockets).
    Inproc,
    /// The socket transports' driver with in-memory pipes between threads: how a worker's local
    /// replicas meet.
    Pipe,
}

impl BenchTransport {
    fn as_str(self) -> &'static str {
        match self {
            BenchTransport::Tcp => "tcp",
            BenchTransport::Quic => "quic",
            BenchTransport::Inproc => "inproc",
            BenchTransport::Pipe => "pipe",
        }
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum BenchCommand {
    /// Time SGD and SAM training steps on synthetic data.
    Step(BenchStepArgs),
    /// All-reduce bandwidth over the ring (nccl-tests style: size, time, algbw, busbw).
    Allreduce(Box<BenchAllreduceArgs>),
    /// Loader throughput: decode + random crop + flip (+ resize) of every sample in some shards.
    Loader(BenchLoaderArgs),
    /// Single-stream TCP throughput between two hosts: the line rate the ring is compared with.
    Link(BenchLinkArgs),
    /// One core sealing and opening QUIC packets with each TLS library and cipher suite.
    Cipher(BenchCipherArgs),
    /// Elastic recovery: kill → first step of the next generation, from memory and from disk.
    Recovery(BenchRecoveryArgs),
    /// cuDNN's convolutions on the zoo's heavy shapes in the engine's layout and in NCHW and
    /// NHWC (a GPU; the device layout's measurement).
    Conv(crate::bench_conv::BenchConvArgs),
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub(crate) struct BenchRecoveryArgs {
    /// Local elastic workers.
    #[arg(long, default_value_t = 4)]
    pub(crate) nproc: usize,
    /// Model (see `ringsam models`).
    #[arg(long, visible_alias = "model", default_value = "WideResnet16x4")]
    pub(crate) model_name: String,
    /// Global batch (a multiple of --nproc).
    #[arg(long, default_value_t = 64)]
    pub(crate) batch_size: usize,
    /// Steps before the first fault; the step time is their median.
    #[arg(long, default_value_t = 4)]
    pub(crate) warmup_steps: u64,
    /// Heartbeat period in seconds (as `ringsam worker --heartbeat_seconds`).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) heartbeat_seconds: f64,
    /// Seconds between the checkpoints the disk path resumes from.
    #[arg(long, default_value_t = 5)]
    pub(crate) save_progress_seconds: u64,
    /// Keep the workers' logs and run directory here (default: a temporary directory, removed).
    #[arg(long)]
    pub(crate) work_dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn cmd_bench_recovery(args: &BenchRecoveryArgs) -> Result<()> {
    if args.nproc < 3 {
        return Err(usage("--nproc must be at least 3 (two workers cannot survive a loss: a survivor is no majority)"));
    }
    if !(0.05..=60.0).contains(&args.heartbeat_seconds) {
        return Err(usage(format!("--heartbeat_seconds {} must be in [0.05, 60]", args.heartbeat_seconds)));
    }
    let cfg = ringsam_bench::recovery::RecoveryBench {
        exe: std::env::current_exe().context("locating the ringsam binary")?,
        nproc: args.nproc,
        model: args.model_name.clone(),
        batch_size: args.batch_size,
        warmup_steps: args.warmup_steps,
        heartbeat_seconds: args.heartbeat_seconds,
        save_progress_seconds: args.save_progress_seconds,
        timeout: Duration::from_secs(600),
        work_dir: args.work_dir.clone(),
    };
    let r = ringsam_bench::recovery::run(&cfg, &mut |line| eprintln!("ringsam: bench recovery: {line}")).map_err(anyhow::Error::msg)?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("{} workers of {} at batch {}, heartbeat {} s", args.nproc, args.model_name, args.batch_size, args.heartbeat_seconds);
        println!("  step, no fault            {:>7.2} s", r.step_seconds);
        println!(
            "  kill one → next step      {:>7.2} s  (state from memory; {:.2} steps)",
            r.memory_seconds,
            r.memory_seconds / r.step_seconds
        );
        println!("  kill all → next step      {:>7.2} s  (state from disk, {} steps redone)", r.disk_seconds, r.disk_redone_steps);
    }
    Ok(())
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub(crate) struct BenchLinkArgs {
    /// Receive one transfer on this address and print its rate.
    #[arg(long, conflicts_with = "connect")]
    pub(crate) listen: Option<std::net::SocketAddr>,
    /// Send to this address and print the receiver's measurement.
    #[arg(long)]
    pub(crate) connect: Option<std::net::SocketAddr>,
    /// Seconds to send.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) seconds: f64,
    /// Print one JSON object (bytes, seconds, gbit_s, gbyte_s).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub(crate) struct BenchCipherArgs {
    /// UDP payload bytes per packet: 65000 is a loopback ring's, 1452 an Ethernet path's (the
    /// sealed part is that less QUIC's short header and tag, 29 bytes).
    #[arg(long, default_value_t = 65000, value_parser = clap::value_parser!(u32).range(64..=65000))]
    pub(crate) packet: u32,
    /// MiB to seal and open per library and suite (at least one pass over the 64 MiB of packets).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub(crate) mib: u64,
    /// Print one JSON object per row.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub(crate) struct BenchLoaderArgs {
    /// A directory of shards (*.tar, *.tfrecord*), or shard files.
    #[arg(long, required = true, num_args = 1..)]
    pub(crate) data: Vec<PathBuf>,
    /// Decoder threads.
    #[arg(long, visible_alias = "workers", default_value_t = 1)]
    pub(crate) loader_workers: usize,
    /// Output side in pixels.
    #[arg(long, default_value_t = 224)]
    pub(crate) image_size: usize,
    /// Images per batch.
    #[arg(long, visible_alias = "batch", default_value_t = 32)]
    pub(crate) batch_size: usize,
    /// Classes the labels must fall below.
    #[arg(long, default_value_t = 1000)]
    pub(crate) num_classes: usize,
    /// JPEG decoder (turbo and turbo-reduced need --features turbojpeg).
    #[arg(long, visible_alias = "decoder", value_enum, default_value_t = JpegDecoderName::Zune)]
    pub(crate) jpeg_decoder: JpegDecoderName,
    /// Per-image augmentation after the crop: none, autoaugment (ImageNet policy) or randaugment (N 2, M 9).
    #[arg(long, default_value = "none")]
    pub(crate) augment: String,
    /// Print one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub(crate) struct BenchAllreduceArgs {
    /// Ranks: local processes (tcp, quic) or threads (inproc, pipe) started by this command.
    #[arg(long, default_value_t = 4)]
    pub(crate) nproc: usize,
    /// tcp, quic, inproc or pipe, or a comma list to compare them in one run.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "tcp")]
    pub(crate) transport: Vec<BenchTransport>,
    /// Sizes in bytes: LOW..HIGH (doubling) or a comma list; K, M, G are powers of 1024.
    #[arg(long, default_value = "1K..64M")]
    pub(crate) sizes: String,
    /// Timed operations per size (after one warm-up).
    #[arg(long, default_value_t = 5)]
    pub(crate) iters: usize,
    /// Chunk size in f32 values (the unit frames carry and pipelining works at).
    #[arg(long, default_value_t = 262144)]
    pub(crate) chunk: usize,
    /// Seconds to form the ring and to wait on a silent peer (1 to a week).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECONDS))]
    pub(crate) timeout: u64,
    /// Join an existing ring as this rank instead of starting local processes (needs --peers).
    #[arg(long)]
    pub(crate) rank: Option<usize>,
    /// Every rank's listen address, in rank order (with --rank).
    #[arg(long, value_delimiter = ',')]
    pub(crate) peers: Vec<std::net::SocketAddr>,
    /// Cluster CA certificate (QUIC, with --rank).
    #[arg(long)]
    pub(crate) ca: Option<PathBuf>,
    /// This node's certificate (QUIC, with --rank).
    #[arg(long)]
    pub(crate) cert: Option<PathBuf>,
    /// This node's private key (QUIC, with --rank).
    #[arg(long)]
    pub(crate) key: Option<PathBuf>,
    /// Write a PNG of busbw against size (one line per transport).
    #[arg(long)]
    pub(crate) plot: Option<PathBuf>,
    /// QUIC per-stream flow-control window in bytes. Larger than half the UDP receive buffer
    /// (4 MiB here), bursts overflow it while a receiver waits for a core; larger than the link's
    /// queue, the sender keeps that queue full (docs/BENCHMARKS.md, "The ring on shaped links").
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(MIN_QUIC_WINDOW..))]
    pub(crate) quic_window: u32,
    /// QUIC connection flow-control window and send buffer in bytes.
    #[arg(long, default_value_t = 8 << 20, value_parser = clap::value_parser!(u32).range(MIN_QUIC_WINDOW..))]
    pub(crate) quic_conn_window: u32,
    /// QUIC UDP socket buffer size to ask the OS for, each way, in bytes.
    #[arg(long, default_value_t = 4 << 20, value_parser = clap::value_parser!(u64).range(MIN_QUIC_WINDOW as u64..=1 << 30))]
    pub(crate) quic_udp_buffer: u64,
    /// QUIC congestion controller: cubic, newreno or bbr.
    #[arg(long, default_value = "cubic")]
    pub(crate) quic_cc: String,
    /// Ask QUIC peers to acknowledge every N packets (default: QUIC's every second packet).
    #[arg(long)]
    pub(crate) quic_ack_every: Option<u32>,
    /// The library that runs QUIC's TLS cipher: auto (the one with the wider AES-GCM on this CPU;
    /// `bench cipher` measures both), aws-lc-rs or ring (docs/BENCHMARKS.md, "Cipher").
    #[arg(long, default_value = "auto", value_parser = ringsam_collective::quic::CryptoLib::parse)]
    pub(crate) quic_crypto: ringsam_collective::quic::CryptoLib,
    /// The TLS 1.3 cipher suite QUIC offers first: aes-128-gcm, aes-256-gcm or chacha20-poly1305
    /// (and unsealed-benchmark-only in a build with the `unsealed-quic-bench` feature: no packet
    /// protection, for measuring what it costs).
    #[arg(long, default_value = "aes-128-gcm", value_parser = ringsam_collective::quic::Cipher::parse)]
    pub(crate) quic_cipher: ringsam_collective::quic::Cipher,
    /// What drives QUIC's connections: direct (a thread per neighbour over quinn-proto, handing
    /// the ring whole frames; Linux only, the default there) or quinn (its async endpoint and
    /// connection tasks).
    #[arg(long, default_value_t = ringsam_collective::quic::QuicDriver::default(), value_parser = ringsam_collective::quic::QuicDriver::parse)]
    pub(crate) quic_driver: ringsam_collective::quic::QuicDriver,
    /// Print each rank's QUIC path statistics (RTT, congestion window, losses) at the end.
    #[arg(long)]
    pub(crate) quic_stats: bool,
    /// All-reduces in flight per timed operation: the buffer is cut into this many equal parts,
    /// submitted together (as gradient buckets are).
    #[arg(long, default_value_t = 1)]
    pub(crate) inflight: usize,
    /// Largest UDP payload the network carries, for QUIC's MTU discovery (default: 65000 on
    /// loopback, 1452 otherwise; 8952 suits a 9000-byte jumbo-frame network).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1200..=65000))]
    pub(crate) quic_mtu: Option<u16>,
    /// QUIC connections per ring neighbour, chunks striped over them (quinn's driver only:
    /// --quic_driver quinn): each connection's crypto runs on one task, so stripes (with
    /// --ring-threads above 1) spread it over cores.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub(crate) quic_stripes: u64,
    /// Threads each rank's ring runs on (socket reads, reductions, writes; QUIC's crypto with
    /// quinn's driver, where the direct one has two threads of its own). 0
    /// (default): the cores this host has per local rank, 1 to 4 (one rank per host with
    /// --rank); docs/BENCHMARKS.md has what each count measured.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=64))]
    pub(crate) ring_threads: u64,
    /// Add CPU columns to the table: CPU time (user + sys) per operation summed over every
    /// rank this command started (one rank's own with --rank), and that per byte of the buffer.
    /// JSON rows always carry it (cpu_s, cpu_ranks).
    #[arg(long)]
    pub(crate) cpu: bool,
    /// Print one JSON object per size.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub(crate) struct BenchStepArgs {
    /// Model (see `ringsam models`).
    #[arg(long, visible_alias = "model", default_value = "WideResnet16x4")]
    pub(crate) model_name: String,
    /// Images per step.
    #[arg(long, visible_alias = "batch", default_value_t = 64)]
    pub(crate) batch_size: usize,
    /// Square image side.
    #[arg(long, default_value_t = 32)]
    pub(crate) image_size: usize,
    /// Classes.
    #[arg(long, default_value_t = 10)]
    pub(crate) num_classes: usize,
    /// Timed steps per variant (after one warm-up step).
    #[arg(long, default_value_t = 5)]
    pub(crate) iters: usize,
    /// SAM radius for the SAM variant.
    #[arg(long, default_value_t = 0.05)]
    pub(crate) rho: f32,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub(crate) device: String,
    /// A GPU's GEMMs and im2col convolutions: fp32; tf32 (tensor cores; the default on a GPU,
    /// as PyTorch's for convolutions); or bf16 (operands rounded to BF16, FP32 sums, tensors kept
    /// in FP32; with --conv_impl gemm). The CPU engine computes in fp32.
    #[arg(long)]
    pub(crate) precision: Option<String>,
    /// A GPU's convolutions: gemm (im2col and cuBLAS; the default, checked on a GPU) or cudnn
    /// (not yet run on a GPU).
    #[arg(long, value_name = "IMPL")]
    pub(crate) conv_impl: Option<String>,
    /// After the timed steps, profile one SGD and one SAM step: on a device, time in each kernel
    /// and GEMM shape (CUDA events); on the CPU, wall time in each kernel by layer kind and pass;
    /// their share of the step's wall time, and rates in TFLOP/s where counted.
    #[arg(long)]
    pub(crate) profile: bool,
    /// Cheaper SAM schedules timed per step beside SGD and SAM, comma-separated:
    /// `sam_every:K`, `looksam:K` (α 0.7), or `none` (default on a GPU: sam_every:2,sam_every:5).
    #[arg(long, default_value = "sam_every:2,sam_every:5,looksam:5")]
    pub(crate) cheaper: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `--cheaper`'s list (see its help).
fn parse_cheaper(list: &str) -> Result<Vec<ringsam_train::cheap_sam::SamSchedule>> {
    use ringsam_train::cheap_sam::SamSchedule;
    if list == "none" {
        return Ok(Vec::new());
    }
    list.split(',')
        .map(|item| {
            let bad = || usage(format!("--cheaper {item}: expected sam_every:K or looksam:K with K from 2 to 1000"));
            let (kind, k) = item.split_once(':').ok_or_else(bad)?;
            let k: u64 = k.parse().ok().filter(|&k| (2..=1000).contains(&k)).ok_or_else(bad)?;
            match kind {
                "sam_every" => Ok(SamSchedule::Every(k)),
                "looksam" => Ok(SamSchedule::LookSam { k, alpha: 0.7 }),
                _ => Err(bad()),
            }
        })
        .collect()
}

pub(crate) fn cmd_bench_step(args: &BenchStepArgs, threads: usize) -> Result<()> {
    // The flag's value first: a misspelt choice is named before the device is looked at.
    let (precision, conv_impl) = crate::train_args::gpu_choices(&args.device, args.precision.as_deref(), args.conv_impl.as_deref())?;
    let cfg = ringsam_bench::step::BenchStepConfig {
        model: args.model_name.clone(),
        batch: args.batch_size,
        image_size: args.image_size,
        num_classes: args.num_classes,
        iters: args.iters,
        rho: args.rho,
        device: args.device.parse().context("--device")?,
        precision,
        conv_impl,
        profile: args.profile,
        cheaper: {
            let given = parse_cheaper(&args.cheaper)?;
            let on_gpu = args.device != "cpu";
            let defaulted = args.cheaper == "sam_every:2,sam_every:5,looksam:5";
            let looksam = |s: &ringsam_train::cheap_sam::SamSchedule| matches!(s, ringsam_train::cheap_sam::SamSchedule::LookSam { .. });
            if on_gpu && !defaulted && given.iter().any(looksam) {
                return Err(usage(format!("--cheaper: LookSAM is not on the device step yet (--device {})", args.device)));
            }
            // LookSAM is not on the device step yet: left out of the default list there.
            given.into_iter().filter(|s| !(on_gpu && looksam(s))).collect()
        },
    };
    let show_progress = std::io::stderr().is_terminal() && !args.json;
    let report = ringsam_bench::step::run(&cfg, |line| {
        if show_progress {
            eprint!("\r\x1b[2K{line}");
        }
    })
    .with_context(|| format!("benchmarking {} at batch {}", args.model_name, args.batch_size))?;
    if show_progress {
        eprintln!();
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "model {} batch {} image {}x{} on {} ({}) threads {threads} gemm {} conv {}",
            report.model,
            report.batch,
            report.image_size,
            report.image_size,
            report.device,
            report.precision,
            if report.device == "cpu" { ringsam_tensor::gemm::backend_name() } else { "cuBLAS" },
            report.conv
        );
        for refused in &report.conv_refused {
            println!("  by im2col, refused by the library: {refused}");
        }
        println!(
            "  SGD step  {:>9.1} ms  {:>8.1} images/s  {:>6.1} GFLOP/s",
            report.sgd_ms, report.sgd_images_per_s, report.sgd_gflops_per_s
        );
        println!("  SAM step  {:>9.1} ms  {:>8.1} images/s", report.sam_ms, report.sam_images_per_s);
        println!("  SAM/SGD   {:>9.2}x   forward {:.2} GMAC per step", report.sam_over_sgd, report.forward_gmacs);
        for c in &report.cheaper {
            println!("  {:<14} {:>9.1} ms per step  {:.2}x SGD  {:.2}x SAM", c.variant, c.ms_per_step, c.over_sgd, c.over_sam);
        }
        if let (Some(peak), Some(reserved)) = (report.peak_memory_mb, report.peak_reserved_mb) {
            println!("  {} memory: peak {peak:.1} MB in use, {reserved:.1} MB reserved", report.device);
        }
        for (kind, table) in ["SGD", "SAM"].iter().zip(report.profile.iter().flatten()) {
            println!("  profiled {kind} step:\n{table}");
        }
    }
    Ok(())
}

pub(crate) fn cmd_bench_loader(args: &BenchLoaderArgs) -> Result<()> {
    use ringsam_bench::loader::{LoaderBench, run};
    let bench = LoaderBench {
        data: args.data.clone(),
        workers: args.loader_workers,
        image_size: args.image_size,
        batch: args.batch_size,
        num_classes: args.num_classes,
        decoder: ringsam_data::imagenet::JpegDecoder::parse(args.jpeg_decoder.as_str())
            .map_err(|e| usage(format!("--jpeg_decoder: {e}")))?,
        augment: ringsam_data::autoaugment::Augment::parse(&args.augment).map_err(|e| usage(format!("--augment: {e}")))?,
    };
    let r = run(&bench, std::sync::Arc::new(|line| eprintln!("ringsam: loader: {line}"))).context("benchmarking the loader")?;
    if args.json {
        let row = serde_json::json!({"workers": args.loader_workers, "decoder": args.jpeg_decoder.as_str(), "augment": args.augment, "images": r.images, "seconds": r.seconds, "images_per_s": r.images_per_s, "images_per_s_per_worker": r.images_per_s_per_worker});
        println!("{row}");
    } else {
        println!(
            "{} images in {:.2} s: {:.1} images/s with {} decoder(s), {:.1} per decoder (decode + crop + bicubic {}px + flip + normalise)",
            r.images, r.seconds, r.images_per_s, args.loader_workers, r.images_per_s_per_worker, args.image_size
        );
    }
    Ok(())
}

pub(crate) fn cmd_bench_link(args: &BenchLinkArgs) -> Result<()> {
    use ringsam_bench::link::{receive_one, send_for};
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

pub(crate) fn cmd_bench_cipher(args: &BenchCipherArgs) -> Result<()> {
    use ringsam_collective::quic_crypto::{AesFeatures, Cipher, CryptoLib};
    let cpu = AesFeatures::here();
    let auto = CryptoLib::fastest_for(cpu);
    if !args.json {
        println!(
            "# one core, {} MiB (at least 64) of {}-byte UDP payloads; this CPU: {}; --quic_crypto auto picks {}",
            args.mib,
            args.packet,
            cpu.describe(),
            auto.name()
        );
        println!("{:>10} {:>18} {:>12} {:>12} {:>16}", "library", "cipher", "seal GB/s", "open GB/s", "seal+open ns/B");
    }
    for cipher in Cipher::ALL {
        for lib in [CryptoLib::AwsLc, CryptoLib::Ring] {
            let row =
                ringsam_bench::cipher::measure(lib, cipher, ringsam_bench::cipher::sealed_bytes(args.packet as usize), args.mib << 20)
                    .map_err(anyhow::Error::msg)?;
            if args.json {
                let fields = serde_json::json!({"library": lib.name(), "cipher": cipher.name(), "packet": args.packet, "sealed": row.packet,
                    "seal_gb_s": row.seal_gb_s, "open_gb_s": row.open_gb_s, "ns_per_byte": row.ns_per_byte(), "auto": lib == auto,
                    "cpu": cpu.describe()});
                println!("{fields}");
            } else {
                println!(
                    "{:>10} {:>18} {:>12.2} {:>12.2} {:>16.3}",
                    lib.name(),
                    cipher.name(),
                    row.seal_gb_s,
                    row.open_gb_s,
                    row.ns_per_byte()
                );
            }
        }
    }
    Ok(())
}

pub(crate) fn cmd_bench_allreduce(args: &BenchAllreduceArgs) -> Result<()> {
    use ringsam_bench::allreduce::parse_sizes;
    use ringsam_bench::allreduce_ranks::{AllreduceBench, run_local, run_rank};
    use ringsam_collective::quic::{Congestion, QuicTuning};
    use ringsam_collective::transport::Transport;
    if args.nproc == 0 || args.iters == 0 || args.chunk == 0 {
        return Err(usage("--nproc, --iters and --chunk must be at least 1"));
    }
    if args.chunk > ringsam_collective::RingConfig::MAX_CHUNK {
        let max = ringsam_collective::RingConfig::MAX_CHUNK;
        return Err(usage(format!("--chunk {}: at most {max} values (a frame's length is a 32-bit byte count)", args.chunk)));
    }
    let transports: Vec<&str> = args.transport.iter().map(|t| t.as_str()).collect();
    let bench = AllreduceBench {
        sizes_spec: args.sizes.clone(),
        sizes: parse_sizes(&args.sizes).map_err(|e| usage(format!("--sizes: {e}")))?,
        iters: args.iters,
        chunk: args.chunk,
        timeout: std::time::Duration::from_secs(args.timeout),
        inflight: args.inflight,
        quic: QuicTuning {
            stream_window: args.quic_window,
            conn_window: args.quic_conn_window,
            udp_buffer: args.quic_udp_buffer as usize,
            max_mtu: args.quic_mtu,
            congestion: Congestion::parse(&args.quic_cc).map_err(|e| usage(format!("--quic_cc: {e}")))?,
            ack_every: args.quic_ack_every,
            stripes: args.quic_stripes as usize,
            crypto: args.quic_crypto,
            cipher: args.quic_cipher,
            driver: args.quic_driver,
        },
        quic_cc: args.quic_cc.clone(),
        quic_stats: args.quic_stats,
        ring_threads: args.ring_threads,
        show_cpu: args.cpu,
    };
    // Every local rank holds its buffer and a reference copy of the largest size (launcher mode:
    // all of them on this machine); refuse what cannot fit rather than abort mid-run.
    let largest = bench.sizes.iter().copied().max().unwrap_or(0) as u64;
    let ranks_here = if args.rank.is_some() { 1 } else { args.nproc as u64 };
    if let Some(limit) = process::available_memory()
        && largest.saturating_mul(3).saturating_mul(ranks_here) > limit
    {
        return Err(usage(format!(
            "--sizes: {ranks_here} rank(s) of {largest} bytes need about {} GiB here, more than the {} GiB available",
            largest.saturating_mul(3).saturating_mul(ranks_here) >> 30,
            limit >> 30
        )));
    }
    // Rank mode: this process is one rank of a ring; rank 0 reports.
    if let Some(rank) = args.rank {
        let [name] = transports[..] else { return Err(usage("--rank takes exactly one --transport (tcp or quic)")) };
        if rank >= args.peers.len() || !matches!(name, "tcp" | "quic") {
            return Err(usage(format!(
                "--rank {rank} needs --transport tcp or quic and --peers listing every rank's address (rank indexes it)"
            )));
        }
        let transport = if name == "tcp" {
            Transport::Tcp { secret: process::cluster_secret()? }
        } else {
            let need =
                |p: &Option<PathBuf>, flag: &str| p.clone().ok_or_else(|| usage(format!("--transport quic with --rank needs {flag}")));
            Transport::Quic {
                ca: need(&args.ca, "--ca")?,
                cert: need(&args.cert, "--cert")?,
                key: need(&args.key, "--key")?,
                tuning: bench.quic,
            }
        };
        let refusals = process::refusal_log(format!("rank {rank}"));
        let (rows, stats) = run_rank(&bench, rank, &args.peers, &transport, Some(refusals)).map_err(anyhow::Error::msg)?;
        if let Some(line) = stats {
            // One write for the whole line: the ranks share the launcher's stderr, and eprintln!
            // writes a line in pieces, which other ranks' lines then split.
            use std::io::Write as _;
            let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
        }
        // Rank 0 reports; with --json every rank prints its rows, for its CPU time (the local
        // launcher adds them up).
        return if rank == 0 || args.json { report_allreduce(args, &bench, &rows) } else { Ok(()) };
    }
    // Launcher mode: every transport in turn, all ranks on this machine.
    let exe = std::env::current_exe().context("locating the ringsam binary")?;
    let stop = process::stop_on_signals()?;
    let mut all = Vec::new();
    for t in transports {
        all.extend(run_local(&bench, t, args.nproc, &exe, &stop).map_err(anyhow::Error::msg)?);
    }
    report_allreduce(args, &bench, &all)
}

pub(crate) fn report_allreduce(
    args: &BenchAllreduceArgs,
    bench: &ringsam_bench::allreduce_ranks::AllreduceBench,
    rows: &[ringsam_bench::allreduce::BenchRow],
) -> Result<()> {
    if args.json {
        for r in rows {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        print!("{}", ringsam_bench::allreduce_ranks::table(bench, rows));
    }
    if let Some(path) = &args.plot {
        ringsam_bench::plot::busbw_png(path, rows)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("plotting to {}", path.display()))?;
        eprintln!("ringsam: wrote {}", path.display());
    }
    if rows.iter().any(|r| !r.ok) {
        bail!("some all-reduce results were wrong (see the ok column)");
    }
    Ok(())
}
