//! The scripted `roster` CLI session of `cargo xtask run`: two devices and a conflict.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::process::{run, run_captured, step};
use crate::workspace;

/// The data directory of the first demo device, relative to the workspace root.
pub const DEVICE_A: &str = ".roster-dev/device-a";
/// The data directory of the second demo device, relative to the workspace root.
pub const DEVICE_B: &str = ".roster-dev/device-b";

/// A few people for the app to show on a fresh dev server.
const DEMO_PEOPLE: &[&[&str]] = &[
    &[
        "name=Amara Okafor",
        "email=amara@example.org",
        "age=34",
        "city=Lagos",
    ],
    &[
        "name=Bruno Costa",
        "email=bruno@example.org",
        "age=41",
        "city=Porto",
    ],
    &[
        "name=Chloé Dubois",
        "phone=+33 4 72 00 00 00",
        "age=29",
        "city=Lyon",
    ],
    &[
        "name=Hiro Nakamura",
        "email=hiro@example.org",
        "age=52",
        "city=Osaka",
    ],
    &[
        "name=Ines García",
        "age=23",
        "city=Seville",
        "notes=Prefers email",
    ],
    &["name=Sven Eriksen", "email=sven@example.org", "city=Oslo"],
];

/// Runs the demo against the server at `url` as the user whose token is `token`: both
/// devices edit one row, device B's sync gets a conflict waiting for a choice, B keeps
/// its value, and A receives it.
pub fn run_demo(root: &Path, url: &str, token: &str) -> Result<()> {
    let roster = |dir: &str, args: &[&str]| run(roster_command(root, dir, token).args(args));
    step("demo: set up two devices");
    let fresh = init_device(root, DEVICE_A, url, token)?;
    init_device(root, DEVICE_B, url, token)?;
    if fresh {
        step("demo: add a few people on device A");
        for person in DEMO_PEOPLE {
            add_row(root, DEVICE_A, token, person)?;
        }
    }

    step("demo: add a row on device A and sync it to B");
    let id = add_row(root, DEVICE_A, token, &["name=Jane", "age=25", "city=Lyon"])?;
    roster(DEVICE_A, &["sync"])?;
    roster(DEVICE_B, &["sync"])?;

    step("demo: edit the same field on both devices, then sync");
    roster(DEVICE_A, &["edit", &id, "age=32"])?;
    roster(DEVICE_B, &["edit", &id, "age=30"])?;
    roster(DEVICE_A, &["sync"])?;
    roster(DEVICE_B, &["sync"])?;

    step("demo: device B has a conflict waiting for a choice (the dev server defers them)");
    roster(DEVICE_B, &["conflicts"])?;

    step("demo: device B keeps its value; after both sync, device A has it too");
    roster(DEVICE_B, &["resolve", &id, "keep-mine"])?;
    roster(DEVICE_B, &["sync"])?;
    roster(DEVICE_A, &["sync"])?;
    roster(DEVICE_B, &["conflicts", "--history"])?;
    roster(DEVICE_A, &["list"])
}

/// `roster --data-dir DIR init --server URL` (the token from the environment is stored
/// with the device), unless DIR already has `roster.db`. Returns whether it created the
/// store.
fn init_device(root: &Path, dir: &str, url: &str, token: &str) -> Result<bool> {
    if root.join(dir).join("roster.db").exists() {
        println!("{dir}/roster.db exists: skipping init");
        return Ok(false);
    }
    run(roster_command(root, dir, token).args(["init", "--server", url]))?;
    Ok(true)
}

/// `roster --data-dir DIR --json add FIELD=VALUE...`, returning the new row id.
fn add_row(root: &Path, dir: &str, token: &str, fields: &[&str]) -> Result<String> {
    let mut cmd = roster_command(root, dir, token);
    cmd.arg("--json").arg("add").args(fields);
    let stdout = run_captured(&mut cmd)?;
    parse_added_id(&stdout)
}

/// `ROSTER_TOKEN=… target/debug/roster --data-dir DIR`, run from the workspace root.
fn roster_command(root: &Path, dir: &str, token: &str) -> Command {
    let mut cmd = Command::new(workspace::debug_binary(root, "roster"));
    cmd.current_dir(root)
        .env("ROSTER_TOKEN", token)
        .arg("--data-dir")
        .arg(dir);
    cmd
}

/// The row id printed by `roster add`: the `id` field of its JSON output,
/// or else the last word of its last non-empty line.
fn parse_added_id(stdout: &str) -> Result<String> {
    if let Ok(value) = serde_json::from_str::<Value>(stdout.trim()) {
        return match value.get("id") {
            Some(Value::String(id)) => Ok(id.clone()),
            Some(Value::Number(id)) => Ok(id.to_string()),
            _ => bail!("no \"id\" in the output of roster add: {stdout}"),
        };
    }
    let id = stdout
        .lines()
        .rev()
        .find_map(|line| line.split_whitespace().last())
        .context("roster add printed nothing")?;
    Ok(id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_added_id() {
        assert_eq!(
            parse_added_id("{\"id\": \"0199-abc\", \"table\": \"people\"}\n").unwrap(),
            "0199-abc"
        );
        assert_eq!(parse_added_id("{\"id\": 7}").unwrap(), "7");
        assert_eq!(
            parse_added_id("added row 0199-abc\n\n").unwrap(),
            "0199-abc"
        );
        assert!(parse_added_id("{\"row\": 1}").is_err());
        assert!(parse_added_id("\n").is_err());
    }
}
