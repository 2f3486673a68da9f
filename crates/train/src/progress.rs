//! A run's progress, shown two ways: a bar when stderr is a terminal, and plain log lines when
//! it is not (a pod's log, nohup, CI), where a bar prints nothing until it finishes.
//!
//! Plain lines come every `--log_every_steps` steps, or — with 0, the default — about every 30 s
//! of wall time, so a slow model and a fast one both log at a readable pace. Each line carries the
//! step, the epoch as a fraction, the running loss, images per second over the lines' interval,
//! and the time left at that pace.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Wall time between plain lines when no step interval is set.
pub const PLAIN_LINE_INTERVAL: Duration = Duration::from_secs(30);

/// What one step adds to the progress display.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepProgress {
    /// Global steps completed.
    pub step: u64,
    /// Epoch in progress, 0-based.
    pub epoch: u64,
    /// Batches of that epoch done.
    pub batch: u64,
    /// Mean loss of the epoch so far.
    pub loss: f64,
    /// Mean error rate of the epoch so far.
    pub error_rate: f64,
    /// Learning rate of the step.
    pub lr: f64,
    /// Images in one global batch.
    pub images: usize,
}

/// The bar, or the plain lines (see the module docs).
pub struct Progress {
    bar: ProgressBar,
    plain: Option<PlainLines>,
    steps_per_epoch: u64,
    epochs: u64,
}

/// When plain lines are due, and the pace since the last one.
#[derive(Debug)]
pub struct PlainLines {
    every_steps: u64,
    last_time: Instant,
    last_step: u64,
}

impl PlainLines {
    /// Lines every `every_steps` steps (0: every [`PLAIN_LINE_INTERVAL`]), counted from `now`
    /// at step `step`.
    pub fn new(every_steps: u64, now: Instant, step: u64) -> PlainLines {
        PlainLines { every_steps, last_time: now, last_step: step }
    }

    /// Whether a line is due after `step` at `now`; if so, the seconds per step since the last.
    pub fn due(&mut self, now: Instant, step: u64) -> Option<f64> {
        let steps = step.saturating_sub(self.last_step);
        let elapsed = now.saturating_duration_since(self.last_time);
        let due = match self.every_steps {
            0 => elapsed >= PLAIN_LINE_INTERVAL,
            n => steps >= n,
        };
        if !due || steps == 0 {
            return None;
        }
        (self.last_time, self.last_step) = (now, step);
        Some(elapsed.as_secs_f64() / steps as f64)
    }
}

impl Progress {
    /// A bar when `terminal`, plain lines otherwise; `shown` false (a replica other than rank 0)
    /// shows nothing.
    pub fn new(shown: bool, terminal: bool, log_every_steps: u64, steps_per_epoch: u64, epochs: u64, step: u64) -> Progress {
        let bar = if shown && terminal { ProgressBar::new(steps_per_epoch) } else { ProgressBar::hidden() };
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        let plain = (shown && !terminal).then(|| PlainLines::new(log_every_steps, Instant::now(), step));
        Progress { bar, plain, steps_per_epoch, epochs }
    }

    /// An epoch begins (0-based), resumed at `batch`.
    pub fn start_epoch(&self, epoch: u64, batch: u64) {
        self.bar.set_prefix(format!("{}/{}", epoch + 1, self.epochs));
        self.bar.set_position(batch);
    }

    /// A step is done: moves the bar, or returns the plain line that is due.
    pub fn step(&mut self, p: &StepProgress) -> Option<String> {
        self.bar.inc(1);
        self.bar.set_message(format!("loss {:.4} err {:.3} lr {:.4}", p.loss, p.error_rate, p.lr));
        let seconds_per_step = self.plain.as_mut()?.due(Instant::now(), p.step)?;
        Some(self.plain_line(p, seconds_per_step))
    }

    fn plain_line(&self, p: &StepProgress, seconds_per_step: f64) -> String {
        let total = self.steps_per_epoch * self.epochs;
        let left = total.saturating_sub(p.step) as f64 * seconds_per_step;
        let images_per_s = if seconds_per_step > 0.0 { p.images as f64 / seconds_per_step } else { 0.0 };
        let epoch = p.epoch as f64 + p.batch as f64 / self.steps_per_epoch.max(1) as f64;
        format!(
            "step {}/{total} epoch {epoch:.2}/{} loss {:.4} err {:.3} lr {:.4} {images_per_s:.1} images/s ETA {}",
            p.step,
            self.epochs,
            p.loss,
            p.error_rate,
            p.lr,
            hms(left)
        )
    }

    /// Prints a line above the bar, or through `log` when there is no bar.
    pub fn println(&self, line: &str, log: &mut dyn FnMut(&str)) {
        if self.bar.is_hidden() { log(line) } else { self.bar.println(line) }
    }

    /// Leaves the bar as it is (a stop); the next output starts below it.
    pub fn abandon(&self) {
        self.bar.abandon();
    }

    /// Clears the bar (the run is done).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// `1h02m03s`, `4m05s`, `6s`.
fn hms(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_come_every_n_steps_with_the_pace_since_the_last() {
        let t0 = Instant::now();
        let mut p = PlainLines::new(5, t0, 0);
        assert_eq!(p.due(t0 + Duration::from_secs(4), 4), None);
        assert_eq!(p.due(t0 + Duration::from_secs(10), 5), Some(2.0));
        assert_eq!(p.due(t0 + Duration::from_secs(11), 9), None);
        assert_eq!(p.due(t0 + Duration::from_secs(20), 10), Some(2.0));
    }

    #[test]
    fn without_a_step_interval_plain_lines_come_every_30_seconds() {
        let t0 = Instant::now();
        let mut p = PlainLines::new(0, t0, 100);
        assert_eq!(p.due(t0 + Duration::from_secs(29), 150), None);
        assert_eq!(p.due(t0 + Duration::from_secs(30), 160), Some(0.5));
        assert_eq!(p.due(t0 + Duration::from_secs(90), 160), None, "no step since the last line: nothing to say");
    }

    #[test]
    fn time_left_reads_as_hours_minutes_seconds() {
        assert_eq!((hms(6.0), hms(245.0), hms(3723.0)), ("6s".into(), "4m05s".into(), "1h02m03s".into()));
    }
}
