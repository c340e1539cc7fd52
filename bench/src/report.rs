//! Results: one [`Entry`] per measured case, printed as a table and written as JSON with
//! the machine they were measured on.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde::Serialize;

/// A figure beside the main rate, e.g. `p99_ms`.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
}

/// A target from the issue and whether this run reached it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub goal: String,
    pub met: bool,
}

/// One measured case.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Scenario name, as given to `--scenario`.
    pub scenario: String,
    /// What was measured, e.g. `pull 100000 rows`.
    pub case: String,
    /// Rows moved (or operations) in the timed part.
    pub rows: u64,
    /// Wall time of the timed part.
    pub secs: Option<f64>,
    pub rows_per_s: Option<f64>,
    /// `rows_per_s` divided by the raw SQLite insert rate of the same run.
    pub vs_baseline: Option<f64>,
    pub metrics: Vec<Metric>,
    pub target: Option<Target>,
    pub note: Option<String>,
}

impl Entry {
    pub fn new(scenario: &str, case: impl Into<String>, rows: u64) -> Self {
        Self {
            scenario: scenario.to_owned(),
            case: case.into(),
            rows,
            secs: None,
            rows_per_s: None,
            vs_baseline: None,
            metrics: Vec::new(),
            target: None,
            note: None,
        }
    }

    /// Sets the time and the rate it implies.
    pub fn timed(mut self, secs: f64) -> Self {
        self.secs = Some(secs);
        if secs > 0.0 {
            self.rows_per_s = Some(self.rows as f64 / secs);
        }
        self
    }

    pub fn vs(mut self, baseline_rows_per_s: Option<f64>) -> Self {
        self.vs_baseline = match (self.rows_per_s, baseline_rows_per_s) {
            (Some(rate), Some(base)) if base > 0.0 => Some(rate / base),
            _ => None,
        };
        self
    }

    pub fn metric(mut self, name: &str, value: f64) -> Self {
        self.metrics.push(Metric {
            name: name.to_owned(),
            value,
        });
        self
    }

    pub fn target(mut self, goal: impl Into<String>, met: bool) -> Self {
        self.target = Some(Target {
            goal: goal.into(),
            met,
        });
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// Where the figures were measured.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub mem_total_mb: u64,
    pub cpu_model: String,
    pub kernel: String,
    pub rustc: String,
    pub git: String,
    /// 1-minute load average when the run started (other work shares the machine).
    pub load_at_start: String,
}

impl Machine {
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_mb = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024);
        let command = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_else(|| "unknown".into())
        };
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mem_total_mb,
            cpu_model,
            kernel: command("uname", &["-r"]),
            rustc: command("rustc", &["--version"]),
            git: command("git", &["describe", "--always", "--dirty"]),
            load_at_start: load_average(),
        }
    }
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// UTC time the run started (RFC 3339).
    pub started: String,
    pub quick: bool,
    pub durability: &'static str,
    pub machine: Machine,
    pub entries: Vec<Entry>,
    pub total_secs: f64,
}

pub const DURABILITY: &str = "SQLite WAL with synchronous=FULL on both sides (client store and \
     server database; the baseline uses the same pragmas)";

/// The machine's load averages over 1, 5 and 15 minutes (`/proc/loadavg`), as
/// "1.92 1.79 3.00"; empty where the file cannot be read.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn fmt_rate(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2}M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1}k", rate / 1e3)
    } else {
        format!("{rate:.1}")
    }
}

fn fmt_value(value: f64) -> String {
    if value.abs() >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

impl Report {
    /// The results as a text table.
    pub fn table(&self) -> String {
        let header = [
            "scenario", "case", "rows", "time s", "rows/s", "vs raw", "details", "target",
        ];
        let mut lines: Vec<[String; 8]> = Vec::new();
        for e in &self.entries {
            let details = e
                .metrics
                .iter()
                .map(|m| format!("{}={}", m.name, fmt_value(m.value)))
                .collect::<Vec<_>>()
                .join(" ");
            let target = e.target.as_ref().map_or(String::new(), |t| {
                format!("{} {}", if t.met { "MET" } else { "MISSED" }, t.goal)
            });
            lines.push([
                e.scenario.clone(),
                e.case.clone(),
                e.rows.to_string(),
                e.secs.map_or("-".into(), |s| format!("{s:.3}")),
                e.rows_per_s.map_or("-".into(), fmt_rate),
                e.vs_baseline.map_or("-".into(), |r| format!("{r:.2}x")),
                details,
                target,
            ]);
        }
        let mut widths = header.map(str::len);
        for line in &lines {
            for (w, cell) in widths.iter_mut().zip(line) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let render = |cells: &[String]| {
            cells
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join(" | ")
                .trim_end()
                .to_owned()
        };
        let mut out = render(&header.map(str::to_owned));
        out.push('\n');
        out.push_str(
            &widths
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("-|-"),
        );
        out.push('\n');
        for line in &lines {
            out.push_str(&render(line));
            out.push('\n');
        }
        let notes: Vec<String> = self
            .entries
            .iter()
            .filter_map(|e| {
                e.note
                    .as_ref()
                    .map(|n| format!("  {} / {}: {n}", e.scenario, e.case))
            })
            .collect();
        if !notes.is_empty() {
            out.push_str("\nnotes:\n");
            out.push_str(&notes.join("\n"));
            out.push('\n');
        }
        out
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }
}
