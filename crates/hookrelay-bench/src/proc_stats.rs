//! What the processes on this machine spend, read from `/proc`:
//!
//! - hookrelay's resident memory (`VmRSS`, sampled every 100 ms, and the kernel's own
//!   high-water mark `VmHWM`) and CPU time (`utime + stime` of `/proc/<pid>/stat`);
//! - for attribution, the CPU of this bench process (writers + receiver), of the
//!   Postgres backends serving the bench databases (their process title names the
//!   database), of Postgres' auxiliary processes (WAL writer, checkpointer, …), and the
//!   whole machine's busy time (`/proc/stat`). What is left over is other work on the
//!   machine, which disturbs the figures.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{anyhow, Context};
use serde::Serialize;

/// Clock ticks per second for `/proc` CPU times.
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// `utime + stime` of a process, in ticks.
fn process_ticks(pid: u32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_stat_ticks(&text).ok_or_else(|| anyhow!("cannot parse /proc/{pid}/stat"))
}

/// `utime + stime` of a process, in ticks.
fn parse_stat_ticks(text: &str) -> Option<u64> {
    parse_stat_times(text).map(|[u, s, _, _]| u + s)
}

/// utime, stime, cutime, cstime: after the `(comm)` (which may hold spaces), state is
/// the 3rd field overall and these the 14th to 17th.
fn parse_stat_times(text: &str) -> Option<[u64; 4]> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some([field(11)?, field(12)?, field(13)?, field(14)?])
}

/// `utime + stime + cutime + cstime` of a process, in ticks: with the children it
/// has reaped, so a Postgres backend that exits goes on counting (in the
/// postmaster's figure) instead of vanishing from the sum.
pub fn ticks_with_children(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_times(&text).map(|t| t.iter().sum())
}

/// `utime + stime` of the calling thread alone, in ticks.
pub fn thread_ticks() -> anyhow::Result<u64> {
    let text =
        std::fs::read_to_string("/proc/thread-self/stat").context("reading /proc/thread-self")?;
    parse_stat_ticks(&text).ok_or_else(|| anyhow!("cannot parse /proc/thread-self/stat"))
}

/// Every `postgres` process on the machine (server processes of any database).
fn postgres_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .collect()
}

/// [`ticks_with_children`] summed over every `postgres` process: the whole server's
/// CPU, including backends that came and went.
pub fn all_postgres_ticks() -> u64 {
    postgres_pids()
        .into_iter()
        .filter_map(ticks_with_children)
        .sum()
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
pub fn memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// Busy ticks of the whole machine (all CPUs) from `/proc/stat`.
fn system_busy_ticks() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = text.lines().next() else {
        return 0;
    };
    // cpu user nice system idle iowait irq softirq steal ...
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    get(0) + get(1) + get(2) + get(5) + get(6) + get(7)
}

/// CPU ticks of Postgres processes: (backends of the bench databases, auxiliary
/// processes, backends of other databases).
fn postgres_ticks() -> (u64, u64, u64) {
    let mut out = (0, 0, 0);
    for pid in postgres_pids() {
        let title = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let Ok(ticks) = process_ticks(pid) else {
            continue;
        };
        let serves = |db: &str| title.contains(&format!(" {db} "));
        if serves(crate::db::store_db()) || serves(crate::db::source_db()) {
            out.0 += ticks;
        } else if title.contains('(') || title.contains("[local]") {
            out.2 += ticks; // a client backend of some other database
        } else {
            out.1 += ticks;
        }
    }
    out
}

/// CPU counters at one instant, in ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSnapshot {
    hookrelay: u64,
    bench: u64,
    pg_bench: u64,
    pg_aux: u64,
    pg_other: u64,
    system: u64,
}

impl CpuSnapshot {
    /// Reads every counter now; `hookrelay` may be absent (ceiling runs).
    pub fn take(hookrelay: Option<u32>) -> Self {
        let (pg_bench, pg_aux, pg_other) = postgres_ticks();
        Self {
            hookrelay: hookrelay.and_then(|p| process_ticks(p).ok()).unwrap_or(0),
            bench: process_ticks(std::process::id()).unwrap_or(0),
            pg_bench,
            pg_aux,
            pg_other,
            system: system_busy_ticks(),
        }
    }
}

/// CPU seconds spent between two snapshots, by whom.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuSpent {
    pub hookrelay_s: f64,
    /// This process: writers, receiver, samplers.
    pub bench_s: f64,
    /// Backends serving the bench databases (writers' and hookrelay's sessions).
    pub postgres_backends_s: f64,
    /// WAL writer, checkpointer, background writer, autovacuum.
    pub postgres_aux_s: f64,
    /// Everything else that ran on the machine meanwhile (other users' work).
    pub other_s: f64,
    /// All CPUs' busy time; 2 cores give at most 2 s per wall-clock second.
    pub machine_busy_s: f64,
}

impl CpuSpent {
    pub fn between(a: &CpuSnapshot, b: &CpuSnapshot, ticks_per_s: f64) -> Self {
        let s = |x: u64, y: u64| y.saturating_sub(x) as f64 / ticks_per_s;
        let hookrelay_s = s(a.hookrelay, b.hookrelay);
        let bench_s = s(a.bench, b.bench);
        let postgres_backends_s = s(a.pg_bench, b.pg_bench);
        let postgres_aux_s = s(a.pg_aux, b.pg_aux);
        let machine_busy_s = s(a.system, b.system);
        let _foreign_pg = s(a.pg_other, b.pg_other); // part of `other_s`
        let other_s =
            (machine_busy_s - hookrelay_s - bench_s - postgres_backends_s - postgres_aux_s)
                .max(0.0);
        Self {
            hookrelay_s,
            bench_s,
            postgres_backends_s,
            postgres_aux_s,
            other_s,
            machine_busy_s,
        }
    }
}

/// Samples a process's RSS every 100 ms until stopped; keeps the peak.
pub struct RssSampler {
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pid: u32) -> Self {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (peak, halt) = (peak_kib.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !halt.load(Ordering::Relaxed) {
                if let Ok((rss, _)) = memory_kib(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self {
            peak_kib,
            stop,
            task,
        }
    }

    /// The peak sampled so far, in MiB, without stopping.
    pub fn peak_mib(&self) -> f64 {
        self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }

    /// Starts a new peak from now on (e.g. between two phases).
    pub fn reset(&self) {
        self.peak_kib.store(0, Ordering::Relaxed);
    }

    /// Stops sampling; the peak in MiB.
    pub async fn finish(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_skip_the_command_name() {
        let line = "1234 (hook relay) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(parse_stat_ticks(line), Some(300));
        assert_eq!(parse_stat_times(line), Some([250, 50, 0, 0]));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }
}
