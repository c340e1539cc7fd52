//! Running the real `roster` binary: one invocation with its exit code and output, and a
//! spawned one to kill.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bin_path;

/// Longest one `roster` run may take before the test fails.
pub const CLI_RUN_LIMIT: Duration = Duration::from_secs(30);

/// What one `roster` invocation did.
#[derive(Debug)]
pub struct CliRun {
    /// The arguments after `--data-dir DIR`, joined by spaces.
    pub args: String,
    /// The exit code.
    pub code: i32,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl CliRun {
    /// Stdout as JSON (for `--json` commands).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`roster {}` printed no JSON on stdout ({e}): {:?}",
                self.args, self.stdout
            )
        })
    }

    /// Stderr as JSON (for failing `--json` commands).
    pub fn error_json(&self) -> Value {
        serde_json::from_str(self.stderr.trim()).unwrap_or_else(|e| {
            panic!(
                "`roster {}` printed no JSON on stderr ({e}): {:?}",
                self.args, self.stderr
            )
        })
    }

    /// Asserts the run exited with `code` and, when it failed, said why on stderr.
    pub fn assert_exit(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "`roster {}`: wrong exit code; stdout {:?}, stderr {:?}",
            self.args, self.stdout, self.stderr
        );
        if code != 0 {
            assert!(
                !self.stderr.trim().is_empty(),
                "`roster {}` failed without a message",
                self.args
            );
        }
        self
    }
}

/// `roster --data-dir DIR ARGS...` with `env`, isolated from the caller's `ROSTER_*`
/// variables, not yet started.
pub fn roster_command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(bin_path("roster"));
    command
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("ROSTER_DATA_DIR")
        .env_remove("ROSTER_TOKEN")
        .env_remove("ROSTER_PASSPHRASE_FILE")
        .env("ROSTER_LOG", "error")
        .envs(env.iter().copied());
    command
}

/// Starts `roster --data-dir DIR ARGS...` with its output discarded (to kill it).
pub fn spawn_roster(dir: &Path, args: &[&str]) -> Child {
    roster_command(dir, args, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs `roster --data-dir DIR ARGS...` with `env` to its end, failing the test if it runs
/// longer than [`CLI_RUN_LIMIT`]. Blocking.
pub fn run_roster(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> CliRun {
    run_roster_within(dir, args, env, CLI_RUN_LIMIT)
}

/// [`run_roster`] failing the test if the run takes longer than `limit`.
pub fn run_roster_within(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> CliRun {
    let mut child = roster_command(dir, args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("`roster {}` still ran after {limit:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().unwrap();
    CliRun {
        args: args.join(" "),
        code: output.status.code().expect("roster was killed by a signal"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}
