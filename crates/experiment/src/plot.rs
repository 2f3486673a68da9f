//! An experiment's figures (plotters' bitmap backend, the embedded font): test accuracy against
//! label noise, one line per method; test accuracy against time per step, one point per method;
//! and the final weights' Hessian λ1 and m-sharpness against label noise. Error bars are ± one
//! standard deviation over seeds.

use std::path::Path;

use plotters::prelude::*;

use crate::summary::Group;

type Res = Result<(), String>;

/// A group's (mean, standard deviation) of one measure, if measured.
type MeanSd = fn(&Group) -> Option<(f64, f64)>;

/// Colours that stay apart on white (matplotlib's first five "tab10" colours, then plotters').
fn line_color(i: usize) -> RGBAColor {
    const TAB: [(u8, u8, u8); 5] = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189)];
    TAB.get(i).map_or_else(|| Palette99::pick(i).to_rgba(), |&(r, g, b)| RGBColor(r, g, b).to_rgba())
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The accuracy range of `groups` with their error bars, in %, padded.
fn accuracy_range<'a>(groups: impl Iterator<Item = &'a Group> + Clone) -> std::ops::Range<f64> {
    let lo = groups.clone().map(|g| 100.0 * (g.mean - g.std)).fold(f64::INFINITY, f64::min);
    let hi = groups.map(|g| 100.0 * (g.mean + g.std)).fold(f64::NEG_INFINITY, f64::max);
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
        .build_cartesian_2d(-0.03..nmax + 0.03, accuracy_range(groups.iter()))
        .map_err(err)?;
    chart.configure_mesh().x_desc("label noise (fraction of training labels redrawn)").y_desc("test accuracy (%)").draw().map_err(err)?;
    for (i, m) in methods(groups).into_iter().enumerate() {
        let color = line_color(i);
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
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Test accuracy (%) against milliseconds per training step, one labelled point per method.
pub fn accuracy_vs_cost(path: &Path, groups: &[Group], title: &str) -> Res {
    ringsam_bench::plot::use_embedded_font()?;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let groups: Vec<&Group> = groups.iter().filter(|g| g.ms_per_step.is_some()).collect(); // untimed: no point
    if groups.is_empty() {
        return Err("no cell timed its steps".into());
    }
    let ms = |g: &Group| g.ms_per_step.unwrap_or_default();
    let (lo, hi) = groups.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), g| (lo.min(ms(g)), hi.max(ms(g))));
    let pad = ((hi - lo) * 0.15).max(1.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d((lo - pad).max(0.0)..hi + pad, accuracy_range(groups.iter().copied()))
        .map_err(err)?;
    chart.configure_mesh().x_desc("time per training step (ms)").y_desc("test accuracy (%)").draw().map_err(err)?;
    for (i, g) in groups.iter().enumerate() {
        let color = line_color(i);
        let (x, y) = (ms(g), 100.0 * g.mean);
        let bar = ErrorBar::new_vertical(x, 100.0 * (g.mean - g.std), y, 100.0 * (g.mean + g.std), color.filled(), 8);
        chart
            .draw_series([bar])
            .map_err(err)?
            .label(format!("{} ({:.1} passes/step)", g.method, g.passes_per_step))
            .legend(move |(x, y)| Circle::new((x + 9, y), 4, color.filled()));
        chart.draw_series([Circle::new((x, y), 4, color.filled())]).map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// The final weights' Hessian λ1 (left) and m-sharpness (right) against label noise, one line
/// per method.
pub fn sharpness_vs_noise(path: &Path, groups: &[Group], title: &str) -> Res {
    ringsam_bench::plot::use_embedded_font()?;
    let root = BitMapBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(err)?;
    let halves = root.split_evenly((1, 2));
    let panels: [(&str, MeanSd); 2] = [("Hessian λ1 (largest eigenvalue)", |g| g.lambda_1), ("m-sharpness", |g| g.m_sharpness)];
    let nmax = groups.iter().map(|g| g.noise).fold(0.0, f64::max);
    for (area, (name, value)) in halves.iter().zip(panels) {
        let hi = groups.iter().filter_map(value).map(|(m, s)| m + s).fold(0.0, f64::max) * 1.1 + 1e-9;
        let mut chart = ChartBuilder::on(area)
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.03..nmax + 0.03, 0.0..hi)
            .map_err(err)?;
        chart.configure_mesh().x_desc("label noise").y_desc(name).draw().map_err(err)?;
        for (i, m) in methods(groups).into_iter().enumerate() {
            let color = line_color(i);
            let mut mine: Vec<(f64, (f64, f64))> =
                groups.iter().filter(|g| g.method == m).filter_map(|g| Some((g.noise, value(g)?))).collect();
            mine.sort_by(|a, b| a.0.total_cmp(&b.0));
            let pts: Vec<(f64, f64)> = mine.iter().map(|&(n, (v, _))| (n, v)).collect();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(err)?
                .label(m)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            chart
                .draw_series(mine.iter().map(|&(n, (v, s))| ErrorBar::new_vertical(n, v - s, v, v + s, color.filled(), 8)))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}
