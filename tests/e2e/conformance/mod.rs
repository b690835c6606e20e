//! What every source kind must do, written once over [`Fixture`]: a kind plugs in by
//! making a table, writing to it and reading it back (PostgreSQL's fixture in
//! `postgres.rs`, MySQL/MariaDB's in `mysql.rs`, MongoDB's in `mongodb.rs`), and
//! [`scenarios!`] gives it every scenario as its own tests:
//!
//! - `changes.rs`: `kill -9` of hookrelay at random moments, and a standby taking
//!   over from a leader that stops, while a writer commits: every committed version of
//!   every key arrives, in per-key order, a duplicate only under its first id.
//! - `backfill.rs` (DESIGN §1.8): writers throughout a backfill; the subscriber ends
//!   with exactly the table, after `kill -9` too, and a cancel stops it.

pub mod backfill;
pub mod changes;
mod mongodb;
mod mysql;
mod postgres;

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use serde_json::Value;

/// What a scenario needs from a source kind.
pub trait Fixture: Send + Sync + 'static {
    /// The `[[sources]]` TOML of a relay watching the fixture's table, named `src`.
    fn source_toml(&self) -> String;
    /// The table as configured (`schema.table`).
    fn table(&self) -> &'static str;
    /// Makes the table with keys `1..=n`, each `v = 0` (empty for 0).
    fn fill(&self, n: i64) -> impl Future<Output = ()> + Send;
    /// One writer's connection.
    fn writer(&self) -> impl Future<Output = Box<dyn Writer>> + Send;
    /// Every row: key → `v`.
    fn rows(&self) -> impl Future<Output = BTreeMap<i64, i64>> + Send;
    /// The `/metrics` series of rows read for the fixture's source.
    fn rows_read_series(&self) -> String;
    /// An event's key as an integer (`key.id` unless the kind names it otherwise).
    fn key_of(&self, event: &Value) -> i64 {
        event["key"]["id"].as_i64().expect("integer key")
    }
    /// How many hookrelay readers the source server sees, where it can tell (a
    /// binlog dump per reader on MySQL).
    fn readers(&self) -> impl Future<Output = Option<i64>> + Send {
        async { None }
    }
}

/// Writes to the fixture's table.
pub trait Writer: Send {
    /// A row with key `id` and `v = 0`.
    fn insert(&mut self, id: i64) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// `v = v + 1` of key `id`.
    fn bump(&mut self, id: i64) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    fn delete(&mut self, id: i64) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Writers changing the table until stopped: each picks a random key below the
/// highest and updates or deletes it, or inserts a new key. (No primary-key updates:
/// such an update is ordered under its new key only, so with retries it may reach the
/// receiver before an older change of its old key, backfill or not.)
pub struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
}

impl Writers {
    pub async fn start<F: Fixture>(fx: &F, n: usize, first_new: i64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicI64::new(first_new));
        let mut tasks = Vec::new();
        for _ in 0..n {
            let mut w = fx.writer().await;
            let (stop, next) = (stop.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut done = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (roll, pick) = {
                        let mut rng = rand::thread_rng();
                        let top = next.load(Ordering::Relaxed);
                        (
                            rand::Rng::gen_range(&mut rng, 0..10),
                            rand::Rng::gen_range(&mut rng, 1..top),
                        )
                    };
                    match roll {
                        0..=5 => w.bump(pick).await,
                        6..=7 => w.delete(pick).await,
                        _ => w.insert(next.fetch_add(1, Ordering::Relaxed)).await,
                    }
                    done += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                done
            }));
        }
        Self { stop, tasks }
    }

    /// Stops them; how many writes they made.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let mut n = 0;
        for t in self.tasks {
            n += t.await.expect("writer");
        }
        n
    }
}

/// Every scenario as tests of one source kind: `scenarios!(Kind::new())` in the
/// kind's module.
macro_rules! scenarios {
    ($fixture:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn kill_9_of_hookrelay_loses_nothing_and_keeps_key_order() {
            crate::conformance::changes::kill_9_loses_nothing($fixture).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_standby_takes_over_from_a_stopped_leader_without_loss() {
            crate::conformance::changes::standby_takes_over($fixture).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn backfill_under_writes_ends_with_the_table() {
            crate::conformance::backfill::under_writes($fixture).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn backfill_resumes_after_kill_9() {
            crate::conformance::backfill::survives_kill_9($fixture).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn backfill_cancel_stops_it() {
            crate::conformance::backfill::cancel($fixture).await;
        }
    };
}
pub(crate) use scenarios;
