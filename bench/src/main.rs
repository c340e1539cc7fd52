//! `roster-bench`: Roster's sync benchmarks (issue 5), run by `cargo xtask bench`.
//!
//! Every scenario runs against the real `roster-server` binary on 127.0.0.1 and is
//! compared with the local limit measured in the same run: a raw rusqlite bulk insert of
//! the same Person rows. Both sides and the baseline use SQLite WAL with
//! synchronous=FULL. Prints a table and writes JSON (`--out`).
//!
//! `pull-child` (hidden) is this binary re-invoked to run a first sync in its own
//! process, so the client's peak memory can be read from /proc.

mod child;
mod data;
mod report;
mod scenarios;
mod server;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::report::{DURABILITY, Entry, Machine, Report};
use crate::scenarios::{Ctx, Scenario};

/// Roster sync benchmarks against the local SQLite limit.
#[derive(Parser, Debug)]
#[command(name = "roster-bench", about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Internal: run one first sync in this process and report it (used by first-sync).
    #[command(hide = true)]
    PullChild(child::PullChildArgs),
    /// For profiling by hand: add N generated Person rows to a running server.
    Seed {
        /// Server base URL (127.0.0.1 only).
        #[arg(long)]
        url: String,
        /// Bearer token of the user whose data set gets the rows.
        #[arg(long, env = "ROSTER_TOKEN", hide_env_values = true)]
        token: String,
        /// Rows to add.
        #[arg(long)]
        rows: u64,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Smaller sizes for a fast check (targets are only judged at full size).
    #[arg(long)]
    quick: bool,
    /// Run only these scenarios (repeatable); the baseline always runs.
    #[arg(long = "scenario", value_name = "NAME", value_enum)]
    scenarios: Vec<Scenario>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/results.json")]
    out: PathBuf,
    /// The roster-server binary to benchmark [default: next to this binary].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Directory for the run's databases (a temporary dir is made inside, then removed)
    /// [default: the system temp dir].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Time limit of one first sync (and of seeding its server); a pull stopped there is
    /// reported with its rate and a projected total.
    #[arg(long, default_value_t = 300)]
    max_pull_secs: u64,
    /// Admin URL of a PostgreSQL cluster on 127.0.0.1 (`cargo xtask bench --postgres`
    /// starts one): the concurrent scenario then also runs on PostgreSQL with one and
    /// with two server instances, each on a fresh database, and the postgres scenario
    /// (issue 20) runs.
    #[arg(long)]
    postgres_url: Option<String>,
}

/// Time limit of one scenario.
const SCENARIO_LIMIT: Duration = Duration::from_secs(30 * 60);

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("ROSTER_BENCH_LOG")
                .unwrap_or_else(|_| EnvFilter::new("warn,roster_bench=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Some(Command::PullChild(args)) => child::run_child(args).await,
            Some(Command::Seed { url, token, rows }) => seed_server(url, token, *rows).await,
            None => run(&cli.run).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &RunArgs) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find this binary's path")?;
    let server_bin = match &args.server_bin {
        Some(path) => path.clone(),
        None => exe
            .parent()
            .context("this binary has no directory")?
            .join("roster-server"),
    };
    if !server_bin.is_file() {
        bail!(
            "{} is missing: build it first (cargo build --release -p roster-server), \
             or run `cargo xtask bench`",
            server_bin.display()
        );
    }
    let mut selected: Vec<Scenario> = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios.clone()
    };
    selected.push(Scenario::Baseline);
    selected.sort();
    selected.dedup();

    let work_root = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&work_root)
        .with_context(|| format!("cannot create {}", work_root.display()))?;
    let work = tempfile::Builder::new()
        .prefix("roster-bench-")
        .tempdir_in(&work_root)?;
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let machine = Machine::detect();
    tracing::info!(?machine, quick = args.quick, scenarios = ?selected, "starting");
    println!("durability: {DURABILITY}");
    let started = Instant::now();
    let mut ctx = Ctx::new(
        args.quick,
        server_bin,
        exe,
        work.path().to_path_buf(),
        Duration::from_secs(args.max_pull_secs),
    );
    ctx.large_baseline = selected.contains(&Scenario::FirstSync);
    ctx.postgres_url = args.postgres_url.clone();
    ctx.seed_root = work_root.clone();
    let mut failures = Vec::new();
    for scenario in selected {
        tracing::info!(scenario = scenario.name(), "scenario starts");
        let outcome = tokio::time::timeout(SCENARIO_LIMIT, run_scenario(&mut ctx, scenario)).await;
        let error = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(error)) => format!("{error:#}"),
            Err(_) => format!("did not finish within {SCENARIO_LIMIT:?}"),
        };
        tracing::error!(scenario = scenario.name(), %error, "scenario failed");
        ctx.record(Entry::new(scenario.name(), "FAILED", 0).note(error.clone()));
        failures.push(format!("{}: {error}", scenario.name()));
    }
    let report = Report {
        started: started_at,
        quick: args.quick,
        durability: DURABILITY,
        machine,
        entries: ctx.entries,
        total_secs: started.elapsed().as_secs_f64(),
    };
    println!("\n{}", report.table());
    report.write_json(&args.out)?;
    println!(
        "machine: {} cores, {} MB, {}; {}; load at start {}",
        report.machine.nproc,
        report.machine.mem_total_mb,
        report.machine.cpu_model,
        report.machine.rustc,
        report.machine.load_at_start
    );
    println!(
        "results written to {} ({:.0} s)",
        args.out.display(),
        report.total_secs
    );
    let errors: f64 = report
        .entries
        .iter()
        .flat_map(|e| &e.metrics)
        .filter(|m| m.name == "errors")
        .map(|m| m.value)
        .sum();
    if errors > 0.0 {
        failures.push(format!("{errors} sync errors with concurrent clients"));
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

async fn seed_server(url: &str, token: &str, rows: u64) -> Result<()> {
    if !url.starts_with("http://127.0.0.1:") && !url.starts_with("http://localhost:") {
        bail!("seed only talks to a server on 127.0.0.1");
    }
    let raw = server::Raw::new(url, token)?;
    let seed = rand_seed();
    let deadline = Instant::now() + Duration::from_secs(600);
    let done = server::seed(&raw, rows, &mut data::RowGen::new(seed), deadline).await?;
    println!(
        "seeded {} rows in {:.2} s ({:.0} rows/s)",
        done.rows,
        done.secs,
        done.rows as f64 / done.secs.max(1e-9)
    );
    Ok(())
}

/// A generator seed that differs between `seed` calls (rows stay valid either way).
fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

async fn run_scenario(ctx: &mut Ctx, scenario: Scenario) -> Result<()> {
    match scenario {
        Scenario::Baseline => {
            let mut sizes = vec![ctx.sizes.baseline];
            if ctx.large_baseline {
                sizes.extend(
                    ctx.sizes
                        .pull
                        .iter()
                        .copied()
                        .filter(|n| *n != ctx.sizes.baseline)
                        .max(),
                );
            }
            for n in sizes {
                scenarios::baseline::run(ctx, n)?;
            }
            Ok(())
        }
        Scenario::FirstSync => scenarios::sync::first_sync(ctx).await,
        Scenario::Push => scenarios::sync::push(ctx).await,
        Scenario::Noop => scenarios::sync::noop(ctx).await,
        Scenario::Conflicts => scenarios::conflicts::run(ctx).await,
        Scenario::Concurrent => scenarios::concurrent::run(ctx).await,
        Scenario::Queries => scenarios::queries::run(ctx),
        Scenario::Split => scenarios::split::run(ctx).await,
        Scenario::Encryption => scenarios::encryption::run(ctx).await,
        Scenario::Import => scenarios::import::run(ctx),
        Scenario::Schema => scenarios::schema::run(ctx).await,
        Scenario::Live => scenarios::live::run(ctx).await,
        Scenario::Slices => scenarios::slices::run(ctx).await,
        Scenario::Tables => scenarios::tables::run(ctx).await,
        Scenario::Postgres => scenarios::postgres::run(ctx).await,
        Scenario::Cli => scenarios::cli::run(ctx).await,
        Scenario::App => scenarios::app::run(ctx).await,
        Scenario::LargeServer => scenarios::large::run(ctx).await,
    }
}
