//! Drawing figures as SVG with plotters: panels of lines with a spread band, and heat maps.
//!
//! Text is left to the browser (SVG `<text>`), so no font files are needed to draw.

use anyhow::{Result, anyhow, bail};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{
    AsRangedCoord, DefaultFormatting, KeyPointHint, Ranged, ValueFormatter,
};
use plotters::coord::types::RangedCoordf64;
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
    /// How the x axis is scaled (numeric axes only).
    pub x_scale: XScale,
    /// Draw each mean as a dot with a ±1 sd whisker and no line joining them: for x values
    /// that are categories with no order between them (methods, say).
    pub markers_only: bool,
    /// The y axis range shared with other panels (a row of a grid), or `None` to fit the
    /// panel's own data.
    pub y_range: Option<(f64, f64)>,
    /// The lowest value the y axis and the spread bands reach (0 for an error rate), or
    /// `None` for no floor.
    pub y_floor: Option<f64>,
    /// The lines.
    pub lines: Vec<Line>,
}

/// The scale of a numeric x axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XScale {
    /// Linear.
    Linear,
    /// Logarithmic (x values must be positive), with ticks at the data's x values (or at 1,
    /// 2, 5 times powers of ten when there are many).
    Log,
    /// log(1 + x), for epochs counted from 0: the early epochs spread out, the late ones
    /// drawn closer; ticks as for [`XScale::Log`], at 0 too.
    Log1p,
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

/// Axis range with a margin, never empty, finite and of finite width; `axis` names it in
/// the error for data that spans more than a 64-bit float holds (which no axis can show).
/// No data (or none finite) gives 0..1.
fn range(axis: &str, lo: f64, hi: f64) -> Result<(f64, f64)> {
    if !(lo.is_finite() && hi.is_finite()) {
        return Ok((0.0, 1.0));
    }
    let span = hi - lo;
    if !span.is_finite() {
        bail!(
            "the {axis} axis would span {lo:e} to {hi:e}, more than a 64-bit float holds; \
             scale the values down"
        );
    }
    let pad = if span < 1e-12 {
        if lo.abs() > 1e-12 {
            lo.abs() * 0.1
        } else {
            0.5
        }
    } else {
        span * 0.05
    };
    let (plo, phi) = ((lo - pad).max(-f64::MAX), (hi + pad).min(f64::MAX));
    // A margin that would make the width overflow is left off.
    Ok(if (phi - plo).is_finite() {
        (plo, phi)
    } else {
        (lo, hi)
    })
}

/// The font size (px) at which `text` fits in `width` pixels, at most `max`.
///
/// Sans-serif glyphs average about 0.56 em; the estimate errs towards smaller text.
pub fn fitted_font(text: &str, width: u32, max: u32) -> u32 {
    let chars = text.chars().count().max(1) as f64;
    ((width as f64 * 0.92 / (0.58 * chars)).floor() as u32).clamp(9, max)
}

/// The figure's series names in first-seen order: series `i` is drawn in `COLORS[i]` in
/// every panel, so a name keeps its color across panels.
fn series_names(panels: &[Panel]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for l in panels.iter().flat_map(|p| &p.lines) {
        if !names.contains(&l.name) {
            names.push(l.name.clone());
        }
    }
    names
}

/// Pixels a legend entry takes: its swatch, a gap and its name (about 7 px a character).
fn legend_entry_width(name: &str) -> u32 {
    40 + 7 * name.chars().count() as u32
}

/// The rows of a legend strip across `width`: the indices of `names` on each row.
fn legend_rows(names: &[String], width: u32) -> Vec<Vec<usize>> {
    let mut rows: Vec<Vec<usize>> = Vec::new();
    let mut used = width;
    for (i, n) in names.iter().enumerate() {
        let w = legend_entry_width(n);
        if used + w > width.saturating_sub(20) || rows.is_empty() {
            rows.push(Vec::new());
            used = 20;
        }
        used += w;
        if let Some(r) = rows.last_mut() {
            r.push(i);
        }
    }
    rows
}

/// Draws a legend strip: one swatch and name per series, in rows.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    names: &[String],
    rows: &[Vec<usize>],
    swatch: impl Fn(usize) -> (RGBColor, bool),
) -> Result<()> {
    for (r, row) in rows.iter().enumerate() {
        let y = 12 + 20 * r as i32;
        let mut x = 20;
        for &i in row {
            let (color, dot) = swatch(i);
            if dot {
                area.draw(&Circle::new((x + 9, y), 5, color.filled()))
                    .map_err(err)?;
            } else {
                area.draw(&PathElement::new(
                    vec![(x, y), (x + 18, y)],
                    color.stroke_width(3),
                ))
                .map_err(err)?;
            }
            area.draw(&Text::new(
                names[i].clone(),
                (x + 24, y),
                ("sans-serif", 13)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(err)?;
            x += legend_entry_width(&names[i]) as i32;
        }
    }
    Ok(())
}

/// A figure of panels in a grid of `columns`, with a title that fits its width and one
/// legend under the panels (each series one color in every panel).
pub fn panels_svg(title: &str, panels: &[Panel], columns: usize) -> Result<String> {
    let columns = columns.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(columns).max(1);
    let width = 440 * columns as u32;
    let names = series_names(panels);
    let legend = legend_rows(&names, width);
    let legend_h = if names.is_empty() {
        0
    } else {
        8 + 20 * legend.len() as u32
    };
    let size = (width, 50 + 330 * rows as u32 + legend_h);
    let color_of = |name: &str| {
        let i = names.iter().position(|n| n == name).unwrap_or(0);
        COLORS[i % COLORS.len()]
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let body = root
            .titled(title, ("sans-serif", fitted_font(title, width, 22)))
            .map_err(err)?;
        let (grid, strip) = body.split_vertically(330 * rows as u32);
        for (panel, area) in panels.iter().zip(grid.split_evenly((rows, columns))) {
            draw_panel(&area, panel, &color_of)?;
        }
        draw_legend(&strip, &names, &legend, |i| {
            (COLORS[i % COLORS.len()], false)
        })?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Draws one panel: axes, the mean line of each series, its sd band, and markers when
/// there are few points.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: &Panel,
    color_of: &dyn Fn(&str) -> RGBColor,
) -> Result<()> {
    let scale = if p.x_names.is_some() {
        XScale::Linear
    } else {
        p.x_scale
    };
    let log_x = scale != XScale::Linear;
    let logged;
    let p = if log_x {
        logged = log_scaled(p, scale);
        &logged
    } else {
        p
    };
    let xs = p
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|(x, _)| *x));
    let integer_x = !log_x && xs.clone().all(|x| x.fract() == 0.0);
    let (xlo, xhi) = match &p.x_names {
        Some(names) => (-0.5, names.len() as f64 - 0.5),
        None => range(
            "x",
            xs.clone().fold(f64::INFINITY, f64::min),
            xs.fold(f64::NEG_INFINITY, f64::max),
        )?,
    };
    let ys = p
        .lines
        .iter()
        .flat_map(|l| l.points.iter().flat_map(|(_, s)| [s.low(), s.high()]));
    let (mut ylo, yhi) = match p.y_range {
        Some((lo, hi)) => range("y", lo, hi)?,
        None => range(
            "y",
            ys.clone().fold(f64::INFINITY, f64::min),
            ys.fold(f64::NEG_INFINITY, f64::max),
        )?,
    };
    if let Some(floor) = p.y_floor.filter(|f| *f < yhi) {
        ylo = ylo.max(floor);
    }
    if log_x {
        let data: Vec<f64> = p
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|(x, _)| *x))
            .collect();
        let ticks = log_ticks(&data, xlo, xhi, scale);
        plot(
            area,
            p,
            LogAxis {
                inner: (xlo..xhi).into(),
                ticks,
            },
            ylo..yhi,
            color_of,
            |x| x_tick(p, scale, false, *x),
            None,
        )
    } else {
        let labels = match &p.x_names {
            Some(names) => Some(names.len().max(1)),
            // At most one label per integer.
            None if integer_x => Some(((xhi - xlo).floor() as usize + 1).clamp(2, 10)),
            None => None,
        };
        plot(
            area,
            p,
            xlo..xhi,
            ylo..yhi,
            color_of,
            |x| x_tick(p, scale, integer_x, *x),
            labels,
        )
    }
}

/// A log axis: log10(x) drawn linearly, with ticks at chosen places only.
struct LogAxis {
    /// The linear coordinate of log10(x).
    inner: RangedCoordf64,
    /// The ticks, in log10(x).
    ticks: Vec<f64>,
}

impl Ranged for LogAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

/// Where a log axis (drawn as log10 of x, or of 1 + x, over `xlo..xhi`) has its ticks: at
/// the data's x values (`data`, in log10) when there are at most 12 of them, else at 1, 2
/// and 5 times the powers of ten in range (and at 0 on a [`XScale::Log1p`] axis).
fn log_ticks(data: &[f64], xlo: f64, xhi: f64, scale: XScale) -> Vec<f64> {
    let mut distinct: Vec<f64> = data.iter().copied().filter(|x| x.is_finite()).collect();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    if !distinct.is_empty() && distinct.len() <= 12 {
        return distinct;
    }
    let mut out = Vec::new();
    if !(xlo.is_finite() && xhi.is_finite()) {
        return out;
    }
    if scale == XScale::Log1p && xlo <= 0.0 {
        out.push(0.0);
    }
    for decade in (xlo.floor() as i32)..=(xhi.ceil() as i32) {
        for m in [1.0f64, 2.0, 5.0] {
            let v = m * 10f64.powi(decade);
            let t = match scale {
                XScale::Log1p => v.ln_1p() / std::f64::consts::LN_10,
                _ => v.log10(),
            };
            if t >= xlo && t <= xhi && out.last().is_none_or(|l| t - l > 0.05) {
                out.push(t);
            }
        }
    }
    out
}

/// Draws a panel's axes and lines on the x coordinate `x` (linear, or log10 with chosen
/// ticks) and y range `y`, labelling x ticks with `name_of`.
fn plot<DB: DrawingBackend, X>(
    area: &DrawingArea<DB, Shift>,
    p: &Panel,
    x: X,
    y: std::ops::Range<f64>,
    color_of: &dyn Fn(&str) -> RGBColor,
    name_of: impl Fn(&f64) -> String,
    labels: Option<usize>,
) -> Result<()>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let caption = (
        "sans-serif",
        fitted_font(&p.title, area.dim_in_pixel().0, 16),
    );
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, caption)
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(58)
        .build_cartesian_2d(x, y)
        .map_err(err)?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(p.x_label.as_str())
        .y_desc(p.y_label.as_str())
        .light_line_style(WHITE)
        .label_style(("sans-serif", 12));
    mesh.x_label_formatter(&name_of);
    if let Some(n) = labels {
        mesh.x_labels(n);
    }
    mesh.draw().map_err(err)?;
    for line in &p.lines {
        if p.markers_only {
            draw_markers(&mut chart, line, color_of(&line.name))?;
        } else {
            draw_line(&mut chart, line, color_of(&line.name), p.y_floor)?;
        }
    }
    Ok(())
}
/// The panel with x replaced by log10(x), or log10(1 + x) on a [`XScale::Log1p`] axis
/// (points where that is undefined dropped): a log axis is drawn as a linear axis of the
/// logarithm, labelled with x.
fn log_scaled(p: &Panel, scale: XScale) -> Panel {
    let mut q = p.clone();
    for l in &mut q.lines {
        l.points.retain(|(x, _)| match scale {
            XScale::Log1p => *x > -1.0,
            _ => *x > 0.0,
        });
        for (x, _) in &mut l.points {
            *x = match scale {
                XScale::Log1p => x.ln_1p() / std::f64::consts::LN_10,
                _ => x.log10(),
            };
        }
    }
    q
}

/// The label of the x tick at `x`: a category's name, the value behind a log axis, and
/// integer axes (epochs, layers) labelled at integers only.
fn x_tick(p: &Panel, scale: XScale, integer_x: bool, x: f64) -> String {
    let i = x.round();
    let on_integer = (x - i).abs() < 1e-9;
    match &p.x_names {
        Some(names) if on_integer && i >= 0.0 => names.get(i as usize).cloned().unwrap_or_default(),
        Some(_) => String::new(),
        None if scale != XScale::Linear => {
            let v = match scale {
                XScale::Log1p => 10f64.powf(x) - 1.0,
                _ => 10f64.powf(x),
            };
            let r = v.round();
            if (v - r).abs() < 1e-6 * v.max(1.0) {
                format!("{:.0}", r + 0.0)
            } else {
                let t = format!("{v:.3}");
                t.trim_end_matches('0').trim_end_matches('.').to_string()
            }
        }
        None if on_integer => format!("{i:.0}"),
        None if integer_x => String::new(),
        None => format!("{x:.2}"),
    }
}

/// One series: its sd band (when any sd is positive), its mean line, and markers when it
/// has at most 12 points.
fn draw_line<DB: DrawingBackend, X: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, RangedCoordf64>>,
    line: &Line,
    color: RGBColor,
    floor: Option<f64>,
) -> Result<()> {
    if line.points.iter().any(|(_, s)| s.sd > 0.0) {
        let low = |s: &Stat| floor.map_or(s.low(), |f| s.low().max(f));
        let mut band: Vec<(f64, f64)> = line.points.iter().map(|(x, s)| (*x, s.high())).collect();
        band.extend(line.points.iter().rev().map(|(x, s)| (*x, low(s))));
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
        .map_err(err)?;
    if line.points.len() <= 12 {
        chart
            .draw_series(
                line.points
                    .iter()
                    .map(|(x, s)| Circle::new((*x, s.mean), 3, color.filled())),
            )
            .map_err(err)?;
    }
    Ok(())
}

/// One series of categories: a dot per mean with a ±1 sd whisker, no line between them.
fn draw_markers<DB: DrawingBackend, X: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, RangedCoordf64>>,
    line: &Line,
    color: RGBColor,
) -> Result<()> {
    for (x, s) in &line.points {
        if s.sd > 0.0 {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(*x - 0.01, s.low()), (*x + 0.01, s.high())],
                    color.filled(),
                )))
                .map_err(err)?;
        }
    }
    chart
        .draw_series(
            line.points
                .iter()
                .map(|(x, s)| Circle::new((*x, s.mean), 5, color.filled())),
        )
        .map_err(err)?;
    Ok(())
}

/// A grid of scatter plots sharing one color legend: `cells[row][col]` holds points
/// `(x, y, class)`, each panel on its own axes.
#[derive(Debug, Clone)]
pub struct ScatterGrid {
    /// Caption of the figure.
    pub title: String,
    /// Row captions (e.g. epochs), top to bottom.
    pub rows: Vec<String>,
    /// Column captions (e.g. labelings), left to right.
    pub cols: Vec<String>,
    /// Points per cell.
    pub cells: Vec<Vec<Vec<(f64, f64, usize)>>>,
    /// Legend names of the classes, by class.
    pub classes: Vec<String>,
}

/// Draws a [`ScatterGrid`]: one panel per cell, dots colored by class, one legend.
pub fn scatter_svg(g: &ScatterGrid) -> Result<String> {
    let (ncols, nrows) = (g.cols.len().max(1), g.rows.len().max(1));
    let width = 330 * ncols as u32;
    let legend = legend_rows(&g.classes, width);
    let size = (
        width,
        50 + 300 * nrows as u32 + 8 + 20 * legend.len() as u32,
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let body = root
            .titled(&g.title, ("sans-serif", fitted_font(&g.title, width, 22)))
            .map_err(err)?;
        let (grid, strip) = body.split_vertically(300 * nrows as u32);
        let areas = grid.split_evenly((nrows, ncols));
        for (k, area) in areas.iter().enumerate() {
            let (r, c) = (k / ncols, k % ncols);
            let points = g.cells.get(r).and_then(|row| row.get(c));
            let points = points.map_or(&[][..], Vec::as_slice);
            let caption = format!(
                "{}, {}",
                g.rows.get(r).map_or("", String::as_str),
                g.cols.get(c).map_or("", String::as_str)
            );
            let (xlo, xhi) = range(
                "x",
                points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min),
                points.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max),
            )?;
            let (ylo, yhi) = range(
                "y",
                points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min),
                points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max),
            )?;
            let font = fitted_font(&caption, area.dim_in_pixel().0, 15);
            let mut chart = ChartBuilder::on(area)
                .caption(&caption, ("sans-serif", font))
                .margin(10)
                .build_cartesian_2d(xlo..xhi, ylo..yhi)
                .map_err(err)?;
            chart
                .configure_mesh()
                .disable_mesh()
                .disable_x_axis()
                .disable_y_axis()
                .draw()
                .map_err(err)?;
            area.draw(&Rectangle::new(
                [(0, 0), {
                    let (w, h) = area.dim_in_pixel();
                    (w as i32 - 1, h as i32 - 1)
                }],
                BLACK.mix(0.15).stroke_width(1),
            ))
            .map_err(err)?;
            chart
                .draw_series(points.iter().map(|&(x, y, class)| {
                    Circle::new((x, y), 2, COLORS[class % COLORS.len()].mix(0.8).filled())
                }))
                .map_err(err)?;
        }
        draw_legend(&strip, &g.classes, &legend, |i| {
            (COLORS[i % COLORS.len()], true)
        })?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}
/// The heat map's cells as (column, row, mean), the reference column last.
fn heat_cells(h: &Heat) -> Vec<(f64, f64, f64)> {
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
    cells
}

/// The name of the category at an integer tick, nothing between them.
fn category_tick(names: &[String], x: f64) -> String {
    let i = x.round();
    if (x - i).abs() < 1e-9 && i >= 0.0 {
        names.get(i as usize).cloned().unwrap_or_default()
    } else {
        String::new()
    }
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
            .caption(&h.title, ("sans-serif", fitted_font(&h.title, size.0, 18)))
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.5..ncols as f64 - 0.5, -0.5..nrows as f64 - 0.5)
            .map_err(err)?;
        let col_label = |x: &f64| category_tick(&names, *x);
        let row_label = |y: &f64| category_tick(&h.rows, *y);
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
        for (x, y, v) in heat_cells(h) {
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
    fn titles_shrink_to_fit_and_series_keep_their_color_across_panels() {
        assert_eq!(fitted_font("Short title", 440, 22), 22);
        // 60 characters in 440 px: 440 * 0.92 / (0.58 * 60) = 11.6.
        assert_eq!(fitted_font(&"x".repeat(60), 440, 22), 11);
        assert_eq!(fitted_font(&"x".repeat(500), 440, 22), 9);
        let s = |m| Stat::of(&[m]).unwrap();
        let line = |name: &str| Line {
            name: name.into(),
            points: vec![(0.0, s(0.1)), (1.0, s(0.5))],
        };
        let panel = |lines| Panel {
            title: "p".into(),
            x_label: "epoch".into(),
            y_label: "v".into(),
            x_names: None,
            x_scale: XScale::Linear,
            markers_only: false,
            y_range: None,
            y_floor: None,
            lines,
        };
        let svg = panels_svg(
            "t",
            &[panel(vec![line("a"), line("b")]), panel(vec![line("b")])],
            2,
        )
        .unwrap();
        // "b" is the second series: orange (#FF7F0E) in both panels, and in the legend.
        let orange = svg.matches("stroke=\"#FF7F0E\"").count();
        assert!(orange >= 3, "{orange}");
        assert_eq!(svg.matches("\nb\n</text>").count(), 1, "one legend entry");
    }

    #[test]
    fn categories_are_dots_without_a_joining_line_and_epochs_can_spread_out() {
        let s = |m| Stat::of(&[m, m + 0.1]).unwrap();
        let panel = |markers_only, x_scale| Panel {
            title: "accuracy".into(),
            x_label: "labels".into(),
            y_label: "test accuracy".into(),
            x_names: None,
            x_scale,
            markers_only,
            y_range: None,
            y_floor: None,
            lines: vec![Line {
                name: "noise=0.4".into(),
                points: vec![(0.0, s(0.6)), (1.0, s(0.7)), (2.0, s(0.8))],
            }],
        };
        // Series are drawn 2 px wide (axes 1 px, legend swatches 3 px).
        let series_line = "stroke-width=\"2\" points=";
        let dots = panels_svg("t", &[panel(true, XScale::Linear)], 1).unwrap();
        assert!(!dots.contains(series_line), "no line joins categories");
        assert_eq!(dots.matches("<circle").count(), 3);
        let joined = panels_svg("t", &[panel(false, XScale::Linear)], 1).unwrap();
        assert!(joined.contains(series_line));
        // log(1 + epoch): ticks at the data's epochs, 0 included.
        let log1p = |x: f64| x.ln_1p() / std::f64::consts::LN_10;
        let data = [log1p(0.0), log1p(1.0), log1p(2.0), log1p(50.0)];
        assert_eq!(log_ticks(&data, -0.1, 1.8, XScale::Log1p), data);
        let epochs = panels_svg("t", &[panel(false, XScale::Log1p)], 1).unwrap();
        for tick in ["\n0\n</text>", "\n1\n</text>", "\n2\n</text>"] {
            assert!(epochs.contains(tick), "{tick}");
        }
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
                x_scale: XScale::Linear,
                markers_only: false,
                y_range: None,
                y_floor: None,
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
