//! Workload 6: the throughput and latency workloads with a MySQL source.
//!
//! ```text
//!  throwaway MariaDB (own datadir and port, binlog ROW/FULL/FULL; the e2e tests'
//!  launcher, tests/e2e/mysql/mariadb.rs) ─▶ shop.orders ─▶ hookrelay (child, reads
//!  the binlog) ─▶ the store (fresh hookrelay_bench_store) ─▶ the receiver
//! ```
//!
//! 6a: 4 writers × 100-row transactions (as workload 1); 6b: one-row commits at a
//! fixed rate (as workload 2). MariaDB's binlog timestamps are whole seconds, so the
//! envelope's `committed_at` is truncated to the second: both latency figures
//! (commit→captured, commit→receipt) read up to 1 s high (≈ 0.5 s on average); their
//! difference (captured→receipt) is not affected.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context;
use mysql_async::prelude::Queryable;
use tokio::{sync::Mutex, time::MissedTickBehavior};

#[allow(dead_code)] // shared with the e2e tests, which use all of it
#[path = "../../../tests/e2e/mysql/mariadb.rs"]
mod mariadb;

use crate::{
    db::Databases,
    proc_stats::{CpuSnapshot, CpuSpent, RssSampler},
    relay::{RelayProcess, SourceKind},
    report::WorkloadResult,
    workloads::{self, Setup},
    writers::Written,
    Ctx,
};

const STOP_GRACE: Duration = Duration::from_secs(15);

pub async fn run(ctx: &Ctx) -> Vec<WorkloadResult> {
    let s = &ctx.sizes;
    let mut out = Vec::new();
    for (id, name, load) in [
        (
            "6a",
            "MySQL throughput: 4 writers x 100-row txns".to_owned(),
            Load::Batched { total: s.w1_events },
        ),
        (
            "6b",
            format!(
                "MySQL latency: 1-row commits at 1000/s x {:.0} s",
                s.w2_seconds
            ),
            Load::Rate {
                rate: 1000.0,
                seconds: s.w2_seconds,
            },
        ),
    ] {
        eprintln!("workload {id}: {name}");
        out.push(workloads::or_failed(
            id,
            &name,
            workload(ctx, id, &name, load).await,
        ));
    }
    out
}

#[derive(Clone, Copy)]
enum Load {
    Batched { total: u64 },
    Rate { rate: f64, seconds: f64 },
}

async fn workload(ctx: &Ctx, id: &str, name: &str, load: Load) -> anyhow::Result<WorkloadResult> {
    let my = mariadb::MariaDbInstance::start(mariadb::Binlog::Ready).await;
    let mut c = my.connect("mysql").await;
    c.query_drop("CREATE DATABASE shop").await?;
    c.query_drop(
        "CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, status VARCHAR(20) NOT NULL,
                                   total DECIMAL(12,2) NOT NULL) ENGINE=InnoDB",
    )
    .await?;
    let dbs = Databases::fresh(&ctx.pg, ctx.explain_slow_ms).await?;
    let endpoints = ctx.receiver.reset(1)?;
    let tag = format!("w{id}-mysql");
    let relay = RelayProcess::start_reading(
        &ctx.bin,
        &dbs,
        SourceKind::Mysql(&my.url("shop")),
        &ctx.dir,
        &tag,
        &ctx.overrides,
    )
    .await?;
    relay
        .subscribe(&endpoints[0].url, &endpoints[0].secret)
        .await?;
    eprintln!(
        "  hookrelay pid {} on MariaDB port {}; log {}/{tag}.log",
        relay.pid,
        my.port,
        ctx.dir.display()
    );
    let mut st = Setup { dbs, relay };
    let mut writers = Vec::new();
    for _ in 0..4 {
        writers.push(Arc::new(Mutex::new(my.connect("shop").await)));
    }
    let cpu0 = CpuSnapshot::take(Some(st.relay.pid));
    let window = Instant::now();
    let rss = RssSampler::start(st.relay.pid);
    let written = match load {
        Load::Batched { total } => batched(&writers, 100, total).await?,
        Load::Rate { rate, seconds } => {
            rate_limited(&writers, rate, Duration::from_secs_f64(seconds)).await?
        }
    };
    eprintln!(
        "  committed {} rows in {:.1} s ({:.0} rows/s); waiting for delivery",
        written.rows,
        written.seconds,
        written.rows_per_s()
    );
    workloads::wait_delivered(ctx, &mut st.relay, &[0], written.rows).await?;
    let cpu = CpuSpent::between(&cpu0, &CpuSnapshot::take(Some(st.relay.pid)), ctx.ticks);
    let cpu_window = window.elapsed().as_secs_f64();
    let peak = rss.finish().await;
    let mut r = WorkloadResult::new(id, name);
    r.subscriptions = 1;
    workloads::fill(ctx, &mut r, &written, &[0], cpu, peak);
    r.cpu_window_s = Some(cpu_window);
    r.note(
        "latency_note",
        "MariaDB's committed_at is whole seconds: commit→captured and commit→receipt read up to 1 s high; their difference does not",
    );
    workloads::finish(&mut st, &mut r, true).await?;
    st.relay.stop(STOP_GRACE).await?;
    drop(writers);
    drop(my);
    Ok(r)
}

type Writer = Arc<Mutex<mysql_async::Conn>>;

/// `total` rows, `rows_per_txn` per multi-row INSERT (autocommit), ids from 1.
async fn batched(writers: &[Writer], rows_per_txn: u64, total: u64) -> anyhow::Result<Written> {
    let next = Arc::new(AtomicU64::new(0));
    let commits = Arc::new(AtomicU64::new(0));
    let started = SystemTime::now();
    let clock = Instant::now();
    let mut tasks = Vec::new();
    for w in writers {
        let (w, next, commits) = (w.clone(), next.clone(), commits.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = w.lock().await;
            loop {
                let from = next.fetch_add(rows_per_txn, Ordering::Relaxed);
                if from >= total {
                    return anyhow::Ok(());
                }
                let to = (from + rows_per_txn).min(total);
                c.query_drop(format!(
                    "INSERT INTO orders SELECT seq, 'pending', (seq % 100000) / 100 FROM seq_{}_to_{}",
                    from + 1,
                    to
                ))
                .await
                .context("batched insert")?;
                commits.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(Written {
        rows: total,
        commits: commits.load(Ordering::Relaxed),
        started,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// One-row commits at `rate` per second shared by the writers, for `duration`.
async fn rate_limited(
    writers: &[Writer],
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Written> {
    let next = Arc::new(AtomicU64::new(0));
    let started = SystemTime::now();
    let clock = Instant::now();
    let per_writer = Duration::from_secs_f64(writers.len() as f64 / rate);
    let mut tasks = Vec::new();
    for (i, w) in writers.iter().enumerate() {
        let (w, next) = (w.clone(), next.clone());
        let offset = per_writer.mul_f64(i as f64 / writers.len() as f64);
        tasks.push(tokio::spawn(async move {
            let mut c = w.lock().await;
            let start = tokio::time::Instant::now() + offset;
            let mut tick = tokio::time::interval_at(start, per_writer);
            tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
            while clock.elapsed() < duration {
                tick.tick().await;
                let id = next.fetch_add(1, Ordering::Relaxed) + 1;
                c.query_drop(format!(
                    "INSERT INTO orders VALUES ({id}, 'pending', 19.99)"
                ))
                .await
                .context("single-row insert")?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rows = next.load(Ordering::Relaxed);
    Ok(Written {
        rows,
        commits: rows,
        started,
        seconds: clock.elapsed().as_secs_f64(),
    })
}
