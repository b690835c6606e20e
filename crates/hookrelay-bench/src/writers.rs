//! Writer tasks, one tokio-postgres connection each, inserting into `public.orders`
//! with autocommit (one statement = one transaction):
//!
//! - `batched`: N writers, each transaction one `INSERT … SELECT generate_series` of
//!   `rows_per_txn` rows, until `total` rows (throughput, fan-out, backlog, ceilings);
//! - `single_row_max`: N writers committing one row at a time as fast as they go;
//! - `single_row_rate`: N writers sharing a fixed commit rate, evenly staggered, for
//!   a set time (`single_row_rate_until`: until told to stop).
//!
//! Ids come from one counter, so every row is a new key. Connections are opened by the
//! caller and outlive the writes, so their backends' CPU is still there to measure.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context;
use serde::Serialize;
use tokio::time::MissedTickBehavior;
use tokio_postgres::Client;

use crate::db::connect;

const INSERT_BATCH: &str = "insert into public.orders (id, status, total)
    select g, 'pending', (g % 100000) / 100.0 from generate_series($1::bigint, $2::bigint - 1) g";
const INSERT_ONE: &str =
    "insert into public.orders (id, status, total) values ($1, 'pending', 19.99)";

/// What the writers committed.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    pub rows: u64,
    pub commits: u64,
    #[serde(skip)]
    pub started: SystemTime,
    pub seconds: f64,
}

impl Written {
    pub fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.seconds.max(1e-9)
    }
    pub fn commits_per_s(&self) -> f64 {
        self.commits as f64 / self.seconds.max(1e-9)
    }
}

/// Opens `n` writer connections.
pub async fn open(url: &str, n: usize) -> anyhow::Result<Vec<Arc<Client>>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Arc::new(connect(url).await?));
    }
    Ok(out)
}

/// Inserts `total` rows with ids from `first_id`, `rows_per_txn` per transaction.
pub async fn batched(
    clients: &[Arc<Client>],
    rows_per_txn: u64,
    total: u64,
    first_id: i64,
) -> anyhow::Result<Written> {
    let next = Arc::new(AtomicU64::new(0));
    let commits = Arc::new(AtomicU64::new(0));
    let started = SystemTime::now();
    let clock = Instant::now();
    let mut tasks = Vec::new();
    for c in clients {
        let (c, next, commits) = (c.clone(), next.clone(), commits.clone());
        tasks.push(tokio::spawn(async move {
            let stmt = c.prepare(INSERT_BATCH).await?;
            loop {
                let from = next.fetch_add(rows_per_txn, Ordering::Relaxed);
                if from >= total {
                    return anyhow::Ok(());
                }
                let to = (from + rows_per_txn).min(total);
                let (a, b) = (first_id + from as i64, first_id + to as i64);
                c.execute(&stmt, &[&a, &b])
                    .await
                    .context("batched insert")?;
                commits.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    join(tasks).await?;
    Ok(Written {
        rows: total,
        commits: commits.load(Ordering::Relaxed),
        started,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// One-row commits from every client as fast as they go, for `duration`.
pub async fn single_row_max(
    clients: &[Arc<Client>],
    duration: Duration,
    first_id: i64,
) -> anyhow::Result<Written> {
    let next = Arc::new(AtomicU64::new(0));
    let started = SystemTime::now();
    let clock = Instant::now();
    let deadline = clock + duration;
    let mut tasks = Vec::new();
    for c in clients {
        let (c, next) = (c.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let stmt = c.prepare(INSERT_ONE).await?;
            while Instant::now() < deadline {
                let id = first_id + next.fetch_add(1, Ordering::Relaxed) as i64;
                c.execute(&stmt, &[&id])
                    .await
                    .context("single-row insert")?;
            }
            anyhow::Ok(())
        }));
    }
    join(tasks).await?;
    let rows = next.load(Ordering::Relaxed);
    Ok(Written {
        rows,
        commits: rows,
        started,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// One-row commits at `rate` per second in total for `duration`, the clients taking
/// turns (client i commits at i/rate, i/rate + n/rate, …; a late commit catches up).
pub async fn single_row_rate(
    clients: &[Arc<Client>],
    rate: f64,
    duration: Duration,
    first_id: i64,
) -> anyhow::Result<Written> {
    let total = (rate * duration.as_secs_f64()).round() as u64;
    paced(clients, rate, total, None, first_id).await
}

/// One-row commits at `rate` per second, paced as [`single_row_rate`], until `stop`
/// is set: a live load beside something whose length is not known beforehand.
pub async fn single_row_rate_until(
    clients: &[Arc<Client>],
    rate: f64,
    stop: Arc<AtomicBool>,
    first_id: i64,
) -> anyhow::Result<Written> {
    paced(clients, rate, u64::MAX, Some(stop), first_id).await
}

/// Up to `total` one-row commits at `rate` per second, ending early once `stop` is set.
async fn paced(
    clients: &[Arc<Client>],
    rate: f64,
    total: u64,
    stop: Option<Arc<AtomicBool>>,
    first_id: i64,
) -> anyhow::Result<Written> {
    let n = clients.len().max(1);
    let next = Arc::new(AtomicU64::new(0));
    let commits = Arc::new(AtomicU64::new(0));
    let started = SystemTime::now();
    let clock = Instant::now();
    let start = tokio::time::Instant::now() + Duration::from_millis(5);
    let period = Duration::from_secs_f64(n as f64 / rate);
    let mut tasks = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let (c, next, commits, stop) = (c.clone(), next.clone(), commits.clone(), stop.clone());
        let first = start + Duration::from_secs_f64(i as f64 / rate);
        tasks.push(tokio::spawn(async move {
            let stmt = c.prepare(INSERT_ONE).await?;
            let mut tick = tokio::time::interval_at(first, period);
            tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
            loop {
                tick.tick().await;
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= total || stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                    return anyhow::Ok(());
                }
                let id = first_id + k as i64;
                c.execute(&stmt, &[&id])
                    .await
                    .context("single-row insert")?;
                commits.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    join(tasks).await?;
    let rows = commits.load(Ordering::Relaxed);
    Ok(Written {
        rows,
        commits: rows,
        started,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

async fn join(tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>) -> anyhow::Result<()> {
    for t in tasks {
        t.await.context("writer task panicked")??;
    }
    Ok(())
}
