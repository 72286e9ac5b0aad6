//! The README's main job (`accel-demo`, run by scripts/demo.sh), short: one run of each variant
//! for one second. It must print the table with the nginx and sockperf rows and A's kernel
//! counters unchanged under accel, and exit 0. Runs as root; it fails, never skips.

use std::time::Duration;

use accel_tests::apps::run_app;
use accel_tests::release_tool;

#[test]
fn the_demo_prints_nginx_and_sockperf_rows_and_the_kernel_carried_none_of_it() {
    let mut cmd = std::process::Command::new(release_tool("accel-demo"));
    cmd.args(["--reps", "1", "--secs", "1"]);
    let fin = run_app("accel-demo", cmd, Duration::from_secs(180)).success();
    let out = &fin.stdout;
    for row in [
        "nginx requests/s (wrk -c32 from B)",
        "nginx p99 latency, us",
        "sockperf TCP ping-pong p50, us (kernel blocking)",
        "sockperf TCP ping-pong p50, us (kernel spinning)",
        "sockperf UDP ping-pong p99, us (kernel spinning)",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no {row:?} row:\n{}", fin.describe()));
        // Label, kernel, accel and a ratio: every cell has a value.
        let cells: Vec<&str> = line[row.len()..].split_whitespace().collect();
        assert_eq!(cells.len(), 3, "{line}");
        assert!(cells[2].ends_with('x') && !cells.contains(&"-"), "{line}");
    }
    assert!(
        out.contains(
            "A's kernel while accel's clients ran: IPv4 packets received +0, TCP segments +0, \
             UDP datagrams +0"
        ),
        "{}",
        fin.describe()
    );
    // The progress went to stderr, one line per run: 2 nginx + 3 + 3 ping-pong.
    let progress = fin.stderr.lines().filter(|l| l.starts_with('[')).count();
    assert_eq!(progress, 8, "{}", fin.describe());
}
