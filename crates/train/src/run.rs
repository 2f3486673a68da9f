//! The training loop of one replica: data → SAM step → metrics, evaluation, checkpoints.
//!
//! Per epoch: a [`Loader`] produces the epoch's batches on its own thread; each batch goes
//! through [`SamStep::step`] at the schedule's learning rate; at the end of the epoch the means of
//! the step metrics and the learning rate go to TensorBoard under the reference's names, the model
//! is evaluated every `evaluate_every` epochs, and a checkpoint is written every
//! `checkpoint_every_epochs` epochs or when `save_progress_seconds` have passed. A stop request
//! (SIGTERM / Ctrl-C, forwarded by the binary as a flag) writes a checkpoint at the current step
//! and returns [`TrainError::Interrupted`]. On start, the newest valid checkpoint of the run
//! directory is restored, including the position inside its epoch, so a killed run resumes
//! where it stopped.
//!
//! Data-parallel ([`train_replica`] with a [`Cluster`]): every replica runs this loop on its own
//! share of each global batch; gradients are averaged inside the step ([`crate::grad_sync`]),
//! and the replicas agree after every step on stopping and on the metrics, and before every
//! evaluation and checkpoint on the batch-norm statistics ([`crate::replica`]). Evaluation is
//! sharded the same way and its sums added up. Rank 0 alone writes TensorBoard events and
//! checkpoints (into a directory every replica can read, for resuming).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use ringsam_data::loader::LoaderConfig;
use ringsam_data::normalize::Normalization;
use ringsam_data::registry::{SyntheticSpec, load};
use ringsam_data::{Dataset, Split};
use ringsam_models::ModelConfig;
use ringsam_optim::{Ema, LrSchedule, OptimizerKind, ScheduleKind};
use ringsam_tensor::Tensor;

use crate::checkpoint::{CheckpointData, TrainingState, newest_valid, write_atomic};
use crate::cluster::Cluster;
use crate::config::TrainConfig;
use crate::data_source::TrainData;
use crate::eval::{EvalReport, EvalSums, evaluate_batches};
use crate::grad_sync::{BucketPlan, ExchangeStats, GradSync};
use crate::replica::{average_state, check_identical, vote_and_metrics};
use crate::tensorboard::EventWriter;
use crate::{SamStep, StepConfig, TrainError};

/// How the run talks to its surroundings.
pub struct RunOptions {
    /// Show a progress bar (the binary sets this when stderr is a terminal).
    pub progress: bool,
    /// Set by a signal handler: checkpoint and stop.
    pub stop: Arc<AtomicBool>,
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// `output_dir/lr_…/wd_…/rho_…/seed_…`.
    pub run_dir: PathBuf,
    /// Global steps completed.
    pub steps: u64,
    /// Last evaluation's test error rate.
    pub test_error_rate: Option<f64>,
    /// Last evaluation's test loss.
    pub test_loss: Option<f64>,
    /// The checkpoint the run resumed from.
    pub resumed_from: Option<PathBuf>,
    /// Seconds spent in this invocation.
    pub seconds: f64,
    /// Per-step means over this invocation's steps (data-parallel cost report).
    pub per_step: StepCosts,
}

/// Mean per-step costs: wall time and the two gradient exchanges.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepCosts {
    /// Steps averaged.
    pub steps: u64,
    /// Wall time of a step (the SAM step alone: no loading, no bookkeeping).
    pub seconds: f64,
    /// Pass 1's exchange (SAM with `sync_perturbations`).
    pub ascent: ExchangeStats,
    /// The applied gradient's exchange.
    pub descent: ExchangeStats,
}

impl StepCosts {
    fn add(&mut self, seconds: f64, a: &ExchangeStats, d: &ExchangeStats) {
        self.steps += 1;
        self.seconds += seconds;
        for (acc, x) in [(&mut self.ascent, a), (&mut self.descent, d)] {
            acc.bytes += x.bytes;
            acc.seconds += x.seconds;
            acc.exposed_seconds += x.exposed_seconds;
        }
    }

    fn mean(&self) -> StepCosts {
        let n = self.steps.max(1) as f64;
        let m = |x: &ExchangeStats| ExchangeStats {
            bytes: (x.bytes as f64 / n) as u64,
            seconds: x.seconds / n,
            exposed_seconds: x.exposed_seconds / n,
        };
        StepCosts { steps: self.steps, seconds: self.seconds / n, ascent: m(&self.ascent), descent: m(&self.descent) }
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Loads the train and test splits the configuration names.
pub fn load_splits(cfg: &TrainConfig) -> Result<(Arc<Dataset>, Arc<Dataset>), TrainError> {
    let size = if cfg.image_size == 0 { ringsam_models::input_size(&cfg.model_name) } else { cfg.image_size };
    let synth = SyntheticSpec { size, ..SyntheticSpec::default() };
    let dir = cfg.data_dir.as_deref();
    let train = load(&cfg.dataset, Split::Train, dir, cfg.use_test_set, &synth)?;
    let test = load(&cfg.dataset, Split::Test, dir, cfg.use_test_set, &synth)?;
    Ok((Arc::new(train), Arc::new(test)))
}

/// The step's hyperparameters from the run configuration.
pub fn step_config(cfg: &TrainConfig) -> StepConfig {
    StepConfig {
        rho: cfg.sam_rho,
        adaptive: cfg.adaptive_sam,
        asam_eta: cfg.asam_eta,
        weight_decay: cfg.weight_decay,
        decoupled_weight_decay: cfg.decoupled_weight_decay,
        no_weight_decay_on_bn: cfg.no_weight_decay_on_bn,
        label_smoothing: cfg.label_smoothing,
        gradient_clipping: cfg.gradient_clipping,
        optimizer: if cfg.use_rmsprop {
            OptimizerKind::RmsProp { beta: cfg.momentum, beta2: 0.9, eps: 1e-3 }
        } else {
            OptimizerKind::Nesterov { beta: cfg.momentum }
        },
        sam_m: cfg.sam_m,
        seed: cfg.run_seed,
        sync_perturbations: cfg.sync_perturbations,
        grad_accum_steps: cfg.grad_accum_steps,
    }
}

fn cluster_of(st: &mut SamStep) -> Option<&mut Cluster> {
    st.sync.as_mut().map(|s| &mut s.cluster)
}

/// Before an evaluation or a checkpoint: replicas average their batch-norm statistics (and the
/// EMA's), and prove their parameters are still identical. A no-op on one replica.
fn agree_before_save(st: &mut SamStep, ema: &mut Option<Ema>) -> Result<(), TrainError> {
    let step = st.step;
    let SamStep { sync, state, arena, .. } = st;
    let Some(c) = sync.as_mut().map(|s| &mut s.cluster) else { return Ok(()) };
    average_state(c, state)?;
    if let Some(e) = ema.as_mut() {
        average_state(c, &mut e.state)?;
    }
    check_identical(c, &arena.params, step)
}

/// Evaluates on this replica's share of `split` and adds the replicas' sums up.
fn evaluate_everywhere(
    st: &mut SamStep,
    params: Option<&[f32]>,
    state: Option<&mut [f32]>,
    data: &TrainData,
    split: Split,
    batch: usize,
) -> Result<EvalReport, TrainError> {
    let (rank, world) = st.sync.as_ref().map_or((0, 1), |s| (s.cluster.rank(), s.cluster.world()));
    let params = params.unwrap_or(&st.arena.params);
    let state = match state {
        Some(s) => s,
        None => &mut st.state,
    };
    let mine = evaluate_batches(st.model.as_mut(), params, state, data.eval_batches(split, batch, rank, world)?)?;
    let total = match st.sync.as_mut() {
        Some(s) => EvalSums::from_slice(&s.cluster.sum(mine.to_vec())?),
        None => mine,
    };
    total.report(data.name())
}

/// Trains as `cfg` says on one replica; `log` receives one-line messages (resume, evaluation,
/// checkpoints).
pub fn train(cfg: &TrainConfig, opts: &RunOptions, log: &mut dyn FnMut(&str)) -> Result<RunSummary, TrainError> {
    train_replica(cfg, opts, None, log)
}

/// Trains as one replica of `cluster` (see the module docs); `None` is a single replica.
pub fn train_replica(
    cfg: &TrainConfig,
    opts: &RunOptions,
    cluster: Option<Cluster>,
    log: &mut dyn FnMut(&str),
) -> Result<RunSummary, TrainError> {
    let result = train_inner(cfg, opts, cluster, log);
    if let Err(TrainError::Ring(_)) = &result {
        // Elastic restarts are not automatic yet: say what the operator can do.
        log("a replica was lost or stalled; the newest checkpoint is intact: start every worker again to resume from it");
    }
    result
}

fn train_inner(
    cfg: &TrainConfig,
    opts: &RunOptions,
    cluster: Option<Cluster>,
    log: &mut dyn FnMut(&str),
) -> Result<RunSummary, TrainError> {
    cfg.validate().map_err(TrainError::Config)?;
    let cfg = &cfg.resolved();
    let (rank, world) = cluster.as_ref().map_or((0, 1), |c| (c.rank(), c.world()));
    if !cfg.batch_size.is_multiple_of(world * cfg.grad_accum_steps.max(1)) {
        return Err(TrainError::Config(format!(
            "--batch_size {} must be divisible by the {world} replicas × --grad_accum_steps {}",
            cfg.batch_size, cfg.grad_accum_steps
        )));
    }
    let leader = rank == 0;
    let t0 = Instant::now();
    let data = TrainData::open(cfg, log)?;
    data.check_world(world)?;
    if data.train_len() < cfg.batch_size as u64 {
        return Err(TrainError::Config(format!(
            "--batch_size {} is larger than the {} training examples",
            cfg.batch_size,
            data.train_len()
        )));
    }
    let model_cfg = ModelConfig { num_classes: data.num_classes(), in_channels: data.channels() };
    let mut st = SamStep::new(&cfg.model_name, &model_cfg, step_config(cfg))?;
    if let Some(c) = cluster {
        let mib = |m: f64| ((m * (1 << 20) as f64) / 4.0).round().max(1.0) as usize;
        let plan = BucketPlan { first: mib(cfg.first_bucket_mb), rest: mib(cfg.bucket_mb), overlap: cfg.overlap_comm };
        st.sync = Some(GradSync::new(c, st.arena.len(), plan));
        st.example_offset = (rank * (cfg.batch_size / world)) as u64;
    }
    let run_dir = cfg.output_dir.join(cfg.run_subdir());
    std::fs::create_dir_all(&run_dir).map_err(|source| TrainError::Output { path: run_dir.display().to_string(), source })?;

    // Resume.
    let (mut epoch, mut start_batch, mut resumed_from) = (0u64, 0usize, None);
    let (found, skipped) = newest_valid(&run_dir, st.model.layout(), st.model.state_layout());
    for s in skipped {
        log(&format!("skipping checkpoint {s}"));
    }
    let mut restored_ema = None;
    if let Some(c) = found {
        // The data cursor only means something for the same data order and batch size.
        let saved = &c.training.config;
        if (saved.dataset.as_str(), saved.batch_size, saved.run_seed, saved.model_name.as_str())
            != (cfg.dataset.as_str(), cfg.batch_size, cfg.run_seed, cfg.model_name.as_str())
        {
            return Err(TrainError::Config(format!(
                "{} holds a run of {} on {} (batch {}, seed {}); this run asks for {} on {} (batch {}, seed {}): use another --output_dir or the same settings",
                c.dir.display(),
                saved.model_name,
                saved.dataset,
                saved.batch_size,
                saved.run_seed,
                cfg.model_name,
                cfg.dataset,
                cfg.batch_size,
                cfg.run_seed
            )));
        }
        st.arena.params = c.params;
        st.state = c.state;
        for (name, buf) in st.opt.state_mut() {
            match c.optim.get(name) {
                Some(v) => buf.clone_from(v),
                None => {
                    return Err(TrainError::Checkpoint(format!(
                        "{}: no optimizer buffer {name} (was it written with another optimizer?)",
                        c.dir.display()
                    )));
                }
            }
        }
        restored_ema = c.ema;
        st.step = c.training.step;
        epoch = c.training.epoch;
        start_batch = c.training.batch_in_epoch;
        log(&format!("resumed from {} (step {}, epoch {}, batch {})", c.dir.display(), st.step, epoch, start_batch));
        resumed_from = Some(c.dir);
    }
    // Every replica must start from the same checkpoint at the same place (a run directory that is
    // not shared, or shows replicas different contents, would otherwise pair collectives wrongly).
    let position = [st.step, epoch, start_batch as u64];
    if let Some(sync) = st.sync.as_mut() {
        crate::replica::check_same_start(&mut sync.cluster, &st.arena.params, position)?;
    }
    // EMA starts from the restored weights (or continues the checkpoint's average).
    let mut ema = (cfg.ema_decay > 0.0).then(|| {
        let mut e = Ema::new(cfg.ema_decay, Ema::REFERENCE_WARMUP, &st.arena.params, &st.state);
        if let Some((p, s)) = restored_ema.take() {
            e.params = p;
            e.state = s;
        }
        e
    });

    let loader_cfg = LoaderConfig {
        batch_size: cfg.batch_size,
        shuffle: true,
        drop_last: true,
        autoaugment: if matches!(cfg.image_level_augmentations.as_str(), "autoaugment" | "aa-only") {
            ringsam_data::autoaugment::policy_for(data.name())
        } else {
            None
        },
        flip_crop: matches!(cfg.image_level_augmentations.as_str(), "basic" | "autoaugment"),
        flip: data.name() != "digits",
        cutout: (cfg.batch_level_augmentations == "cutout").then_some(cfg.cutout_length),
        normalization: Normalization::for_dataset(data.name()),
        seed: cfg.run_seed,
        prefetch: cfg.prefetch,
        rank,
        world,
    };
    let steps_per_epoch = data.steps_per_epoch(&loader_cfg);
    let schedule = LrSchedule {
        kind: match (cfg.use_learning_rate_schedule, cfg.lr_schedule.as_str()) {
            (false, _) | (_, "constant") => ScheduleKind::Constant,
            (_, "exponential") => ScheduleKind::Exponential,
            _ => ScheduleKind::Cosine,
        },
        base_lr: cfg.learning_rate,
        steps_per_epoch,
        epochs: cfg.num_epochs,
        warmup_steps: (cfg.warmup_epochs * steps_per_epoch as f64).round() as u64,
    };
    // Rank 0 alone writes events and checkpoints.
    let mut tb = if leader {
        Some(
            EventWriter::create(&run_dir, now(), "ringsam")
                .map_err(|source| TrainError::Output { path: run_dir.display().to_string(), source })?,
        )
    } else {
        None
    };
    let tb_err = |source| TrainError::Output { path: run_dir.display().to_string(), source };
    let mut costs = StepCosts::default();
    let mut last_save = Instant::now();
    let mut last_eval = None;
    let bar = if opts.progress && leader { ProgressBar::new(steps_per_epoch) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );

    // Call `agree_before_save` first (every replica); only rank 0 writes.
    let checkpoint = |st: &SamStep, ema: &Option<Ema>, epoch: u64, batch: usize| -> Result<Option<PathBuf>, TrainError> {
        if !leader {
            return Ok(None);
        }
        let training = TrainingState {
            format: crate::checkpoint::FORMAT,
            step: st.step,
            epoch,
            batch_in_epoch: batch,
            model_name: cfg.model_name.clone(),
            config: cfg.clone(),
        };
        let data = CheckpointData {
            layout: st.model.layout(),
            params: &st.arena.params,
            state_layout: st.model.state_layout(),
            state: &st.state,
            optim: st.opt.state(),
            ema: ema.as_ref().map(|e| (&e.params[..], &e.state[..])),
            training: &training,
        };
        write_atomic(&run_dir, st.step, &data, cfg.keep_checkpoints).map(Some)
    };

    'epochs: while epoch < cfg.num_epochs {
        bar.set_prefix(format!("{}/{}", epoch + 1, cfg.num_epochs));
        bar.set_position(start_batch as u64);
        let (mut sum_loss, mut sum_err, mut sum_gnorm, mut sum_pnorm, mut count, mut lr) = (0.0, 0.0, 0.0, 0.0, 0usize, 0.0);
        let mut batch_no = start_batch;
        let mut loader = data.epoch(&loader_cfg, epoch, start_batch)?;
        while let Some(batch) = loader.next() {
            let queue_depth = loader.queued();
            if cfg.max_steps.is_some_and(|m| st.step >= m) {
                start_batch = batch_no; // already at the limit (a resumed run): stop before stepping
                break 'epochs;
            }
            // One replica alone decides here; several vote after each step (below).
            if st.sync.is_none() && opts.stop.load(Ordering::SeqCst) {
                let dir = checkpoint(&st, &ema, epoch, batch_no)?;
                bar.abandon();
                log(&format!("stop requested: wrote {}", dir.map_or_else(String::new, |d| d.display().to_string())));
                return Err(TrainError::Interrupted { step: st.step });
            }
            lr = schedule.lr_at(st.step);
            let x = Tensor::from_vec(&[batch.c, batch.n, batch.h, batch.w], batch.images)?;
            let t_step = Instant::now();
            let mut r = st.step_mixed(&x, &batch.labels, batch.mix, lr as f32)?;
            let step_seconds = t_step.elapsed().as_secs_f64();
            costs.add(step_seconds, &r.ascent_exchange, &r.descent_exchange);
            if let Some(e) = ema.as_mut() {
                e.update(st.step, &st.arena.params, &st.state);
            }
            if let Some(c) = cluster_of(&mut st) {
                let agreed = vote_and_metrics(c, opts.stop.load(Ordering::SeqCst), false, r.loss, r.error_rate)?;
                (r.loss, r.error_rate) = (agreed.loss, agreed.error_rate);
                if cfg.check_replicas_every > 0 && st.step.is_multiple_of(cfg.check_replicas_every) {
                    let sync = st.sync.as_mut().expect("data-parallel here");
                    check_identical(&mut sync.cluster, &st.arena.params, st.step)?;
                }
                if agreed.stop {
                    agree_before_save(&mut st, &mut ema)?;
                    let dir = checkpoint(&st, &ema, epoch, batch_no + 1)?;
                    bar.abandon();
                    log(&format!(
                        "stop requested: checkpoint at step {}{}",
                        st.step,
                        dir.map_or_else(String::new, |d| format!(" in {}", d.display()))
                    ));
                    if let Some(s) = st.sync.take() {
                        s.cluster.close();
                    }
                    return Err(TrainError::Interrupted { step: st.step });
                }
            }
            // After the vote: a non-finite loss on one replica is every replica's (the sum carries
            // it), so all stop at the same step with the same message.
            if !r.loss.is_finite() {
                return Err(TrainError::Config(format!("loss became {} at step {} (lower --learning_rate?)", r.loss, st.step)));
            }
            crate::telemetry::export_step(&r, step_seconds, batch.labels.len(), queue_depth, data.skipped());
            sum_loss += r.loss as f64;
            sum_err += r.error_rate as f64;
            sum_gnorm += r.grad_norm;
            sum_pnorm += r.param_norm;
            count += 1;
            batch_no += 1;
            bar.inc(1);
            bar.set_message(format!("loss {:.4} err {:.3} lr {:.4}", sum_loss / count as f64, sum_err / count as f64, lr));
            if cfg.max_steps.is_some_and(|m| st.step >= m) {
                start_batch = batch_no; // the final checkpoint resumes mid-epoch
                break 'epochs;
            }
        }
        if loader.remaining() != 0 {
            // The loader stopped early (its thread failed): going on would leave this replica at
            // the epoch's end while the others still step.
            return Err(TrainError::Config(format!(
                "the data loader stopped {} batches before the end of epoch {}",
                loader.remaining(),
                epoch + 1
            )));
        }
        let step = st.step;
        if let (true, Some(tb)) = (count > 0, tb.as_mut()) {
            let n = count as f64;
            tb.scalars(
                step,
                now(),
                &[
                    ("train_loss", sum_loss / n),
                    ("train_error_rate", sum_err / n),
                    ("gradient_norm", sum_gnorm / n),
                    ("param_norm", sum_pnorm / n),
                    ("learning_rate", lr),
                ],
            )
            .map_err(tb_err)?;
        }
        epoch += 1;
        start_batch = 0;
        if epoch % cfg.evaluate_every == 0 || epoch == cfg.num_epochs {
            agree_before_save(&mut st, &mut ema)?;
            // Evaluation runs in eval mode, which reads the running statistics and never writes them.
            let (prefix, r) = match ema.as_mut() {
                Some(e) => {
                    ("ema_test", evaluate_everywhere(&mut st, Some(&e.params), Some(&mut e.state), &data, Split::Test, cfg.batch_size)?)
                }
                None => ("test", evaluate_everywhere(&mut st, None, None, &data, Split::Test, cfg.batch_size)?),
            };
            let mut scalars = vec![(format!("{prefix}_loss"), r.loss), (format!("{prefix}_error_rate"), r.error_rate)];
            if cfg.compute_top_5_error_rate {
                scalars.push((format!("{prefix}_top_5_error_rate"), r.top5_error_rate));
            }
            if cfg.also_eval_on_training_set {
                let t = evaluate_everywhere(&mut st, None, None, &data, Split::Train, cfg.batch_size)?;
                scalars.push(("eval_on_train_loss".into(), t.loss));
                scalars.push(("eval_on_train_error_rate".into(), t.error_rate));
            }
            let refs: Vec<(&str, f64)> = scalars.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            if let Some(tb) = tb.as_mut() {
                tb.scalars(step, now(), &refs).map_err(tb_err)?;
            }
            let line = format!(
                "epoch {epoch}: {prefix} loss {:.4}, {prefix} error {:.2}% ({} examples)",
                r.loss,
                100.0 * r.error_rate,
                r.examples
            );
            // A hidden bar prints nothing: logs (a pod's, a file's) still get the line, once.
            match (bar.is_hidden(), leader) {
                (false, _) => bar.println(line),
                (true, true) => log(&line),
                (true, false) => {}
            }
            last_eval = Some(r);
        }
        let mut due = (cfg.checkpoint_every_epochs > 0 && epoch % cfg.checkpoint_every_epochs == 0)
            || last_save.elapsed().as_secs() >= cfg.save_progress_seconds;
        if let Some(c) = cluster_of(&mut st) {
            due = c.sum(vec![due as u8 as f32])?[0] > 0.0; // the timer is each replica's own: vote
        }
        if due && epoch < cfg.num_epochs {
            agree_before_save(&mut st, &mut ema)?;
            checkpoint(&st, &ema, epoch, 0)?;
            last_save = Instant::now();
        }
    }
    bar.finish_and_clear();
    agree_before_save(&mut st, &mut ema)?;
    if let Some(dir) = checkpoint(&st, &ema, epoch, start_batch)? {
        log(&format!("final checkpoint {}", dir.display()));
    }
    let per_step = costs.mean();
    if world > 1 && leader && per_step.steps > 0 {
        let mb = |x: &ExchangeStats| x.bytes as f64 / (1 << 20) as f64;
        log(&format!(
            "per step ({} steps, {world} replicas): {:.1} ms; ascent exchange {:.1} MiB in {:.1} ms ({:.1} ms exposed); descent exchange {:.1} MiB in {:.1} ms ({:.1} ms exposed)",
            per_step.steps,
            1e3 * per_step.seconds,
            mb(&per_step.ascent),
            1e3 * per_step.ascent.seconds,
            1e3 * per_step.ascent.exposed_seconds,
            mb(&per_step.descent),
            1e3 * per_step.descent.seconds,
            1e3 * per_step.descent.exposed_seconds
        ));
    }
    if let Some(s) = st.sync.take() {
        s.cluster.close();
    }
    Ok(RunSummary {
        run_dir,
        steps: st.step,
        test_error_rate: last_eval.map(|r| r.error_rate),
        test_loss: last_eval.map(|r| r.loss),
        resumed_from,
        seconds: t0.elapsed().as_secs_f64(),
        per_step,
    })
}
