//! The fault suite's ledger and checker: a generator commits changes with known
//! (key, version) pairs and records what committed; the checker compares that with
//! what the receiver got. Pass criteria (DESIGN §1.1): nothing lost, a duplicate only
//! ever carries the webhook-id of its first delivery, per-key order holds.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use rand::Rng;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

use crate::harness::Received;

/// (key, version) of one committed change.
pub type Change = (i64, i64);

#[derive(Clone, Default)]
pub struct Ledger {
    /// Acknowledged commits.
    committed: Arc<Mutex<Vec<Change>>>,
    /// Commits whose outcome is unknown (the connection broke during COMMIT).
    uncertain: Arc<Mutex<Vec<Change>>>,
}

impl Ledger {
    pub fn committed(&self) -> Vec<Change> {
        self.committed.lock().expect("ledger").clone()
    }

    pub fn len(&self) -> usize {
        self.committed.lock().expect("ledger").len()
    }

    pub fn uncertain(&self) -> usize {
        self.uncertain.lock().expect("ledger").len()
    }
}

/// Writers committing upserts of `version` on their own keys, 1 to 3 rows a
/// transaction; reconnecting when the source database goes away.
pub struct Generator {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    pub ledger: Ledger,
}

impl Generator {
    pub fn start(url: &str, writers: i64, keys_per_writer: i64) -> Self {
        Self::paced(url, writers, keys_per_writer, Duration::ZERO)
    }

    /// Like `start`, each writer resting `pause` after every commit, so a test that
    /// writes for a minute leaves a backlog it can deliver in seconds.
    pub fn paced(url: &str, writers: i64, keys_per_writer: i64, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ledger = Ledger::default();
        let tasks = (0..writers)
            .map(|w| {
                let (url, stop, ledger) = (url.to_owned(), stop.clone(), ledger.clone());
                tokio::spawn(async move {
                    write_loop(url, w, keys_per_writer, pause, stop, ledger).await
                })
            })
            .collect();
        Self {
            stop,
            tasks,
            ledger,
        }
    }

    /// Stops writing and returns the ledger once every writer has finished.
    pub async fn stop(self) -> Ledger {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("writer task");
        }
        self.ledger
    }
}

async fn write_loop(
    url: String,
    writer: i64,
    keys: i64,
    pause: Duration,
    stop: Arc<AtomicBool>,
    ledger: Ledger,
) {
    let mut versions: HashMap<i64, i64> = HashMap::new();
    'connect: while !stop.load(Ordering::Relaxed) {
        let Ok((mut client, conn)) = tokio_postgres::connect(&url, NoTls).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(conn);
        while !stop.load(Ordering::Relaxed) {
            let n = rand::thread_rng().gen_range(1..=3);
            let mut batch: Vec<Change> = Vec::with_capacity(n);
            for _ in 0..n {
                let key = writer * 1_000_000 + rand::thread_rng().gen_range(1..=keys);
                if batch.iter().any(|(k, _)| *k == key) {
                    continue;
                }
                let v = versions.entry(key).or_default();
                *v += 1;
                batch.push((key, *v));
            }
            let Ok(tx) = client.transaction().await else {
                continue 'connect;
            };
            let mut ok = true;
            for (key, v) in &batch {
                let r = tx
                    .execute(
                        "insert into orders (id, status, version) values ($1, 'gen', $2)
                         on conflict (id) do update set version = excluded.version",
                        &[key, &(*v as i32)],
                    )
                    .await;
                if r.is_err() {
                    ok = false;
                    break;
                }
            }
            if !ok {
                continue 'connect; // never committed: nothing to record
            }
            match tx.commit().await {
                Ok(()) => {
                    ledger.committed.lock().expect("ledger").extend(batch);
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
                Err(_) => {
                    ledger.uncertain.lock().expect("ledger").extend(batch);
                    continue 'connect;
                }
            }
        }
    }
}

/// What the checker found.
#[derive(Debug)]
pub struct Report {
    pub committed: usize,
    /// Commits whose outcome the writer could not learn; they may or may not arrive.
    pub uncertain: usize,
    pub delivered_distinct: usize,
    pub lost: Vec<Change>,
    /// 2xx answers beyond the first for an event id (at-least-once re-sends).
    pub duplicates: usize,
    /// Changes that arrived under more than one webhook-id (must be 0).
    pub same_change_two_ids: usize,
    /// Keys whose first arrivals were not in version order (must be 0).
    pub order_violations: Vec<i64>,
}

impl Report {
    pub fn assert_clean(&self) {
        assert!(
            self.lost.is_empty(),
            "lost {} change(s), e.g. {:?}",
            self.lost.len(),
            &self.lost[..self.lost.len().min(5)]
        );
        assert_eq!(
            self.same_change_two_ids, 0,
            "a change arrived under two ids"
        );
        assert!(
            self.order_violations.is_empty(),
            "per-key order broken for keys {:?}",
            self.order_violations
        );
    }

    pub fn summary(&self) -> String {
        format!(
            "committed={} uncertain={} delivered={} lost={} duplicates={} (all with the same id: {}) order_violations={}",
            self.committed,
            self.uncertain,
            self.delivered_distinct,
            self.lost.len(),
            self.duplicates,
            self.same_change_two_ids == 0,
            self.order_violations.len()
        )
    }
}

/// Compares the ledger with the receiver's log.
pub fn check(ledger: &Ledger, log: &[Received]) -> Report {
    let mut ok: Vec<&Received> = log
        .iter()
        .filter(|r| (200..300).contains(&r.status))
        .collect();
    ok.sort_by_key(|r| r.at);
    let mut ids_of_change: HashMap<Change, HashSet<&str>> = HashMap::new();
    let mut first_seen: HashSet<&str> = HashSet::new();
    let mut versions_by_key: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut duplicates = 0;
    for r in &ok {
        let body = r.json();
        let (Some(key), Some(version)) = (
            body["key"]["id"].as_i64(),
            body["after"]["version"].as_i64(),
        ) else {
            continue;
        };
        ids_of_change
            .entry((key, version))
            .or_default()
            .insert(r.id.as_str());
        if first_seen.insert(r.id.as_str()) {
            versions_by_key.entry(key).or_default().push(version);
        } else {
            duplicates += 1;
        }
    }
    let committed = ledger.committed();
    let lost: Vec<Change> = committed
        .iter()
        .copied()
        .filter(|c| !ids_of_change.contains_key(c))
        .collect();
    let same_change_two_ids = ids_of_change.values().filter(|ids| ids.len() > 1).count();
    let mut order_violations: Vec<i64> = versions_by_key
        .iter()
        .filter(|(_, v)| v.windows(2).any(|w| w[0] >= w[1]))
        .map(|(k, _)| *k)
        .collect();
    order_violations.sort_unstable();
    Report {
        committed: committed.len(),
        uncertain: ledger.uncertain(),
        delivered_distinct: first_seen.len(),
        lost,
        duplicates,
        same_change_two_ids,
        order_violations,
    }
}
