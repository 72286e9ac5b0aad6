//! accel-run: start a program with its sockets accelerated by accel (like OpenOnload's `onload`).
//!
//! It finds the preload library, puts it first in `LD_PRELOAD`, exports accel's settings
//! (`ACCEL_*`) and `exec`s the program, which keeps accel-run's pid. `--check` instead says
//! whether accel can accelerate here, one finding per line.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode};

use accel_tools::check;
use clap::{Parser, ValueEnum};

const AFTER_HELP: &str = "\
Every option has an environment twin, and the environment wins: an option sets its variable only
when the environment has not set it (a variable set to the empty string counts as unset).

  --interface IF     ACCEL_INTERFACES  comma-separated interface names; unset (the default):
                                       every interface that is up, Ethernet and has an IPv4
                                       address
  --profile P        ACCEL_PROFILE     latency | balanced (default balanced)
  --spin-us N        ACCEL_SPIN_US     how long a blocking call busy-polls before it sleeps, in
                                       microseconds; -1 (or `unlimited` for the option) spins
                                       without limit; default: latency -1, balanced 50
  --log LEVEL        ACCEL_LOG         tracing filter, e.g. info or libaccel=debug (default off)

accel-run always exports ACCEL_PROFILE and ACCEL_SPIN_US (what it chose), so the program's
environment shows the settings in force. LD_PRELOAD gets the preload library first and keeps
whatever was in it. ACCEL_HELPER, unless set, names the accel-helper beside accel-run: the
program starts it when no helper serves the network namespace yet (it shares the interfaces'
queues between every accelerated process there).

Examples:
  accel-run nginx -g 'daemon off;'
  accel-run --profile latency --interface eth1 -- sockperf server -i 198.18.0.1
  accel-run --check --interface eth1";

/// Start PROGRAM with its TCP and UDP sockets accelerated by accel (userspace stack over AF_XDP).
#[derive(Parser, Debug)]
#[command(
    name = "accel-run",
    version,
    after_help = AFTER_HELP,
    override_usage = "accel-run [OPTIONS] [--] PROGRAM [ARGS]...\n       accel-run --check [--interface IF]..."
)]
struct Args {
    /// Accelerate on this interface (repeat for several). Default: every interface that is up,
    /// Ethernet and has an IPv4 address.
    #[arg(long = "interface", short = 'i', value_name = "IF")]
    interfaces: Vec<String>,

    /// latency: spin without limit in blocking calls (burns a core per thread, lowest latency);
    /// balanced: spin a little, then sleep.
    #[arg(long, value_enum)]
    profile: Option<Profile>,

    /// Busy-poll this many microseconds before a blocking call sleeps (`unlimited` or -1: never
    /// sleep). Default from the profile.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_spin)]
    spin_us: Option<Spin>,

    /// Log filter for the preload library (tracing's syntax: `info`, `libaccel=debug`, ...).
    #[arg(long, value_name = "LEVEL")]
    log: Option<String>,

    /// Check whether accel can accelerate here (privileges, interfaces, XDP, preload library)
    /// instead of running a program; exits 1 if anything is an error.
    #[arg(long, conflicts_with = "command")]
    check: bool,

    /// The program to run, then its arguments (passed on untouched, also those starting with -).
    #[arg(
        value_name = "PROGRAM",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required_unless_present = "check"
    )]
    command: Vec<OsString>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Profile {
    Latency,
    Balanced,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Latency => "latency",
            Profile::Balanced => "balanced",
        }
    }

    fn parse(s: &str) -> Option<Profile> {
        match s {
            "latency" => Some(Profile::Latency),
            "balanced" => Some(Profile::Balanced),
            _ => None,
        }
    }

    fn default_spin(self) -> Spin {
        match self {
            Profile::Latency => Spin::Unlimited,
            Profile::Balanced => Spin::Micros(50),
        }
    }
}

/// How long blocking calls busy-poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spin {
    Micros(u64),
    /// Written as `-1` in ACCEL_SPIN_US.
    Unlimited,
}

impl Spin {
    fn env_value(self) -> String {
        match self {
            Spin::Micros(n) => n.to_string(),
            Spin::Unlimited => "-1".to_owned(),
        }
    }

    /// ACCEL_SPIN_US's syntax: a number of microseconds, or -1.
    fn parse_env(s: &str) -> Option<Spin> {
        match s.trim() {
            "-1" => Some(Spin::Unlimited),
            t => t.parse().ok().map(Spin::Micros),
        }
    }
}

fn parse_spin(s: &str) -> Result<Spin, String> {
    if s == "unlimited" {
        return Ok(Spin::Unlimited);
    }
    Spin::parse_env(s).ok_or_else(|| {
        format!("{s:?} is not a number of microseconds: use 0 or more, or -1 / unlimited")
    })
}

/// What to export, decided from the options and the environment (`env` reads a variable).
/// `known` lists the interfaces that exist (called only when some interface must be checked).
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    vars: Vec<(&'static str, String)>,
}

fn plan(
    args: &Args,
    env: &dyn Fn(&str) -> Option<String>,
    known: &dyn Fn() -> Result<Vec<String>, String>,
    preload: &Path,
    helper: Option<&Path>,
) -> Result<Plan, String> {
    let env = |k: &str| env(k).filter(|v| !v.is_empty());
    let mut vars = Vec::new();

    // Interfaces: names from whichever source is in force must exist.
    let (ifaces, source) = match env("ACCEL_INTERFACES") {
        Some(v) => (
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>(),
            "ACCEL_INTERFACES",
        ),
        None => {
            if !args.interfaces.is_empty() {
                vars.push(("ACCEL_INTERFACES", args.interfaces.join(",")));
            }
            (args.interfaces.clone(), "--interface")
        }
    };
    if !ifaces.is_empty() {
        let known = known()?;
        for i in &ifaces {
            if !known.contains(i) {
                let list = if known.is_empty() {
                    "(none)".to_owned()
                } else {
                    known.join(", ")
                };
                return Err(format!(
                    "no interface named {i} (from {source}) in this network namespace: use one \
                     of {list}"
                ));
            }
        }
    }

    let profile = match env("ACCEL_PROFILE") {
        Some(v) => Profile::parse(v.trim()).ok_or_else(|| {
            format!("ACCEL_PROFILE={v:?} is not a profile: use latency or balanced")
        })?,
        None => args.profile.unwrap_or(Profile::Balanced),
    };
    if env("ACCEL_PROFILE").is_none() {
        vars.push(("ACCEL_PROFILE", profile.name().to_owned()));
    }

    match env("ACCEL_SPIN_US") {
        Some(v) => {
            Spin::parse_env(&v).ok_or_else(|| {
                format!(
                    "ACCEL_SPIN_US={v:?} is not a number of microseconds: use 0 or more, or -1 \
                     for no limit"
                )
            })?;
        }
        None => {
            let spin = args.spin_us.unwrap_or(profile.default_spin());
            vars.push(("ACCEL_SPIN_US", spin.env_value()));
        }
    }

    match env("ACCEL_LOG") {
        Some(v) => check_log(&v, "ACCEL_LOG")?,
        None => {
            if let Some(l) = &args.log {
                check_log(l, "--log")?;
                vars.push(("ACCEL_LOG", l.clone()));
            }
        }
    }

    if env(libaccel::share::HELPER_ENV).is_none() {
        if let Some(h) = helper {
            vars.push((
                libaccel::share::HELPER_ENV,
                h.to_string_lossy().into_owned(),
            ));
        }
    }
    vars.push((
        "LD_PRELOAD",
        compose_ld_preload(preload, env("LD_PRELOAD").as_deref()),
    ));
    Ok(Plan { vars })
}

fn check_log(filter: &str, source: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "{source} {filter:?} is not a log filter ({e}): use e.g. info or libaccel=debug"
            )
        })
}

/// `lib` first, then the entries already there (glibc separates them with spaces or colons),
/// without another copy of the preload library.
fn compose_ld_preload(lib: &Path, existing: Option<&str>) -> String {
    let mut out = vec![lib.to_string_lossy().into_owned()];
    for e in existing.unwrap_or("").split([' ', ':']) {
        if e.is_empty() || Path::new(e).file_name() == Path::new(check::PRELOAD_NAME).file_name() {
            continue;
        }
        out.push(e.to_owned());
    }
    out.join(":")
}

fn main() -> ExitCode {
    let args = Args::parse();
    let exe = std::env::current_exe().unwrap_or_default();
    let preload = check::find_preload(&exe);

    if args.check {
        // The same rule as a run: the environment's interfaces win over the options.
        let requested: Vec<String> = match std::env::var("ACCEL_INTERFACES") {
            Ok(v) if !v.is_empty() => v
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            _ => args.interfaces.clone(),
        };
        let findings = check::run(&requested, &preload);
        for f in &findings {
            println!("{f}");
        }
        return if check::has_errors(&findings) {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        };
    }

    let lib = match preload {
        Ok(p) => p,
        Err(e) => {
            eprintln!("accel-run: {e}");
            return ExitCode::from(1);
        }
    };
    let known = || {
        libaccel::control::interfaces()
            .map(|v| v.into_iter().map(|i| i.name).collect())
            .map_err(|e| e.to_string())
    };
    let env = |k: &str| std::env::var(k).ok();
    let helper = exe
        .parent()
        .map(|d| d.join("accel-helper"))
        .filter(|h| h.is_file())
        .map(|h| h.canonicalize().unwrap_or(h));
    let plan = match plan(&args, &env, &known, &lib, helper.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("accel-run: {e}");
            return ExitCode::from(1);
        }
    };

    // The snapshot directory exists before the program runs, writable by each of its
    // processes whatever user they become (nginx's workers: nobody); the first process may
    // exit before it would make it (a daemon's parent). Best effort: a program still runs
    // without accel-stat.
    let _ = libaccel::stats::ensure_dir(&libaccel::stats::dir_from(
        plan.vars
            .iter()
            .find(|(k, _)| *k == libaccel::stats::DIR_ENV)
            .map(|(_, v)| v.clone())
            .or_else(|| env(libaccel::stats::DIR_ENV)),
    ));
    let program = &args.command[0];
    let mut cmd = Command::new(program);
    cmd.args(&args.command[1..]);
    for (k, v) in &plan.vars {
        cmd.env(k, v);
    }
    let err = cmd.exec();
    // Like a shell: 126 when the file is there but cannot be executed, 127 otherwise.
    let code = match err.raw_os_error() {
        Some(libc::EACCES) | Some(libc::ENOEXEC) | Some(libc::EISDIR) => 126,
        _ => 127,
    };
    let reason = match err.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_owned(),
        None => err.to_string(),
    };
    eprintln!(
        "accel-run: cannot run {}: {reason}",
        program.to_string_lossy()
    );
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn args(a: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("accel-run").chain(a.iter().copied())).unwrap()
    }

    fn plan_with(
        a: &[&str],
        env: &[(&str, &str)],
    ) -> Result<HashMap<&'static str, String>, String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = move |k: &str| env.get(k).cloned();
        let known = || Ok(vec!["lo".to_owned(), "eth1".to_owned()]);
        plan(
            &args(a),
            &get,
            &known,
            Path::new("/x/libaccel_preload.so"),
            Some(Path::new("/x/accel-helper")),
        )
        .map(|p| p.vars.into_iter().collect())
    }

    #[test]
    fn the_helper_beside_accel_run_unless_the_environment_names_one() {
        let v = plan_with(&["p"], &[]).unwrap();
        assert_eq!(v["ACCEL_HELPER"], "/x/accel-helper");
        let v = plan_with(&["p"], &[("ACCEL_HELPER", "/opt/accel-helper")]).unwrap();
        assert!(!v.contains_key("ACCEL_HELPER"), "the environment's stays");
    }

    #[test]
    fn program_arguments_pass_untouched() {
        let a = args(&["--profile", "latency", "prog", "--profile", "-x", "--", "y"]);
        assert_eq!(a.profile, Some(Profile::Latency));
        assert_eq!(a.command, ["prog", "--profile", "-x", "--", "y"]);
        let a = args(&["--", "-weird", "a"]);
        assert_eq!(a.command, ["-weird", "a"]);
        assert!(Args::try_parse_from(["accel-run"]).is_err());
        assert!(Args::try_parse_from(["accel-run", "--check"]).is_ok());
        assert!(Args::try_parse_from(["accel-run", "--check", "prog"]).is_err());
    }

    #[test]
    fn spin_accepts_numbers_and_unlimited() {
        assert_eq!(
            args(&["--spin-us", "-1", "p"]).spin_us,
            Some(Spin::Unlimited)
        );
        assert_eq!(
            args(&["--spin-us", "unlimited", "p"]).spin_us,
            Some(Spin::Unlimited)
        );
        assert_eq!(
            args(&["--spin-us", "7", "p"]).spin_us,
            Some(Spin::Micros(7))
        );
        assert!(Args::try_parse_from(["accel-run", "--spin-us", "-2", "p"]).is_err());
        assert!(Args::try_parse_from(["accel-run", "--spin-us", "x", "p"]).is_err());
        assert!(Args::try_parse_from(["accel-run", "--profile", "fast", "p"]).is_err());
    }

    #[test]
    fn defaults_come_from_the_profile() {
        let v = plan_with(&["p"], &[]).unwrap();
        assert_eq!(v["ACCEL_PROFILE"], "balanced");
        assert_eq!(v["ACCEL_SPIN_US"], "50");
        assert!(!v.contains_key("ACCEL_INTERFACES"));
        assert!(!v.contains_key("ACCEL_LOG"));
        let v = plan_with(&["--profile", "latency", "p"], &[]).unwrap();
        assert_eq!(v["ACCEL_SPIN_US"], "-1");
        // The environment's profile decides the default spin too.
        let v = plan_with(&["p"], &[("ACCEL_PROFILE", "latency")]).unwrap();
        assert!(!v.contains_key("ACCEL_PROFILE"));
        assert_eq!(v["ACCEL_SPIN_US"], "-1");
    }

    #[test]
    fn the_environment_wins_over_options() {
        let v = plan_with(
            &[
                "--profile",
                "latency",
                "--spin-us",
                "5",
                "--log",
                "debug",
                "-i",
                "lo",
                "p",
            ],
            &[
                ("ACCEL_PROFILE", "balanced"),
                ("ACCEL_SPIN_US", "9"),
                ("ACCEL_LOG", "warn"),
                ("ACCEL_INTERFACES", "eth1"),
            ],
        )
        .unwrap();
        for k in [
            "ACCEL_PROFILE",
            "ACCEL_SPIN_US",
            "ACCEL_LOG",
            "ACCEL_INTERFACES",
        ] {
            assert!(!v.contains_key(k), "{k} overridden: {v:?}");
        }
        let v = plan_with(
            &["-i", "lo", "-i", "eth1", "--log", "info", "p"],
            &[("ACCEL_LOG", "")],
        )
        .unwrap();
        assert_eq!(v["ACCEL_INTERFACES"], "lo,eth1");
        assert_eq!(v["ACCEL_LOG"], "info");
    }

    #[test]
    fn bad_values_are_errors_naming_them() {
        let e = plan_with(&["-i", "eth9", "p"], &[]).unwrap_err();
        assert!(e.contains("eth9") && e.contains("lo, eth1"), "{e}");
        let e = plan_with(&["p"], &[("ACCEL_INTERFACES", "eth1,wlan0")]).unwrap_err();
        assert!(e.contains("wlan0") && e.contains("ACCEL_INTERFACES"), "{e}");
        let e = plan_with(&["p"], &[("ACCEL_PROFILE", "fast")]).unwrap_err();
        assert!(e.contains("latency or balanced"), "{e}");
        let e = plan_with(&["p"], &[("ACCEL_SPIN_US", "soon")]).unwrap_err();
        assert!(e.contains("ACCEL_SPIN_US"), "{e}");
    }

    #[test]
    fn ld_preload_puts_ours_first_and_keeps_the_rest_once() {
        let lib = Path::new("/opt/accel/libaccel_preload.so");
        assert_eq!(
            compose_ld_preload(lib, None),
            "/opt/accel/libaccel_preload.so"
        );
        assert_eq!(
            compose_ld_preload(lib, Some("liba.so /b/libb.so:libc2.so")),
            "/opt/accel/libaccel_preload.so:liba.so:/b/libb.so:libc2.so"
        );
        assert_eq!(
            compose_ld_preload(lib, Some("/old/libaccel_preload.so:liba.so")),
            "/opt/accel/libaccel_preload.so:liba.so"
        );
    }
}
