//! An experiment's figures (plotters' bitmap backend, the embedded font): test accuracy against
//! label noise, one line per method; and test accuracy against time per step, one point per
//! method. Error bars are ± one standard deviation over seeds.

use std::path::Path;

use plotters::prelude::*;

use crate::summary::Group;

type Res = Result<(), String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The accuracy range of `groups` with their error bars, in %, padded.
fn accuracy_range(groups: &[Group]) -> std::ops::Range<f64> {
    let lo = groups.iter().map(|g| 100.0 * (g.mean - g.std)).fold(f64::INFINITY, f64::min);
    let hi = groups.iter().map(|g| 100.0 * (g.mean + g.std)).fold(f64::NEG_INFINITY, f64::max);
    let pad = ((hi - lo) * 0.1).max(0.5);
    (lo - pad).max(0.0)..(hi + pad).min(100.0)
}

fn methods(groups: &[Group]) -> Vec<&str> {
    let mut v: Vec<&str> = Vec::new();
    for g in groups {
        if !v.contains(&g.method.as_str()) {
            v.push(&g.method);
        }
    }
    v
}

/// Test accuracy (%) against label noise, one line per method.
pub fn accuracy_vs_noise(path: &Path, groups: &[Group], title: &str) -> Res {
    ringsam_bench::plot::use_embedded_font()?;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let nmax = groups.iter().map(|g| g.noise).fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.03..nmax + 0.03, accuracy_range(groups))
        .map_err(err)?;
    chart.configure_mesh().x_desc("label noise (fraction of training labels redrawn)").y_desc("test accuracy (%)").draw().map_err(err)?;
    for (i, m) in methods(groups).into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let mut mine: Vec<&Group> = groups.iter().filter(|g| g.method == m).collect();
        mine.sort_by(|a, b| a.noise.total_cmp(&b.noise));
        let pts: Vec<(f64, f64)> = mine.iter().map(|g| (g.noise, 100.0 * g.mean)).collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?
            .label(m)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        let bars = mine.iter().map(|g| {
            ErrorBar::new_vertical(g.noise, 100.0 * (g.mean - g.std), 100.0 * g.mean, 100.0 * (g.mean + g.std), color.filled(), 8)
        });
        chart.draw_series(bars).map_err(err)?;
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.9)).draw().map_err(err)?;
    root.present().map_err(err)
}

/// Test accuracy (%) against milliseconds per training step, one labelled point per method.
pub fn accuracy_vs_cost(path: &Path, groups: &[Group], title: &str) -> Res {
    ringsam_bench::plot::use_embedded_font()?;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (lo, hi) = groups.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), g| (lo.min(g.ms_per_step), hi.max(g.ms_per_step)));
    let pad = ((hi - lo) * 0.15).max(1.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d((lo - pad).max(0.0)..hi + pad, accuracy_range(groups))
        .map_err(err)?;
    chart.configure_mesh().x_desc("time per training step (ms)").y_desc("test accuracy (%)").draw().map_err(err)?;
    for (i, g) in groups.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let (x, y) = (g.ms_per_step, 100.0 * g.mean);
        let bar = ErrorBar::new_vertical(x, 100.0 * (g.mean - g.std), y, 100.0 * (g.mean + g.std), color.filled(), 8);
        chart
            .draw_series([bar])
            .map_err(err)?
            .label(format!("{} ({:.1} passes/step)", g.method, g.passes_per_step))
            .legend(move |(x, y)| Circle::new((x + 9, y), 4, color.filled()));
        chart.draw_series([Circle::new((x, y), 4, color.filled())]).map_err(err)?;
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.9)).draw().map_err(err)?;
    root.present().map_err(err)
}
