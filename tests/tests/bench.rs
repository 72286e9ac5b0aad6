//! accel-bench end to end, short (`--quick`: one repetition, 2-second clients): the floor and
//! UDP ping-pong, whose every repetition runs the kernel blocking, the kernel spinning and
//! accel. Each variant must have produced its numbers, the report must carry the spinning
//! column and the ratios to it and to the floor, and A's kernel must have received the
//! kernel variants' packets and none of accel's. Numbers are not judged: benchmarks report
//! them. Runs as root; it fails, never skips.

use std::path::PathBuf;
use std::time::Duration;

use accel_tests::apps::run_app;
use accel_tests::release_tool;
use accel_tools::bench::report::{self, Variant};

/// The results directory, removed when the test ends (also on failure).
struct OutDir(PathBuf);

impl Drop for OutDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn pingpong_runs_kernel_kernel_spinning_and_accel_and_reports_them_beside_the_floor() {
    let out = OutDir(std::env::temp_dir().join(format!("accel-bench-test-{}", std::process::id())));
    let mut cmd = std::process::Command::new(release_tool("accel-bench"));
    cmd.arg("--quick")
        .arg("--out")
        .arg(&out.0)
        .args(["floor", "pingpong-udp"]);
    let fin = run_app("accel-bench", cmd, Duration::from_secs(240)).success();

    // One progress line per run: the floor's, then the three ping-pong variants.
    let progress: Vec<&str> = fin.stderr.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(progress.len(), 4, "{}", fin.describe());
    for v in ["kernel ...", "kernel spinning ...", "accel ..."] {
        assert!(
            progress
                .iter()
                .any(|l| l.starts_with("[") && l.contains(&format!("pingpong-udp rep 1/1 {v}"))),
            "no {v} run:\n{}",
            fin.describe()
        );
    }

    let json = std::fs::read_to_string(out.0.join("results.json")).expect("results.json");
    let r = report::from_json(&json).expect("results.json reads back");
    let w = |name: &str| {
        r.workloads
            .iter()
            .find(|w| w.name == name)
            .unwrap_or_else(|| panic!("no {name} in results.json:\n{json}"))
    };
    let (floor, pp) = (w("floor"), w("pingpong-udp"));
    assert_eq!(floor.status, "ok", "{:?}", floor.errors);
    assert_eq!(pp.status, "ok", "{:?}", pp.errors);
    let metric = |w: &report::Workload, m: &str| {
        w.metrics
            .iter()
            .find(|x| x.name == m)
            .unwrap_or_else(|| panic!("no {m} in {}:\n{json}", w.name))
            .clone()
    };
    let p50 = metric(pp, "p50");
    for v in [Variant::Kernel, Variant::KernelSpinning, Variant::Accel] {
        let xs = p50.samples(v);
        assert!(xs.len() == 1 && xs[0] > 0.0, "p50 {}: {xs:?}", v.label());
    }
    assert!(
        p50.spinning_ratio.is_some() && p50.floor_ratio.is_some(),
        "{p50:?}"
    );
    // The kernel's variants went through A's kernel; accel's did not touch it.
    let rx = metric(pp, "A kernel IPv4 rx");
    assert!(rx.kernel[0] > 0.0 && rx.kernel_spinning[0] > 0.0, "{rx:?}");
    assert_eq!(
        rx.accel,
        [0.0],
        "A's kernel received accel's packets: {rx:?}"
    );

    let table = &fin.stdout;
    let head = table.lines().next().unwrap_or_default();
    for col in ["kernel spinning", "accel/spinning", "accel/floor"] {
        assert!(head.contains(col), "no {col} column:\n{table}");
    }
    assert!(
        table.contains("Ping-pong p50 from run to run"),
        "no spread table:\n{table}"
    );
    let md = std::fs::read_to_string(out.0.join("results.md")).expect("results.md");
    assert!(md.contains("| kernel spinning |"), "{md}");
    let svg = std::fs::read_to_string(out.0.join("latency.svg")).expect("latency.svg");
    assert!(svg.contains("pingpong-udp kernel spinning p50:"), "{svg}");
}
