//! The SVG: delivered frames per second over time above, latency percentiles below, one
//! line per run (a `compare` draws both targets on the same axes).

use crate::report::{Point, Report};
use plotters::prelude::*;
use std::path::Path;

/// Draw `runs` (label, report) into an SVG file at `path`.
pub fn draw(path: &Path, title: &str, runs: &[(String, &Report)]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1000, 760)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(err)?;
    let (top, bottom) = root.split_vertically(370);
    let t_max = runs
        .iter()
        .flat_map(|(_, r)| r.series.iter().map(|p| p.t))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    rates(&top, t_max, runs)?;
    latencies(&bottom, t_max, runs)?;
    root.present().map_err(err)?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// Delivered frames per second, one line per run.
fn rates(area: &Area<'_>, t_max: f64, runs: &[(String, &Report)]) -> anyhow::Result<()> {
    let rate_max = runs
        .iter()
        .flat_map(|(_, r)| r.series.iter().map(|p| p.delivered_per_s))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption("delivered frames per second", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..t_max, 0f64..rate_max * 1.15)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("frames/s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    for (i, (label, report)) in runs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points = report
            .series
            .iter()
            .map(|p| (p.t as f64, p.delivered_per_s as f64));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(err)
}

/// Latency percentiles (p50, p99, p99.9) over time, three lines per run.
fn latencies(area: &Area<'_>, t_max: f64, runs: &[(String, &Report)]) -> anyhow::Result<()> {
    let lat_max = runs
        .iter()
        .flat_map(|(_, r)| r.series.iter().map(|p| p.p99_9_ms))
        .fold(0.1f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption("send → delivery latency (ms)", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..t_max, 0f64..lat_max * 1.15)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("ms")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    type Pick = fn(&Point) -> f64;
    let percentiles: [(&str, Pick, u32); 3] = [
        ("p50", |p| p.p50_ms, 1),
        ("p99", |p| p.p99_ms, 2),
        ("p99.9", |p| p.p99_9_ms, 1),
    ];
    for (i, (label, report)) in runs.iter().enumerate() {
        for (j, (name, pick, width)) in percentiles.iter().enumerate() {
            let color = Palette99::pick(i).mix(1.0 - 0.3 * j as f64);
            let points = report.series.iter().map(|p| (p.t as f64, pick(p)));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(*width)))
                .map_err(err)?
                .label(format!("{label} {name}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("plot: {e}")
}
