//! `ringsam experiment`: grids of training runs compared (ringsam_experiment).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, FromArgMatches, Subcommand};

use crate::process::{available_memory, stop_on_signals, usage};
use crate::train_args::{TrainArgs, resolve_train_config};
use ringsam_experiment::method::Method;
use ringsam_experiment::{Experiment, Kind};

#[derive(Subcommand, Debug)]
pub(crate) enum ExperimentCommand {
    /// The paper's label-noise experiment: SGD against SAM (and cheaper SAM) on training labels
    /// with symmetric noise, accuracy on the clean test labels; a table, results.csv and
    /// label_noise.png.
    LabelNoise(ExperimentArgs),
    /// Cheaper SAM: SGD, SAM, SAM every 2 and 5 steps, and LookSAM with k = 5 on clean labels,
    /// accuracy against time per step; a table, results.csv and cheap_sam.png.
    CheapSam(ExperimentArgs),
}

/// The experiment's own flags, in any order among `ringsam train` flags.
#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub(crate) struct ExperimentArgs {
    /// Label-noise levels, comma-separated (default: 0.2,0.4,0.6,0.8 for label-noise, 0 for
    /// cheap-sam).
    #[arg(long)]
    pub(crate) noise: Option<String>,
    /// Methods, comma-separated: sgd, sam, sam_every:K, looksam:K (default: sgd,sam for
    /// label-noise; sgd,sam,sam_every:2,sam_every:5,looksam:5 for cheap-sam).
    #[arg(long)]
    pub(crate) methods: Option<String>,
    /// Seeds per cell: --run_seed and the ones after it.
    #[arg(long, default_value_t = 3)]
    pub(crate) seeds: u64,
    /// The experiment's directory: one sub-directory per cell, results.csv, the figure
    /// (default: runs/label-noise or runs/cheap-sam).
    #[arg(long)]
    pub(crate) output_dir: Option<PathBuf>,
    /// Also measure every cell's final weights as `ringsam sharpness` does (the train flags'
    /// --sharpness_* settings): λ1, λ1/λ5 and m-sharpness in the table and sharpness.png.
    #[arg(long)]
    pub(crate) sharpness: bool,
    /// `ringsam train` flags for every cell (with no --dataset and no --config, the quickstart
    /// on the bundled digits); the SAM-family methods use its --sam_rho.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "TRAIN_FLAGS")]
    pub(crate) train_flags: Vec<String>,
}

const OWN_FLAGS: [&str; 4] = ["--noise", "--methods", "--seeds", "--output_dir"];

/// Moves the experiment's own flags that clap left among the train flags (they came after a
/// train flag) back to the experiment's.
fn take_own_flags(args: &mut ExperimentArgs) -> Result<()> {
    let mut rest = Vec::new();
    let mut words = std::mem::take(&mut args.train_flags).into_iter();
    while let Some(w) = words.next() {
        let (name, inline) = match w.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (w.clone(), None),
        };
        if name == "--sharpness" && inline.is_none() {
            args.sharpness = true;
            continue;
        }
        if !OWN_FLAGS.contains(&name.as_str()) {
            rest.push(w);
            continue;
        }
        let value = inline.or_else(|| words.next()).ok_or_else(|| usage(format!("{name} needs a value")))?;
        match name.as_str() {
            "--noise" => args.noise = Some(value),
            "--methods" => args.methods = Some(value),
            "--seeds" => args.seeds = value.parse().map_err(|_| usage(format!("--seeds {value}: expected a number")))?,
            _ => args.output_dir = Some(value.into()),
        }
    }
    args.train_flags = rest;
    Ok(())
}

pub(crate) fn cmd_experiment(command: ExperimentCommand) -> Result<()> {
    let (kind, mut args) = match command {
        ExperimentCommand::LabelNoise(a) => (Kind::LabelNoise, a),
        ExperimentCommand::CheapSam(a) => (Kind::CheapSam, a),
    };
    take_own_flags(&mut args)?;
    let (noise, methods, dir) = match kind {
        Kind::LabelNoise => ("0.2,0.4,0.6,0.8", "sgd,sam", "runs/label-noise"),
        Kind::CheapSam => ("0", "sgd,sam,sam_every:2,sam_every:5,looksam:5", "runs/cheap-sam"),
    };
    let noises = args
        .noise
        .as_deref()
        .unwrap_or(noise)
        .split(',')
        .map(|n| {
            n.trim()
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=1.0).contains(p))
                .ok_or_else(|| usage(format!("--noise {n}: expected a fraction in [0, 1]")))
        })
        .collect::<Result<Vec<_>>>()?;
    let methods = Method::parse_list(args.methods.as_deref().unwrap_or(methods)).map_err(|e| usage(format!("--methods: {e}")))?;
    if !(1..=1000).contains(&args.seeds) {
        return Err(usage("--seeds must be 1 to 1000"));
    }
    let cmd = TrainArgs::augment_args(clap::Command::new("train").no_binary_name(true));
    let matches =
        cmd.try_get_matches_from(ringsam_train::config::normalize_flag_names(&args.train_flags)).map_err(|e| usage(e.to_string()))?;
    let train_args = TrainArgs::from_arg_matches(&matches).map_err(|e| usage(e.to_string()))?;
    let base = resolve_train_config(&train_args, &matches)?;
    if base.sam_rho == 0.0 && methods.iter().any(|m| *m != Method::Sgd) {
        return Err(usage("--sam_rho is 0: the SAM-family methods need the run's ρ (give --sam_rho)"));
    }
    if train_args.device != "cpu" && methods.iter().any(|m| matches!(m, Method::LookSam(_))) {
        return Err(usage(format!("--methods: LookSAM is not on the GPU step yet (--device {}): leave it out", train_args.device)));
    }
    let mut sorted = noises.clone();
    sorted.sort_by(f64::total_cmp);
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(usage("--noise lists a level twice"));
    }
    let gpu = train_args.open_device(&|line| eprintln!("ringsam: {line}"))?;
    let dir = args.output_dir.unwrap_or_else(|| dir.into());
    let exp = Experiment { kind, methods, noises, seeds: args.seeds, rho: base.sam_rho, dir, sharpness: args.sharpness };
    let opts = ringsam_train::run::RunOptions {
        progress: std::io::stderr().is_terminal(),
        stop: stop_on_signals()?,
        memory_limit: available_memory(),
        gpu,
    };
    let out = ringsam_experiment::run(&exp, &base, &opts, &mut |line| eprintln!("ringsam: experiment: {line}"))
        .with_context(|| format!("experiment in {}", exp.dir.display()))?;
    print!("{}", out.table);
    println!("cells: {}  results: {}  figure: {}", out.results.len(), out.csv.display(), out.figure.display());
    if let Some(f) = out.sharpness_figure {
        println!("sharpness figure: {}", f.display());
    }
    Ok(())
}
