//! The process contract of `roster-server`, written once: the line it prints first on
//! stdout when it listens ([`listening_line`]), the parser of that line
//! ([`parse_listening_line`]), and the harness that starts a server process and waits for
//! it ([`start_server_process`], or [`start_process_announcing`] for another line); and
//! [`ama_js`], the cached npm install of the Azure Mobile Apps JS client and backend the
//! tests run; [`display`], a private Xvfb display for the desktop app (the benchmark's
//! app scenario).
//!
//! The server prints the line; the end-to-end tests, the benchmarks and `xtask` start
//! the binary through this harness. Standard library only, so that `cargo xtask` (built
//! on its own) stays fast to compile.

#![warn(missing_docs)]

pub mod ama_js;
pub mod display;

use std::fmt;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// What the first stdout line of a listening `roster-server` starts with; the base URL
/// (`http://ADDR` or `https://ADDR`) follows.
pub const LISTENING_ON: &str = "roster-server listening on ";

/// What the stdout line of a `roster-server` serving metrics starts with (printed right
/// after the [`listening_line`]); the endpoint's URL (`http://ADDR/metrics`) follows.
pub const METRICS_ON: &str = "roster-server metrics on ";

/// The line a server whose metrics endpoint is `url` prints after its listening line.
pub fn metrics_line(url: &str) -> String {
    format!("{METRICS_ON}{url}")
}

/// The metrics URL in a [`metrics_line`], or `None` when `line` is not one.
pub fn parse_metrics_line(line: &str) -> Option<&str> {
    let url = line.trim().strip_prefix(METRICS_ON)?.trim();
    (url.starts_with("http://") && !url.contains(char::is_whitespace)).then_some(url)
}

/// The line a server that listens on `url` prints first on stdout.
pub fn listening_line(url: &str) -> String {
    format!("{LISTENING_ON}{url}")
}

/// The base URL in a [`listening_line`], or `None` when `line` is not one.
pub fn parse_listening_line(line: &str) -> Option<&str> {
    parse_announced_url(LISTENING_ON, line)
}

/// What the first stdout line of the Azure Mobile Apps backend the tests run
/// (`tests/ama-js/server.js`) starts with; its base URL follows.
pub const AMA_BACKEND_LISTENING_ON: &str = "ama-backend listening on ";

/// The base URL in a line `prefix URL`, or `None` when `line` is not one.
fn parse_announced_url<'l>(prefix: &str, line: &'l str) -> Option<&'l str> {
    let url = line.trim().strip_prefix(prefix)?.trim();
    let address = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    (!address.is_empty() && !address.contains(char::is_whitespace)).then_some(url)
}

/// Why a server process did not come up.
#[derive(Debug)]
pub enum StartError {
    /// The program could not be started.
    Spawn(std::io::Error),
    /// It closed stdout (exited) before printing its address line.
    Exited(Option<ExitStatus>),
    /// Its first line is not a [`listening_line`]; the process was killed.
    UnexpectedLine(String),
    /// No line within the time limit; the process was killed.
    Timeout(Duration),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Spawn(error) => write!(f, "cannot start the server: {error}"),
            StartError::Exited(Some(status)) => {
                write!(
                    f,
                    "the server exited before printing its address ({status})"
                )
            }
            StartError::Exited(None) => write!(f, "the server exited before printing its address"),
            StartError::UnexpectedLine(line) => {
                write!(f, "unexpected first line from the server: {line:?}")
            }
            StartError::Timeout(limit) => {
                write!(
                    f,
                    "the server printed no address within {}s",
                    limit.as_secs()
                )
            }
        }
    }
}

impl std::error::Error for StartError {}

/// A server process that printed its address line.
#[derive(Debug)]
pub struct StartedServer {
    /// The process (the caller kills and reaps it).
    pub child: Child,
    /// Its base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
}

/// Starts `command` with stdout piped, waits up to `limit` for its first line and
/// returns the URL that line names. Every later stdout line goes to `rest` on a thread
/// that keeps draining, so the server never writes into a closed pipe. On any failure
/// the process is killed and reaped.
pub fn start_server_process(
    command: &mut Command,
    limit: Duration,
    rest: impl FnMut(String) + Send + 'static,
) -> Result<StartedServer, StartError> {
    start_process_announcing(command, LISTENING_ON, limit, rest)
}

/// [`start_server_process`] for a server whose first line is `prefix URL` (for example
/// [`AMA_BACKEND_LISTENING_ON`]).
pub fn start_process_announcing(
    command: &mut Command,
    prefix: &str,
    limit: Duration,
    mut rest: impl FnMut(String) + Send + 'static,
) -> Result<StartedServer, StartError> {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .map_err(StartError::Spawn)?;
    let Some(stdout) = child.stdout.take() else {
        stop(&mut child);
        return Err(StartError::Spawn(std::io::Error::other(
            "stdout not captured",
        )));
    };
    let (first_line, first) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        if let Some(line) = lines.next() {
            let _ = first_line.send(line);
        }
        for line in lines {
            rest(line);
        }
    });
    match first.recv_timeout(limit) {
        Ok(line) => match parse_announced_url(prefix, &line) {
            Some(url) => Ok(StartedServer {
                url: url.to_owned(),
                child,
            }),
            None => {
                stop(&mut child);
                Err(StartError::UnexpectedLine(line))
            }
        },
        Err(RecvTimeoutError::Timeout) => {
            stop(&mut child);
            Err(StartError::Timeout(limit))
        }
        Err(RecvTimeoutError::Disconnected) => Err(StartError::Exited(child.wait().ok())),
    }
}

/// Kills `child` if it still runs, and reaps it.
fn stop(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_round_trips() {
        let line = listening_line("http://127.0.0.1:8787");
        assert_eq!(line, "roster-server listening on http://127.0.0.1:8787");
        assert_eq!(
            parse_listening_line(&format!("{line}\n")),
            Some("http://127.0.0.1:8787")
        );
        assert_eq!(
            parse_listening_line(&listening_line("https://[::1]:443")),
            Some("https://[::1]:443")
        );
    }

    #[test]
    fn the_metrics_line_round_trips() {
        let line = metrics_line("http://127.0.0.1:9100/metrics");
        assert_eq!(
            parse_metrics_line(&line),
            Some("http://127.0.0.1:9100/metrics")
        );
        assert_eq!(parse_metrics_line(&listening_line("http://x:1")), None);
        assert_eq!(parse_metrics_line("roster-server metrics on "), None);
    }

    #[test]
    fn other_lines_are_not_an_address() {
        assert_eq!(parse_listening_line("starting"), None);
        assert_eq!(parse_listening_line(""), None);
        assert_eq!(parse_listening_line("roster-server listening on "), None);
        assert_eq!(
            parse_listening_line("roster-server listening on ftp://x"),
            None
        );
        assert_eq!(parse_listening_line("error: listening on http://x"), None);
    }

    #[test]
    fn a_process_that_prints_the_line_is_started() {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "echo 'roster-server listening on http://127.0.0.1:1'; echo more; sleep 5",
        ]);
        let (tx, rx) = mpsc::channel();
        let mut started = start_server_process(&mut command, Duration::from_secs(10), move |l| {
            let _ = tx.send(l);
        })
        .unwrap();
        assert_eq!(started.url, "http://127.0.0.1:1");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "more");
        stop(&mut started.child);
    }

    #[test]
    fn failures_are_told_apart() {
        let exited = start_server_process(
            Command::new("sh").args(["-c", "exit 3"]),
            Duration::from_secs(10),
            |_| {},
        );
        assert!(matches!(exited, Err(StartError::Exited(Some(s))) if s.code() == Some(3)));
        let wrong = start_server_process(
            Command::new("echo").arg("hello"),
            Duration::from_secs(10),
            |_| {},
        );
        assert!(matches!(wrong, Err(StartError::UnexpectedLine(l)) if l == "hello"));
        let silent = start_server_process(
            Command::new("sleep").arg("10"),
            Duration::from_millis(200),
            |_| {},
        );
        assert!(matches!(silent, Err(StartError::Timeout(_))));
    }
}
