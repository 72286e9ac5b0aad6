//! Results of a run: every raw sample, medians and ratios; the table (text and Markdown) and
//! the JSON file.

use serde::{Deserialize, Serialize};

/// How a workload's programs ran: on the kernel as programs use it (blocking in their calls),
/// on the kernel spinning on non-blocking sockets (`sockperf --nonblocked`: what a
/// latency-minded user runs instead), or under accel. The floor's raw AF_XDP runs are filed
/// as `Accel` (it has no kernel variant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Kernel,
    KernelSpinning,
    Accel,
}

impl Variant {
    pub fn label(self) -> &'static str {
        match self {
            Variant::Kernel => "kernel",
            Variant::KernelSpinning => "kernel spinning",
            Variant::Accel => "accel",
        }
    }
}

/// One metric of one workload: a sample per repetition for each variant that ran.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub unit: String,
    /// Whether a larger value is better (rates) or worse (latencies).
    pub higher_is_better: bool,
    pub kernel: Vec<f64>,
    /// Only the ping-pong workloads run it; empty for the others (and in results written
    /// before it existed).
    #[serde(default)]
    pub kernel_spinning: Vec<f64>,
    pub accel: Vec<f64>,
    pub kernel_median: Option<f64>,
    #[serde(default)]
    pub kernel_spinning_median: Option<f64>,
    pub accel_median: Option<f64>,
    /// accel median / kernel median.
    pub ratio: Option<f64>,
    /// accel median / kernel spinning median.
    #[serde(default)]
    pub spinning_ratio: Option<f64>,
    /// accel median / the floor's median of the same latency metric (avg, p50, p99, p99.9),
    /// for a ping-pong workload when the floor ran in the same invocation.
    #[serde(default)]
    pub floor_ratio: Option<f64>,
}

impl Metric {
    /// The samples of one variant.
    pub fn samples(&self, v: Variant) -> &[f64] {
        match v {
            Variant::Kernel => &self.kernel,
            Variant::KernelSpinning => &self.kernel_spinning,
            Variant::Accel => &self.accel,
        }
    }

    /// The median of one variant (after [`Workload::finish`]).
    pub fn median(&self, v: Variant) -> Option<f64> {
        match v {
            Variant::Kernel => self.kernel_median,
            Variant::KernelSpinning => self.kernel_spinning_median,
            Variant::Accel => self.accel_median,
        }
    }

    /// The smallest and largest sample of one variant: how far the repetitions spread.
    pub fn range(&self, v: Variant) -> Option<(f64, f64)> {
        let xs = self.samples(v);
        let min = xs.iter().copied().reduce(f64::min)?;
        let max = xs.iter().copied().reduce(f64::max)?;
        Some((min, max))
    }
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
    /// Adds a sample of `metric` for one variant, creating the metric on first use.
    pub fn add(&mut self, metric: &str, unit: &str, higher_is_better: bool, v: Variant, x: f64) {
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
        match v {
            Variant::Kernel => m.kernel.push(x),
            Variant::KernelSpinning => m.kernel_spinning.push(x),
            Variant::Accel => m.accel.push(x),
        }
    }

    /// Computes medians, ratios and the status.
    pub fn finish(&mut self) {
        for m in &mut self.metrics {
            m.kernel_median = median(&m.kernel);
            m.kernel_spinning_median = median(&m.kernel_spinning);
            m.accel_median = median(&m.accel);
            m.ratio = ratio(m.accel_median, m.kernel_median);
            m.spinning_ratio = ratio(m.accel_median, m.kernel_spinning_median);
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

    fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name == name)
    }
}

/// The workload that measures the raw AF_XDP ping-pong (no stack, no kernel variant).
pub const FLOOR: &str = "floor";

/// Whether `workload` is a sockperf ping-pong (the workloads with a kernel spinning variant
/// and a ratio to the floor).
pub fn is_pingpong(workload: &str) -> bool {
    workload.starts_with("pingpong")
}

/// The unit of the latencies the floor and the ping-pong workloads report.
const LATENCY_UNIT: &str = "usec";

fn ratio(num: Option<f64>, den: Option<f64>) -> Option<f64> {
    match (num, den) {
        (Some(n), Some(d)) if d != 0.0 => Some(n / d),
        _ => None,
    }
}

impl Results {
    /// Relates each ping-pong latency to the floor's of the same name (avg, p50...), when the
    /// floor ran in this invocation. Only latencies: the floor's other metrics (its message
    /// rates, A's kernel packets) measure something else. Call after every
    /// [`Workload::finish`].
    pub fn finish(&mut self) {
        let floor: Vec<(String, String, Option<f64>)> = self
            .workloads
            .iter()
            .filter(|w| w.name == FLOOR)
            .flat_map(|w| &w.metrics)
            .filter(|m| m.unit == LATENCY_UNIT)
            .map(|m| (m.name.clone(), m.unit.clone(), m.accel_median))
            .collect();
        for w in self.workloads.iter_mut().filter(|w| is_pingpong(&w.name)) {
            for m in &mut w.metrics {
                let f = floor
                    .iter()
                    .find(|(n, u, _)| *n == m.name && *u == m.unit)
                    .and_then(|(_, _, f)| *f);
                m.floor_ratio = ratio(m.accel_median, f);
            }
        }
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

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |x| format!("{x:.2}"))
}

/// A table: a header, rows of cells, and failures (one line each). The first `left` columns
/// are aligned left (names), the others right (numbers).
struct Table {
    head: Vec<&'static str>,
    left: usize,
    rows: Vec<Row>,
}

enum Row {
    Cells(Vec<String>),
    /// A failed run of a workload: its name and why (the JSON keeps the whole message).
    Failed(String, String),
}

impl Table {
    fn text(&self) -> String {
        let mut w: Vec<usize> = self.head.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            match row {
                Row::Cells(c) => {
                    for (i, c) in c.iter().enumerate() {
                        w[i] = w[i].max(c.len());
                    }
                }
                Row::Failed(name, _) => w[0] = w[0].max(name.len()),
            }
        }
        let line = |cells: &[&str]| {
            let cells: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i < self.left {
                        format!("{c:<0$}", w[i])
                    } else {
                        format!("{c:>0$}", w[i])
                    }
                })
                .collect();
            cells.join("  ").trim_end().to_string() + "\n"
        };
        let mut out = line(&self.head);
        for row in &self.rows {
            match row {
                Row::Cells(c) => out += &line(&c.iter().map(String::as_str).collect::<Vec<_>>()),
                Row::Failed(name, e) => out += &format!("{name:<0$}  FAILED: {e}\n", w[0]),
            }
        }
        out
    }

    fn markdown(&self) -> String {
        let align: Vec<&str> = (0..self.head.len())
            .map(|i| if i < self.left { "---" } else { "---:" })
            .collect();
        let mut out = format!("| {} |\n|{}|\n", self.head.join(" | "), align.join("|"));
        for row in &self.rows {
            let mut cells = match row {
                Row::Cells(c) => c.clone(),
                Row::Failed(name, e) => vec![name.clone(), "FAILED".into(), e.clone()],
            };
            cells.resize(self.head.len(), String::new());
            let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
            out += &format!("| {} |\n", cells.join(" | "));
        }
        out
    }
}

/// A failure on one line, shortened (the JSON keeps the whole message).
fn one_line(e: &str) -> String {
    e.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ")
        .chars()
        .take(160)
        .collect()
}

/// The main table: every metric's medians and ratios. The kernel spinning column and the
/// ratios to it and to the floor appear when a ping-pong workload ran; for the other
/// workloads those cells are "-", as is accel/floor when the floor did not run.
fn main_table(r: &Results) -> Table {
    let three = r.workloads.iter().any(|w| is_pingpong(&w.name));
    let head = if three {
        vec![
            "workload",
            "metric",
            "kernel",
            "kernel spinning",
            "accel",
            "accel/kernel",
            "accel/spinning",
            "accel/floor",
        ]
    } else {
        vec!["workload", "metric", "kernel", "accel", "accel/kernel"]
    };
    let mut rows = Vec::new();
    for w in &r.workloads {
        for m in &w.metrics {
            let mut c = vec![
                w.name.clone(),
                format!("{} ({})", m.name, m.unit),
                fmt(m.kernel_median, &m.unit),
            ];
            if three {
                c.push(fmt(m.kernel_spinning_median, &m.unit));
            }
            c.push(fmt(m.accel_median, &m.unit));
            c.push(fmt_ratio(m.ratio));
            if three {
                c.push(fmt_ratio(m.spinning_ratio));
                c.push(fmt_ratio(m.floor_ratio));
            }
            rows.push(Row::Cells(c));
        }
        for e in &w.errors {
            rows.push(Row::Failed(w.name.clone(), one_line(e)));
        }
    }
    Table {
        head,
        left: 2,
        rows,
    }
}

/// How far ping-pong p50 moved from run to run: each variant's smallest and largest sample,
/// and accel's largest over its smallest. `None` when no ping-pong (nor the floor) has a p50.
fn spread_table(r: &Results) -> Option<Table> {
    let range = |m: &Metric, v| {
        m.range(v).map_or_else(
            || "-".to_string(),
            |(lo, hi)| format!("{} .. {}", fmt(Some(lo), &m.unit), fmt(Some(hi), &m.unit)),
        )
    };
    let rows: Vec<Row> = r
        .workloads
        .iter()
        .filter(|w| is_pingpong(&w.name) || w.name == FLOOR)
        .filter_map(|w| {
            let m = w.metric("p50")?;
            Some(Row::Cells(vec![
                w.name.clone(),
                range(m, Variant::Kernel),
                range(m, Variant::KernelSpinning),
                range(m, Variant::Accel),
                fmt_ratio(
                    m.range(Variant::Accel)
                        .and_then(|(lo, hi)| ratio(Some(hi), Some(lo))),
                ),
            ]))
        })
        .collect();
    (!rows.is_empty()).then_some(Table {
        head: vec![
            "workload",
            "kernel",
            "kernel spinning",
            "accel",
            "accel max/min",
        ],
        left: 1,
        rows,
    })
}

fn spread_title(r: &Results) -> String {
    format!(
        "Ping-pong p50 from run to run (usec, smallest .. largest of {} repetition(s); the \
         floor's runs are in the accel column)",
        r.reps
    )
}

/// The tables as aligned plain text (for the terminal).
pub fn text_table(r: &Results) -> String {
    let mut out = main_table(r).text();
    if let Some(t) = spread_table(r) {
        out += &format!("\n{}:\n{}", spread_title(r), t.text());
    }
    out
}

/// The tables in Markdown, with a line on how they were made.
pub fn markdown(r: &Results) -> String {
    let mut out = format!(
        "# accel-bench results\n\nMedians over {} repetition(s){}; kernel = program on the kernel \
         stack, accel = under `accel-run --profile latency` (servers in namespace A; the sockperf \
         clients in B too, the wrk, redis-benchmark and iperf3 clients stay on B's kernel). \
         Ping-pong also runs on the kernel with both ends spinning (`sockperf --nonblocked`, \
         each end on a CPU of its own, as under accel): what a latency-minded user runs \
         instead; accel/floor compares with the raw AF_XDP ping-pong (`floor`) of the same \
         run. \"A kernel IPv4 rx\" counts the packets A's kernel received during a run: near 0 \
         under accel means the traffic bypassed it. Run took {:.0} s.\n\n",
        r.reps,
        if r.quick { " (--quick)" } else { "" },
        r.elapsed_sec
    );
    out += &main_table(r).markdown();
    if let Some(t) = spread_table(r) {
        out += &format!("\n## {}\n\n{}", spread_title(r), t.markdown());
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A workload with `samples` of `metric` (usec, lower is better) per variant, finished.
    fn workload(name: &str, metric: &str, samples: &[(Variant, &[f64])]) -> Workload {
        let mut w = Workload {
            name: name.into(),
            ..Workload::default()
        };
        for (v, xs) in samples {
            for x in *xs {
                w.add(metric, "usec", false, *v, *x);
            }
        }
        w.finish();
        w
    }

    fn results(workloads: Vec<Workload>) -> Results {
        let mut r = Results {
            reps: 5,
            workloads,
            ..Results::default()
        };
        r.finish();
        r
    }

    fn pingpong_tcp() -> Workload {
        use Variant::*;
        workload(
            "pingpong-tcp",
            "p50",
            &[
                (Kernel, &[30.0, 27.0, 33.0, 29.0, 31.0]),
                (KernelSpinning, &[4.4, 4.2, 4.5, 4.3, 4.4]),
                (Accel, &[3.3, 3.1, 3.6, 3.2, 3.4]),
            ],
        )
    }

    fn floor() -> Workload {
        workload(
            FLOOR,
            "p50",
            &[(Variant::Accel, &[3.0, 3.1, 2.9, 3.0, 3.2])],
        )
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn pingpong_has_medians_of_three_variants_and_ratios_to_spinning_and_floor() {
        let r = results(vec![floor(), pingpong_tcp()]);
        let m = &r.workloads[1].metrics[0];
        assert_eq!(m.kernel_median, Some(30.0));
        assert_eq!(m.kernel_spinning_median, Some(4.4));
        assert_eq!(m.accel_median, Some(3.3));
        assert!(close(m.ratio, 3.3 / 30.0), "{m:?}");
        assert!(close(m.spinning_ratio, 3.3 / 4.4), "{m:?}");
        assert!(close(m.floor_ratio, 3.3 / 3.0), "{m:?}");
        // The floor is not compared with itself.
        assert_eq!(r.workloads[0].metrics[0].floor_ratio, None);

        let text = text_table(&r);
        let mut lines = text.lines();
        let head: Vec<&str> = lines
            .next()
            .unwrap()
            .split("  ")
            .filter(|c| !c.is_empty())
            .collect();
        let head: Vec<&str> = head.iter().map(|c| c.trim()).collect();
        assert_eq!(
            head,
            [
                "workload",
                "metric",
                "kernel",
                "kernel spinning",
                "accel",
                "accel/kernel",
                "accel/spinning",
                "accel/floor"
            ],
            "{text}"
        );
        let row: Vec<&str> = text
            .lines()
            .find(|l| l.starts_with("pingpong-tcp"))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(
            row,
            [
                "pingpong-tcp",
                "p50",
                "(usec)",
                "30.0",
                "4.400",
                "3.300",
                "0.11",
                "0.75",
                "1.10"
            ],
            "{text}"
        );
        let md = markdown(&r);
        assert!(
            md.contains(
                "| pingpong-tcp | p50 (usec) | 30.0 | 4.400 | 3.300 | 0.11 | 0.75 | 1.10 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| floor | p50 (usec) | - | - | 3.000 | - | - | - |"),
            "{md}"
        );
        assert!(
            md.contains("|---|---|---:|---:|---:|---:|---:|---:|\n"),
            "{md}"
        );
    }

    #[test]
    fn without_the_floor_accel_over_floor_is_a_dash() {
        let r = results(vec![pingpong_tcp()]);
        assert_eq!(r.workloads[0].metrics[0].floor_ratio, None);
        let md = markdown(&r);
        assert!(
            md.contains("| pingpong-tcp | p50 (usec) | 30.0 | 4.400 | 3.300 | 0.11 | 0.75 | - |"),
            "{md}"
        );
    }

    #[test]
    fn floor_ratio_only_pairs_metrics_of_the_same_name_and_unit() {
        let mut pp = pingpong_tcp();
        pp.add("p99", "usec", false, Variant::Accel, 9.0);
        pp.add("avg", "usec", false, Variant::Accel, 4.0);
        pp.finish();
        let mut fl = floor();
        fl.add("avg", "msec", false, Variant::Accel, 0.003);
        fl.finish();
        let rate = workload("msgrate-udp", "p50", &[(Variant::Accel, &[6.0])]);
        let r = results(vec![fl, pp, rate]);
        let pp = &r.workloads[1];
        assert!(close(pp.metrics[0].floor_ratio, 1.1));
        assert_eq!(pp.metrics[1].name, "p99");
        assert_eq!(pp.metrics[1].floor_ratio, None, "the floor has no p99 here");
        assert_eq!(pp.metrics[2].name, "avg");
        assert_eq!(
            pp.metrics[2].floor_ratio, None,
            "the floor's avg is in another unit"
        );
        // Not a latency: A's kernel packets are not compared with the floor's.
        let mut pkts = pingpong_tcp();
        pkts.add("A kernel IPv4 rx", "pkts", false, Variant::Accel, 4.0);
        pkts.finish();
        let mut fl = floor();
        fl.add("A kernel IPv4 rx", "pkts", false, Variant::Accel, 2.0);
        fl.finish();
        let r2 = results(vec![fl, pkts]);
        assert_eq!(r2.workloads[1].metrics[1].floor_ratio, None);
        // Not a ping-pong: never compared with the floor, even with a metric of that name.
        assert_eq!(r.workloads[2].metrics[0].floor_ratio, None);
    }

    #[test]
    fn other_workloads_alone_keep_the_two_column_table() {
        let mut w = Workload {
            name: "redis".into(),
            ..Workload::default()
        };
        for (k, a) in [(86_000.0, 100_000.0), (85_000.0, 102_000.0)] {
            w.add("GET", "req/s", true, Variant::Kernel, k);
            w.add("GET", "req/s", true, Variant::Accel, a);
        }
        w.finish();
        let r = results(vec![w]);
        let text = text_table(&r);
        assert_eq!(
            text.lines()
                .next()
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["workload", "metric", "kernel", "accel", "accel/kernel"]
        );
        assert!(!text.contains("from run to run"), "{text}");
        let md = markdown(&r);
        assert!(
            md.contains(
                "| workload | metric | kernel | accel | accel/kernel |\n|---|---|---:|---:|---:|\n\
                 | redis | GET (req/s) | 85500 | 101000 | 1.18 |\n"
            ),
            "{md}"
        );
        assert!(!md.contains("## "), "{md}");
    }

    #[test]
    fn p50_spread_shows_each_variants_smallest_and_largest_run() {
        let r = results(vec![floor(), pingpong_tcp()]);
        let text = text_table(&r);
        let spread = text
            .split_once("Ping-pong p50 from run to run")
            .unwrap_or_else(|| panic!("no spread table:\n{text}"))
            .1;
        assert!(spread.contains("5 repetition(s)"), "{spread}");
        let row = |name: &str| -> String {
            spread
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} row:\n{spread}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            row("pingpong-tcp"),
            "pingpong-tcp 27.0 .. 33.0 4.200 .. 4.500 3.100 .. 3.600 1.16"
        );
        assert_eq!(row("floor"), "floor - - 2.900 .. 3.200 1.10");
        let md = markdown(&r);
        assert!(
            md.contains("| pingpong-tcp | 27.0 .. 33.0 | 4.200 .. 4.500 | 3.100 .. 3.600 | 1.16 |"),
            "{md}"
        );
        assert_eq!(
            pingpong_tcp().metrics[0].range(Variant::KernelSpinning),
            Some((4.2, 4.5))
        );
        assert_eq!(Metric::default().range(Variant::Accel), None);
    }

    #[test]
    fn a_failed_run_is_a_line_of_its_own_and_the_rest_still_counts() {
        let mut w = pingpong_tcp();
        w.errors
            .push("rep 2 kernel spinning: sockperf ping-pong failed\n  exit 1\n".into());
        w.finish();
        assert_eq!(w.status, "partial");
        let r = results(vec![w]);
        let text = text_table(&r);
        assert!(
            text.contains(
                "pingpong-tcp  FAILED: rep 2 kernel spinning: sockperf ping-pong failed / exit 1\n"
            ),
            "{text}"
        );
        let md = markdown(&r);
        assert!(
            md.contains("| pingpong-tcp | FAILED | rep 2 kernel spinning: sockperf ping-pong failed / exit 1 |  |  |  |  |  |\n"),
            "{md}"
        );
    }

    #[test]
    fn results_written_before_the_spinning_variant_still_read() {
        let old = r#"{"reps":1,"quick":true,"started_unix":1,"elapsed_sec":2.0,"workloads":[
            {"name":"pingpong-udp","status":"ok","errors":[],"metrics":[
              {"name":"p50","unit":"usec","higher_is_better":false,"kernel":[11.0],
               "accel":[3.5],"kernel_median":11.0,"accel_median":3.5,"ratio":0.318}]}]}"#;
        let r = from_json(old).unwrap();
        let m = &r.workloads[0].metrics[0];
        assert!(m.kernel_spinning.is_empty());
        assert_eq!(
            (m.kernel_spinning_median, m.spinning_ratio, m.floor_ratio),
            (None, None, None)
        );
        let new = results(vec![floor(), pingpong_tcp()]);
        let json = to_json(&new).unwrap();
        assert!(json.contains("\"kernel_spinning\": ["), "{json}");
        assert!(json.contains("\"kernel_spinning_median\": 4.4,"), "{json}");
        assert!(json.contains("\"spinning_ratio\": 0.7"), "{json}");
        assert!(json.contains("\"floor_ratio\": 1.0"), "{json}");
        // serde_json reads floats back to within an ulp, not always bit for bit.
        let back = from_json(&json).unwrap();
        let (m, n) = (&back.workloads[1].metrics[0], &new.workloads[1].metrics[0]);
        assert_eq!(
            (&m.kernel, &m.kernel_spinning, &m.accel),
            (&n.kernel, &n.kernel_spinning, &n.accel)
        );
        assert!(close(m.spinning_ratio, 3.3 / 4.4) && close(m.floor_ratio, 3.3 / 3.0));
    }
}
