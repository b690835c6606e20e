//! A poor man's profiler for Postgres (opt-in, `--pg-activity`): samples
//! `pg_stat_activity` of the bench databases every 10 ms and counts active backends
//! by database, wait event (or `CPU`) and the statement's first words. A count
//! divided by the number of samples is the average number of backends busy on that
//! statement, so the top entries say where the server's time goes.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde::Serialize;

use crate::db::connect;

const SAMPLE: &str = "
select case when datname = $1 then 'store' else 'source' end,
       coalesce(wait_event_type || ':' || wait_event, 'CPU'),
       left(regexp_replace(query, '\\s+', ' ', 'g'), 90)
  from pg_stat_activity
 where datname in ($1, $2) and state = 'active' and pid <> pg_backend_pid()";

#[derive(Debug, Clone, Serialize)]
pub struct ActivityEntry {
    pub db: String,
    pub wait: String,
    pub query: String,
    /// Average number of backends in this state.
    pub avg_active: f64,
}

#[derive(Default)]
struct Counts {
    samples: u64,
    by_key: HashMap<(String, String, String), u64>,
}

pub struct ActivitySampler {
    stop: Arc<AtomicBool>,
    counts: Arc<Mutex<Counts>>,
    task: tokio::task::JoinHandle<()>,
}

impl ActivitySampler {
    pub async fn start(pg: &str) -> anyhow::Result<Self> {
        let client = connect(&format!("{pg}/postgres")).await?;
        let stmt = client.prepare(SAMPLE).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let counts: Arc<Mutex<Counts>> = Arc::default();
        let (halt, into) = (stop.clone(), counts.clone());
        let task = tokio::spawn(async move {
            while !halt.load(Ordering::Relaxed) {
                let dbs = [crate::db::store_db(), crate::db::source_db()];
                if let Ok(rows) = client.query(&stmt, &[&dbs[0], &dbs[1]]).await {
                    if let Ok(mut c) = into.lock() {
                        c.samples += 1;
                        for r in rows {
                            let key = (
                                r.get(0),
                                r.get(1),
                                r.get::<_, Option<String>>(2).unwrap_or_default(),
                            );
                            *c.by_key.entry(key).or_default() += 1;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Ok(Self { stop, counts, task })
    }

    /// Stops; the `top` busiest entries.
    pub async fn finish(self, top: usize) -> Vec<ActivityEntry> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let Ok(c) = self.counts.lock() else {
            return Vec::new();
        };
        let n = c.samples.max(1) as f64;
        let mut out: Vec<ActivityEntry> = c
            .by_key
            .iter()
            .map(|((db, wait, query), k)| ActivityEntry {
                db: db.clone(),
                wait: wait.clone(),
                query: query.clone(),
                avg_active: *k as f64 / n,
            })
            .collect();
        out.sort_by(|a, b| b.avg_active.total_cmp(&a.avg_active));
        out.truncate(top);
        out
    }
}
