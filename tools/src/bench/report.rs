//! Results of a run: every raw sample, medians and ratios; the table (text and Markdown) and
//! the JSON file.

use serde::{Deserialize, Serialize};

/// One metric of one workload: a sample per repetition for each stack.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub unit: String,
    /// Whether a larger value is better (rates) or worse (latencies).
    pub higher_is_better: bool,
    pub kernel: Vec<f64>,
    pub accel: Vec<f64>,
    pub kernel_median: Option<f64>,
    pub accel_median: Option<f64>,
    /// accel median / kernel median.
    pub ratio: Option<f64>,
}

/// One workload's outcome.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    pub name: String,
    /// "ok", "partial" (some runs failed) or "failed".
    pub status: String,
    /// Why runs failed (one entry per failed run: "rep 1 accel: ...").
    pub errors: Vec<String>,
    pub metrics: Vec<Metric>,
}

/// A whole run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub reps: u32,
    pub quick: bool,
    pub started_unix: u64,
    pub elapsed_sec: f64,
    pub workloads: Vec<Workload>,
}

/// Median of the samples (mean of the middle two for an even count).
pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl Workload {
    /// Adds a sample of `metric` for one stack, creating the metric on first use.
    pub fn add(&mut self, metric: &str, unit: &str, higher_is_better: bool, accel: bool, v: f64) {
        let m = match self.metrics.iter_mut().position(|m| m.name == metric) {
            Some(i) => &mut self.metrics[i],
            None => {
                self.metrics.push(Metric {
                    name: metric.into(),
                    unit: unit.into(),
                    higher_is_better,
                    ..Metric::default()
                });
                self.metrics.last_mut().expect("just pushed")
            }
        };
        if accel {
            m.accel.push(v)
        } else {
            m.kernel.push(v)
        }
    }

    /// Computes medians, ratios and the status.
    pub fn finish(&mut self) {
        for m in &mut self.metrics {
            m.kernel_median = median(&m.kernel);
            m.accel_median = median(&m.accel);
            m.ratio = match (m.kernel_median, m.accel_median) {
                (Some(k), Some(a)) if k != 0.0 => Some(a / k),
                _ => None,
            };
        }
        self.status = if self.errors.is_empty() {
            "ok"
        } else if self.metrics.is_empty() {
            "failed"
        } else {
            "partial"
        }
        .into();
    }
}

fn fmt(v: Option<f64>, unit: &str) -> String {
    match v {
        None => "-".into(),
        Some(v) if unit == "count" || unit == "pkts" => format!("{v:.0}"),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// The table rows: workload, metric (unit), kernel, accel, ratio.
fn rows(r: &Results) -> Vec<[String; 5]> {
    let mut rows = Vec::new();
    for w in &r.workloads {
        for m in &w.metrics {
            rows.push([
                w.name.clone(),
                format!("{} ({})", m.name, m.unit),
                fmt(m.kernel_median, &m.unit),
                fmt(m.accel_median, &m.unit),
                m.ratio.map(|x| format!("{x:.2}")).unwrap_or("-".into()),
            ]);
        }
        for e in &w.errors {
            // One line per failure in the table (the JSON keeps the whole message).
            let e: String = e
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" / ")
                .chars()
                .take(160)
                .collect();
            rows.push([
                w.name.clone(),
                "FAILED".into(),
                e,
                String::new(),
                String::new(),
            ]);
        }
    }
    rows
}

const HEAD: [&str; 5] = ["workload", "metric", "kernel", "accel", "accel/kernel"];

/// The table as aligned plain text (for the terminal).
pub fn text_table(r: &Results) -> String {
    let rows = rows(r);
    let mut w = HEAD.map(str::len);
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            if !(row[1] == "FAILED" && i == 2) {
                w[i] = w[i].max(c.len());
            }
        }
    }
    let line = |c: [&str; 5]| {
        format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4]
        )
        .trim_end()
        .to_string()
    };
    let mut out = line(HEAD) + "\n";
    for row in &rows {
        if row[1] == "FAILED" {
            out += &format!("{:<w0$}  FAILED: {}\n", row[0], row[2], w0 = w[0]);
        } else {
            out += &(line([&row[0], &row[1], &row[2], &row[3], &row[4]]) + "\n");
        }
    }
    out
}

/// The table in Markdown, with a line on how it was made.
pub fn markdown(r: &Results) -> String {
    let mut out = format!(
        "# accel-bench results\n\nMedians over {} repetition(s){}; kernel = program on the kernel \
         stack, accel = under `accel-run --profile latency` (servers in namespace A; the sockperf \
         clients in B too, the wrk, redis-benchmark and iperf3 clients stay on B's kernel). \
         \"A kernel IPv4 rx\" counts the packets A's kernel received during a run: near 0 under \
         accel means the traffic bypassed it. Run took {:.0} s.\n\n",
        r.reps,
        if r.quick { " (--quick)" } else { "" },
        r.elapsed_sec
    );
    out += &format!("| {} |\n|---|---|---:|---:|---:|\n", HEAD.join(" | "));
    for row in rows(r) {
        let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
        out += &format!("| {} |\n", cells.join(" | "));
    }
    out
}

/// The results as pretty JSON (results.json).
pub fn to_json(r: &Results) -> serde_json::Result<String> {
    serde_json::to_string_pretty(r)
}

/// Reads results.json back.
pub fn from_json(text: &str) -> serde_json::Result<Results> {
    serde_json::from_str(text)
}
