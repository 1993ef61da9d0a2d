//! Self-contained SVG line charts for the HTML report: ticked axes with units, a legend, shaded
//! phases, an optional limit line, and for latency distributions the percentile ("nines") axis
//! of HdrHistogram plots, where 90 %, 99 %, 99.9 % ... are evenly spaced.

use std::fmt::Write;

use super::doc::escape;

const W: f64 = 720.0;
const H: f64 = 250.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 42.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];
/// The percentile axis stops at five nines (99.999 %).
pub const MAX_NINES: f64 = 5.0;

/// One line of a chart, in data units.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

impl Series {
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            label: label.into(),
            points,
            dashed: false,
        }
    }
}

/// A shaded stretch of the x axis (a phase), labelled at its top.
#[derive(Debug, Clone)]
pub struct Band {
    pub start: f64,
    pub end: f64,
    pub label: String,
}

/// What the x axis shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum XAxis {
    /// Seconds since the run started.
    Seconds,
    /// Percentile as nines: x = -log10(1 - p/100), so 1 is p90, 2 p99, 3 p99.9.
    Nines,
}

/// A chart: its title, the y axis' quantity and unit, lines, phases and an optional
/// horizontal limit (a grade's threshold, a noise bound).
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub y_label: String,
    pub x: XAxis,
    pub series: Vec<Series>,
    pub bands: Vec<Band>,
    pub limit: Option<(f64, String)>,
    /// The x axis' extent when it must not follow the data (to align the time panels).
    pub x_span: Option<(f64, f64)>,
}

/// The percentile `p` (0..=100) on the nines axis.
pub fn nines(p: f64) -> f64 {
    if p >= 100.0 {
        MAX_NINES
    } else {
        (-(1.0 - p / 100.0).log10()).clamp(0.0, MAX_NINES)
    }
}

/// A "nice" tick step (1, 2 or 5 × 10^k) giving about `target` ticks over `range`.
pub fn nice_step(range: f64, target: f64) -> f64 {
    let raw = (range / target).max(1e-12);
    let mag = 10f64.powf(raw.log10().floor());
    let n = match raw / mag {
        x if x <= 1.0 => 1.0,
        x if x <= 2.0 => 2.0,
        x if x <= 5.0 => 5.0,
        _ => 10.0,
    };
    n * mag
}

/// Ticks covering `lo..=hi` on nice steps, with the axis widened to the outer ticks.
pub fn ticks(lo: f64, hi: f64, target: f64) -> Vec<f64> {
    let step = nice_step((hi - lo).max(1e-9), target);
    let (first, last) = ((lo / step).floor() as i64, (hi / step).ceil() as i64);
    let last = last.max(first + 1);
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A tick label: as many decimals as the step needs, thousands as k and millions as M.
pub fn tick_label(v: f64, step: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let (v, step, suffix) = match step {
        s if s >= 1e5 => (v / 1e6, step / 1e6, "M"),
        s if s >= 1e3 => (v / 1e3, step / 1e3, "k"),
        _ => (v, step, ""),
    };
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}{suffix}")
}

fn nines_label(n: f64) -> String {
    match n as u32 {
        0 => "0%".into(),
        k => format!("{}%", 100.0 - 100.0 / 10f64.powi(k as i32)),
    }
}

impl Chart {
    pub fn new(title: impl Into<String>, y_label: impl Into<String>, x: XAxis) -> Chart {
        Chart {
            title: title.into(),
            y_label: y_label.into(),
            x,
            series: Vec::new(),
            bands: Vec::new(),
            limit: None,
            x_span: None,
        }
    }

    /// Adds a series unless it has no points.
    pub fn line(mut self, series: Series) -> Chart {
        if !series.points.is_empty() {
            self.series.push(series);
        }
        self
    }

    pub fn bands(mut self, bands: Vec<Band>) -> Chart {
        self.bands = bands;
        self
    }

    pub fn limit(mut self, value: f64, label: impl Into<String>) -> Chart {
        self.limit = Some((value, label.into()));
        self
    }

    /// Spans the x axis over `from..to` at least (a run's duration).
    pub fn x_span(mut self, from: f64, to: f64) -> Chart {
        self.x_span = Some((from, to));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The chart as a `<figure>` holding an inline `<svg>`.
    pub fn svg(&self) -> String {
        let points = || self.series.iter().flat_map(|s| s.points.iter().copied());
        let (mut x0, mut x1) = (0.0f64, 1.0f64);
        let mut y1 = self.limit.as_ref().map_or(0.0, |(v, _)| *v);
        for (x, y) in points() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
        for b in &self.bands {
            x1 = x1.max(b.end);
        }
        if let Some((from, to)) = self.x_span {
            (x0, x1) = (x0.min(from), x1.max(to));
        }
        let (xt, x_step) = match self.x {
            XAxis::Nines => {
                let top = x1.ceil().clamp(1.0, MAX_NINES);
                ((0..=top as u32).map(f64::from).collect::<Vec<_>>(), 1.0)
            }
            XAxis::Seconds => {
                let t = ticks(x0, x1, 8.0);
                let step = t[1] - t[0];
                (t, step)
            }
        };
        let yt = ticks(0.0, y1.max(1e-9), 5.0);
        let y_step = yt[1] - yt[0];
        let (xa, xb) = (xt[0], *xt.last().unwrap_or(&1.0));
        let yb = *yt.last().unwrap_or(&1.0);
        let sx = |x: f64| LEFT + (x - xa) / (xb - xa) * (W - LEFT - RIGHT);
        let sy = |y: f64| H - BOTTOM - y / yb * (H - TOP - BOTTOM);
        let mut o = String::new();
        let _ = write!(
            o,
            r#"<figure class="chart"><figcaption>{}</figcaption><svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{0}">"#,
            escape(&self.title)
        );
        for (i, b) in self.bands.iter().enumerate() {
            let (a, z) = (sx(b.start.max(xa)), sx(b.end.min(xb)));
            let fill = if i % 2 == 0 { "#eef3fb" } else { "#f6f6f6" };
            let _ = write!(
                o,
                r#"<rect class="phase" x="{a:.1}" y="{TOP}" width="{:.1}" height="{}" fill="{fill}"/>"#,
                (z - a).max(0.0),
                H - TOP - BOTTOM
            );
            // Label only where it fits (about 6 px a character).
            if z - a > 6.0 * b.label.chars().count() as f64 + 4.0 {
                let _ = write!(
                    o,
                    r##"<text x="{:.1}" y="{}" font-size="10" fill="#667">{}</text>"##,
                    a + 3.0,
                    TOP + 11.0,
                    escape(&b.label)
                );
            }
        }
        for &y in &yt {
            let (y_px, label, right) = (sy(y), tick_label(y, y_step), W - RIGHT);
            let _ = write!(
                o,
                r##"<line x1="{LEFT}" x2="{right}" y1="{y_px:.1}" y2="{y_px:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{label}</text>"##,
                LEFT - 6.0,
                y_px + 4.0,
            );
        }
        for &x in &xt {
            let label = match self.x {
                XAxis::Nines => nines_label(x),
                XAxis::Seconds => tick_label(x, x_step),
            };
            let _ = write!(
                o,
                r##"<line x1="{0:.1}" x2="{0:.1}" y1="{1}" y2="{2}" stroke="#888"/><text x="{0:.1}" y="{3}" font-size="11" text-anchor="middle">{label}</text>"##,
                sx(x),
                H - BOTTOM,
                H - BOTTOM + 5.0,
                H - BOTTOM + 17.0
            );
        }
        let x_title = match self.x {
            XAxis::Nines => "percentile (log scale of nines)",
            XAxis::Seconds => "time since start (s)",
        };
        let (right, bottom, y_title) = (W - RIGHT, H - BOTTOM, escape(&self.y_label));
        let _ = write!(
            o,
            r##"<line x1="{LEFT}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#444"/><line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{bottom}" stroke="#444"/><text x="{}" y="{}" font-size="11" text-anchor="middle">{x_title}</text><text transform="translate(14 {}) rotate(-90)" font-size="11" text-anchor="middle">{y_title}</text>"##,
            (LEFT + right) / 2.0,
            H - 6.0,
            (TOP + bottom) / 2.0,
        );
        if let Some((v, label)) = &self.limit {
            let (right, y_px, label) = (W - RIGHT, sy(*v), escape(label));
            let _ = write!(
                o,
                r##"<line class="limit" x1="{LEFT}" x2="{right}" y1="{y_px:.1}" y2="{y_px:.1}" stroke="#b00" stroke-dasharray="2 3"/><text x="{}" y="{:.1}" font-size="10" fill="#b00" text-anchor="end">{label}</text>"##,
                right - 2.0,
                y_px - 3.0,
            );
        }
        let mut legend_x = LEFT;
        for (i, s) in self.series.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            let dash = if s.dashed {
                r#" stroke-dasharray="5 3""#
            } else {
                ""
            };
            let pts: Vec<String> = s
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            let _ = write!(
                o,
                r#"<polyline class="series" fill="none" stroke="{c}" stroke-width="1.6"{dash} points="{}"/>"#,
                pts.join(" ")
            );
            let _ = write!(
                o,
                r#"<line x1="{legend_x}" x2="{}" y1="12" y2="12" stroke="{c}" stroke-width="2.5"{dash}/><text class="legend" x="{}" y="16" font-size="11">{}</text>"#,
                legend_x + 18.0,
                legend_x + 22.0,
                escape(&s.label)
            );
            legend_x += 34.0 + 6.5 * s.label.chars().count() as f64;
        }
        o.push_str("</svg></figure>");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_fall_on_one_two_five_steps_and_cover_the_data() {
        assert_eq!(ticks(0.0, 9.3, 5.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(nice_step(1800.0, 8.0), 500.0);
        let t = ticks(0.0, 0.37, 5.0);
        assert_eq!(t.len(), 5);
        assert!((t[4] - 0.4).abs() < 1e-9);
        assert_eq!(tick_label(0.1, 0.1), "0.1");
        assert_eq!(tick_label(25_000.0, 5_000.0), "25k");
        assert_eq!(tick_label(1_500_000.0, 500_000.0), "1.5M");
        assert_eq!(tick_label(40.0, 10.0), "40");
        assert_eq!(tick_label(0.0, 2_000.0), "0");
    }

    #[test]
    fn the_nines_axis_spaces_p90_p99_p999_evenly() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), MAX_NINES);
        assert_eq!(nines_label(3.0), "99.9%");
        assert_eq!(nines_label(0.0), "0%");
    }

    #[test]
    fn a_chart_has_ticks_units_a_legend_and_shaded_phases() {
        let svg = Chart::new("p99 over time", "p99 (ms)", XAxis::Seconds)
            .line(Series::new("echo", vec![(0.0, 1.0), (10.0, 3.5)]))
            .line(Series::new("empty", vec![]))
            .bands(vec![Band {
                start: 2.0,
                end: 8.0,
                label: "steady".into(),
            }])
            .limit(4.0, "A ≤ 4 ms")
            .svg();
        for needle in [
            ">p99 (ms)<",
            ">time since start (s)<",
            ">echo<",
            ">steady<",
            "class=\"phase\"",
            "class=\"limit\"",
            ">A ≤ 4 ms<",
            ">10<",
        ] {
            assert!(svg.contains(needle), "{needle} missing from {svg}");
        }
        assert!(!svg.contains(">empty<"));
        assert_eq!(svg.matches("class=\"series\"").count(), 1);
    }
}
