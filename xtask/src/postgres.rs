//! A throwaway PostgreSQL server for the tests and benchmarks: Debian's `postgresql`
//! package, a fresh data dir of its own (under `target/` when the `postgres` user can
//! reach it), a free port on 127.0.0.1, run by the non-root `postgres` user when this
//! runs as root. Stopped when the guard is dropped, whatever happened in between.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::process::{run, step, succeeds, warn};
use crate::system::{ensure_system_packages, is_root};
use crate::workspace;

/// The Debian package with the server binaries (`initdb`, `pg_ctl`, `postgres`).
pub const PACKAGE: &str = "postgresql";

/// The system user the server runs as when we are root (the package creates it).
const SYSTEM_USER: &str = "postgres";

/// A running PostgreSQL; stopped (`pg_ctl stop -m fast`) on drop.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    as_user: bool,
    url: String,
}

impl Postgres {
    /// Installs the package if missing, creates a fresh cluster and starts it. With
    /// `durable` off, `fsync` is off too (test data is thrown away; benchmarks keep it on).
    pub fn start(root: &Path, durable: bool) -> Result<Self> {
        step("PostgreSQL (a throwaway cluster on 127.0.0.1)");
        ensure_system_packages(&[PACKAGE])?;
        let bin = server_bin_dir()?;
        let as_user = is_root()?;
        let base = base_dir(root, as_user)?;
        let data = base.join("data");
        // Idempotent: a cluster left running by an interrupted run is stopped, and every
        // run starts from an empty data dir.
        if data.join("postmaster.pid").exists() {
            let _ = pg_command(&bin, "pg_ctl", as_user, &base)
                .args(["stop", "-m", "immediate", "-D"])
                .arg(&data)
                .status();
        }
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .with_context(|| format!("cannot remove {}", data.display()))?;
        }
        run(pg_command(&bin, "initdb", as_user, &base)
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "-D",
            ])
            .arg(&data))?;
        let port = free_port()?;
        let mut options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' \
             -c max_connections=400"
        );
        if !durable {
            options.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let started = Self {
            bin: bin.clone(),
            data: data.clone(),
            as_user,
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        };
        run(pg_command(&bin, "pg_ctl", as_user, &base)
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(base.join("server.log"))
            .arg("-o")
            .arg(options))?;
        println!("PostgreSQL listening at {}", started.url);
        Ok(started)
    }

    /// Admin connection URL (`postgres://postgres@127.0.0.1:PORT/postgres`).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let base = self.data.parent().unwrap_or(&self.data).to_path_buf();
        let stopped = pg_command(&self.bin, "pg_ctl", self.as_user, &base)
            .args(["stop", "-m", "fast", "-w", "-D"])
            .arg(&self.data)
            .status();
        match stopped {
            Ok(status) if status.success() => println!("PostgreSQL stopped"),
            _ => warn(&format!(
                "could not stop PostgreSQL (data dir {})",
                self.data.display()
            )),
        }
    }
}

/// Runs `command` with a throwaway cluster (`durable`: as the bench's, see
/// [`Postgres::start`]) and the variables the end-to-end harness reads
/// (`ROSTER_TEST_BACKEND=postgres`, `ROSTER_TEST_PG_URL`); stops the cluster after.
pub fn with_postgres(durable: bool, command: &[String]) -> Result<()> {
    let root = workspace::root()?;
    let Some((program, args)) = command.split_first() else {
        bail!("give the command to run after --");
    };
    let cluster = Postgres::start(&root, durable)?;
    let result = run(Command::new(program)
        .args(args)
        .current_dir(&root)
        .env("ROSTER_TEST_BACKEND", "postgres")
        .env("ROSTER_TEST_PG_URL", cluster.url()));
    drop(cluster);
    result
}

/// `program` from `bin`, run as the `postgres` user when `as_user`, in `cwd`.
fn pg_command(bin: &Path, program: &str, as_user: bool, cwd: &Path) -> Command {
    let mut cmd = if as_user {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", SYSTEM_USER, "--"]).arg(bin.join(program));
        cmd
    } else {
        Command::new(bin.join(program))
    };
    cmd.current_dir(cwd);
    cmd
}

/// The newest `/usr/lib/postgresql/VERSION/bin` holding `initdb`.
fn server_bin_dir() -> Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .with_context(|| format!("cannot list {}", root.display()))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!("no PostgreSQL server binaries in {}", root.display()),
    }
}

/// The dir for the cluster: `target/postgres`, or when the `postgres` user cannot reach
/// it (a repository under /root), a private dir in the system temp dir.
fn base_dir(root: &Path, as_user: bool) -> Result<PathBuf> {
    let preferred = workspace::target_dir(root).join("postgres");
    std::fs::create_dir_all(&preferred)
        .with_context(|| format!("cannot create {}", preferred.display()))?;
    if !as_user {
        return Ok(preferred);
    }
    hand_to_postgres(&preferred)?;
    let reachable = succeeds(
        Command::new("runuser")
            .args(["-u", SYSTEM_USER, "--", "test", "-w"])
            .arg(&preferred),
    );
    if reachable {
        return Ok(preferred);
    }
    let fallback = std::env::temp_dir().join("roster-postgres");
    warn(&format!(
        "the {SYSTEM_USER} user cannot reach {}; using {}",
        preferred.display(),
        fallback.display()
    ));
    std::fs::create_dir_all(&fallback)
        .with_context(|| format!("cannot create {}", fallback.display()))?;
    hand_to_postgres(&fallback)?;
    Ok(fallback)
}

fn hand_to_postgres(dir: &Path) -> Result<()> {
    run(Command::new("chown")
        .arg(format!("{SYSTEM_USER}:{SYSTEM_USER}"))
        .arg(dir))?;
    run(Command::new("chmod").arg("700").arg(dir))
}

/// A port of 127.0.0.1 nobody listens on right now.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}
