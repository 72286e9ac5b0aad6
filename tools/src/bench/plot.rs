//! A small hand-written SVG chart: p50, p99 and p99.9 of each ping-pong workload, kernel vs
//! accel, as grouped bars on a logarithmic axis (tails are often 100 times the median) from
//! 1 usec to the next power of ten above the largest value.

use std::fmt::Write;

/// One group of bars: a workload's (p50, p99, p99.9) in microseconds for each stack.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyGroup {
    pub workload: String,
    pub kernel: [f64; 3],
    pub accel: [f64; 3],
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
    let group_w = 3.0 * (2.0 * BAR + GAP) + 30.0;
    let width = left + group_w * groups.len().max(1) as f64 + 20.0;
    let height = top + plot_h + 70.0;
    let max = groups
        .iter()
        .flat_map(|g| g.kernel.iter().chain(&g.accel))
        .copied()
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
        r#"<text x="{left}" y="20" font-size="14">sockperf ping-pong latency (usec, half RTT, log scale): kernel vs accel</text>"#
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
            let px = gx + pi as f64 * (2.0 * BAR + GAP);
            for (si, (val, colour)) in [(g.kernel[pi], "#888"), (g.accel[pi], "#2a7")]
                .into_iter()
                .enumerate()
            {
                let x = px + si as f64 * BAR;
                let yy = y(val);
                let _ = write!(
                    s,
                    r#"<rect x="{x:.1}" y="{yy:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{} {} {}: {val:.3} usec</title></rect>"#,
                    BAR - 2.0,
                    top + plot_h - yy,
                    esc(&g.workload),
                    if si == 0 { "kernel" } else { "accel" },
                    pct
                );
            }
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{pct}</text>"#,
                px + BAR,
                top + plot_h + 14.0
            );
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">{}</text>"#,
            gx + 1.5 * (2.0 * BAR + GAP) - GAP / 2.0,
            top + plot_h + 30.0,
            esc(&g.workload)
        );
    }
    let ly = height - 18.0;
    let _ = write!(
        s,
        r##"<rect x="{left}" y="{:.0}" width="12" height="12" fill="#888"/><text x="{:.0}" y="{ly:.0}">kernel</text><rect x="{:.0}" y="{:.0}" width="12" height="12" fill="#2a7"/><text x="{:.0}" y="{ly:.0}">accel</text>"##,
        ly - 10.0,
        left + 16.0,
        left + 70.0,
        ly - 10.0,
        left + 86.0
    );
    s.push_str("</svg>\n");
    s
}
