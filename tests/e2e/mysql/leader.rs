//! Two hookrelay processes (in-process `Relay`s) on one store with one MariaDB
//! source: only the leader reads the binlog; when it shuts down the other takes the
//! source lock and goes on from the stored checkpoint, and every change committed
//! across the handover arrives, in per-key order.

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
use mysql_async::prelude::Queryable;
use serde_json::json;

use super::{exec, mysql_config, shop, MariaDbInstance};
use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);
const KEYS: i64 = 10;

fn state(relay: &Relay) -> SourceState {
    relay.sources()[0].1.snapshot().state
}

async fn binlog_readers(my: &MariaDbInstance) -> i64 {
    let mut c = my.connect("mysql").await;
    let n: i64 = c
        .query_first(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'",
        )
        .await
        .unwrap()
        .unwrap();
    let _ = c.disconnect().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reads_and_the_other_takes_over_without_loss() {
    let my = shop().await;
    let mut c = my.connect("shop").await;
    exec(
        &mut c,
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, version INT NOT NULL) ENGINE=InnoDB",
    )
    .await;
    let store = TestDb::new("store").await;
    let cfg = mysql_config(&store.url(), &my.url("shop"), &["shop.orders"], "");
    let a = start_relay(cfg.clone()).await;
    let rx = TestReceiver::start().await;
    Api::new(a.api_addr).subscribe(&rx.url, json!({})).await;
    let b = start_relay(cfg).await;

    // One leader, one standby, one binlog reader on the server.
    let a_leads = eventually("one leader and one standby", WAIT, || async {
        match (state(&a), state(&b)) {
            (SourceState::Running, SourceState::Standby) => Some(true),
            (SourceState::Standby, SourceState::Running) => Some(false),
            _ => None,
        }
    })
    .await;
    let (leader, standby) = if a_leads { (a, b) } else { (b, a) };
    eventually("exactly one binlog dump on the server", WAIT, || async {
        (binlog_readers(&my).await == 1).then_some(())
    })
    .await;
    assert_eq!(state(&standby), SourceState::Standby);

    // A writer bumps versions round-robin the whole time; `ledger` holds every
    // committed (key, version) in commit order.
    let ledger: Arc<Mutex<Vec<(i64, i64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (ledger, stop) = (ledger.clone(), stop.clone());
        let mut c = my.connect("shop").await;
        tokio::spawn(async move {
            for id in 1..=KEYS {
                exec(&mut c, &format!("INSERT INTO orders VALUES ({id}, 0)")).await;
                ledger.lock().unwrap().push((id, 0));
            }
            let mut pace = tokio::time::interval(Duration::from_millis(5));
            let mut i = 0i64;
            while !stop.load(Ordering::SeqCst) {
                pace.tick().await;
                let (id, version) = (i % KEYS + 1, i / KEYS + 1);
                exec(
                    &mut c,
                    &format!("UPDATE orders SET version = {version} WHERE id = {id}"),
                )
                .await;
                ledger.lock().unwrap().push((id, version));
                i += 1;
            }
        })
    };
    let committed = || ledger.lock().unwrap().len();

    rx.wait_delivered(50, WAIT).await;
    leader.shutdown().await;
    let at_handover = committed();
    eventually("the standby to take over", WAIT, || async {
        (state(&standby) == SourceState::Running).then_some(())
    })
    .await;
    // Changes committed after the handover are read by the new leader.
    eventually("writes after the handover", WAIT, || async {
        (committed() >= at_handover + 100).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let committed = ledger.lock().unwrap().clone();
    let got = rx.wait_delivered(committed.len(), WAIT).await;

    let mut seen = HashSet::new();
    let mut arrived: HashMap<i64, Vec<i64>> = HashMap::new();
    for r in &got {
        if seen.insert(r.id.clone()) {
            let body = r.json();
            arrived
                .entry(body["key"]["id"].as_i64().unwrap())
                .or_default()
                .push(body["after"]["version"].as_i64().unwrap());
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
    standby.shutdown().await;
}
