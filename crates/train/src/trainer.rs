//! The training loop of one replica: a [`Trainer`] whose methods are the loop's phases.
//!
//! [`Trainer::new`] builds everything a run needs and resumes the newest valid checkpoint of the
//! run directory (refusing one whose configuration differs in a way that changes the math; see
//! [`crate::resume`]). [`Trainer::run`] then goes epoch by epoch:
//! 1. [`Trainer::run_epoch`]: this replica's batches of the epoch, each through
//!    [`SamStep::step`] at the schedule's learning rate; after every step the replicas agree on
//!    stopping, on a time-based checkpoint and on the metrics ([`crate::replica`]);
//! 2. at the epoch's end the epoch's mean metrics go to TensorBoard under the reference's names;
//! 3. [`Trainer::checkpoint_if_due`]: every `checkpoint_every_epochs` epochs and after the last;
//! 4. [`Trainer::evaluate_if_due`]: every `evaluate_every` epochs and after the last. It comes
//!    after the checkpoint, so a failing evaluation (a damaged validation set) never costs the
//!    epoch's training.
//!
//! A stop request (SIGTERM / Ctrl-C, a flag the binary sets) is acted on after the step in
//! progress: a checkpoint at that step, then [`TrainError::Interrupted`] ([`Trainer::stop`], the
//! one stop path; in an elastic run only the replicas asked to stop leave, the others go on). A step that leaves a non-finite loss, gradient or parameter norm ends the run
//! with [`TrainError::NonFinite`].
//!
//! Data-parallel: every replica runs this loop on its share of each global batch; gradients are
//! averaged inside the step ([`crate::grad_sync`]); before every evaluation and checkpoint the
//! replicas average their batch-norm statistics and compare parameter fingerprints
//! ([`Trainer::agree`]). Rank 0 alone writes TensorBoard events and checkpoints, into a directory
//! every replica can read for resuming.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ringsam_data::loader::LoaderConfig;
use ringsam_data::share::BatchShare;
use ringsam_data::{Batch, Split};
use ringsam_models::ModelConfig;
use ringsam_optim::{Ema, LrSchedule, ScheduleKind};
use ringsam_tensor::Tensor;

use crate::checkpoint::{CheckpointData, FORMAT, TrainingState, resume_scan, write_fenced};
use crate::cluster::Cluster;
use crate::config::{LrScheduleName, TrainConfig};
use crate::data_source::TrainData;
use crate::eval::{EvalReport, EvalSums, evaluate_batches};
use crate::grad_sync::BucketPlan;
use crate::memory::MemoryEstimate;
use crate::progress::{Progress, StepProgress};
use crate::replica::{check_identical, check_same_start, vote_and_metrics};
use crate::resume::ConfigChange;
use crate::run::{RunOptions, RunSummary, StepCosts};
use crate::sample_log::SampleLog;
use crate::step::Restore;
use crate::tensorboard::EventWriter;
use crate::{SamStep, StepConfig, StepReport, TrainError};

mod state_transfer;

/// One replica's run (see the module docs).
pub struct Trainer<'a> {
    cfg: TrainConfig, // resolved and validated
    opts: &'a RunOptions,
    log: &'a mut dyn FnMut(&str),
    data: TrainData,
    st: SamStep,
    ema: Option<Ema>,
    loader: LoaderConfig,
    schedule: LrSchedule,
    run_dir: PathBuf,
    events: Option<EventWriter>, // rank 0 only
    progress: Progress,
    rank: usize,
    epoch: u64, // epoch in progress, 0-based
    batch: u64, // next batch of that epoch
    costs: StepCosts,
    last_save: Instant,
    last_checkpoint: Option<u64>, // the step last checkpointed
    agreed_at: Option<u64>,       // the step the replicas last agreed at
    last_eval: Option<EvalReport>,
    resumed_from: Option<PathBuf>,
    started: Instant,
    generation: u64, // the membership generation (0 outside elastic runs)
    sample_log: Option<SampleLog>,
    sharpness_batch: Option<(Tensor, Vec<u32>)>, // `--log_sharpness_every`'s, read at first use
}

/// How an epoch ended.
enum EpochEnd {
    /// Every batch was trained.
    Complete,
    /// `--max_steps` was reached.
    MaxSteps,
}

/// Running sums of an epoch's step metrics.
#[derive(Default)]
struct EpochSums {
    loss: f64,
    error_rate: f64,
    grad_norm: f64,
    param_norm: f64,
    steps: usize,
    lr: f64,
}

impl<'a> Trainer<'a> {
    /// Validates `cfg`, opens the data, builds the model and resumes (see the module docs).
    pub fn new(
        cfg: &TrainConfig,
        opts: &'a RunOptions,
        cluster: Option<Cluster>,
        log: &'a mut dyn FnMut(&str),
    ) -> Result<Self, TrainError> {
        let mut t = Self::build(cfg, opts, cluster, log)?;
        t.resume()?;
        Ok(t)
    }

    /// [`Trainer::new`] without the resume: the elastic runtime decides where the state comes
    /// from once a generation has formed ([`crate::elastic`]).
    pub(crate) fn build(
        cfg: &TrainConfig,
        opts: &'a RunOptions,
        cluster: Option<Cluster>,
        log: &'a mut dyn FnMut(&str),
    ) -> Result<Self, TrainError> {
        cfg.validate().map_err(TrainError::Config)?;
        let mut cfg = cfg.resolved();
        let (rank, world) = cluster.as_ref().map_or((0, 1), |c| (c.rank(), c.world()));
        // Recorded in checkpoints, so a resume with another world keeps the micro-batches.
        cfg.max_replicas.get_or_insert(world);
        let share = check_world(&cfg, rank, world)?;
        let stopped = |phase: &str| if opts.stop.load(Ordering::SeqCst) { Err(TrainError::Stopped(phase.into())) } else { Ok(()) };
        stopped("before opening the data")?;
        if let Some(limit) = opts.memory_limit {
            MemoryEstimate::new(&cfg, 0, 0, TrainData::planned_bytes(&cfg), world).check(limit)?;
        }
        let data = TrainData::open(&cfg, log)?;
        stopped("while opening the data")?;
        if data.train_len() < cfg.batch_size as u64 {
            return Err(TrainError::Config(format!(
                "--batch_size {} is larger than the {} training examples",
                cfg.batch_size,
                data.train_len()
            )));
        }
        let model_cfg = ModelConfig { num_classes: data.num_classes(), in_channels: data.channels() };
        if let Some(limit) = opts.memory_limit {
            // Before the arena exists: the model's layout is built without allocating it.
            let params = ringsam_models::build(&cfg.model_name, &model_cfg)?.layout().total();
            MemoryEstimate::new(&cfg, params, data.image_values(), data.bytes_in_memory(), world).check(limit)?;
        }
        let plan = bucket_plan(&cfg);
        let mut st = SamStep::new(&cfg.model_name, &model_cfg, StepConfig::from(&cfg), cluster.map(|c| (c, plan)), share)?;
        if let Some(gpu) = &opts.gpu {
            refuse_on_gpu(&cfg)?;
            st.to_device(&cfg.model_name, gpu)?;
            log(&format!("the step runs on {}", gpu.name()));
        }
        stopped("while building the model")?;
        let run_dir = cfg.output_dir.join(cfg.run_subdir());
        std::fs::create_dir_all(&run_dir).map_err(|source| TrainError::Output { path: run_dir.display().to_string(), source })?;
        let loader = data.train_loader(&cfg, share);
        let steps_per_epoch = data.steps_per_epoch(&loader);
        let schedule = schedule(&cfg, steps_per_epoch);
        let progress = Progress::new(false, opts.progress, cfg.log_every_steps, steps_per_epoch, cfg.num_epochs, 0);
        let ema = (cfg.ema_decay > 0.0).then(|| Ema::new(cfg.ema_decay, Ema::REFERENCE_WARMUP, st.params(), st.state()));
        let sample_log = if cfg.log_sample_ids { Some(SampleLog::open(&run_dir, rank)?) } else { None };
        let mut t = Trainer {
            sample_log,
            sharpness_batch: None,
            ema,
            loader,
            schedule,
            run_dir,
            events: None,
            progress,
            rank,
            epoch: 0,
            batch: 0,
            costs: StepCosts::default(),
            last_save: Instant::now(),
            last_checkpoint: None,
            agreed_at: None,
            last_eval: None,
            resumed_from: None,
            started: Instant::now(),
            data,
            st,
            cfg,
            opts,
            log,
            generation: 0,
        };
        t.take_rank(rank)?;
        Ok(t)
    }

    /// Takes new rings (or none): this replica's rank, its share of each batch, its loader and
    /// what rank 0 alone does change with them. The rings it held are dropped, not closed: they
    /// belong to a generation that failed. Position and state stay.
    pub(crate) fn attach(&mut self, cluster: Option<Cluster>, generation: u64) -> Result<(), TrainError> {
        let (rank, world) = cluster.as_ref().map_or((0, 1), |c| (c.rank(), c.world()));
        let share = check_world(&self.cfg, rank, world)?;
        if self.st.gpu().is_some() && world > 1 {
            return Err(TrainError::Config("data-parallel training (several replicas) is not on the GPU step yet".into()));
        }
        let plan = bucket_plan(&self.cfg);
        drop(self.st.rejoin(cluster.map(|c| (c, plan)), share));
        self.loader = self.data.train_loader(&self.cfg, share);
        (self.generation, self.agreed_at) = (generation, None);
        self.take_rank(rank)
    }

    /// Becomes rank `rank`: rank 0 alone writes TensorBoard events and shows progress.
    fn take_rank(&mut self, rank: usize) -> Result<(), TrainError> {
        if rank == 0 && self.events.is_none() {
            let writer = EventWriter::create(&self.run_dir, now(), "ringsam");
            self.events = Some(writer.map_err(|source| TrainError::Output { path: self.run_dir.display().to_string(), source })?);
        } else if rank != 0 {
            self.events = None;
        }
        let steps_per_epoch = self.data.steps_per_epoch(&self.loader);
        self.progress = Progress::new(rank == 0, self.opts.progress, self.cfg.log_every_steps, steps_per_epoch, self.cfg.num_epochs, 0);
        self.rank = rank;
        Ok(())
    }

    /// Writes a line to the run's log.
    pub(crate) fn log(&mut self, line: &str) {
        (self.log)(line);
    }

    /// Steps taken.
    pub(crate) fn steps(&self) -> u64 {
        self.st.steps()
    }

    /// Restores the newest valid checkpoint, if any, after checking its configuration; then every
    /// replica proves it starts from the same place, and EMA starts (or continues).
    ///
    /// Rank 0 scans first and repairs (moves damaged checkpoints aside, recovers an interrupted
    /// rewrite); after a barrier the others scan what it left, reading only, so no two replicas
    /// rename the same directory. The elastic runtime calls it for a generation whose members
    /// hold no state in memory.
    pub(crate) fn resume(&mut self) -> Result<(), TrainError> {
        let (cfg, run_dir) = (&self.cfg, &self.run_dir);
        let accept = |saved: &TrainingState| match ConfigChange::between(&saved.config, cfg).refusal(cfg.allow_config_change) {
            Some(why) => Err(format!("cannot resume: {why}")),
            None => Ok(()),
        };
        let (layout, state_layout) = (self.st.model().layout(), self.st.model().state_layout());
        let mut scan = if self.rank == 0 { Some(resume_scan(run_dir, layout, state_layout, &accept, true)?) } else { None };
        if let Some(c) = self.st.cluster() {
            c.sum(vec![0.0])?; // the barrier: rank 0's repairs are done
        }
        let scan = match scan.take() {
            Some(s) => s,
            None => resume_scan(run_dir, self.st.model().layout(), self.st.model().state_layout(), &accept, false)?,
        };
        for note in &scan.notes {
            (self.log)(note);
        }
        let mut restored_ema = None;
        if let Some(c) = scan.found {
            let change = ConfigChange::between(&c.training.config, &self.cfg);
            for line in change.math.iter().chain(&change.accepted) {
                (self.log)(&format!("resuming with a changed setting: {line}"));
            }
            let saved = Restore { params: &c.params, state: &c.state, optim: &c.optim, step: c.training.step };
            self.st.restore(saved).map_err(|e| TrainError::Checkpoint(format!("{}: {e}", c.dir.display())))?;
            (self.epoch, self.batch) = (c.training.epoch, c.training.batch_in_epoch as u64);
            (self.log)(&format!("resumed from {} (step {}, epoch {}, batch {})", c.dir.display(), self.st.steps(), self.epoch, self.batch));
            self.last_checkpoint = Some(c.training.step);
            if let Some(path) = self.cfg.initial_weights() {
                (self.log)(&format!("initial weights {} not read: they start a fresh run, and this one resumes", path.display()));
            }
            self.resumed_from = Some(c.dir);
            restored_ema = c.ema;
        } else if let Some(path) = self.cfg.initial_weights() {
            let src = crate::init_from::read_source(path)?;
            let report = self.st.load_initial(&src)?;
            if self.cfg.bn_frozen() && !report.statistics_loaded {
                return Err(TrainError::InitFrom(format!(
                    "{} has no batch-norm statistics, and frozen batch norm would normalise with the initial mean 0 and \
                     variance 1: give a checkpoint with them, or --freeze_batch_norm false",
                    src.origin
                )));
            }
            for line in report.lines(&src) {
                (self.log)(&line);
            }
            if self.cfg.bn_frozen() {
                (self.log)("batch norm frozen to the loaded running statistics while training (--freeze_batch_norm)");
            }
        }
        // Every replica must start from the same checkpoint at the same place (a run directory
        // that is not shared would otherwise pair collectives wrongly).
        let position = [self.st.steps(), self.epoch, self.batch];
        let (params, cluster) = self.st.params_and_cluster()?;
        if let Some(c) = cluster {
            check_same_start(c, params, position)?;
        }
        if self.cfg.ema_decay > 0.0 {
            let mut e = Ema::new(self.cfg.ema_decay, Ema::REFERENCE_WARMUP, self.st.params(), self.st.state());
            if let Some((p, s)) = restored_ema {
                (e.params, e.state) = (p, s);
            }
            self.ema = Some(e);
        }
        Ok(())
    }

    /// Trains to the end (or `--max_steps`), then writes the final checkpoint.
    pub fn run(mut self) -> Result<RunSummary, TrainError> {
        self.run_to_end()?;
        self.finish()
    }

    /// The epochs left (see the module docs), without the final checkpoint. Position and state
    /// are consistent after any error: a step either completed (counted in both) or did not.
    pub(crate) fn run_to_end(&mut self) -> Result<(), TrainError> {
        while self.epoch < self.cfg.num_epochs {
            match self.run_epoch()? {
                EpochEnd::MaxSteps => break,
                EpochEnd::Complete => {
                    (self.epoch, self.batch) = (self.epoch + 1, 0);
                    self.checkpoint_if_due()?;
                    self.evaluate_if_due()?;
                }
            }
        }
        Ok(())
    }

    /// This replica's batches of the epoch in progress, from `self.batch` on. Each batch is
    /// staged one step ahead: the next is fetched and handed to the step while a device computes
    /// the one before it ([`SamStep::stage`]).
    fn run_epoch(&mut self) -> Result<EpochEnd, TrainError> {
        self.progress.start_epoch(self.epoch, self.batch);
        let mut sums = EpochSums::default();
        let mut batches = self.data.epoch(&self.loader, self.epoch, self.batch as usize)?;
        let mut next = batches.next();
        if let Some(b) = next.as_mut() {
            stage(&mut self.st, b)?;
        }
        while let Some(batch) = next.take() {
            if self.cfg.max_steps.is_some_and(|m| self.st.steps() >= m) {
                return Ok(EpochEnd::MaxSteps); // a resumed run already at the limit
            }
            let queued = batches.queued();
            // The last step `--max_steps` allows fetches nothing after it.
            let last = self.cfg.max_steps.is_some_and(|m| self.st.steps() + 1 >= m);
            let (r, agreed) = self.train_step(&batch, queued, || {
                next = if last { None } else { batches.next() };
                next.as_mut()
            })?;
            sums.add(&r, self.schedule.lr_at(self.st.steps() - 1));
            self.show_step(&sums);
            if agreed.stop && self.leaves_on_stop() {
                return Err(self.stop());
            }
            if agreed.save || agreed.stop {
                self.checkpoint()?;
            }
            self.sharpness_if_due()?;
            if self.cfg.max_steps.is_some_and(|m| self.st.steps() >= m) {
                return Ok(EpochEnd::MaxSteps);
            }
        }
        if batches.remaining() != 0 {
            // The loader stopped early (its thread failed): going on would leave this replica at
            // the epoch's end while the others still step.
            let left = batches.remaining();
            return Err(TrainError::Runtime(format!("the data loader stopped {left} batches before the end of epoch {}", self.epoch + 1)));
        }
        self.write_epoch_scalars(&sums)?;
        Ok(EpochEnd::Complete)
    }

    /// One SAM step on `batch` (staged already) and what the replicas agree on after it; while
    /// it runs, `fetch_next` gives the next batch, which is staged. Fails on a non-finite result.
    fn train_step<'b>(
        &mut self,
        batch: &Batch,
        queued: usize,
        fetch_next: impl FnOnce() -> Option<&'b mut Batch>,
    ) -> Result<(StepReport, Agreement), TrainError> {
        let lr = self.schedule.lr_at(self.st.steps());
        if let Some(log) = self.sample_log.as_mut() {
            // Before the step: it may count on other replicas even if it fails here.
            log.record(self.generation, self.epoch, batch.index, self.rank, &batch.ids)?;
        }
        let images = batch.labels.len();
        let t = Instant::now();
        self.st.launch(lr as f32)?;
        // The loader's wait is its own (the queue depth reports it), not the step's.
        let fetching = Instant::now();
        let next = fetch_next();
        let waited = fetching.elapsed();
        let staged = next.map(|b| stage(&mut self.st, b)).transpose();
        let mut r = self.st.finish()?;
        self.batch += 1; // with the step: a failure below leaves both counted
        staged?; // after the step is finished and counted, so that it stands whole
        let seconds = t.elapsed().saturating_sub(waited).as_secs_f64();
        self.costs.add(seconds, &r.ascent_exchange, &r.descent_exchange);
        if let Some(e) = self.ema.as_mut() {
            e.update(self.st.steps(), self.st.params(), self.st.state());
        }
        let stop = self.opts.stop.load(Ordering::SeqCst);
        let save = self.last_save.elapsed().as_secs() >= self.cfg.save_progress_seconds;
        let step = self.st.steps();
        let agreed = match self.st.cluster() {
            None => Agreement { stop, save },
            Some(c) => {
                // The signal and the timer are each replica's own: vote, so all act at one step.
                let v = vote_and_metrics(c, stop, save, [r.loss, r.error_rate], images)?;
                (r.loss, r.error_rate) = (v.loss, v.error_rate);
                if self.cfg.check_replicas_every > 0 && step.is_multiple_of(self.cfg.check_replicas_every) {
                    let (params, cluster) = self.st.params_and_cluster()?;
                    check_identical(cluster.expect("data-parallel here"), params, step)?;
                }
                Agreement { stop: v.stop, save: v.save }
            }
        };
        // After the vote: a non-finite loss on one replica is every replica's (the sum carries
        // it), so all stop at the same step with the same message.
        check_finite(&r, step)?;
        crate::telemetry::export_step(&r, seconds, images, queued, self.data.skipped());
        Ok((r, agreed))
    }

    fn show_step(&mut self, sums: &EpochSums) {
        let n = sums.steps.max(1) as f64;
        let p = StepProgress {
            step: self.st.steps(),
            epoch: self.epoch,
            batch: self.batch,
            loss: sums.loss / n,
            error_rate: sums.error_rate / n,
            lr: sums.lr,
            images: self.cfg.batch_size,
        };
        if let Some(line) = self.progress.step(&p) {
            (self.log)(&line);
        }
    }

    fn write_epoch_scalars(&mut self, sums: &EpochSums) -> Result<(), TrainError> {
        let (Some(events), true) = (self.events.as_mut(), sums.steps > 0) else { return Ok(()) };
        let n = sums.steps as f64;
        let scalars = [
            ("train_loss", sums.loss / n),
            ("train_error_rate", sums.error_rate / n),
            ("gradient_norm", sums.grad_norm / n),
            ("param_norm", sums.param_norm / n),
            ("learning_rate", sums.lr),
        ];
        let path = self.run_dir.display().to_string();
        events.scalars(self.st.steps(), now(), &scalars).map_err(|source| TrainError::Output { path, source })
    }

    /// Every `--log_sharpness_every` steps: the sharpness diagnostics on the fixed batch
    /// ([`crate::sharpness`]). Every replica computes them (they hold the same weights, and none
    /// waits at the next exchange while another measures); rank 0 writes and logs them.
    fn sharpness_if_due(&mut self) -> Result<(), TrainError> {
        let every = self.cfg.log_sharpness_every;
        if every == 0 || !self.st.steps().is_multiple_of(every) {
            return Ok(());
        }
        if self.sharpness_batch.is_none() {
            let batch = self.data.eval_batches(Split::Train, self.cfg.sharpness_batch, 0, 1)?.next();
            let b = batch.ok_or_else(|| TrainError::Runtime("sharpness: the training split is empty".into()))?;
            self.sharpness_batch = Some((Tensor::from_vec(&[b.c, b.n, b.h, b.w], b.images)?, b.labels));
        }
        let (x, labels) = self.sharpness_batch.as_ref().expect("read above");
        let cfg = crate::sharpness::SharpnessConfig::from(&self.cfg);
        let r = self.st.sharpness(x, labels, &cfg, &mut |_| {})?;
        if self.rank != 0 {
            return Ok(());
        }
        self.write_scalars(&r.scalars())?;
        let line = format!("step {}: {}", self.st.steps(), r.describe());
        self.progress.println(&line, self.log);
        Ok(())
    }

    /// Named scalars at the current step into the TensorBoard events (rank 0 has them; a no-op
    /// elsewhere).
    fn write_scalars(&mut self, scalars: &[(String, f64)]) -> Result<(), TrainError> {
        let Some(events) = self.events.as_mut() else { return Ok(()) };
        let refs: Vec<(&str, f64)> = scalars.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let path = self.run_dir.display().to_string();
        events.scalars(self.st.steps(), now(), &refs).map_err(|source| TrainError::Output { path, source })
    }

    /// At an epoch's end: every `checkpoint_every_epochs` epochs, and after the last.
    fn checkpoint_if_due(&mut self) -> Result<(), TrainError> {
        let every = self.cfg.checkpoint_every_epochs;
        if (every > 0 && self.epoch.is_multiple_of(every)) || self.epoch == self.cfg.num_epochs {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// At an epoch's end: every `evaluate_every` epochs, and after the last.
    fn evaluate_if_due(&mut self) -> Result<(), TrainError> {
        if !(self.epoch.is_multiple_of(self.cfg.evaluate_every) || self.epoch == self.cfg.num_epochs) {
            return Ok(());
        }
        self.agree()?;
        let prefix = if self.ema.is_some() { "ema_test" } else { "test" };
        let r = self.evaluate(Split::Test)?;
        let mut scalars = vec![(format!("{prefix}_loss"), r.loss), (format!("{prefix}_error_rate"), r.error_rate)];
        if self.cfg.compute_top_5_error_rate {
            scalars.push((format!("{prefix}_top_5_error_rate"), r.top5_error_rate));
        }
        if self.cfg.also_eval_on_training_set {
            let t = self.evaluate(Split::Train)?;
            scalars.push(("eval_on_train_loss".into(), t.loss));
            scalars.push(("eval_on_train_error_rate".into(), t.error_rate));
        }
        self.write_scalars(&scalars)?;
        if self.rank == 0 {
            let line = format!(
                "epoch {}: {prefix} loss {:.4}, {prefix} error {:.2}% ({} examples)",
                self.epoch,
                r.loss,
                100.0 * r.error_rate,
                r.examples
            );
            self.progress.println(&line, self.log);
        }
        self.last_eval = Some(r);
        Ok(())
    }

    /// This replica's share of `split`, the replicas' sums added up. The test split is evaluated
    /// with the EMA's weights when EMA is on; evaluation reads running statistics, never writes.
    fn evaluate(&mut self, split: Split) -> Result<EvalReport, TrainError> {
        let world = self.loader.world;
        let batches = self.data.eval_batches(split, self.cfg.batch_size, self.rank, world)?;
        // The EMA's weights as the model takes them (a copy per evaluation: cheap beside one).
        let mut ema = match (split, self.ema.as_ref()) {
            (Split::Test, Some(e)) => Some((Tensor::from(e.params.clone()), Tensor::from(e.state.clone()))),
            _ => None,
        };
        let (model, params, state) = self.st.eval_parts(ema.as_mut().map(|(p, s)| (&*p, s)));
        let mine = evaluate_batches(model, params, state, batches)?;
        let total = match self.st.cluster() {
            Some(c) => EvalSums::from_slice(&c.sum(mine.to_vec())?),
            None => mine,
        };
        total.report(self.data.name())
    }

    /// Before an evaluation or a checkpoint: the replicas prove their parameters are still
    /// identical (batch-norm statistics are averaged by every step). Once per step. A no-op on
    /// one replica.
    fn agree(&mut self) -> Result<(), TrainError> {
        let step = self.st.steps();
        if self.agreed_at == Some(step) {
            return Ok(());
        }
        let (params, cluster) = self.st.params_and_cluster()?;
        let Some(c) = cluster else { return Ok(()) };
        check_identical(c, params, step)?;
        self.agreed_at = Some(step);
        Ok(())
    }

    /// Writes a checkpoint at the current step and position (rank 0; every replica agrees first).
    fn checkpoint(&mut self) -> Result<Option<PathBuf>, TrainError> {
        self.agree()?;
        self.st.sync_host()?; // a GPU step's state, copied back
        let step = self.st.steps();
        self.last_save = Instant::now();
        self.last_checkpoint = Some(step);
        if self.rank != 0 {
            return Ok(None);
        }
        let training = TrainingState {
            format: FORMAT,
            step,
            epoch: self.epoch,
            batch_in_epoch: self.batch as usize,
            model_name: self.cfg.model_name.clone(),
            config: self.cfg.clone(),
            generation: self.generation,
        };
        let model = self.st.model();
        let data = CheckpointData {
            layout: model.layout(),
            params: self.st.params(),
            state_layout: model.state_layout(),
            state: self.st.state(),
            optim: self.st.optim_state(),
            ema: self.ema.as_ref().map(|e| (&e.params[..], &e.state[..])),
            training: &training,
        };
        let cfg = &self.cfg;
        let same_run = |saved: &TrainingState| ConfigChange::between(&saved.config, cfg).refusal(false).is_none();
        let (run_dir, generation) = (&self.run_dir, self.generation);
        let fence = || if generation > 0 { crate::generation_record::fence(run_dir, generation) } else { Ok(()) };
        write_fenced(run_dir, step, &data, cfg.keep_checkpoints, &same_run, &fence).map(Some)
    }

    /// The one stop path: a checkpoint at this step, the rings closed, then
    /// [`TrainError::Interrupted`] for the caller to return.
    /// Whether this replica stops when the replicas agreed to. Outside elastic runs every replica
    /// does (a stop anywhere ends the job, all at one step, the checkpoint at that step). In an
    /// elastic run only the replicas asked to stop leave; the others take part in the same
    /// checkpoint and go on, and the leavers' absence is a loss the next step sees, so they re-form
    /// without them. A drained or deleted pod then costs its peers no restart. When every pod is
    /// stopped, the later signals reach the others while they re-form, and the checkpoint is there.
    fn leaves_on_stop(&self) -> bool {
        self.generation == 0 || self.opts.stop.load(Ordering::SeqCst)
    }

    fn stop(&mut self) -> TrainError {
        self.progress.abandon();
        let step = self.st.steps();
        match self.checkpoint() {
            Ok(dir) => {
                let at = dir.map_or_else(String::new, |d| format!(" in {}", d.display()));
                (self.log)(&format!("stop requested: checkpoint at step {step}{at}"));
                self.st.close();
                TrainError::Interrupted { step }
            }
            Err(e) => e,
        }
    }

    /// The end: the final checkpoint (unless this step has one), the cost report, the summary.
    /// The steps this run was asked for: its epochs, or `--max_steps` if fewer.
    pub(crate) fn target_steps(&self) -> u64 {
        let all = self.data.steps_per_epoch(&self.loader).saturating_mul(self.cfg.num_epochs);
        self.cfg.max_steps.map_or(all, |m| m.min(all))
    }

    /// The summary of a worker that another generation finished the run without: no checkpoint
    /// (its state is older than the run's), the run's final step.
    pub(crate) fn left_out(self, final_step: u64) -> RunSummary {
        self.progress.finish();
        RunSummary {
            run_dir: self.run_dir,
            steps: final_step,
            test_error_rate: None,
            test_loss: None,
            resumed_from: self.resumed_from,
            seconds: self.started.elapsed().as_secs_f64(),
            per_step: self.costs.mean(),
        }
    }

    pub(crate) fn finish(mut self) -> Result<RunSummary, TrainError> {
        self.progress.finish();
        let step = self.st.steps();
        if self.last_checkpoint != Some(step)
            && let Some(dir) = self.checkpoint()?
        {
            (self.log)(&format!("final checkpoint {}", dir.display()));
        }
        let per_step = self.costs.mean();
        if self.loader.world > 1 && self.rank == 0 && per_step.steps > 0 {
            (self.log)(&per_step.describe(self.loader.world));
        }
        self.st.close();
        Ok(RunSummary {
            run_dir: self.run_dir,
            steps: step,
            test_error_rate: self.last_eval.map(|r| r.error_rate),
            test_loss: self.last_eval.map(|r| r.loss),
            resumed_from: self.resumed_from,
            seconds: self.started.elapsed().as_secs_f64(),
            per_step,
        })
    }
}

/// What the replicas agreed on after a step (one replica: what it asked for).
#[derive(Clone, Copy, Debug)]
struct Agreement {
    stop: bool,
    save: bool,
}

impl EpochSums {
    fn add(&mut self, r: &StepReport, lr: f64) {
        self.loss += r.loss as f64;
        self.error_rate += r.error_rate as f64;
        self.grad_norm += r.grad_norm;
        self.param_norm += r.param_norm;
        self.steps += 1;
        self.lr = lr;
    }
}

/// The settings that depend on the number of replicas; this replica's share of each batch.
/// Hands `batch` to the step as its next: its images move (no copy on the CPU), its labels and
/// mixup partners are copied.
fn stage(st: &mut SamStep, batch: &mut Batch) -> Result<(), TrainError> {
    let x = Tensor::from_vec(&[batch.c, batch.n, batch.h, batch.w], std::mem::take(&mut batch.images))?;
    let mix = batch.mix.map(|m| (batch.partner_labels(), m.lambda));
    st.stage(x, batch.labels.clone(), mix)
}

/// What the GPU step does not do yet ([`SamStep::to_device`] refuses the rest): refused by flag,
/// rather than run differently.
fn refuse_on_gpu(cfg: &TrainConfig) -> Result<(), TrainError> {
    let unsupported = [
        ("--ema_decay", cfg.ema_decay > 0.0),
        ("--imagenet_mixup_alpha", cfg.imagenet_mixup_alpha > 0.0),
        ("--log_sharpness_every", cfg.log_sharpness_every > 0),
    ];
    match unsupported.iter().find(|(_, on)| *on) {
        Some((flag, _)) => Err(TrainError::Config(format!("{flag} is not on the GPU step yet: train it with --device cpu"))),
        None => Ok(()),
    }
}

fn check_world(cfg: &TrainConfig, rank: usize, world: usize) -> Result<BatchShare, TrainError> {
    let max = cfg.max_replicas.unwrap_or(world);
    if world > max {
        return Err(TrainError::Config(format!("{world} replicas are more than --max_replicas {max}")));
    }
    let units = max * cfg.grad_accum_steps;
    if !cfg.batch_size.is_multiple_of(units) {
        return Err(TrainError::Config(format!(
            "--batch_size {} must be divisible by --max_replicas {max} × --grad_accum_steps {} (its micro-batches)",
            cfg.batch_size, cfg.grad_accum_steps
        )));
    }
    if units > 1 && cfg.sam_m.is_some() {
        return Err(TrainError::Config(
            "--sam_m with several replicas or micro-batches is not supported: omit --sam_m (with --sync_perturbations=false, m is the micro-batch)"
                .into(),
        ));
    }
    BatchShare::new(units, rank, world).map_err(TrainError::Config)
}

/// The learning-rate schedule `cfg` asks for, by global step.
fn schedule(cfg: &TrainConfig, steps_per_epoch: u64) -> LrSchedule {
    LrSchedule {
        kind: match (cfg.use_learning_rate_schedule, cfg.lr_schedule) {
            (false, _) | (_, LrScheduleName::Constant) => ScheduleKind::Constant,
            (_, LrScheduleName::Exponential) => ScheduleKind::Exponential,
            (_, LrScheduleName::Cosine) => ScheduleKind::Cosine,
        },
        base_lr: cfg.learning_rate,
        steps_per_epoch,
        epochs: cfg.num_epochs,
        warmup_steps: (cfg.warmup_epochs * steps_per_epoch as f64).round() as u64,
    }
}

/// Fails with the step and every non-finite value of its report.
fn check_finite(r: &StepReport, step: u64) -> Result<(), TrainError> {
    let values = [("loss", r.loss as f64), ("gradient norm", r.grad_norm), ("parameter norm", r.param_norm)];
    let bad: Vec<String> = values.iter().filter(|(_, v)| !v.is_finite()).map(|(name, v)| format!("{name} {v}")).collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(TrainError::NonFinite { step, what: format!("non-finite {}", bad.join(", ")) })
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// How gradients are cut into buckets for the ring (`--first_bucket_mb`, `--bucket_mb`).
fn bucket_plan(cfg: &TrainConfig) -> BucketPlan {
    let mib = |m: f64| ((m * (1 << 20) as f64) / 4.0).round().max(1.0) as usize;
    BucketPlan { first: mib(cfg.first_bucket_mb), rest: mib(cfg.bucket_mb), overlap: cfg.overlap_comm }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad_sync::ExchangeStats;

    #[test]
    fn non_finite_values_are_named_with_their_step() {
        let mut r = StepReport {
            loss: f32::NAN,
            error_rate: 0.5,
            grad_norm: f64::INFINITY,
            ascent_grad_norm: 1.0,
            param_norm: 3.0,
            ascent_exchange: ExchangeStats::default(),
            descent_exchange: ExchangeStats::default(),
        };
        let e = check_finite(&r, 42).unwrap_err().to_string();
        assert!(e.contains("step 42") && e.contains("loss NaN") && e.contains("gradient norm inf"), "{e}");
        assert!(!e.contains("parameter norm"), "{e}");
        (r.loss, r.grad_norm) = (1.0, 2.0);
        check_finite(&r, 43).unwrap();
    }
}
