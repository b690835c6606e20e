//! Two hookrelay processes on one store: leases keep any delivery from being attempted
//! twice at once, the source lock keeps one reader, and every event arrives.

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_store_without_double_delivery() {
    let env = Env::new().await;
    let a = start_relay(env.config()).await;
    let b = start_relay(env.config()).await;
    let api = Api::new(a.api_addr);
    // A slow receiver widens the window in which a double claim would show.
    let rx = TestReceiver::scripted(Arc::new(|_, _| Reply {
        status: 200,
        delay: Duration::from_millis(20),
        ..Default::default()
    }))
    .await;
    api.subscribe(&rx.url, json!({})).await;
    let db = env.source.connect().await;
    for chunk in 0..6 {
        db.batch_execute(&format!(
            "insert into orders (id, status) select g, 'new' from generate_series({}, {}) g",
            chunk * 100 + 1,
            chunk * 100 + 100
        ))
        .await
        .unwrap();
    }
    rx.wait_delivered(600, Duration::from_secs(120)).await;
    let all = rx.requests();
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for r in &all {
        *per_id.entry(r.id.as_str()).or_default() += 1;
    }
    assert_eq!(per_id.len(), 600);
    let doubles: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubles.is_empty(), "delivered more than once: {doubles:?}");

    let store = env.store.connect().await;
    // Outcomes are recorded in batches just after the receiver answers.
    eventually(
        "all leases released after success",
        Duration::from_secs(30),
        || async {
            let held: i64 = store
            .query_one(
                "select (select count(*) from hookrelay.deliveries where lease_owner is not null)
                      + (select count(*) from hookrelay.runs)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
            (held == 0).then_some(())
        },
    )
    .await;
    let events: i64 = store
        .query_one("select count(*) from hookrelay.events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 600);
    a.shutdown().await;
    b.shutdown().await;
}
