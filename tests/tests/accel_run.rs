//! accel-run and accel-stat from the outside: the environment accel-run hands the program
//! (LD_PRELOAD, ACCEL_* and their precedence), its errors, `--check` in a real namespace with a
//! real XDP attach, and accel-stat reading snapshot files.
//!
//! The preload library may still be an empty cdylib: the run tests only look at the environment
//! the program gets. `cargo build --workspace` builds it beside accel-run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use accel_tests::{tool, xdp_attached, Proc, Topology};
use accel_tools::stats::{self, Snapshot, Socket, Stack};

const WAIT: Duration = Duration::from_secs(30);

/// The ACCEL_* variables and LD_PRELOAD, removed so the tests start from a known environment.
const VARS: [&str; 6] = [
    "ACCEL_INTERFACES",
    "ACCEL_PROFILE",
    "ACCEL_SPIN_US",
    "ACCEL_LOG",
    "LD_PRELOAD",
    "ACCEL_STAT_DIR",
];

/// accel-run with `args`, in a clean environment plus `env`.
fn accel_run(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(tool("accel-run"));
    for v in VARS {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().copied()).args(args);
    cmd
}

/// Runs to completion: (exit code, stdout lines, stderr).
#[track_caller]
fn output(cmd: Command) -> (i32, Vec<String>, String) {
    let (status, lines, err) = Proc::spawn(cmd).wait(WAIT);
    (status.code().expect("exited, not killed"), lines, err)
}

/// The environment `env` printed under accel-run, as (name, value) lookups.
#[track_caller]
fn program_env(args: &[&str], env: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut a = args.to_vec();
    a.extend(["--", "env"]);
    let (code, lines, err) = output(accel_run(&a, env));
    assert_eq!(code, 0, "accel-run {a:?} failed: {err}");
    lines
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[track_caller]
fn var<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn preload_path() -> PathBuf {
    let p = tool("accel-run").with_file_name("libaccel_preload.so");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build --workspace`",
        p.display()
    );
    p.canonicalize().expect("canonical preload path")
}

#[test]
fn options_set_their_variables_when_the_environment_has_not() {
    let env = program_env(
        &[
            "--interface",
            "lo",
            "--profile",
            "latency",
            "--spin-us",
            "20",
            "--log",
            "debug",
        ],
        &[],
    );
    assert_eq!(var(&env, "ACCEL_INTERFACES"), Some("lo"));
    assert_eq!(var(&env, "ACCEL_PROFILE"), Some("latency"));
    assert_eq!(var(&env, "ACCEL_SPIN_US"), Some("20"));
    assert_eq!(var(&env, "ACCEL_LOG"), Some("debug"));
    let lib = preload_path();
    assert_eq!(var(&env, "LD_PRELOAD"), Some(lib.to_str().unwrap()));
}

#[test]
fn defaults_follow_the_profile_and_leave_interfaces_unset() {
    let (code, lines, err) = output(accel_run(&["--", "env"], &[]));
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "accel-run printed to stderr: {err}");
    let env: Vec<(String, String)> = lines
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(var(&env, "ACCEL_INTERFACES"), None);
    assert_eq!(var(&env, "ACCEL_LOG"), None);
    assert_eq!(var(&env, "ACCEL_PROFILE"), Some("balanced"));
    assert_eq!(var(&env, "ACCEL_SPIN_US"), Some("50"));
    let env = program_env(&["--profile", "latency"], &[]);
    assert_eq!(
        var(&env, "ACCEL_SPIN_US"),
        Some("-1"),
        "latency spins without limit"
    );
}

#[test]
fn the_environment_wins_over_options() {
    let env = program_env(
        &[
            "--interface",
            "nonexistent0",
            "--profile",
            "latency",
            "--spin-us",
            "20",
            "--log",
            "debug",
        ],
        &[
            ("ACCEL_INTERFACES", "lo"),
            ("ACCEL_PROFILE", "balanced"),
            ("ACCEL_SPIN_US", "7"),
            ("ACCEL_LOG", "warn"),
        ],
    );
    assert_eq!(var(&env, "ACCEL_INTERFACES"), Some("lo"));
    assert_eq!(var(&env, "ACCEL_PROFILE"), Some("balanced"));
    assert_eq!(var(&env, "ACCEL_SPIN_US"), Some("7"));
    assert_eq!(var(&env, "ACCEL_LOG"), Some("warn"));
}

#[test]
fn ld_preload_puts_accel_first_and_keeps_the_rest_once() {
    let lib = preload_path();
    // Entries that do not exist make ld.so complain on stderr and go on: enough to see them.
    let existing = format!(
        "/nonexistent/liba.so {}:/nonexistent/libb.so",
        lib.display()
    );
    let env = program_env(&[], &[("LD_PRELOAD", &existing)]);
    let got = var(&env, "LD_PRELOAD").expect("LD_PRELOAD set");
    assert_eq!(
        got,
        format!(
            "{}:/nonexistent/liba.so:/nonexistent/libb.so",
            lib.display()
        )
    );
    assert!(Path::new(got.split(':').next().unwrap()).is_absolute());
}

#[test]
fn program_arguments_are_passed_untouched() {
    let (code, lines, err) = output(accel_run(
        &["sh", "-c", "echo \"$@\"", "sh", "--profile", "-x", "--"],
        &[],
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines, ["--profile -x --"]);
}

#[test]
fn a_missing_program_exits_127_like_a_shell() {
    let (code, lines, err) = output(accel_run(&["accel-no-such-program"], &[]));
    assert_eq!(code, 127, "stdout {lines:?} stderr {err}");
    assert_eq!(
        err.trim(),
        "accel-run: cannot run accel-no-such-program: No such file or directory"
    );
}

#[test]
fn an_unknown_interface_is_an_error_naming_it_and_the_available_ones() {
    let (code, _, err) = output(accel_run(&["--interface", "nosuch0", "--", "true"], &[]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nosuch0"), "{err}");
    assert!(
        err.contains("lo"),
        "the available interfaces are listed: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn check_in_a_namespace_finds_native_xdp_and_leaves_nothing_attached() {
    let topo = Topology::new(1).expect("test topology");
    let mut cmd = topo.command_a(tool("accel-run").to_str().unwrap());
    cmd.args(["--check", "--interface", &topo.if_a]);
    for v in VARS {
        cmd.env_remove(v);
    }
    let (code, lines, err) = output(cmd);
    let all = lines.join("\n");
    assert_eq!(code, 0, "stdout:\n{all}\nstderr:\n{err}");
    let has = |s: &str| lines.iter().any(|l| l.starts_with(s));
    assert!(has("ok: privileges:"), "{all}");
    assert!(has(&format!("ok: {}: is up", topo.if_a)), "{all}");
    assert!(
        has(&format!("ok: {}: XDP attaches in native mode", topo.if_a)),
        "{all}"
    );
    assert!(
        has(&format!(
            "ok: {}: is a veth (a software link): partial TCP/UDP checksums",
            topo.if_a
        )),
        "{all}"
    );
    assert!(!all.contains("ethtool -K"), "{all}");
    assert!(has("ok: preload:"), "{all}");
    assert!(
        lines.iter().all(|l| ["ok: ", "warn: ", "error: "]
            .iter()
            .any(|p| l.starts_with(p))),
        "{all}"
    );
    assert!(
        !xdp_attached(&topo.ns_a, &topo.if_a),
        "--check left an XDP program on {}",
        topo.if_a
    );
}

#[test]
fn check_reports_a_missing_interface_as_an_error() {
    let topo = Topology::new(1).expect("test topology");
    let mut cmd = topo.command_a(tool("accel-run").to_str().unwrap());
    cmd.args(["--check", "--interface", "nosuch0"]);
    for v in VARS {
        cmd.env_remove(v);
    }
    let (code, lines, err) = output(cmd);
    let all = lines.join("\n");
    assert_eq!(code, 1, "stdout:\n{all}\nstderr:\n{err}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("error: nosuch0: does not exist") && l.contains("veth-a")),
        "{all}"
    );
}

/// A fresh directory for snapshot files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("accel-stat-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fixture(pid: u32, program: &str) -> Snapshot {
    Snapshot {
        version: stats::VERSION,
        pid,
        program: program.into(),
        updated_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
        stacks: vec![Stack {
            interface: "veth-a".into(),
            queues: vec![0, 1],
            xdp_mode: "native".into(),
            copy_mode: "copy".into(),
            counters: [
                ("rx_frames".to_string(), 1234),
                ("tx_frames".to_string(), 987),
            ]
            .into_iter()
            .collect(),
            sockets: vec![
                Socket {
                    fd: 5,
                    proto: "tcp".into(),
                    state: "LISTEN".into(),
                    local: "198.18.0.1:80".into(),
                    remote: None,
                    recv_queue: 0,
                    send_queue: 0,
                },
                Socket {
                    fd: 7,
                    proto: "tcp".into(),
                    state: "ESTABLISHED".into(),
                    local: "198.18.0.1:80".into(),
                    remote: Some("198.18.0.2:41000".into()),
                    recv_queue: 11,
                    send_queue: 4096,
                },
            ],
        }],
    }
}

/// A pid that ran and has exited (and was reaped).
fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().expect("spawn true");
    let pid = c.id();
    c.wait().expect("wait");
    pid
}

fn accel_stat(args: &[&str]) -> Command {
    let mut cmd = Command::new(tool("accel-stat"));
    cmd.env_remove("ACCEL_STAT_DIR").args(args);
    cmd
}

#[test]
fn accel_stat_lists_live_processes_and_skips_dead_ones() {
    let dir = TempDir::new("list");
    let me = std::process::id();
    let dead = dead_pid();
    std::fs::write(
        stats::path_for(&dir.0, me),
        fixture(me, "live-prog").to_json(),
    )
    .unwrap();
    let dead_file = stats::path_for(&dir.0, dead);
    std::fs::write(&dead_file, fixture(dead, "dead-prog").to_json()).unwrap();
    // A writer's temporary file is not a snapshot.
    std::fs::write(stats::temp_path_for(&dir.0, me), "{").unwrap();
    let d = dir.0.to_str().unwrap();

    let (code, lines, err) = output(accel_stat(&["--dir", d]));
    let text = lines.join("\n");
    assert_eq!(code, 0, "{text}\n{err}");
    assert!(err.is_empty(), "no warnings expected: {err}");
    assert!(text.contains(&format!("pid {me} live-prog")), "{text}");
    assert!(!text.contains("dead-prog"), "{text}");
    assert!(
        text.contains("veth-a queues [0,1] native XDP, copy"),
        "{text}"
    );
    let est = lines
        .iter()
        .find(|l| l.contains("ESTABLISHED"))
        .unwrap_or_else(|| panic!("no ESTABLISHED socket row: {text}"));
    for cell in [
        "7",
        "tcp",
        "198.18.0.1:80",
        "198.18.0.2:41000",
        "11",
        "4096",
    ] {
        assert!(est.split_whitespace().any(|c| c == cell), "{cell} in {est}");
    }
    assert!(lines.iter().any(|l| l.contains("LISTEN")), "{text}");
    assert!(
        text.contains("counters: rx_frames 1234 tx_frames 987"),
        "{text}"
    );
    if nix::unistd::Uid::effective().is_root() {
        assert!(
            !dead_file.exists(),
            "as root, the dead pid's file is removed"
        );
    }

    let (code, lines, err) = output(accel_stat(&["--json", "--dir", d]));
    assert_eq!(code, 0, "{err}");
    let snaps = stats::parse_list(&lines.join("\n")).expect("--json parses back");
    let live = Snapshot::from_json(&std::fs::read_to_string(stats::path_for(&dir.0, me)).unwrap())
        .unwrap();
    assert_eq!(snaps, [live], "--json is the live snapshot only");
}

#[test]
fn accel_stat_warns_about_a_corrupt_file_and_goes_on() {
    let dir = TempDir::new("corrupt");
    let me = std::process::id();
    let parent = std::os::unix::process::parent_id();
    std::fs::write(
        stats::path_for(&dir.0, me),
        fixture(me, "live-prog").to_json(),
    )
    .unwrap();
    let bad = stats::path_for(&dir.0, parent);
    std::fs::write(&bad, "{\"version\":1,\"pid\":").unwrap();
    let (code, lines, err) = output(accel_stat(&["--dir", dir.0.to_str().unwrap()]));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("warning") && l.contains(&bad.display().to_string())),
        "{err}"
    );
    assert!(lines.iter().any(|l| l.contains("live-prog")), "{lines:?}");
}

#[test]
fn accel_stat_says_when_nothing_runs_under_accel() {
    let dir = TempDir::new("empty");
    let d = dir.0.to_str().unwrap();
    let (code, lines, err) = output(accel_stat(&["--dir", d]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines, ["no process is running under accel"]);
    let (code, lines, _) = output(accel_stat(&["--json", "--dir", d]));
    assert_eq!(code, 0);
    assert_eq!(stats::parse_list(&lines.join("\n")).unwrap(), vec![]);
}

#[test]
fn check_joins_the_program_another_accel_process_attached_and_leaves_it_attached() {
    let topo = Topology::new(1).expect("test topology");
    let _echo = accel_tests::start_echo(&topo, 7000, &[]);
    let mut cmd = topo.command_a(tool("accel-run").to_str().unwrap());
    cmd.args(["--check", "--interface", &topo.if_a]);
    for v in VARS {
        cmd.env_remove(v);
    }
    let (code, lines, err) = output(cmd);
    let all = lines.join("\n");
    assert_eq!(code, 0, "stdout:\n{all}\nstderr:\n{err}");
    assert!(
        lines.iter().any(
            |l| l.starts_with(&format!("ok: {}: another accel process", topo.if_a))
                && l.contains("joined it and left again")
        ),
        "{all}"
    );
    assert!(
        xdp_attached(&topo.ns_a, &topo.if_a),
        "--check detached the program accel-echo still uses"
    );
}
