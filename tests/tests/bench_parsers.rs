//! accel-bench's parsers on recorded outputs of the real tools (tests/data/bench/, recorded
//! with sockperf 3.7, wrk 4, redis-benchmark 7, iperf3 3.12 on Debian): a tool whose output
//! changes must fail here, not make accel-bench report zeros. No privileges needed.

use accel_tools::bench::parse;
use accel_tools::bench::plot::{latency_svg, LatencyGroup};
use accel_tools::bench::report::{self, Results, Variant, Workload};

fn data(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/bench")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9 * b.abs().max(1.0)
}

#[test]
fn sockperf_pingpong_udp_with_colours() {
    let out = data("pp-udp.txt");
    assert!(
        out.contains('\u{1b}'),
        "the recording keeps sockperf's colour codes"
    );
    let s = parse::sockperf_pingpong(&out).unwrap();
    assert_eq!(
        s,
        parse::PingPong {
            observations: 34063,
            avg_usec: 8.062,
            p50_usec: 6.577,
            p99_usec: 13.830,
            p999_usec: 22.672,
        }
    );
}

#[test]
fn sockperf_pingpong_tcp() {
    let s = parse::sockperf_pingpong(&data("pp-tcp.txt")).unwrap();
    assert_eq!(s.observations, 29753);
    assert_eq!(s.avg_usec, 9.233);
    assert_eq!(s.p50_usec, 8.350);
    assert_eq!(s.p99_usec, 17.302);
    assert_eq!(s.p999_usec, 38.882);
}

#[test]
fn sockperf_message_accounting() {
    assert_eq!(
        parse::sockperf_messages(&data("pp-udp.txt")).unwrap(),
        parse::Messages {
            sent: 34063,
            received: 34063,
            dropped: 0,
            duplicated: 0,
            out_of_order: 0,
        }
    );
    let with_loss = data("pp-tcp.txt").replace("# dropped messages = 0", "# dropped messages = 3");
    assert_eq!(parse::sockperf_messages(&with_loss).unwrap().dropped, 3);
    let cut: String = data("pp-udp.txt")
        .lines()
        .filter(|l| !l.contains("dropped messages"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(parse::sockperf_messages(&cut).is_err());
}

#[test]
fn sockperf_throughput_message_rate() {
    assert_eq!(
        parse::sockperf_throughput(&data("tp-udp.txt")).unwrap(),
        142514.0
    );
}

#[test]
fn wrk_keepalive_and_close() {
    let w = parse::wrk(&data("wrk.txt")).unwrap();
    assert_eq!(w.requests, 17769);
    assert_eq!(w.requests_per_sec, 17764.17);
    assert!(close(w.p99_usec, 1550.0), "{}", w.p99_usec);
    assert_eq!((w.socket_errors, w.non_2xx_3xx), (0, 0));
    let c = parse::wrk(&data("wrk-close.txt")).unwrap();
    assert_eq!(c.requests, 19598);
    assert_eq!(c.requests_per_sec, 17809.24);
    assert!(close(c.p99_usec, 1510.0), "{}", c.p99_usec);
}

#[test]
fn wrk_error_lines_are_summed() {
    let out = data("wrk.txt").replace(
        "Requests/sec:",
        "  Socket errors: connect 1, read 2, write 3, timeout 4\n  Non-2xx or 3xx responses: 5\nRequests/sec:",
    );
    let w = parse::wrk(&out).unwrap();
    assert_eq!((w.socket_errors, w.non_2xx_3xx), (10, 5));
}

#[test]
fn redis_benchmark_quiet_lines_with_progress() {
    let out = data("redis.txt");
    assert!(
        out.contains('\r'),
        "the recording keeps the progress updates"
    );
    let r = parse::redis_benchmark(&out).unwrap();
    assert_eq!(
        r,
        vec![("SET".to_string(), 69930.07), ("GET".to_string(), 76335.88)]
    );
}

#[test]
fn iperf3_json_both_directions() {
    let g = parse::iperf3(&data("iperf3.txt")).unwrap();
    assert!(close(g, 32.460734636143238), "{g}");
    let r = parse::iperf3(&data("iperf3-R.txt")).unwrap();
    assert!(close(r, 32.314498136029823), "{r}");
}

#[test]
fn empty_or_mangled_output_is_an_error_not_zeros() {
    for bad in ["", "\n\n", "garbage\nmore garbage\n"] {
        assert!(parse::sockperf_pingpong(bad).is_err());
        assert!(parse::sockperf_throughput(bad).is_err());
        assert!(parse::wrk(bad).is_err());
        assert!(parse::redis_benchmark(bad).is_err());
        assert!(parse::iperf3(bad).is_err());
    }
    // Truncated outputs: the part that carries the numbers is gone.
    let pp = data("pp-udp.txt");
    let cut = &pp[..pp.find("percentile 99.000").unwrap()];
    assert!(parse::sockperf_pingpong(cut).is_err());
    assert!(parse::sockperf_pingpong("sockperf: ERROR: connect failed\n").is_err());
    let wrk = data("wrk.txt");
    assert!(parse::wrk(&wrk.replace("Latency Distribution", "").replace("99%", "")).is_err());
    assert!(parse::wrk(&wrk.replace("Requests/sec", "Reqs/sec")).is_err());
    assert!(parse::wrk("unable to connect to 198.18.0.1:80 Connection refused\n").is_err());
    assert!(
        parse::redis_benchmark(&data("redis.txt").replace("requests per second", "rps")).is_err()
    );
    assert!(parse::redis_benchmark("SET: rps=1.0 (overall: 1.0)\n").is_err());
    assert!(
        parse::sockperf_throughput(&data("tp-udp.txt").replace("Message Rate", "Rate")).is_err()
    );
    assert!(
        parse::iperf3(r#"{"start":{},"intervals":[],"end":{},"error":"unable to connect"}"#)
            .is_err()
    );
    assert!(parse::iperf3(r#"{"end":{}}"#).is_err());
    let iperf = data("iperf3.txt");
    assert!(parse::iperf3(&iperf[..iperf.len() / 2]).is_err());
}

/// Checks that every `<tag` has its `</tag>` (or is self-closed), in order.
fn balanced(svg: &str) -> bool {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find('<') {
        let Some(j) = rest[i..].find('>') else {
            return false;
        };
        let tag = &rest[i + 1..i + j];
        rest = &rest[i + j + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            if stack.pop().as_deref() != Some(name.trim()) {
                return false;
            }
        } else if !tag.ends_with('/') {
            stack.push(tag.split_whitespace().next().unwrap_or("").to_string());
        }
    }
    stack.is_empty()
}

#[test]
fn svg_is_well_formed() {
    let groups = vec![
        LatencyGroup {
            workload: "floor".into(),
            kernel: None,
            kernel_spinning: None,
            accel: [3.0, 5.5, 19.0],
        },
        LatencyGroup {
            workload: "pingpong-tcp".into(),
            kernel: Some([11.2, 25.5, 40.0]),
            kernel_spinning: Some([4.3, 6.0, 20.0]),
            accel: [6.0, 30.0, 1000.0],
        },
        LatencyGroup {
            workload: "pingpong-udp <&>".into(),
            kernel: Some([10.0, 20.0, 30.0]),
            kernel_spinning: None,
            accel: [5.0, 9.0, 12.0],
        },
    ];
    for svg in [latency_svg(&groups), latency_svg(&[])] {
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(balanced(&svg), "unbalanced: {svg}");
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }
    let svg = latency_svg(&groups);
    assert!(svg.contains("pingpong-udp &lt;&amp;&gt;"));
    // One bar per percentile for each variant that ran: 3 (floor) + 9 + 6, each with its
    // value in its tooltip.
    assert_eq!(svg.matches("<rect ").count() - 3, 3 + 9 + 6, "{svg}");
    assert!(
        svg.contains("pingpong-tcp kernel spinning p50: 4.300 usec"),
        "{svg}"
    );
    assert!(
        !svg.contains("pingpong-udp &lt;&amp;&gt; kernel spinning"),
        "{svg}"
    );
    assert!(!svg.contains("floor kernel"), "{svg}");
}

#[test]
fn results_round_trip_through_json_and_table() {
    let mut w = Workload {
        name: "pingpong-tcp".into(),
        ..Workload::default()
    };
    for (k, a) in [(10.0, 5.0), (12.0, 7.0), (11.0, 6.0)] {
        w.add("p50", "usec", false, Variant::Kernel, k);
        w.add("p50", "usec", false, Variant::Accel, a);
    }
    w.finish();
    assert_eq!(w.status, "ok");
    assert_eq!(w.metrics[0].kernel_median, Some(11.0));
    assert_eq!(w.metrics[0].accel_median, Some(6.0));
    assert!(close(w.metrics[0].ratio.unwrap(), 6.0 / 11.0));
    let mut failed = Workload {
        name: "redis".into(),
        errors: vec!["rep 1 accel: redis-server exited".into()],
        ..Workload::default()
    };
    failed.finish();
    assert_eq!(failed.status, "failed");
    let r = Results {
        reps: 3,
        quick: false,
        started_unix: 1,
        elapsed_sec: 2.5,
        workloads: vec![w, failed],
    };
    let json = report::to_json(&r).unwrap();
    let back: Results = report::from_json(&json).unwrap();
    assert_eq!(back, r);
    let md = report::markdown(&r);
    // No spinning run and no floor in this invocation: those cells say so.
    assert!(
        md.contains("| pingpong-tcp | p50 (usec) | 11.0 | - | 6.000 | 0.55 | - | - |"),
        "{md}"
    );
    assert!(md.contains("FAILED"));
    assert!(report::text_table(&r).contains("redis"));
    assert_eq!(report::median(&[3.0, 1.0, 2.0, 10.0]), Some(2.5));
    assert_eq!(report::median(&[]), None);
}

#[test]
fn floor_summary_line() {
    let out = "floor reflector ready\nfloor: observations=123456 lost=0 avg=3.471 p50=3.251 p99=5.355 p99.9=19.161 usec\n";
    let s = accel_tools::bench::floor::parse_summary(out).unwrap();
    assert_eq!(
        s,
        parse::PingPong {
            observations: 123456,
            avg_usec: 3.471,
            p50_usec: 3.251,
            p99_usec: 5.355,
            p999_usec: 19.161,
        }
    );
    assert!(accel_tools::bench::floor::parse_summary("").is_err());
    assert!(accel_tools::bench::floor::parse_summary(
        "floor: observations=0 avg=1 p50=1 p99=1 p99.9=1\n"
    )
    .is_err());
    assert!(
        accel_tools::bench::floor::parse_summary("floor: observations=5 avg=1 p50=1\n").is_err()
    );
}

#[test]
fn floor_rate_line() {
    use accel_tools::bench::floor::parse_rate;
    let out = "floor sink ready on veth-a 198.18.0.1:9000\nfloor-rate: received=1065873 rate=355291 msg/s\n";
    assert_eq!(parse_rate(out).unwrap(), 355291.0);
    assert!(parse_rate("floor sink ready\n").is_err());
    assert!(parse_rate("floor-rate: received=0 rate=NaN msg/s\n").is_err());
    assert!(parse_rate("floor-rate: received=0 rate=0 msg/s\n").is_err());
    assert!(parse_rate("floor-rate: received=12\n").is_err());
}
