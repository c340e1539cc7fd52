//! The dev `roster-server` child of `cargo xtask run`.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use roster_testkit::{StartError, StartedServer, start_server_process};

use crate::process::display;
use crate::workspace;

/// How long the server may take to print its address line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `roster-server`; killed on drop unless it already exited.
pub struct DevServer {
    child: Child,
    url: String,
    log: PathBuf,
}

impl DevServer {
    /// Starts `roster-server --listen ADDR --db DATA_DIR/server.db [--config CONFIG]` from
    /// `root` (CONFIG relative to `root` or absolute), its stderr going to
    /// `DATA_DIR/server.log`, and waits for its address line.
    pub fn start(
        root: &Path,
        listen: SocketAddr,
        data_dir: &str,
        config: Option<&Path>,
    ) -> Result<Self> {
        let log = root.join(data_dir).join("server.log");
        let log_file =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = Command::new(workspace::debug_binary(root, "roster-server"));
        cmd.current_dir(root)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--db")
            .arg(format!("{data_dir}/server.db"));
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        cmd.stdin(Stdio::null()).stderr(log_file);
        let line = display(&cmd);
        println!("$ {line} 2>{data_dir}/server.log");
        let started = start_server_process(&mut cmd, STARTUP_TIMEOUT, |line| {
            println!("[roster-server] {line}");
        });
        match started {
            Ok(StartedServer { child, url }) => Ok(Self { child, url, log }),
            Err(StartError::Spawn(error)) => {
                Err(anyhow::Error::new(error).context(format!("cannot start `{line}`")))
            }
            Err(error) => bail!(
                "roster-server did not start: {error}; its stderr:\n{}",
                log_text(&log)
            ),
        }
    }

    /// The base URL the server listens on, e.g. `http://127.0.0.1:8787`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Waits for the server to exit; fails if it exits unsuccessfully.
    pub fn wait(mut self) -> Result<()> {
        let status = self.child.wait().context("cannot wait for roster-server")?;
        if status.success() {
            Ok(())
        } else {
            bail!(self.failure(status, "roster-server stopped"))
        }
    }

    /// An error message with the exit status and the server's stderr.
    fn failure(&self, status: ExitStatus, what: &str) -> String {
        format!("{what} ({status}); its stderr:\n{}", log_text(&self.log))
    }

    /// Kills the server if it is still running, and reaps it.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server's stderr so far, read back from its log file.
fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log)
        .unwrap_or_else(|error| format!("(cannot read {}: {error})", log.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts the real `roster-server` (built by `cargo xtask test` before the tests).
    #[test]
    fn starts_the_built_server_and_reports_a_failed_start() {
        let root = workspace::root().unwrap();
        assert!(
            workspace::debug_binary(&root, "roster-server").exists(),
            "roster-server is not built: run `cargo build --workspace --bins` first"
        );
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_str().unwrap();
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let server = DevServer::start(&root, listen, data_dir, None).unwrap();
        assert!(
            server.url().starts_with("http://127.0.0.1:"),
            "{}",
            server.url()
        );

        let port = server.url().rsplit(':').next().unwrap();
        let taken: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let error = DevServer::start(&root, taken, other.to_str().unwrap(), None)
            .err()
            .unwrap();
        assert!(
            format!("{error:#}").contains("exited before printing its address"),
            "{error:#}"
        );
        // The server's stderr is part of the error.
        assert!(format!("{error:#}").contains("cannot listen"), "{error:#}");
    }
}
