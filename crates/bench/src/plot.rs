//! The `--plot` figure of `ringsam bench allreduce`: busbw against size, one line per transport.
//!
//! Drawn with plotters' bitmap backend and an embedded font (DejaVu Sans, licence in
//! `assets/FONT-LICENSE.md`), so it needs no system fonts.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::allreduce::BenchRow;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Makes the embedded font plotters' `sans-serif` (every figure of ringsam's draws with it).
pub fn use_embedded_font() -> Result<(), String> {
    register_font("sans-serif", FontStyle::Normal, FONT).map_err(|_| "cannot load the embedded font".to_string())
}

/// Writes a PNG of busbw (GB/s) against message size (log scale) for every transport in `rows`.
pub fn busbw_png(path: &Path, rows: &[BenchRow]) -> Result<(), String> {
    use_embedded_font()?;
    let rows: Vec<&BenchRow> = rows.iter().filter(|r| r.bytes > 0).collect();
    if rows.is_empty() {
        return Err("no rows to plot".into());
    }
    let xmin = rows.iter().map(|r| r.bytes).min().unwrap_or(1) as f64;
    let xmax = rows.iter().map(|r| r.bytes).max().unwrap_or(2) as f64 * 1.5;
    let ymax = rows.iter().map(|r| r.busbw_gbs).fold(0.0, f64::max) * 1.15 + 1e-3;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let nproc = rows[0].nproc;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("ringsam ring all-reduce, {nproc} ranks: bus bandwidth"), ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d((xmin..xmax).log_scale(), 0.0..ymax)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("message size (bytes)")
        .y_desc("busbw (GB/s)")
        .x_label_formatter(&|v| human(*v))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    let mut transports: Vec<&str> = rows.iter().map(|r| r.transport.as_str()).collect();
    transports.dedup();
    for (i, t) in transports.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = rows.iter().filter(|r| r.transport == *t).map(|r| (r.bytes as f64, r.busbw_gbs)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(*t)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| format!("{}: {e}", path.display()))
}

fn human(b: f64) -> String {
    match b {
        b if b >= (1u64 << 30) as f64 => format!("{:.0}G", b / (1u64 << 30) as f64),
        b if b >= (1 << 20) as f64 => format!("{:.0}M", b / (1 << 20) as f64),
        b if b >= 1024.0 => format!("{:.0}K", b / 1024.0),
        b => format!("{b:.0}"),
    }
}
