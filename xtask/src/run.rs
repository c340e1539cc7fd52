//! `cargo xtask run`: build, start a dev server, and show the CLI syncing against it.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;

use crate::demo::{DEVICE_A, run_demo};
use crate::process::{run, step};
use crate::server::DevServer;
use crate::workspace;

/// The dev data directory, relative to the workspace root (gitignored).
const DATA_DIR: &str = ".roster-dev";

/// Options of `cargo xtask run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Only start the server; skip the CLI demo.
    #[arg(long)]
    no_demo: bool,
    /// Address for the server to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
}

/// Builds the binaries, starts the server, runs the demo, then waits for the server.
pub fn run_dev(args: &RunArgs) -> Result<()> {
    let root = workspace::root()?;
    step("build roster-server and roster");
    run(workspace::cargo(&root).args(["build", "-p", "roster-server", "-p", "roster-cli"]))?;
    let data_dir = root.join(DATA_DIR);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;

    step("start roster-server");
    let server = DevServer::start(&root, args.listen, DATA_DIR)?;
    println!("roster-server is up at {}", server.url());
    if !args.no_demo {
        run_demo(&root, server.url())?;
    }
    print_next_steps(&root, server.url());
    server.wait()
}

/// Tells the user where things are and how to go on.
fn print_next_steps(root: &Path, url: &str) {
    let roster = workspace::debug_binary(root, "roster");
    let roster = roster.strip_prefix(root).unwrap_or(&roster);
    step("ready");
    println!("server running at {url}");
    println!("data in {DATA_DIR}/ (server log: {DATA_DIR}/server.log)");
    println!("try: {} --data-dir {DEVICE_A} list", roster.display());
    println!("Ctrl-C to stop");
}
