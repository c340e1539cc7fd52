//! The dev `roster-server` child of `cargo xtask run`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};

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
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        let line = display(&cmd);
        println!("$ {line} 2>{data_dir}/server.log");
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{line}`"))?;
        let stdout = child
            .stdout
            .take()
            .context("roster-server stdout not captured")?;
        let (first_line, rx) = mpsc::channel();
        thread::spawn(move || forward_stdout(stdout, &first_line));
        let mut server = Self {
            child,
            url: String::new(),
            log,
        };
        server.url = server.await_url(rx.recv_timeout(STARTUP_TIMEOUT))?;
        Ok(server)
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

    /// Turns the outcome of waiting for the first stdout line into the URL.
    fn await_url(&mut self, first: Result<String, RecvTimeoutError>) -> Result<String> {
        match first {
            Ok(line) => match parse_url(&line) {
                Some(url) => Ok(url.to_owned()),
                None => {
                    self.stop();
                    bail!("unexpected first line from roster-server: {line:?}")
                }
            },
            Err(RecvTimeoutError::Timeout) => {
                self.stop();
                bail!(
                    "roster-server printed no address within {}s; its stderr:\n{}",
                    STARTUP_TIMEOUT.as_secs(),
                    self.log_text()
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().context("cannot wait for roster-server")?;
                bail!(self.failure(status, "roster-server exited before printing its address"))
            }
        }
    }

    /// An error message with the exit status and the server's stderr.
    fn failure(&self, status: ExitStatus, what: &str) -> String {
        format!("{what} ({status}); its stderr:\n{}", self.log_text())
    }

    /// The server's stderr so far, read back from its log file.
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log)
            .unwrap_or_else(|error| format!("(cannot read {}: {error})", self.log.display()))
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

/// Sends the first stdout line to `first_line`, then echoes the rest.
fn forward_stdout(stdout: ChildStdout, first_line: &Sender<String>) {
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    if let Some(line) = lines.next() {
        let _ = first_line.send(line);
    }
    for line in lines {
        println!("[roster-server] {line}");
    }
}

/// The URL in `roster-server listening on http://127.0.0.1:PORT`.
fn parse_url(line: &str) -> Option<&str> {
    line.split_whitespace()
        .last()
        .filter(|word| word.starts_with("http://") || word.starts_with("https://"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_address_line() {
        assert_eq!(
            parse_url("roster-server listening on http://127.0.0.1:8787\n"),
            Some("http://127.0.0.1:8787")
        );
        assert_eq!(parse_url("starting"), None);
        assert_eq!(parse_url(""), None);
    }

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
