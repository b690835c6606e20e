//! Results: one record per workload and per ceiling, a readable table on stdout, and
//! JSON in `.bench/results-<timestamp>.json` and `.bench/latest.json`.

use std::{fmt::Write as _, path::Path};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{
    cost::PipelineCost, db::StoreSize, fsync::FsyncBaseline, pg_activity::ActivityEntry,
    proc_stats::CpuSpent, store_work::StoreWork, writers::Written,
};

/// Commit→delivery latency, ms.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// From µs samples; `None` when there are none.
    pub fn from_us(mut v: Vec<i64>) -> Option<Self> {
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let n = v.len();
        let pct = |q: f64| {
            let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            v[i] as f64 / 1000.0
        };
        Some(Self {
            samples: n,
            p50: pct(0.50),
            p95: pct(0.95),
            p99: pct(0.99),
            max: v[n - 1] as f64 / 1000.0,
            mean: v.iter().sum::<i64>() as f64 / n as f64 / 1000.0,
        })
    }
}

/// One workload's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkloadResult {
    pub id: String,
    pub name: String,
    pub subscriptions: usize,
    /// Events committed by the writers.
    pub events: u64,
    /// Distinct (event, endpoint) pairs answered 2xx at the measured endpoints.
    pub delivered: u64,
    pub writers: Option<Written>,
    /// First commit → last 2xx, s.
    pub seconds: Option<f64>,
    pub events_per_s: Option<f64>,
    pub deliveries_per_s: Option<f64>,
    pub latency_ms: Option<Latency>,
    /// The source's share of it: `committed_at` → `captured_at` (when the reader
    /// read the change), ms.
    pub capture_latency_ms: Option<Latency>,
    /// Highest VmRSS sampled every 100 ms during the workload, MiB.
    pub peak_rss_mib: Option<f64>,
    /// The kernel's VmHWM of the process at the end (whole life), MiB.
    pub hwm_rss_mib: Option<f64>,
    pub cpu: Option<CpuSpent>,
    /// Wall time the CPU figures cover (writers start → last 2xx), s.
    pub cpu_window_s: Option<f64>,
    pub hookrelay_cpu_s_per_10k_events: Option<f64>,
    pub store: Option<StoreSize>,
    pub store_mib_per_10k_events: Option<f64>,
    pub duplicates: u64,
    pub bad_signatures: u64,
    /// hookrelay's rate over the ceiling named in `ceiling`.
    pub ceiling_fraction: Option<f64>,
    pub ceiling: Option<String>,
    /// Row writes and WAL of both databases.
    pub store_work: Option<StoreWork>,
    /// With `--pg-activity`: where the Postgres backends were busy.
    pub pg_activity: Option<Vec<ActivityEntry>>,
    /// Workload 12: WAL and CPU beyond what the writes themselves cost.
    pub pipeline_cost: Option<PipelineCost>,
    /// Workload-specific figures.
    pub extra: Map<String, Value>,
    pub error: Option<String>,
}

impl WorkloadResult {
    pub fn new(id: &str, name: &str) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    pub fn failed(id: &str, name: &str, error: String) -> Self {
        Self {
            error: Some(error),
            ..Self::new(id, name)
        }
    }

    pub fn note(&mut self, key: &str, value: impl Serialize) {
        self.extra.insert(
            key.into(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
    }
}

/// One ceiling measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub id: String,
    pub name: String,
    pub per_s: f64,
    pub unit: String,
    pub writers: Option<Written>,
    pub cpu: Option<CpuSpent>,
    pub error: Option<String>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub started_at: String,
    pub quick: bool,
    pub git_revision: String,
    pub machine: Value,
    pub postgres: Value,
    pub fsync: Option<FsyncBaseline>,
    pub hookrelay_config: String,
    /// `--set` overrides, as the environment variables hookrelay got.
    pub hookrelay_overrides: Vec<(String, String)>,
    /// `--store-sql`: run on the migrated store before each workload.
    pub store_sql: Option<String>,
    pub hookrelay_binary: String,
    pub sizes: crate::Sizes,
    pub ceilings: Vec<Ceiling>,
    pub workloads: Vec<WorkloadResult>,
    pub wall_seconds: f64,
}

impl Results {
    /// Writes the JSON file and `latest.json`; returns the file's path.
    pub fn write(&self, dir: &Path, stamp: &str) -> anyhow::Result<std::path::PathBuf> {
        let text = serde_json::to_string_pretty(self)?;
        let path = dir.join(format!("results-{stamp}.json"));
        std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
        std::fs::write(dir.join("latest.json"), &text).context("writing latest.json")?;
        Ok(path)
    }

    /// The readable tables.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let fsync = self
            .fsync
            .as_ref()
            .map(|f| format!("{:.0} fdatasync/s (8 kB)", f.fdatasync_ops_per_s))
            .unwrap_or_else(|| "not measured".into());
        let _ = writeln!(
            o,
            "\nhookrelay bench {} · {} · workspace git {} · fsync {} · {:.0} s",
            self.started_at,
            if self.quick {
                "QUICK (10x smaller)"
            } else {
                "full"
            },
            self.git_revision,
            fsync,
            self.wall_seconds
        );
        let _ = writeln!(o, "hookrelay binary: {}", self.hookrelay_binary);
        if !self.hookrelay_overrides.is_empty() {
            let set: Vec<String> = self
                .hookrelay_overrides
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(o, "config overrides: {}", set.join(" "));
        }
        if let Some(sql) = &self.store_sql {
            let _ = writeln!(o, "store SQL after migrating: {sql}");
        }
        let _ = writeln!(o, "\nCeilings (no hookrelay running)");
        for c in &self.ceilings {
            match &c.error {
                None => {
                    let _ = writeln!(o, "  {:<62} {:>10.0} {}", c.name, c.per_s, c.unit);
                }
                Some(e) => {
                    let _ = writeln!(o, "  {:<62} FAILED: {e}", c.name);
                }
            }
        }
        let _ = writeln!(
            o,
            "\n{:<40} {:>7} {:>8} {:>6} {:>6} {:>6} {:>7} {:>6} {:>7} {:>7} {:>4} {:>4} {:>6}",
            "workload",
            "events",
            "events/s",
            "p50",
            "p95",
            "p99",
            "max ms",
            "RSS MB",
            "CPU s",
            "store",
            "dups",
            "bad",
            "% ceil"
        );
        let _ = writeln!(
            o,
            "{:<40} {:>7} {:>8} {:>6} {:>6} {:>6} {:>7} {:>6} {:>7} {:>7} {:>4} {:>4} {:>6}",
            "", "", "", "", "", "", "", "peak", "/10k ev", "MB/10k", "", "sig", ""
        );
        for w in &self.workloads {
            let label = format!("{} {}", w.id, w.name);
            if let Some(e) = &w.error {
                let _ = writeln!(o, "{label:<40} {e}");
                continue;
            }
            let f = |v: Option<f64>, p: usize| v.map_or("-".into(), |v| format!("{v:.p$}"));
            let l = w.latency_ms;
            let _ = writeln!(
                o,
                "{:<40} {:>7} {:>8} {:>6} {:>6} {:>6} {:>7} {:>6} {:>7} {:>7} {:>4} {:>4} {:>6}",
                truncate(&label, 40),
                w.events,
                f(w.events_per_s, 0),
                f(l.map(|l| l.p50), 1),
                f(l.map(|l| l.p95), 1),
                f(l.map(|l| l.p99), 1),
                f(l.map(|l| l.max), 0),
                f(w.peak_rss_mib, 1),
                f(w.hookrelay_cpu_s_per_10k_events, 2),
                f(w.store_mib_per_10k_events, 2),
                w.duplicates,
                w.bad_signatures,
                f(w.ceiling_fraction.map(|x| x * 100.0), 0),
            );
        }
        let _ = writeln!(
            o,
            "\nWhere the CPU went (µs per event; 2 cores = 2,000,000 µs per second of wall time)"
        );
        let _ = writeln!(
            o,
            "{:<40} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11}",
            "workload", "hookrelay", "pg backnd", "pg aux", "bench", "other", "machine busy"
        );
        for w in &self.workloads {
            let (Some(cpu), true) = (w.cpu, w.events > 0) else {
                continue;
            };
            let per = |s: f64| format!("{:.0}", s * 1e6 / w.events as f64);
            let busy = w
                .cpu_window_s
                .map(|t| format!("{:.0}%", cpu.machine_busy_s / t / 2.0 * 100.0))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                o,
                "{:<40} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11}",
                truncate(&format!("{} {}", w.id, w.name), 40),
                per(cpu.hookrelay_s),
                per(cpu.postgres_backends_s),
                per(cpu.postgres_aux_s),
                per(cpu.bench_s),
                per(cpu.other_s),
                busy
            );
        }
        let _ = writeln!(
            o,
            "\nStore work per event: row writes (ins/upd/del, HOT updates) of hookrelay's tables; \
             WAL bytes of records touching\nthe store database or the source's hookrelay relations \
             (pg_walinspect); server WAL: LSN difference, every database on the server"
        );
        let _ = writeln!(
            o,
            "{:<40} {:>6} {:>15} {:>15} {:>8} {:>8} {:>8} {:>8}",
            "workload",
            "rows",
            "store i/u/d",
            "source i/u/d",
            "HOT upd",
            "WAL B",
            "src WAL",
            "srv WAL"
        );
        for w in &self.workloads {
            let Some(sw) = &w.store_work else { continue };
            let n = sw.events.max(1) as f64;
            let iud = |r: &crate::store_work::RowWrites| {
                format!(
                    "{:.2}/{:.2}/{:.2}",
                    r.inserts as f64 / n,
                    r.updates as f64 / n,
                    r.deletes as f64 / n
                )
            };
            let _ = writeln!(
                o,
                "{:<40} {:>6.2} {:>15} {:>15} {:>8.2} {:>8.0} {:>8.0} {:>8.0}",
                truncate(&format!("{} {}", w.id, w.name), 40),
                sw.row_writes_per_event,
                iud(&sw.store.rows),
                iud(&sw.source.rows),
                (sw.store.rows.hot_updates + sw.source.rows.hot_updates) as f64 / n,
                sw.wal_bytes_per_event,
                sw.source.wal_bytes as f64 / n,
                sw.server_wal_bytes_per_event,
            );
            let top: Vec<String> = sw
                .store
                .wal_by_relation
                .iter()
                .take(8)
                .map(|(rel, b)| {
                    format!(
                        "{} {:.0}",
                        rel.trim_start_matches("hookrelay."),
                        *b as f64 / n
                    )
                })
                .collect();
            let _ = writeln!(o, "    store WAL B/event by relation: {}", top.join(", "));
            let idle: Vec<&str> = sw
                .store_indexes
                .iter()
                .filter(|i| i.scans == 0)
                .map(|i| i.index.as_str())
                .collect();
            let _ = writeln!(o, "    store indexes never scanned: {}", idle.join(", "));
        }
        let costs: Vec<_> = self
            .workloads
            .iter()
            .filter_map(|w| Some((w, w.pipeline_cost.as_ref()?)))
            .collect();
        if !costs.is_empty() {
            let _ = writeln!(
                o,
                "\nPipeline cost beyond the writes, per event (1 sub) or per delivery: server WAL \
                 (LSN difference) and CPU of every\npostgres process + hookrelay + the writer, \
                 first write → every outcome recorded, less the same writes with hookrelay stopped"
            );
            let _ = writeln!(
                o,
                "{:<40} {:>7} {:>7} {:>7} {:>21} {:>21} {:>13}",
                "workload",
                "units",
                "WAL B",
                "CPU µs",
                "WAL MB base / pipe",
                "CPU s base / pipe",
                "other CPU s"
            );
            for (w, c) in costs {
                let _ = writeln!(
                    o,
                    "{:<40} {:>7} {:>7.0} {:>7.0} {:>21} {:>21} {:>13}",
                    truncate(&format!("{} {}", w.id, w.name), 40),
                    c.units,
                    c.wal_bytes_per_unit,
                    c.cpu_us_per_unit,
                    format!(
                        "{:.1} / {:.1}",
                        c.baseline.wal_bytes as f64 / 1e6,
                        c.pipeline.wal_bytes as f64 / 1e6
                    ),
                    format!("{:.2} / {:.2}", c.baseline.cpu_s(), c.pipeline.cpu_s()),
                    format!(
                        "{:.2} / {:.2}",
                        c.baseline.attribution.other_s, c.pipeline.attribution.other_s
                    ),
                );
            }
        }
        let _ = writeln!(
            o,
            "\nLatency split, ms (p50 / p99): commit→captured (source) · commit→receipt (end to end)"
        );
        for w in &self.workloads {
            let (Some(c), Some(l)) = (w.capture_latency_ms, w.latency_ms) else {
                continue;
            };
            let _ = writeln!(
                o,
                "  {:<40} {:>8.1} / {:<8.1} · {:>8.1} / {:<8.1}",
                truncate(&format!("{} {}", w.id, w.name), 40),
                c.p50,
                c.p99,
                l.p50,
                l.p99
            );
        }
        for w in &self.workloads {
            let Some(act) = &w.pg_activity else { continue };
            let _ = writeln!(
                o,
                "\nPostgres activity, {} {} (average backends active)",
                w.id, w.name
            );
            for a in act {
                let _ = writeln!(
                    o,
                    "  {:>5.2}  {:<6} {:<22} {}",
                    a.avg_active, a.db, a.wait, a.query
                );
            }
        }
        let _ = writeln!(o, "\nNotes");
        for w in &self.workloads {
            if w.extra.is_empty() || w.error.is_some() {
                continue;
            }
            let parts: Vec<String> = w
                .extra
                .iter()
                .map(|(k, v)| format!("{k}={}", compact(v)))
                .collect();
            let _ = writeln!(o, "  {}: {}", w.id, parts.join(", "));
        }
        o
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn compact(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() != 0.0 => format!("{f:.2}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let l = Latency::from_us((1..=100).map(|i| i * 1000).collect()).unwrap();
        assert_eq!((l.p50, l.p95, l.p99, l.max), (50.0, 95.0, 99.0, 100.0));
        assert!(Latency::from_us(Vec::new()).is_none());
    }
}
