//! accel-helper: owns what the accelerated processes of one network namespace share (the XDP
//! filter of each interface they use, each queue's frame memory, the control area) and hands
//! each process its own AF_XDP sockets. Listens at the abstract Unix socket `@accel-helper`.
//!
//! Started on demand by the first accelerated process of the namespace (it then exits when
//! its last client is gone, leaving every interface as it was), or run as a service with
//! `--foreground`. A second helper started while one runs exits quietly.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use libaccel::share::helper::{Helper, Ready, RunMode};

const USAGE: &str = "\
usage: accel-helper [--foreground | --on-demand] [--version]

  --foreground  run as a service: stay in the foreground, log to stderr (ACCEL_LOG=info), keep
                running when no process is accelerated
  --on-demand   how accelerated processes start it: exit when the last of them is gone
";

fn main() -> ExitCode {
    let mut mode = RunMode::OnDemand;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--foreground" => mode = RunMode::Service,
            "--on-demand" => mode = RunMode::OnDemand,
            "--version" => {
                println!("accel-helper {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("accel-helper: unknown argument {other:?}\n{USAGE}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Ok(filter) = std::env::var("ACCEL_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let ready = Ready::inherited();
    let mut helper = match Helper::bind(mode) {
        Ok(h) => h,
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
            // Another helper serves this network namespace (a race to start one, or a
            // service): it is the one to use.
            if mode == RunMode::Service {
                eprintln!(
                    "accel-helper: another accel-helper already serves this network namespace"
                );
                return ExitCode::FAILURE;
            }
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("accel-helper: cannot listen at @accel-helper: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (stop_r, stop_w) = match UnixStream::pair() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("accel-helper: {e}");
            return ExitCode::FAILURE;
        }
    };
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let w = match stop_w.try_clone() {
            Ok(w) => w,
            Err(e) => {
                eprintln!("accel-helper: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = signal_hook::low_level::pipe::register(sig, w) {
            eprintln!("accel-helper: cannot handle signal {sig}: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(r) = ready {
        r.signal();
    }
    match helper.run(Some(stop_r.as_fd())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("accel-helper: {e}");
            ExitCode::FAILURE
        }
    }
}
