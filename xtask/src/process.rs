//! Running child processes: step headers, printing commands, checking exit status.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result, bail};

/// Prints a step header, `==> title`, so each stage is easy to find in a log.
pub fn step(title: &str) {
    println!("\n==> {title}");
}

/// Prints a warning to stderr and carries on.
pub fn warn(message: &str) {
    eprintln!("warning: {message}");
}

/// Prints a command, runs it with inherited stdio, and fails unless it exits with status 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    println!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    check(status, &line)
}

/// Prints a command, runs it capturing stdout (stderr is inherited), prints
/// what it wrote, and returns that output; fails unless it exits with status 0.
pub fn run_captured(cmd: &mut Command) -> Result<String> {
    let line = display(cmd);
    println!("$ {line}");
    let output = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start `{line}`"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    print!("{stdout}");
    check(output.status, &line)?;
    Ok(stdout)
}

/// Whether a command starts and exits with status 0; all its output is discarded.
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Whether an executable named `program` is in one of the `PATH` directories.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program)))
    })
}

/// Whether `path` is a file with an execute bit set.
fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Fails with the command line and its exit status unless `status` is success.
fn check(status: ExitStatus, line: &str) -> Result<()> {
    if status.success() {
        Ok(())
    } else {
        bail!("`{line}` failed ({status})")
    }
}

/// Renders a command as a shell line: environment changes, program, arguments.
///
/// A program under the command's working directory is shown relative to it,
/// so the line can be pasted into a shell opened there.
pub fn display(cmd: &Command) -> String {
    let mut removed = Vec::new();
    let mut set = Vec::new();
    for (key, value) in cmd.get_envs() {
        match value {
            // Secrets (ROSTER_TOKEN) are not echoed to the terminal.
            Some(_) if key.to_string_lossy().contains("TOKEN") => {
                set.push(format!("{}=***", quote(key)));
            }
            Some(value) => set.push(format!("{}={}", quote(key), quote(value))),
            None => removed.push(format!("-u {}", quote(key))),
        }
    }
    let mut parts = Vec::new();
    if !removed.is_empty() {
        parts.push("env".to_owned());
    }
    parts.extend(removed);
    parts.extend(set);
    parts.push(program_for_display(cmd));
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

/// The program of `cmd`, relative to its working directory when it lies inside it.
fn program_for_display(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program());
    let relative = cmd
        .get_current_dir()
        .and_then(|dir| program.strip_prefix(dir).ok())
        .filter(|rel| rel.components().count() > 1);
    match relative {
        Some(rel) => quote(rel.as_os_str()),
        None => quote(program.as_os_str()),
    }
}

/// Quotes a word for a POSIX shell when it contains anything unusual.
fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_and_shows_env() {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "a b", "it's"]);
        assert_eq!(
            display(&cmd),
            r"DEBIAN_FRONTEND=noninteractive apt-get install -y 'a b' 'it'\''s'"
        );
    }

    #[test]
    fn display_shows_removed_env_with_env_u() {
        let mut cmd = Command::new("cargo");
        cmd.env_remove("NEXTEST_TEST_THREADS").arg("nextest");
        assert_eq!(display(&cmd), "env -u NEXTEST_TEST_THREADS cargo nextest");
    }

    #[test]
    fn display_shows_programs_relative_to_the_working_dir() {
        let mut cmd = Command::new("/ws/target/debug/roster");
        cmd.current_dir("/ws").arg("list");
        assert_eq!(display(&cmd), "target/debug/roster list");
    }

    #[test]
    fn run_reports_failure() {
        assert!(run(&mut Command::new("false")).is_err());
        assert!(run(&mut Command::new("true")).is_ok());
        assert!(on_path("sh"));
        assert!(!on_path("surely-no-such-program-xtask"));
    }
}
