//! `cargo xtask`: the project's set-up and orchestration tasks.
//!
//! - `cargo xtask test`: everything CI runs (system packages, lint, build, tests).
//! - `cargo xtask fuzz`: a bounded fuzzing run of the request decoder.
//! - `cargo xtask run`: a dev server, a short `roster` CLI demo against it, and the
//!   desktop app connected to it.

mod bench;
mod demo;
mod desktop;
mod fuzz;
mod postgres;
mod process;
mod run;
mod server;
mod system;
mod test;
mod unit_file;
mod workspace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Set-up and orchestration tasks for Roster.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

/// The available tasks.
#[derive(Subcommand, Debug)]
enum Task {
    /// Run every check and test, as CI does: install missing system packages,
    /// cargo fmt --check, clippy, build the binaries, then the tests and doctests.
    Test(test::TestArgs),
    /// Build and start a dev roster-server (data in .roster-dev/), run a short
    /// two-device sync demo with the roster CLI, open the desktop app connected to it,
    /// then keep serving until Ctrl-C.
    Run(run::RunArgs),
    /// Build release binaries and run the sync benchmarks against the local SQLite
    /// limit: prints a table, writes target/bench/results.json (docs/BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// Start a throwaway PostgreSQL on 127.0.0.1, run a command with
    /// ROSTER_TEST_BACKEND=postgres and ROSTER_TEST_PG_URL set, then stop it, e.g.
    /// `cargo xtask with-postgres -- cargo nextest run --workspace -E 'package(roster-e2e)'`.
    WithPostgres {
        /// Keep the cluster durable (`fsync`, `synchronous_commit` and
        /// `full_page_writes` on), as `cargo xtask bench --postgres` runs it: for timing
        /// comparisons. The tests' default turns them off.
        #[arg(long)]
        durable: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Fuzz the sync request decoder (cargo-fuzz, installed when missing) for a bounded
    /// time; `cargo xtask test` runs it for 30 s.
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.task {
        Task::Test(args) => test::test(args),
        Task::Run(args) => run::run_dev(args),
        Task::Bench(args) => bench::bench(args),
        Task::WithPostgres { durable, command } => postgres::with_postgres(*durable, command),
        Task::Fuzz(args) => fuzz::fuzz(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\nerror: {error:#}");
            ExitCode::FAILURE
        }
    }
}
