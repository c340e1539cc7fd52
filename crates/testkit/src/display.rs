//! A private X display (Xvfb) for app windows, and stopping a child process (or the
//! process group it leads) politely: what the benchmark's app scenario needs to start the
//! real desktop app without a screen.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Makes `command` draw its web view in software: Xvfb has no GPU, and WebKit's
/// compositing mode shows a blank window there. Every launch of the app under Xvfb (the
/// UI tests, the bench's app scenario) goes through this.
pub fn software_rendering(command: &mut Command) -> &mut Command {
    command
        .env("WEBKIT_DISABLE_COMPOSITING_MODE", "1")
        .env("LIBGL_ALWAYS_SOFTWARE", "1")
}

/// Finds `program` on `PATH`.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A running `Xvfb :N` (1280x900, 24 bit, no TCP), stopped on drop.
pub struct XDisplay {
    child: Child,
    number: u32,
}

impl XDisplay {
    /// Starts Xvfb on the first free display number from `first` (up to 100 more).
    pub fn start(first: u32) -> io::Result<Self> {
        let xvfb = find_on_path("Xvfb").ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "Xvfb is not installed (apt-get install xvfb)",
            )
        })?;
        for number in first..first + 100 {
            if display_in_use(number) {
                continue;
            }
            let mut child = Command::new(&xvfb)
                .arg(format!(":{number}"))
                .args(["-screen", "0", "1280x900x24", "-nolisten", "tcp"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let (_, socket) = display_files(number);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if socket.exists() {
                    return Ok(Self { child, number });
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // taken meanwhile: try the next number
                }
                if Instant::now() > deadline {
                    terminate(&mut child, false);
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("Xvfb :{number} did not start within 10 s"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        Err(io::Error::other(format!(
            "no free X display number from {first}"
        )))
    }

    /// The value for `DISPLAY`, e.g. `:99`.
    pub fn name(&self) -> String {
        format!(":{}", self.number)
    }
}

impl Drop for XDisplay {
    /// Stops Xvfb with SIGTERM so that it removes its lock file and socket (SIGKILL after
    /// 5 s, and then the files are removed here).
    fn drop(&mut self) {
        terminate(&mut self.child, false);
        let (lock, socket) = display_files(self.number);
        let _ = std::fs::remove_file(lock);
        let _ = std::fs::remove_file(socket);
    }
}

/// The lock file and the socket of X display `number`.
fn display_files(number: u32) -> (PathBuf, PathBuf) {
    (
        PathBuf::from(format!("/tmp/.X{number}-lock")),
        PathBuf::from(format!("/tmp/.X11-unix/X{number}")),
    )
}

/// Whether X display `number` is taken. A lock file naming a process that no longer runs
/// is stale: it and the display's socket are removed and the number counts as free.
fn display_in_use(number: u32) -> bool {
    let (lock, socket) = display_files(number);
    match std::fs::read_to_string(&lock) {
        Ok(text) => {
            let running = text
                .trim()
                .parse::<u32>()
                .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !running {
                let _ = std::fs::remove_file(&lock);
                let _ = std::fs::remove_file(&socket);
            }
            running
        }
        Err(_) => lock.exists() || socket.exists(),
    }
}

/// Stops `child` (with `group`, the whole process group it leads, started with
/// `process_group(0)`): SIGTERM, up to 5 s to exit, then SIGKILL for what is left; the
/// child is reaped.
pub fn terminate(child: &mut Child, group: bool) {
    if matches!(child.try_wait(), Ok(None)) {
        let target = if group {
            format!("-{}", child.id())
        } else {
            child.id().to_string()
        };
        let _ = Command::new("kill")
            .args(["-TERM", "--", &target])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(25));
        }
        if group || matches!(child.try_wait(), Ok(None)) {
            // What is left of the group (helpers that outlived their parent) goes too.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &target])
                .stderr(Stdio::null())
                .status();
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}
