//! accel-fuzz: runs accel's fuzz targets on the stable toolchain (a seeded mutational fuzzer
//! over the seed corpus, no coverage feedback), writes the seed corpus, and replays inputs.
//!
//! ```sh
//! cargo run --release -p accel-fuzz -- run ingress --runs 10000000 --seed 1
//! cargo run --release -p accel-fuzz -- replay ingress fuzz/artifacts/ingress/crash-0
//! cargo run --release -p accel-fuzz -- seed        # rewrites fuzz/corpus/ from code
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use accel_fuzz::{corpus, corpus_dir, load_corpus, run, target, TARGETS};
use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "accel-fuzz", version)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs TARGET on its corpus, then on RUNS mutations of it.
    Run {
        target: String,
        #[arg(long, default_value_t = 1_000_000)]
        runs: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where crashing inputs are written (default: fuzz/artifacts/TARGET).
        #[arg(long)]
        artifacts: Option<PathBuf>,
        /// Stop after this many crashing inputs.
        #[arg(long, default_value_t = 10)]
        max_crashes: usize,
    },
    /// Runs TARGET on the given input files (a crash panics with its message).
    Replay { target: String, files: Vec<PathBuf> },
    /// Writes the seed corpus (fuzz/corpus/TARGET/NAME) from the code in corpus.rs.
    Seed,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("accel-fuzz: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn pick(name: &str) -> anyhow::Result<accel_fuzz::Target> {
    target(name).with_context(|| {
        let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
        format!("no target {name:?}; targets: {}", names.join(", "))
    })
}

fn real_main() -> anyhow::Result<ExitCode> {
    match Args::parse().cmd {
        Cmd::Run {
            target,
            runs,
            seed,
            artifacts,
            max_crashes,
        } => {
            let f = pick(&target)?;
            let dir = corpus_dir(&target);
            let corpus = load_corpus(&dir)
                .with_context(|| format!("reading the corpus in {}", dir.display()))?;
            let artifacts = artifacts.unwrap_or_else(|| {
                corpus_dir(&target)
                    .parent()
                    .and_then(|p| p.parent())
                    .map(|p| p.join("artifacts").join(&target))
                    .unwrap_or_default()
            });
            let start = Instant::now();
            let r = run(f, &corpus, runs, seed, Some(&artifacts), max_crashes);
            let secs = start.elapsed().as_secs_f64();
            println!(
                "accel-fuzz: target {target}: {} inputs ({} corpus + mutations, seed {seed}) in {secs:.1} s ({:.0}/s), {} crashes",
                r.inputs,
                r.corpus,
                r.inputs as f64 / secs.max(1e-9),
                r.crashes.len()
            );
            if r.crashes.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                println!("crashing inputs are in {}", artifacts.display());
                Ok(ExitCode::FAILURE)
            }
        }
        Cmd::Replay { target, files } => {
            let f = pick(&target)?;
            for file in files {
                let data =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                f(&data);
                println!("{}: ok", file.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Seed => {
            for (name, _) in TARGETS {
                let dir = corpus_dir(name);
                std::fs::create_dir_all(&dir)?;
                let seeds = corpus::seeds(name);
                if seeds.is_empty() {
                    bail!("no seeds for {name}");
                }
                for (file, bytes) in seeds {
                    std::fs::write(dir.join(&file), bytes)?;
                }
                println!("accel-fuzz: wrote the {name} corpus in {}", dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
