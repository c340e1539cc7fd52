//! The desktop app instances of `cargo xtask run`.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

use crate::process::{display, warn};
use crate::workspace;

/// The first app instance's data dir, relative to the workspace root.
pub const APP_DIR: &str = ".roster-dev/app";
/// The second instance's data dir (`--second-device`).
pub const SECOND_APP_DIR: &str = ".roster-dev/app-2";

/// Running app windows; closed when dropped (when `cargo xtask run` ends).
#[derive(Default)]
pub struct Apps {
    children: Vec<Child>,
}

impl Apps {
    /// Starts `roster-app` on data dir `dir` (relative to `root`), connected to `url`
    /// with `token`, named `device` on its first start; its log goes to `DIR.log`.
    pub fn launch(
        &mut self,
        root: &Path,
        dir: &str,
        url: &str,
        token: &str,
        device: &str,
    ) -> Result<()> {
        let log_path = root.join(format!("{dir}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut cmd = Command::new(workspace::debug_binary(root, "roster-app"));
        cmd.current_dir(root)
            .env("ROSTER_DATA_DIR", root.join(dir))
            .env("ROSTER_SERVER_URL", url)
            .env("ROSTER_DEVICE_NAME", device)
            .env("ROSTER_TOKEN", token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let line = display(&cmd);
        println!("$ {line} 2>{dir}.log");
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{line}`"))?;
        self.children.push(child);
        Ok(())
    }
}

impl Drop for Apps {
    fn drop(&mut self) {
        for child in &mut self.children {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Whether a graphical session is available for the app window.
pub fn has_display() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let ok = set("DISPLAY") || set("WAYLAND_DISPLAY");
    if !ok {
        warn("no DISPLAY or WAYLAND_DISPLAY: not opening the desktop app window");
    }
    ok
}
