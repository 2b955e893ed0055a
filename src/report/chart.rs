//! Drawing figures as SVG with plotters: panels of lines with a spread band, and heat maps.
//!
//! Text is left to the browser (SVG `<text>`), so no font files are needed to draw.

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::stats::Stat;

/// One line: a mean per x, with its spread over seeds.
#[derive(Debug, Clone)]
pub struct Line {
    /// Legend entry.
    pub name: String,
    /// (x, statistic) in increasing x.
    pub points: Vec<(f64, Stat)>,
}

/// One plot of a figure.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Caption above the plot.
    pub title: String,
    /// X axis description.
    pub x_label: String,
    /// Y axis description.
    pub y_label: String,
    /// Names of the integer x positions 0, 1, ... (layers), or `None` for a numeric axis.
    pub x_names: Option<Vec<String>>,
    /// The lines.
    pub lines: Vec<Line>,
}

/// A heat map: one cell per (row, column), with an optional reference value drawn as an
/// outlined extra column.
#[derive(Debug, Clone)]
pub struct Heat {
    /// Caption.
    pub title: String,
    /// X axis description.
    pub x_label: String,
    /// Y axis description.
    pub y_label: String,
    /// Column names, left to right.
    pub cols: Vec<String>,
    /// Row names, bottom to top.
    pub rows: Vec<String>,
    /// `cells[row][col]`.
    pub cells: Vec<Vec<Option<Stat>>>,
    /// Name and value of the reference column (e.g. no rollback).
    pub reference: Option<(String, Stat)>,
}

/// Colors of successive lines (Tableau 10).
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Stops of the viridis color map, low to high.
const VIRIDIS: [(u8, u8, u8); 5] = [
    (68, 1, 84),
    (59, 82, 139),
    (33, 145, 140),
    (94, 201, 98),
    (253, 231, 37),
];

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing failed: {e}")
}

/// The viridis color of `t` in [0, 1].
pub fn viridis(t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (VIRIDIS.len() - 1) as f64;
    let i = (x.floor() as usize).min(VIRIDIS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mix = |p: u8, q: u8| (p as f64 + (q as f64 - p as f64) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Axis range with a margin, never empty.
fn range(lo: f64, hi: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        let pad = if lo.abs() > 1e-12 {
            lo.abs() * 0.1
        } else {
            0.5
        };
        return (lo - pad, hi + pad);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

/// A figure of panels in a grid of `columns`, with a title.
pub fn panels_svg(title: &str, panels: &[Panel], columns: usize) -> Result<String> {
    let columns = columns.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(columns).max(1);
    let size = (440 * columns as u32, 50 + 330 * rows as u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let body = root.titled(title, ("sans-serif", 22)).map_err(err)?;
        for (panel, area) in panels.iter().zip(body.split_evenly((rows, columns))) {
            draw_panel(&area, panel)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Panel) -> Result<()> {
    let xs = p
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|(x, _)| *x));
    let (xlo, xhi) = match &p.x_names {
        Some(names) => (-0.5, names.len() as f64 - 0.5),
        None => range(
            xs.clone().fold(f64::INFINITY, f64::min),
            xs.fold(f64::NEG_INFINITY, f64::max),
        ),
    };
    let ys = p
        .lines
        .iter()
        .flat_map(|l| l.points.iter().flat_map(|(_, s)| [s.low(), s.high()]));
    let (ylo, yhi) = range(
        ys.clone().fold(f64::INFINITY, f64::min),
        ys.fold(f64::NEG_INFINITY, f64::max),
    );
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(58)
        .build_cartesian_2d(xlo..xhi, ylo..yhi)
        .map_err(err)?;
    let name_of = |x: &f64| -> String {
        let i = x.round();
        match &p.x_names {
            Some(names) if (x - i).abs() < 1e-9 && i >= 0.0 => {
                names.get(i as usize).cloned().unwrap_or_default()
            }
            Some(_) => String::new(),
            None if (x - i).abs() < 1e-9 => format!("{i:.0}"),
            None => format!("{x:.2}"),
        }
    };
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(p.x_label.as_str())
        .y_desc(p.y_label.as_str())
        .light_line_style(WHITE)
        .label_style(("sans-serif", 12));
    mesh.x_label_formatter(&name_of);
    if let Some(names) = &p.x_names {
        mesh.x_labels(names.len().max(1));
    }
    mesh.draw().map_err(err)?;
    for (i, line) in p.lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        if line.points.iter().any(|(_, s)| s.sd > 0.0) {
            let mut band: Vec<(f64, f64)> =
                line.points.iter().map(|(x, s)| (*x, s.high())).collect();
            band.extend(line.points.iter().rev().map(|(x, s)| (*x, s.low())));
            chart
                .draw_series(std::iter::once(Polygon::new(
                    band,
                    color.mix(0.18).filled(),
                )))
                .map_err(err)?;
        }
        chart
            .draw_series(LineSeries::new(
                line.points.iter().map(|(x, s)| (*x, s.mean)),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(line.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        if line.points.len() <= 12 {
            chart
                .draw_series(
                    line.points
                        .iter()
                        .map(|(x, s)| Circle::new((*x, s.mean), 3, color.filled())),
                )
                .map_err(err)?;
        }
    }
    if !p.lines.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 12))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// A heat map with every cell's mean written in it.
pub fn heat_svg(h: &Heat) -> Result<String> {
    let ncols = h.cols.len() + usize::from(h.reference.is_some());
    let nrows = h.rows.len().max(1);
    let size = (
        (170 + 92 * ncols as u32).max(480),
        (150 + 44 * nrows as u32).max(320),
    );
    let values: Vec<f64> = h
        .cells
        .iter()
        .flatten()
        .flatten()
        .chain(h.reference.as_ref().map(|(_, s)| s))
        .map(|s| s.mean)
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let scale = |v: f64| {
        if hi - lo > 1e-12 {
            (v - lo) / (hi - lo)
        } else {
            0.5
        }
    };
    let mut names = h.cols.clone();
    if let Some((name, _)) = &h.reference {
        names.push(name.clone());
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&h.title, ("sans-serif", 18))
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.5..ncols as f64 - 0.5, -0.5..nrows as f64 - 0.5)
            .map_err(err)?;
        let label = |names: &[String], x: f64| -> String {
            let i = x.round();
            if (x - i).abs() < 1e-9 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        let col_label = |x: &f64| label(&names, *x);
        let row_label = |y: &f64| label(&h.rows, *y);
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(ncols.max(1))
            .y_labels(nrows)
            .x_label_formatter(&col_label)
            .y_label_formatter(&row_label)
            .x_desc(h.x_label.as_str())
            .y_desc(h.y_label.as_str())
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(err)?;
        let text = |v: f64, x: f64, y: f64| {
            let color = if scale(v) > 0.6 { BLACK } else { WHITE };
            Text::new(
                format!("{v:.3}"),
                (x, y),
                ("sans-serif", 13)
                    .into_font()
                    .color(&color)
                    .pos(Pos::new(HPos::Center, VPos::Center)),
            )
        };
        let mut cells: Vec<(f64, f64, f64)> = Vec::new();
        for (r, row) in h.cells.iter().enumerate() {
            for (c, cell) in row.iter().enumerate() {
                if let Some(s) = cell {
                    cells.push((c as f64, r as f64, s.mean));
                }
            }
        }
        if let Some((_, s)) = &h.reference {
            cells.extend((0..h.rows.len()).map(|r| (h.cols.len() as f64, r as f64, s.mean)));
        }
        for (x, y, v) in cells {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                    viridis(scale(v)).filled(),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(text(v, x, y)))
                .map_err(err)?;
        }
        if h.reference.is_some() {
            let x = h.cols.len() as f64;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x - 0.47, -0.47), (x + 0.47, nrows as f64 - 0.53)],
                    BLACK.stroke_width(3),
                )))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_ends_are_the_map_ends() {
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
        assert_eq!(viridis(0.5), RGBColor(33, 145, 140));
        assert_eq!(viridis(f64::NAN), RGBColor(68, 1, 84));
    }

    #[test]
    fn figures_are_svg_with_their_text() {
        let s = |m| Stat::of(&[m, m + 0.1]).unwrap();
        let svg = panels_svg(
            "Accuracy",
            &[Panel {
                title: "test".into(),
                x_label: "epoch".into(),
                y_label: "accuracy".into(),
                x_names: None,
                lines: vec![Line {
                    name: "noise=0.4".into(),
                    points: vec![(0.0, s(0.1)), (1.0, s(0.5))],
                }],
            }],
            2,
        )
        .unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("noise=0.4") && svg.contains("<polygon"));
        let heat = heat_svg(&Heat {
            title: "Rollback".into(),
            x_label: "cut-off".into(),
            y_label: "epoch".into(),
            cols: vec!["fc1".into(), "fc2".into()],
            rows: vec!["1".into()],
            cells: vec![vec![Some(s(0.5)), None]],
            reference: Some(("no rollback".into(), s(0.7))),
        })
        .unwrap();
        assert!(heat.contains("no rollback") && heat.contains("0.550") && heat.contains("0.750"));
    }
}
