//! Parsers of the benchmark tools' outputs. Each returns an error naming what it could not find
//! when the format is not the one it knows: a changed tool version must fail loudly, never
//! report zeros.

use anyhow::{anyhow, bail, Context, Result};

/// Removes ANSI colour sequences (sockperf colours parts of its summary).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The number that follows `key` in `line` (spaces skipped).
fn num_after(line: &str, key: &str) -> Option<f64> {
    let rest = line[line.find(key)? + key.len()..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A `sockperf ping-pong` summary: half round-trip latencies in microseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct PingPong {
    pub observations: u64,
    pub avg_usec: f64,
    pub p50_usec: f64,
    pub p99_usec: f64,
    pub p999_usec: f64,
}

/// Parses sockperf ping-pong's summary (`Summary: Latency is`, `Total N observations`,
/// `percentile 50.000/99.000/99.900`); an `ERROR` line or a missing part is an error.
pub fn sockperf_pingpong(output: &str) -> Result<PingPong> {
    let text = strip_ansi(output);
    let (mut obs, mut avg, mut p50, mut p99, mut p999) = (None, None, None, None, None);
    for line in text.lines() {
        if line.contains("ERROR") {
            bail!("sockperf reported an error: {}", line.trim());
        }
        if line.contains("Summary: Latency is") {
            avg = num_after(line, "Latency is");
        } else if line.contains("observations") && line.contains("Total") {
            obs = num_after(line, "Total").map(|n| n as u64);
        } else if line.contains("percentile") {
            let Some(pct) = num_after(line, "percentile") else {
                continue;
            };
            let val = num_after(line, "=");
            match format!("{pct:.3}").as_str() {
                "50.000" => p50 = val,
                "99.000" => p99 = val,
                "99.900" => p999 = val,
                _ => {}
            }
        }
    }
    let need = |v: Option<f64>, what: &str| {
        v.ok_or_else(|| anyhow!("sockperf ping-pong output has no {what}:\n{}", tail(&text)))
    };
    let observations = need(obs.map(|n| n as f64), "`Total N observations` line")? as u64;
    if observations == 0 {
        bail!("sockperf ping-pong made no observations:\n{}", tail(&text));
    }
    Ok(PingPong {
        observations,
        avg_usec: need(avg, "`Summary: Latency is` line")?,
        p50_usec: need(p50, "50th percentile")?,
        p99_usec: need(p99, "99th percentile")?,
        p999_usec: need(p999, "99.9th percentile")?,
    })
}

/// What became of a `sockperf ping-pong` run's messages.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Messages {
    pub sent: u64,
    pub received: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
}

/// Parses sockperf ping-pong's message accounting (the `[Valid Duration]` line and the
/// dropped/duplicated/out-of-order line); an `ERROR` line or a missing part is an error.
pub fn sockperf_messages(output: &str) -> Result<Messages> {
    let text = strip_ansi(output);
    let mut m = Messages::default();
    let (mut counts, mut faults) = (false, false);
    let num = |line: &str, key: &str| -> Result<u64> {
        num_after(line, key)
            .map(|v| v as u64)
            .ok_or_else(|| anyhow!("bad sockperf line (no `{key}`): {}", line.trim()))
    };
    for line in text.lines() {
        if line.contains("ERROR") {
            bail!("sockperf reported an error: {}", line.trim());
        }
        if line.contains("[Valid Duration]") {
            m.sent = num(line, "SentMessages=")?;
            m.received = num(line, "ReceivedMessages=")?;
            counts = true;
        } else if line.contains("# dropped messages") {
            m.dropped = num(line, "# dropped messages =")?;
            m.duplicated = num(line, "# duplicated messages =")?;
            m.out_of_order = num(line, "# out-of-order messages =")?;
            faults = true;
        }
    }
    if !(counts && faults) {
        bail!(
            "sockperf ping-pong output has no `[Valid Duration]` or `# dropped messages` line:\n{}",
            tail(&text)
        );
    }
    Ok(m)
}

/// Parses `sockperf throughput`'s client summary: messages per second (`Summary: Message Rate
/// is N [msg/sec]`).
pub fn sockperf_throughput(output: &str) -> Result<f64> {
    let text = strip_ansi(output);
    for line in text.lines() {
        if line.contains("ERROR") {
            bail!("sockperf reported an error: {}", line.trim());
        }
        if line.contains("Summary: Message Rate is") {
            let rate = num_after(line, "Message Rate is")
                .with_context(|| format!("bad sockperf message-rate line: {line}"))?;
            if rate <= 0.0 {
                bail!("sockperf measured no messages: {line}");
            }
            return Ok(rate);
        }
    }
    bail!(
        "sockperf throughput output has no `Summary: Message Rate` line:\n{}",
        tail(&text)
    )
}

/// What `wrk --latency` reported.
#[derive(Clone, Debug, PartialEq)]
pub struct Wrk {
    pub requests: u64,
    pub requests_per_sec: f64,
    /// 99th percentile latency from the `Latency Distribution` block, microseconds.
    pub p99_usec: f64,
    /// Sum of the `Socket errors` counters (0 when wrk printed no such line).
    pub socket_errors: u64,
    pub non_2xx_3xx: u64,
}

/// A wrk duration ("718.00us", "1.55ms", "2.01s") in microseconds.
fn wrk_duration_usec(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix("m") {
        (n, 60e6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * mult)
}

/// Parses wrk's text output with `--latency` (its `99%` line is required).
pub fn wrk(output: &str) -> Result<Wrk> {
    let (mut requests, mut rps, mut p99) = (None, None, None);
    let (mut socket_errors, mut non_2xx_3xx) = (0, 0);
    let bad = |line: &str| anyhow!("bad wrk line: {line}");
    for line in output.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Socket errors:") {
            for part in rest.split(',') {
                let n: u64 = part
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| bad(line))?;
                socket_errors += n;
            }
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx_3xx = rest.trim().parse().map_err(|_| bad(line))?;
        } else if line.contains(" requests in ") {
            requests = Some(
                line.split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| bad(line))?,
            );
        } else if let Some(rest) = line.strip_prefix("Requests/sec:") {
            rps = Some(rest.trim().parse::<f64>().map_err(|_| bad(line))?);
        } else if let Some(rest) = line.strip_prefix("99%") {
            p99 = Some(wrk_duration_usec(rest).ok_or_else(|| bad(line))?);
        }
    }
    let (Some(requests), Some(requests_per_sec)) = (requests, rps) else {
        bail!(
            "wrk output has no `N requests in` / `Requests/sec:` lines:\n{}",
            tail(output)
        );
    };
    let Some(p99_usec) = p99 else {
        bail!(
            "wrk output has no `99%` latency line (was --latency given?):\n{}",
            tail(output)
        );
    };
    if requests == 0 {
        bail!("wrk completed no requests:\n{}", tail(output));
    }
    Ok(Wrk {
        requests,
        requests_per_sec,
        p99_usec,
        socket_errors,
        non_2xx_3xx,
    })
}

/// Parses `redis-benchmark -q` output into (test name, requests/s). Progress updates are
/// overwritten with `\r`; only the final text of each line counts, and every final line must be
/// a result. No result at all is an error.
pub fn redis_benchmark(output: &str) -> Result<Vec<(String, f64)>> {
    let mut results = Vec::new();
    for raw in output.split('\n') {
        let last = raw
            .rsplit('\r')
            .map(str::trim)
            .find(|s| !s.is_empty())
            .unwrap_or("");
        if last.is_empty() {
            continue;
        }
        let bad = || anyhow!("unexpected redis-benchmark line: {last:?}");
        let (name, rest) = last.split_once(": ").ok_or_else(bad)?;
        let rate = rest
            .split_once(" requests per second")
            .map(|(r, _)| r)
            .ok_or_else(bad)?;
        let rate: f64 = rate.trim().parse().map_err(|_| bad())?;
        results.push((name.trim().to_string(), rate));
    }
    if results.is_empty() {
        bail!("redis-benchmark printed no result");
    }
    Ok(results)
}

/// Parses `iperf3 -J` output: the receiver's rate (`end.sum_received.bits_per_second`) in
/// Gbit/s. An `error` member is an error.
pub fn iperf3(output: &str) -> Result<f64> {
    let v: serde_json::Value = serde_json::from_str(output.trim())
        .with_context(|| format!("iperf3 -J output is not JSON:\n{}", tail(output)))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3 reported an error: {e}");
    }
    let bps = v
        .pointer("/end/sum_received/bits_per_second")
        .and_then(|b| b.as_f64())
        .context("iperf3 -J output has no end.sum_received.bits_per_second")?;
    if bps <= 0.0 {
        bail!("iperf3 measured no traffic");
    }
    Ok(bps / 1e9)
}

/// The last lines of a long output, for error messages.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
