//! Latency percentiles and process memory from /proc.

use std::time::Duration;

/// Latency percentiles of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// The nearest-rank percentile `p` (0 to 1) of sorted `samples`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Latency {
    pub fn of(samples: &[Duration]) -> Self {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let mean_ms = if ms.is_empty() {
            0.0
        } else {
            ms.iter().sum::<f64>() / ms.len() as f64
        };
        Self {
            p50_ms: percentile(&ms, 0.50),
            p95_ms: percentile(&ms, 0.95),
            p99_ms: percentile(&ms, 0.99),
            max_ms: ms.last().copied().unwrap_or(0.0),
            mean_ms,
        }
    }
}

/// A `kB` field (e.g. `VmHWM`, the peak resident set) of `/proc/<pid>/status`, in MB.
pub fn proc_status_mb(pid: &str, field: &str) -> Option<f64> {
    proc_kb_field_mb(pid, "status", field)
}

/// A `kB` field of the file `/proc/<pid>/<file>` (`status`, or `smaps_rollup` for
/// `Pss`, the resident set with shared pages divided among their users), in MB.
pub fn proc_kb_field_mb(pid: &str, file: &str, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
}

/// CPU time (user + system, all threads) a process has used so far, in seconds, from
/// `/proc/<pid>/stat` (clock ticks of 1/100 s, the Linux default).
pub fn cpu_secs(pid: &str) -> Option<f64> {
    let fields = stat_fields(pid)?;
    Some(fields.get(10..12)?.iter().sum::<u64>() as f64 / 100.0)
}

/// The median of `values` (the mean of the two middle ones for an even count; 0 when
/// empty).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 0 => (sorted[mid - 1] + sorted[mid]) / 2.0,
        _ => sorted[mid],
    }
}

/// The fields of `/proc/<pid>/stat` after the command name (field 3, the state, first).
fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // The state is a letter; the numeric fields follow it.
    Some(
        rest.split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// The parent process id of `pid`.
pub fn parent_pid(pid: &str) -> Option<String> {
    stat_fields(pid)?.first().map(u64::to_string)
}

/// CPU time of `pid` and of all its children, alive or exited, in seconds: its own
/// user and system time, its reaped children's (`cutime`, `cstime`), and each living
/// child's (e.g. a PostgreSQL postmaster and its backends, WAL writer and checkpointer).
pub fn tree_cpu_secs(pid: &str) -> Option<f64> {
    // After the state: ppid is [0], utime [10], stime [11], cutime [12], cstime [13].
    let parent: u64 = pid.parse().ok()?;
    let mut ticks: u64 = stat_fields(pid)?.get(10..14)?.iter().sum();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(child) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        match stat_fields(child) {
            Some(fields) if fields.first() == Some(&parent) => {
                ticks += fields.get(10..12).map_or(0, |t| t.iter().sum::<u64>());
            }
            _ => {}
        }
    }
    Some(ticks as f64 / 100.0)
}

/// CPU time (user + system) of this process's children that have been waited for, in
/// seconds (`cutime` + `cstime` of `/proc/self/stat`).
pub fn waited_children_cpu_secs() -> Option<f64> {
    let fields = stat_fields("self")?;
    Some(fields.get(12..14)?.iter().sum::<u64>() as f64 / 100.0)
}

/// Process `root` and every process descended from it (from the parent ids in
/// `/proc/<pid>/stat`): an app and the helper processes it spawned.
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parents.push((pid, ppid));
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    tree
}

/// The sum of a `kB` field of `/proc/<pid>/status` over `pids`, in MB, with the name and
/// value of each process that has it.
pub fn sum_status_mb(pids: &[u32], field: &str) -> (f64, Vec<(String, f64)>) {
    sum_field_mb(pids, "status", field)
}

/// [`sum_status_mb`] for a field of `/proc/<pid>/<file>`.
pub fn sum_field_mb(pids: &[u32], file: &str, field: &str) -> (f64, Vec<(String, f64)>) {
    let mut parts = Vec::new();
    for pid in pids {
        let pid = pid.to_string();
        if let Some(mb) = proc_kb_field_mb(&pid, file, field) {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|n| n.trim().to_owned())
                .unwrap_or_default();
            parts.push((name, mb));
        }
    }
    (parts.iter().map(|(_, mb)| mb).sum(), parts)
}

/// CPU seconds used by a process between two points.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    pid: String,
    start: f64,
}

impl CpuMeter {
    pub fn start(pid: &str) -> Self {
        Self {
            pid: pid.to_owned(),
            start: cpu_secs(pid).unwrap_or(0.0),
        }
    }

    /// CPU seconds since [`CpuMeter::start`].
    pub fn secs(&self) -> f64 {
        cpu_secs(&self.pid).map_or(0.0, |now| now - self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of(&samples);
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (50.0, 99.0, 100.0));
        assert_eq!(Latency::of(&[]).p50_ms, 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn the_proc_readers_read_this_process() {
        assert!(proc_status_mb("self", "VmHWM").is_some_and(|mb| mb > 0.0));
        let me = std::process::id().to_string();
        // CPU time only grows, so the process's own time is read before the tree's: read
        // the other way round, a tick spent scanning /proc made the check fail (CI, stop 27).
        let own = cpu_secs(&me);
        assert!(own.is_some_and(|s| s >= 0.0));
        assert!(tree_cpu_secs(&me).is_some_and(|tree| own.is_some_and(|own| tree >= own)));
        assert!(parent_pid(&me).is_some_and(|p| p != me));
        assert!(waited_children_cpu_secs().is_some_and(|s| s >= 0.0));
        let me = std::process::id();
        assert_eq!(process_tree(me).first(), Some(&me));
        assert!(sum_status_mb(&[me], "VmRSS").0 > 0.0);
    }
}
