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

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use ringsam_data::loader::{Loader, LoaderConfig};
use ringsam_data::normalize::Normalization;
use ringsam_data::registry::{SyntheticSpec, load};
use ringsam_data::{Dataset, Split};
use ringsam_models::ModelConfig;
use ringsam_optim::{Ema, LrSchedule, OptimizerKind, ScheduleKind};
use ringsam_tensor::Tensor;

use crate::checkpoint::{CheckpointData, TrainingState, newest_valid, write_atomic};
use crate::config::TrainConfig;
use crate::eval::evaluate;
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
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Loads the train and test splits the configuration names.
pub fn load_splits(cfg: &TrainConfig) -> Result<(Arc<Dataset>, Arc<Dataset>), TrainError> {
    let synth = SyntheticSpec { size: cfg.image_size, ..SyntheticSpec::default() };
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
    }
}

/// Trains as `cfg` says; `log` receives one-line messages (resume, evaluation, checkpoints).
pub fn train(cfg: &TrainConfig, opts: &RunOptions, log: &mut dyn FnMut(&str)) -> Result<RunSummary, TrainError> {
    cfg.validate().map_err(TrainError::Config)?;
    let t0 = Instant::now();
    let (train_set, test_set) = load_splits(cfg)?;
    if train_set.len() < cfg.batch_size {
        return Err(TrainError::Config(format!(
            "--batch_size {} is larger than the {} training examples",
            cfg.batch_size,
            train_set.len()
        )));
    }
    let model_cfg = ModelConfig { num_classes: train_set.num_classes, in_channels: train_set.channels };
    let mut st = SamStep::new(&cfg.model_name, &model_cfg, step_config(cfg))?;
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
        flip_crop: cfg.image_level_augmentations == "basic",
        flip: train_set.name != "digits",
        cutout: (cfg.batch_level_augmentations == "cutout").then_some(cfg.cutout_length),
        normalization: Normalization::for_dataset(&train_set.name),
        seed: cfg.run_seed,
        prefetch: cfg.prefetch,
        rank: 0,
        world: 1,
    };
    let steps_per_epoch = loader_cfg.batches_per_epoch(train_set.len()) as u64;
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
    let mut tb = EventWriter::create(&run_dir, now(), "ringsam")
        .map_err(|source| TrainError::Output { path: run_dir.display().to_string(), source })?;
    let tb_err = |source| TrainError::Output { path: run_dir.display().to_string(), source };
    let mut last_save = Instant::now();
    let mut last_eval = None;
    let bar = if opts.progress { ProgressBar::new(steps_per_epoch) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );

    let checkpoint = |st: &SamStep, ema: &Option<Ema>, epoch: u64, batch: usize| -> Result<PathBuf, TrainError> {
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
        write_atomic(&run_dir, st.step, &data, cfg.keep_checkpoints)
    };

    'epochs: while epoch < cfg.num_epochs {
        bar.set_prefix(format!("{}/{}", epoch + 1, cfg.num_epochs));
        bar.set_position(start_batch as u64);
        let (mut sum_loss, mut sum_err, mut sum_gnorm, mut sum_pnorm, mut count, mut lr) = (0.0, 0.0, 0.0, 0.0, 0usize, 0.0);
        let mut batch_no = start_batch;
        for batch in Loader::new(train_set.clone(), &loader_cfg, epoch, start_batch)? {
            if cfg.max_steps.is_some_and(|m| st.step >= m) {
                start_batch = batch_no; // already at the limit (a resumed run): stop before stepping
                break 'epochs;
            }
            if opts.stop.load(Ordering::SeqCst) {
                let dir = checkpoint(&st, &ema, epoch, batch_no)?;
                bar.abandon();
                log(&format!("stop requested: wrote {}", dir.display()));
                return Err(TrainError::Interrupted { step: st.step });
            }
            lr = schedule.lr_at(st.step);
            let x = Tensor::from_vec(&[batch.c, batch.n, batch.h, batch.w], batch.images)?;
            let r = st.step(&x, &batch.labels, lr as f32)?;
            if !r.loss.is_finite() {
                return Err(TrainError::Config(format!("loss became {} at step {} (lower --learning_rate?)", r.loss, st.step)));
            }
            if let Some(e) = ema.as_mut() {
                e.update(st.step, &st.arena.params, &st.state);
            }
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
        let step = st.step;
        if count > 0 {
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
            let (prefix, params, state) = match ema.as_mut() {
                Some(e) => ("ema_test", &e.params[..], &mut e.state),
                None => ("test", &st.arena.params[..], &mut st.state),
            };
            // Evaluation runs in eval mode, which reads the running statistics and never writes them.
            let r = evaluate(st.model.as_mut(), params, state, &test_set, cfg.batch_size)?;
            let mut scalars = vec![(format!("{prefix}_loss"), r.loss), (format!("{prefix}_error_rate"), r.error_rate)];
            if cfg.compute_top_5_error_rate {
                scalars.push((format!("{prefix}_top_5_error_rate"), r.top5_error_rate));
            }
            if cfg.also_eval_on_training_set {
                let t = evaluate(st.model.as_mut(), &st.arena.params, &mut st.state, &train_set, cfg.batch_size)?;
                scalars.push(("eval_on_train_loss".into(), t.loss));
                scalars.push(("eval_on_train_error_rate".into(), t.error_rate));
            }
            let refs: Vec<(&str, f64)> = scalars.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            tb.scalars(step, now(), &refs).map_err(tb_err)?;
            bar.println(format!(
                "epoch {epoch}: {prefix} loss {:.4}, {prefix} error {:.2}% ({} examples)",
                r.loss,
                100.0 * r.error_rate,
                r.examples
            ));
            last_eval = Some(r);
        }
        let due = (cfg.checkpoint_every_epochs > 0 && epoch % cfg.checkpoint_every_epochs == 0)
            || last_save.elapsed().as_secs() >= cfg.save_progress_seconds;
        if due && epoch < cfg.num_epochs {
            checkpoint(&st, &ema, epoch, 0)?;
            last_save = Instant::now();
        }
    }
    bar.finish_and_clear();
    let dir = checkpoint(&st, &ema, epoch, start_batch)?;
    log(&format!("final checkpoint {}", dir.display()));
    Ok(RunSummary {
        run_dir,
        steps: st.step,
        test_error_rate: last_eval.map(|r| r.error_rate),
        test_loss: last_eval.map(|r| r.loss),
        resumed_from,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
