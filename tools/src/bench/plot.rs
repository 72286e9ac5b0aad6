//! A small hand-written SVG chart: p50, p99 and p99.9 of each ping-pong workload, kernel
//! (blocking), kernel spinning and accel, and of the raw AF_XDP floor, as grouped bars on a
//! logarithmic axis (tails are often 100 times the median) from 1 usec to the next power of
//! ten above the largest value.

use std::fmt::Write;

/// One group of bars: a workload's (p50, p99, p99.9) in microseconds for each variant that
/// ran (the floor has only its own runs, filed as accel's).
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyGroup {
    pub workload: String,
    pub kernel: Option<[f64; 3]>,
    pub kernel_spinning: Option<[f64; 3]>,
    pub accel: [f64; 3],
}

/// The bars of a percentile, left to right: label, colour (also the legend's order).
const SERIES: [(&str, &str); 3] = [
    ("kernel", "#888"),
    ("kernel spinning", "#d83"),
    ("accel", "#2a7"),
];

impl LatencyGroup {
    /// The three series in [`SERIES`] order; `None` for a variant that did not run.
    fn series(&self) -> [Option<[f64; 3]>; 3] {
        [self.kernel, self.kernel_spinning, Some(self.accel)]
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The chart as an SVG document. With no groups it still is a valid SVG saying so.
pub fn latency_svg(groups: &[LatencyGroup]) -> String {
    const PCT: [&str; 3] = ["p50", "p99", "p99.9"];
    const BAR: f64 = 22.0;
    const GAP: f64 = 10.0;
    let (left, top, plot_h) = (60.0, 40.0, 260.0);
    let slot = SERIES.len() as f64 * BAR + GAP;
    let group_w = 3.0 * slot + 30.0;
    // Wide enough for the title whatever the number of groups.
    let width = (left + group_w * groups.len().max(1) as f64 + 20.0).max(700.0);
    let height = top + plot_h + 70.0;
    let max = groups
        .iter()
        .flat_map(|g| g.series().into_iter().flatten().flatten())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    // Decades shown: 1 usec up to the power of ten above the largest value (at least 10).
    let decades = max.max(10.0).log10().ceil().max(1.0);
    let y = |v: f64| top + plot_h - (v.max(1.0).log10() / decades).min(1.0) * plot_h;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        s,
        r#"<text x="{left}" y="20" font-size="14">sockperf ping-pong latency (usec, half RTT, log scale): kernel, kernel spinning, accel; raw AF_XDP floor</text>"#
    );
    // Axis and grid.
    for i in 0..=decades as i32 {
        let v = 10f64.powi(i);
        let yy = y(v);
        let _ = write!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.0}</text>"##,
            width - 20.0,
            left - 4.0,
            yy + 4.0
        );
    }
    if groups.is_empty() {
        let _ = write!(
            s,
            r#"<text x="{left}" y="{:.0}">no ping-pong results</text>"#,
            top + plot_h / 2.0
        );
    }
    for (gi, g) in groups.iter().enumerate() {
        let gx = left + 15.0 + gi as f64 * group_w;
        for (pi, pct) in PCT.iter().enumerate() {
            let px = gx + pi as f64 * slot;
            for (si, values) in g.series().into_iter().enumerate() {
                let Some(values) = values else { continue };
                let (label, colour) = SERIES[si];
                let val = values[pi];
                let x = px + si as f64 * BAR;
                let yy = y(val);
                let _ = write!(
                    s,
                    r#"<rect x="{x:.1}" y="{yy:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{} {label} {pct}: {val:.3} usec</title></rect>"#,
                    BAR - 2.0,
                    top + plot_h - yy,
                    esc(&g.workload),
                );
            }
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{pct}</text>"#,
                px + (slot - GAP) / 2.0,
                top + plot_h + 14.0
            );
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">{}</text>"#,
            gx + 1.5 * slot - GAP / 2.0,
            top + plot_h + 30.0,
            esc(&g.workload)
        );
    }
    let ly = height - 18.0;
    let mut lx = left;
    for (label, colour) in SERIES {
        let _ = write!(
            s,
            r#"<rect x="{lx:.0}" y="{:.0}" width="12" height="12" fill="{colour}"/><text x="{:.0}" y="{ly:.0}">{label}</text>"#,
            ly - 10.0,
            lx + 16.0,
        );
        lx += 16.0 + 7.0 * label.len() as f64 + 14.0;
    }
    s.push_str("</svg>\n");
    s
}
