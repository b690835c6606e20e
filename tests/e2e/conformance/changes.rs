//! Changes across process failures: one writer inserts a few keys and then bumps
//! them round-robin, keeping a ledger of every committed (key, version). Whatever
//! happens to hookrelay meanwhile (`kill -9` at random moments, a leader stopping
//! while a standby waits), every version of every key arrives, in commit order per
//! key, and a change delivered twice carries its first webhook-id both times.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use hookrelay::Relay;
use hookrelay_sources::SourceState;
use serde_json::json;

use super::Fixture;
use crate::harness::*;

const KEYS: i64 = 10;
const WAIT: Duration = Duration::from_secs(60);

/// Every committed (key, version), in commit order.
type Ledger = Arc<Mutex<Vec<(i64, i64)>>>;

/// The writer: inserts keys `1..=KEYS` (version 0), then bumps them round-robin
/// every 5 ms until stopped.
struct LedgerWriter {
    ledger: Ledger,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl LedgerWriter {
    async fn start<F: Fixture>(fx: &F) -> Self {
        let ledger: Ledger = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut w = fx.writer().await;
        let task = {
            let (ledger, stop) = (ledger.clone(), stop.clone());
            tokio::spawn(async move {
                for id in 1..=KEYS {
                    w.insert(id).await;
                    ledger.lock().unwrap().push((id, 0));
                }
                let mut pace = tokio::time::interval(Duration::from_millis(5));
                let mut i = 0i64;
                while !stop.load(Ordering::SeqCst) {
                    pace.tick().await;
                    let (id, version) = (i % KEYS + 1, i / KEYS + 1);
                    w.bump(id).await;
                    ledger.lock().unwrap().push((id, version));
                    i += 1;
                }
            })
        };
        Self { ledger, stop, task }
    }

    fn committed(&self) -> usize {
        self.ledger.lock().unwrap().len()
    }

    /// Stops it; every committed (key, version).
    async fn stop(self) -> Vec<(i64, i64)> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("writer");
        let committed = self.ledger.lock().unwrap().clone();
        assert!(
            committed.len() > 100,
            "the writer made progress ({})",
            committed.len()
        );
        committed
    }
}

/// What arrived against what was committed: each change under one webhook-id, every
/// version of every key in commit order.
fn assert_all_in_key_order<F: Fixture>(fx: &F, got: &[Received], committed: Vec<(i64, i64)>) {
    let mut ids_of: HashMap<String, HashSet<String>> = HashMap::new();
    for r in got {
        let body = r.json();
        ids_of
            .entry(body["source"]["position"].as_str().unwrap().to_owned())
            .or_default()
            .insert(r.id.clone());
    }
    let split: Vec<_> = ids_of.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        split.is_empty(),
        "a change under two webhook-ids: {split:?}"
    );
    assert_eq!(
        ids_of.len(),
        committed.len(),
        "one event per committed write, no more"
    );
    let mut seen = HashSet::new();
    let mut arrived: HashMap<i64, Vec<i64>> = HashMap::new();
    for r in got {
        if seen.insert(r.id.clone()) {
            let body = r.json();
            arrived
                .entry(fx.key_of(&body))
                .or_default()
                .push(body["after"]["v"].as_i64().expect("v"));
        }
    }
    let mut expected: HashMap<i64, Vec<i64>> = HashMap::new();
    for (id, v) in committed {
        expected.entry(id).or_default().push(v);
    }
    assert_eq!(
        arrived, expected,
        "every version of every key, in commit order"
    );
}

fn state(relay: &Relay) -> SourceState {
    relay.sources()[0].1.snapshot().state
}

/// `kill -9` of the hookrelay binary at random moments while the writer commits;
/// then one more process delivers the rest.
pub async fn kill_9_loses_nothing<F: Fixture>(fx: F) {
    fx.fill(0).await;
    let store = TestDb::new("store").await;
    let cfg = test_config(&store.url(), &fx.source_toml());
    let dir =
        std::env::temp_dir().join(format!("hookrelay-kill-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg_file = write_config(&cfg, &dir);
    let rx = TestReceiver::start().await;
    {
        // Subscribe, and let the source start capturing (its first checkpoint is
        // stored before it runs), through a short-lived in-process relay.
        let relay = start_relay(cfg.clone()).await;
        Api::new(relay.api_addr)
            .subscribe(&rx.url, json!({ "event_types": null }))
            .await;
        eventually("the source to capture", WAIT, || async {
            (state(&relay) == SourceState::Running).then_some(())
        })
        .await;
        relay.shutdown().await;
    }
    let writer = LedgerWriter::start(&fx).await;
    kill_9_at_random_moments(&cfg_file, 3, 300..1500).await;
    let committed = writer.stop().await;

    let mut child = spawn_run(&cfg_file);
    let got = rx
        .wait_delivered(committed.len(), Duration::from_secs(120))
        .await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_all_in_key_order(&fx, &got, committed);
}

/// Two processes on one store: one leads the source, the other stands by; when the
/// leader stops, the standby takes over from the stored checkpoint.
pub async fn standby_takes_over<F: Fixture>(fx: F) {
    fx.fill(0).await;
    let store = TestDb::new("store").await;
    let cfg = test_config(&store.url(), &fx.source_toml());
    let a = start_relay(cfg.clone()).await;
    let rx = TestReceiver::start().await;
    Api::new(a.api_addr)
        .subscribe(&rx.url, json!({ "event_types": null }))
        .await;
    let b = start_relay(cfg).await;
    let a_leads = eventually("one leader and one standby", WAIT, || async {
        match (state(&a), state(&b)) {
            (SourceState::Running, SourceState::Standby) => Some(true),
            (SourceState::Standby, SourceState::Running) => Some(false),
            _ => None,
        }
    })
    .await;
    let (leader, standby) = if a_leads { (a, b) } else { (b, a) };
    if fx.readers().await.is_some() {
        eventually("only the leader reading the source", WAIT, || async {
            (fx.readers().await == Some(1)).then_some(())
        })
        .await;
    }

    let writer = LedgerWriter::start(&fx).await;
    rx.wait_delivered(50, WAIT).await;
    leader.shutdown().await;
    let at_handover = writer.committed();
    eventually("the standby to take over", WAIT, || async {
        (state(&standby) == SourceState::Running).then_some(())
    })
    .await;
    // Changes committed after the handover are read by the new leader.
    eventually("writes after the handover", WAIT, || async {
        (writer.committed() >= at_handover + 100).then_some(())
    })
    .await;
    let committed = writer.stop().await;
    let got = rx.wait_delivered(committed.len(), WAIT).await;
    assert_all_in_key_order(&fx, &got, committed);
    standby.shutdown().await;
}
