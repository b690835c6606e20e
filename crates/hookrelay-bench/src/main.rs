//! `hookrelay-bench`: hookrelay measured end to end on this machine.
//!
//! ```text
//!  writers (tokio-postgres, own connections) ─▶ hookrelay_bench_src.public.orders
//!        │ AFTER ROW trigger → journal                     (local PostgreSQL 15)
//!        ▼
//!  hookrelay run (child process, tuned config) ─▶ hookrelay_bench_store
//!        │ signed POSTs, HTTP/1.1 keep-alive
//!        ▼
//!  receiver (axum, in this process): verify webhook-signature, record first arrival
//!  per event id (receipt − committed_at), count duplicates
//! ```
//!
//! What it measures, per workload, with fresh databases and a fresh hookrelay each:
//! events/s sustained (first commit → last 2xx), commit→delivery latency
//! p50/p95/p99/max, hookrelay's peak RSS (VmRSS sampled every 100 ms, and VmHWM) and
//! CPU seconds per 10,000 events (utime + stime from /proc), the store's size per
//! 10,000 events (events + deliveries + attempts), duplicates, and hookrelay's rate
//! as a fraction of the trigger-only ceiling. Also: an fsync baseline
//! (`pg_test_fsync`), the ceilings (writers without hookrelay, with and without the
//! trigger; the receiver fed by a plain client), and where the CPU went (hookrelay,
//! Postgres backends, Postgres auxiliary processes, this process, anything else).
//!
//! Workloads: 1 throughput, 2 latency, 3 fan-out, 4 bad neighbour (4a control, 4b one
//! slow endpoint), 5 backlog drain, 6 MySQL source (6a throughput, 6b latency, a throwaway MariaDB), 7 eight single-row writers as
//! fast as they go, 8 workload 3 beside 10,000 idle subscriptions (it also
//! times creating and listing them over the admin API, whole and by pages, and
//! measures the store's tables holding them), 9 fan-out to 1,000 active subscriptions
//! (overall and per-subscription latency, so a starved one shows), 10 workload 3
//! beside 1,000 subscriptions with a row filter, 11 a backfill of a 1,000,000-row
//! table beside 200 live commits/s (the backfill's rows/s, the live latency before
//! and during it, hookrelay's peak RSS, and that every row arrived once as a read event
//! at its subscription only), 12 the pipeline's own cost beyond the writes (12a 20,000
//! events x 1 subscription: WAL bytes and CPU per event; 12b 4,000 events x 10: per
//! delivery; against the same writes with hookrelay stopped).
//! `--quick` makes each 10x smaller (workload 9: 100 events, still 1,000 subscriptions;
//! workload 12 keeps its sizes, already small). Results go to stdout and to
//! `.bench/results-<timestamp>.json` (and `.bench/latest.json`); hookrelay's config
//! and log for each workload go to `.bench/run-<timestamp>/`.

mod backfill;
mod ceiling;
mod cost;
mod db;
mod fsync;
mod mysql;
mod pg_activity;
mod proc_stats;
mod receiver;
mod relay;
mod report;
mod store_work;
mod workloads;
mod writers;

use std::{
    path::PathBuf,
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::json;

use crate::{
    receiver::Receiver,
    report::{Ceiling, Results},
};

#[derive(Parser)]
#[command(name = "hookrelay-bench", about = "Benchmark hookrelay end to end")]
struct Args {
    /// Every workload 10x smaller (workload 12 keeps its sizes): a smoke run of a
    /// couple of minutes.
    #[arg(long)]
    quick: bool,
    /// Only these parts, comma-separated: c (ceilings), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
    /// 11, 12.
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// The hookrelay binary (default: `hookrelay` next to this executable).
    #[arg(long)]
    hookrelay: Option<PathBuf>,
    /// Where results go.
    #[arg(long, default_value = ".bench")]
    out: PathBuf,
    /// The PostgreSQL server; databases hookrelay_bench_store and hookrelay_bench_src
    /// are dropped and recreated on it.
    #[arg(
        long,
        env = "HOOKRELAY_BENCH_PG",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pg: String,
    /// Appended to the bench's database names (hookrelay_bench_store<SUFFIX>, …), so
    /// benches of two worktrees on one server keep apart. [a-z0-9_] only.
    #[arg(long, env = "HOOKRELAY_BENCH_DB_SUFFIX", default_value = "")]
    db_suffix: String,
    /// A hookrelay setting for every workload, as SECTION.KEY=VALUE (passed as
    /// HOOKRELAY_SECTION__KEY); repeatable. Recorded in the results.
    #[arg(long = "set")]
    set: Vec<String>,
    /// Sample pg_stat_activity every 10 ms and report where Postgres was busy.
    #[arg(long)]
    pg_activity: bool,
    /// Log the plans of store statements slower than this many ms to the Postgres
    /// server log (auto_explain on the bench's store database).
    #[arg(long)]
    explain_slow_ms: Option<u32>,
    /// SQL run on the store once hookrelay has migrated it, before each workload's
    /// subscriptions and writers (to measure a schema change without a rebuild, e.g.
    /// `alter table hookrelay.deliveries set (fillfactor = 50)`). Recorded in the results.
    #[arg(long)]
    store_sql: Option<String>,
}

/// Workload sizes (full, or 10x smaller with `--quick`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sizes {
    pub w1_events: u64,
    pub w2_seconds: f64,
    pub w3_events: u64,
    pub w4_rate: f64,
    pub w4_seconds: f64,
    pub w5_events: u64,
    pub w7_seconds: f64,
    /// Workload 8: idle subscriptions beside workload 3's ten (10,000 either way).
    pub w8_idle: usize,
    /// Workload 9: events fanned out to `w9_subs` active subscriptions.
    pub w9_events: u64,
    pub w9_subs: usize,
    /// Workload 10: subscriptions with a row filter beside workload 3's ten.
    pub w10_filtered: usize,
    /// Workload 11: rows of the backfilled table, and seconds of live changes alone
    /// before the backfill starts.
    pub w11_rows: u64,
    pub w11_seconds: f64,
    /// Workload 12: events written (twice: baseline, then pipeline) with one
    /// subscription and with ten. Not shrunk by `--quick`: smaller, the CPU figures
    /// drown in the 10 ms clock ticks of /proc.
    pub w12_events_one: u64,
    pub w12_events_ten: u64,
    pub receiver_requests: u64,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                w1_events: 20_000,
                w2_seconds: 6.0,
                w3_events: 2_000,
                w4_rate: 200.0,
                w4_seconds: 5.0,
                w5_events: 10_000,
                w7_seconds: 3.0,
                w8_idle: 10_000,
                w9_events: 100,
                w9_subs: 1_000,
                w10_filtered: 1_000,
                w11_rows: 100_000,
                w11_seconds: 5.0,
                w12_events_one: 20_000,
                w12_events_ten: 4_000,
                receiver_requests: 10_000,
            }
        } else {
            Self {
                w1_events: 200_000,
                w2_seconds: 60.0,
                w3_events: 20_000,
                w4_rate: 200.0,
                w4_seconds: 30.0,
                w5_events: 100_000,
                w7_seconds: 20.0,
                w8_idle: 10_000,
                w9_events: 1_000,
                w9_subs: 1_000,
                w10_filtered: 1_000,
                w11_rows: 1_000_000,
                w11_seconds: 20.0,
                w12_events_one: 20_000,
                w12_events_ten: 4_000,
                receiver_requests: 100_000,
            }
        }
    }
}

/// What every workload needs.
pub struct Ctx {
    pub bin: PathBuf,
    pub pg: String,
    /// Per-run directory for hookrelay configs and logs.
    pub dir: PathBuf,
    pub receiver: Receiver,
    pub ticks: f64,
    pub sizes: Sizes,
    pub ceilings: Vec<Ceiling>,
    /// Environment overrides for hookrelay (`--set`).
    pub overrides: Vec<(String, String)>,
    pub pg_activity: bool,
    pub explain_slow_ms: Option<u32>,
    pub store_sql: Option<String>,
}

impl Ctx {
    pub fn ceiling(&self, id: &str) -> Option<f64> {
        self.ceilings
            .iter()
            .find(|c| c.id == id && c.error.is_none())
            .map(|c| c.per_s)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Stopped by a signal, the run is dropped, and with it the hookrelay it started
    // (`RelayProcess` kills its child when dropped). Left running, that process went on
    // claiming in the next run's store, which has the same name: its leases held
    // deliveries for 50 s, and the next run reported them as stalled.
    let outcome = tokio::select! {
        r = run(args) => r,
        s = stopped() => Err(anyhow::anyhow!("stopped by {s}; hookrelay stopped too")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hookrelay-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves at SIGINT or SIGTERM (the signal's name).
async fn stopped() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let wall = Instant::now();
    if !args
        .db_suffix
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        bail!("--db-suffix {:?}: use [a-z0-9_] only", args.db_suffix);
    }
    db::set_suffix(&args.db_suffix);
    let started = chrono::Utc::now();
    let stamp = started.format("%Y%m%dT%H%M%SZ").to_string();
    let bin = match args.hookrelay {
        Some(b) => b,
        None => std::env::current_exe()?
            .parent()
            .context("executable without a directory")?
            .join("hookrelay"),
    };
    if !bin.is_file() {
        bail!(
            "no hookrelay binary at {}; build it with `cargo build --release -p hookrelay` (scripts/bench.sh does)",
            bin.display()
        );
    }
    let dir = args.out.join(format!("run-{stamp}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Run a private copy: a rebuild during the run must not swap binaries under it.
    let binary = bin.display().to_string();
    let bin = {
        let copy = dir.join("hookrelay");
        std::fs::copy(&bin, &copy)
            .with_context(|| format!("copying {} to {}", bin.display(), copy.display()))?;
        copy
    };
    let overrides = args
        .set
        .iter()
        .map(|s| relay::env_override(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let wants = |part: &str| {
        args.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|p| p == part))
    };

    let postgres = db::server_info(&args.pg)
        .await
        .context("is PostgreSQL running? (scripts/services.sh starts it)")?;
    eprintln!("fsync baseline: pg_test_fsync …");
    let fsync_dir = dir.clone();
    let fsync = match tokio::task::spawn_blocking(move || fsync::measure(&fsync_dir)).await? {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("  fsync baseline failed: {e:#}");
            None
        }
    };

    let mut ctx = Ctx {
        bin,
        pg: args.pg.clone(),
        dir: dir.clone(),
        receiver: Receiver::start().await?,
        ticks: proc_stats::clock_ticks(),
        sizes: Sizes::new(args.quick),
        ceilings: Vec::new(),
        overrides,
        pg_activity: args.pg_activity,
        explain_slow_ms: args.explain_slow_ms,
        store_sql: args.store_sql.clone(),
    };

    if wants("c") {
        eprintln!("ceilings: receiver …");
        ctx.ceilings.push(ceiling::receiver(&ctx, 16).await);
        eprintln!("ceilings: writers without hookrelay …");
        match ceiling::database(&ctx).await {
            Ok(cs) => ctx.ceilings.extend(cs),
            Err(e) => eprintln!("  database ceilings failed: {e:#}"),
        }
    }

    let mut workloads = Vec::new();
    for part in [
        "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12",
    ] {
        if !wants(part) {
            continue;
        }
        match part {
            "4" => {
                workloads.push(workloads::run_standard(&ctx, "4a").await);
                workloads.push(workloads::run_standard(&ctx, "4b").await);
            }
            "5" => workloads.push(workloads::run_backlog(&ctx).await),
            "6" => workloads.extend(mysql::run(&ctx).await),
            "11" => workloads.push(backfill::run(&ctx).await),
            "12" => workloads.extend(cost::run(&ctx).await),
            p => workloads.push(workloads::run_standard(&ctx, p).await),
        }
    }
    if let Err(e) = db::Databases::drop_all(&ctx.pg).await {
        eprintln!("dropping the bench databases: {e:#}");
    }
    // A workload that failed half-way may have left its WAL slot: it would keep WAL.
    let slot =
        async { store_work::drop_slot(&db::connect(&format!("{}/postgres", ctx.pg)).await?).await };
    if let Err(e) = slot.await {
        eprintln!("dropping the bench's WAL slot: {e:#}");
    }
    let _ = std::fs::remove_file(&ctx.bin); // the private copy

    let results = Results {
        started_at: started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        quick: args.quick,
        git_revision: git_revision(),
        machine: machine(),
        postgres,
        fsync,
        hookrelay_config: relay::CONFIG_TEMPLATE.to_owned(),
        hookrelay_overrides: ctx.overrides.clone(),
        store_sql: ctx.store_sql.clone(),
        hookrelay_binary: binary,
        sizes: ctx.sizes.clone(),
        ceilings: ctx.ceilings.clone(),
        workloads,
        wall_seconds: wall.elapsed().as_secs_f64(),
    };
    let path = results.write(&args.out, &stamp)?;
    println!("{}", results.table());
    println!(
        "JSON: {}  (logs and configs: {})",
        path.display(),
        dir.display()
    );
    Ok(())
}

/// `git rev-parse --short HEAD`, with `-dirty` when tracked files changed.
fn git_revision() -> String {
    let out = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match out(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty = out(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev}-dirty")
            } else {
                rev
            }
        }
        None => "unknown".into(),
    }
}

fn machine() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned());
    let mem_kib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "memory_gib": mem_kib.map(|k| (k as f64 / 1048576.0 * 10.0).round() / 10.0),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "load_average_at_start": read("/proc/loadavg").trim(),
    })
}
