//! `cargo xtask run`: build, start a dev server, show the CLI syncing against it, and open
//! the desktop app (optionally a second instance, to try a conflict) connected to it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::demo::{DEVICE_A, run_demo};
use crate::desktop::{APP_DIR, Apps, SECOND_APP_DIR, has_display};
use crate::process::{run, step};
use crate::server::DevServer;
use crate::workspace;

/// The dev data directory, relative to the workspace root (gitignored).
const DATA_DIR: &str = ".roster-dev";
/// The dev server's user, created on the first run.
const DEV_USER: &str = "dev";
/// File in [`DATA_DIR`] keeping the dev user's token between runs (mode 0600).
const TOKEN_FILE: &str = "dev-token";

/// The dev server's config, relative to the workspace root: the app's person table, with
/// conflicts deferred to the devices so a person resolves them in the app.
const SERVER_CONFIG: &str = "config/person-defer-to-client.toml";

/// Options of `cargo xtask run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Skip the CLI demo (and its demo data).
    #[arg(long)]
    no_demo: bool,
    /// Do not open the desktop app; only the server (and the demo) run.
    #[arg(long)]
    no_app: bool,
    /// Also open a second app window with its own data dir (.roster-dev/app-2), to try a
    /// conflict between two devices.
    #[arg(long)]
    second_device: bool,
    /// Address for the server to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
}

/// Builds the binaries, starts the server, runs the demo, then waits for the server.
pub fn run_dev(args: &RunArgs) -> Result<()> {
    let root = workspace::root()?;
    // A fresh Debian machine lacks the libraries the build links (WebKitGTK, libcrypto for
    // SQLCipher, ...): the same packages `cargo xtask test` installs.
    step("system packages");
    crate::system::ensure_system_packages(crate::test::SYSTEM_PACKAGES)?;
    let mut build = workspace::cargo(&root);
    if args.no_app {
        step("build roster-server and roster");
        build.args(["build", "-p", "roster-server", "-p", "roster-cli"]);
    } else {
        // The same selection as `cargo xtask test` builds (every target of the
        // workspace), so its dependency cache serves both: another selection unifies
        // features differently and compiles Tauri again.
        step("build roster-server, roster and the desktop app");
        build.args(["build", "--workspace", "--all-targets"]);
    }
    run(&mut build)?;
    let data_dir = root.join(DATA_DIR);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let config = root.join(SERVER_CONFIG);

    step("dev user and token");
    let token = dev_token(&root, &data_dir)?;
    step("start roster-server");
    let server = DevServer::start(&root, args.listen, DATA_DIR, Some(&config))?;
    println!("roster-server is up at {}", server.url());
    if !args.no_demo {
        run_demo(&root, server.url(), &token)?;
    }
    let mut apps = Apps::default();
    let open_app = !args.no_app && has_display();
    if open_app {
        step("open the desktop app");
        apps.launch(&root, APP_DIR, server.url(), &token, "First device")?;
        if args.second_device {
            apps.launch(&root, SECOND_APP_DIR, server.url(), &token, "Second device")?;
        }
    }
    print_next_steps(&root, server.url(), open_app, args.second_device);
    let result = server.wait();
    drop(apps);
    result
}

/// The dev user's token: kept in `DATA_DIR/dev-token` once created. On the first run
/// (or when the file is gone) `roster-server create-user dev` makes the user, or
/// `create-token --user dev` a new token if the user exists. The secret is not printed.
fn dev_token(root: &Path, data_dir: &Path) -> Result<String> {
    let file = data_dir.join(TOKEN_FILE);
    let db = data_dir.join("server.db");
    if db.exists()
        && let Ok(token) = std::fs::read_to_string(&file)
        && !token.trim().is_empty()
    {
        println!("using the dev user's token in {DATA_DIR}/{TOKEN_FILE}");
        return Ok(token.trim().to_owned());
    }
    let admin = |args: &[&str]| -> Result<std::process::Output> {
        Command::new(workspace::debug_binary(root, "roster-server"))
            .current_dir(root)
            .arg("--db")
            .arg(&db)
            .args(args)
            .env_remove("ROSTER_SERVER_CONFIG")
            .stdin(Stdio::null())
            .output()
            .context("cannot run roster-server")
    };
    let label = "cargo xtask run";
    let mut out = admin(&["create-user", DEV_USER, "--label", label])?;
    if !out.status.success() {
        out = admin(&["create-token", "--user", DEV_USER, "--label", label])?;
    }
    if !out.status.success() {
        bail!(
            "cannot create the dev user or a token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    write_secret(&file, &token)?;
    println!("created a token for user {DEV_USER:?}, kept in {DATA_DIR}/{TOKEN_FILE}");
    Ok(token)
}

/// Writes `secret` to `path`, readable by the owner only.
fn write_secret(path: &Path, secret: &str) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut file, secret.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Tells the user where things are and how to go on.
fn print_next_steps(root: &Path, url: &str, app_open: bool, second: bool) {
    let relative = |name: &str| {
        let path = workspace::debug_binary(root, name);
        path.strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string()
    };
    step("ready");
    println!("server running at {url}");
    println!("data in {DATA_DIR}/ (server log: {DATA_DIR}/server.log)");
    if app_open {
        println!("desktop app: data in {APP_DIR}/ (log: {APP_DIR}.log)");
        if second {
            println!("second device: data in {SECOND_APP_DIR}/ (log: {SECOND_APP_DIR}.log)");
            println!("  edit the same person in both windows, then press Sync now in each");
        }
    } else {
        println!(
            "open the app: ROSTER_DATA_DIR={APP_DIR} ROSTER_SERVER_URL={url} ROSTER_TOKEN=$(cat {DATA_DIR}/{TOKEN_FILE}) {}",
            relative("roster-app")
        );
    }
    println!("try: {} --data-dir {DEVICE_A} list", relative("roster"));
    println!(
        "accounts: {} --db {DATA_DIR}/server.db list-users",
        relative("roster-server")
    );
    println!("Ctrl-C to stop");
}
