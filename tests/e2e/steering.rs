//! Steering subscriptions: pausing keeps events queued and resuming sends
//! them in order; the circuit breaker's state shows in the subscription and metrics.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

/// Rows written: keys 1..=5, each inserted then updated three times (version 0..=3).
const KEYS: i64 = 5;
const VERSIONS: i64 = 4;
const CHANGES: usize = (KEYS * VERSIONS) as usize;

async fn deliveries_of(api: &Api, sub: &str, status: &str) -> Vec<Value> {
    let (code, page) = api
        .call(
            Method::GET,
            &format!("/v1/deliveries?subscription_id={sub}&status={status}&limit=1000"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{page}");
    page["data"].as_array().cloned().unwrap_or_default()
}

/// Each key's versions in the order the receiver got them, asserting every webhook
/// arrived exactly once.
fn versions_by_key(received: &[Received]) -> HashMap<i64, Vec<i64>> {
    let mut ids = HashSet::new();
    let mut by_key: HashMap<i64, Vec<i64>> = HashMap::new();
    for r in received {
        assert!(ids.insert(r.id.clone()), "webhook {} sent twice", r.id);
        let body = r.json();
        let key = body["key"]["id"].as_i64().expect("key.id");
        let version = body["after"]["version"].as_i64().expect("after.version");
        by_key.entry(key).or_default().push(version);
    }
    by_key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_subscriptions_queue_events_and_send_them_in_order_once_resumed() {
    let env = Env::new().await;
    let relay = start_relay(env.config()).await;
    let api = Api::new(relay.api_addr);
    // Paused after creation, and created paused.
    let paused_rx = TestReceiver::start().await;
    let paused = api.subscribe(&paused_rx.url, json!({})).await;
    let paused_id = paused["id"].as_str().unwrap().to_owned();
    let (code, body) = api
        .call(
            Method::PATCH,
            &format!("/v1/subscriptions/{paused_id}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!((code, &body["enabled"]), (200, &json!(false)), "{body}");
    let born_rx = TestReceiver::start().await;
    let born = api.subscribe(&born_rx.url, json!({"enabled": false})).await;
    let born_id = born["id"].as_str().unwrap().to_owned();
    // An enabled subscription beside them: once it has everything, the dispatcher has
    // had every chance to send the paused ones' too.
    let marker_rx = TestReceiver::start().await;
    api.subscribe(&marker_rx.url, json!({})).await;

    let db = env.source.connect().await;
    db.batch_execute(&format!(
        "insert into orders (id, status) select g, 'new' from generate_series(1, {KEYS}) g"
    ))
    .await
    .unwrap();
    for v in 1..VERSIONS {
        // One transaction per round, keys in a shuffled order.
        db.batch_execute(&format!(
            "update orders set version = {v}, status = 'v{v}' where id in (select g from generate_series(1, {KEYS}) g order by random())"
        ))
        .await
        .unwrap();
    }
    marker_rx.wait_delivered(CHANGES, WAIT).await;
    for (sub, rx) in [(&paused_id, &paused_rx), (&born_id, &born_rx)] {
        let pending = eventually("the paused subscription's deliveries", WAIT, || async {
            let pending = deliveries_of(&api, sub, "pending").await;
            (pending.len() == CHANGES).then_some(pending)
        })
        .await;
        assert!(
            pending.iter().all(|d| d["attempt_count"] == 0),
            "{pending:?}"
        );
        assert!(
            rx.requests().is_empty(),
            "a paused subscription is sent nothing"
        );
    }

    for sub in [&paused_id, &born_id] {
        let (code, body) = api
            .call(
                Method::PATCH,
                &format!("/v1/subscriptions/{sub}"),
                Some(json!({"enabled": true})),
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }
    for (sub, rx) in [(&paused_id, &paused_rx), (&born_id, &born_rx)] {
        rx.wait_delivered(CHANGES, WAIT).await;
        eventually("every delivery recorded as succeeded", WAIT, || async {
            (deliveries_of(&api, sub, "succeeded").await.len() == CHANGES).then_some(())
        })
        .await;
        let by_key = versions_by_key(&rx.requests());
        assert_eq!(by_key.len(), KEYS as usize);
        for (key, versions) in by_key {
            assert_eq!(
                versions,
                (0..VERSIONS).collect::<Vec<_>>(),
                "key {key} in commit order"
            );
        }
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_opens_the_circuit_and_its_recovery_closes_it() {
    let env = Env::new().await;
    let mut cfg = env.config();
    cfg.dispatch.max_attempts = 100; // the deliveries stay `retrying` while it fails
    let relay = start_relay(cfg).await;
    let api = Api::new(relay.api_addr);
    let failing = Arc::new(AtomicBool::new(true));
    let script_failing = failing.clone();
    let rx = TestReceiver::scripted(Arc::new(move |_, _| {
        if script_failing.load(Ordering::SeqCst) {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    }))
    .await;
    let sub = api.subscribe(&rx.url, json!({})).await;
    let id = sub["id"].as_str().unwrap().to_owned();
    assert_eq!(sub["circuit"]["state"], "closed", "{sub}");
    assert_eq!(sub["circuit"]["consecutive_failures"], 0, "{sub}");

    // Ten keys, so ten deliveries fail without waiting on each other.
    env.source
        .connect()
        .await
        .batch_execute(
            "insert into orders (id, status) select g, 'new' from generate_series(1, 10) g",
        )
        .await
        .unwrap();
    let open = eventually("the circuit to open", WAIT, || async {
        let (_, s) = api
            .call(Method::GET, &format!("/v1/subscriptions/{id}"), None)
            .await;
        (s["circuit"]["state"] == "open").then_some(s)
    })
    .await;
    let circuit = &open["circuit"];
    assert!(
        circuit["consecutive_failures"].as_u64() >= Some(10),
        "{open}"
    );
    assert!(
        circuit["opened_at"].is_string() && circuit["open_until"].is_string(),
        "{open}"
    );
    let metrics = format!("{}/metrics", api.base);
    let series = format!("hookrelay_subscription_circuit_open{{subscription_id=\"{id}\"}}");
    let metric = |want: f64| {
        let (metrics, series) = (metrics.clone(), series.clone());
        async move {
            let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
            (sample(&text, &series) == Some(want)).then_some(())
        }
    };
    eventually("the circuit_open gauge at 1", WAIT, || metric(1.0)).await;
    let (_, list) = api.call(Method::GET, "/v1/subscriptions", None).await;
    assert_ne!(list["data"][0]["circuit"]["state"], "closed", "{list}");

    failing.store(false, Ordering::SeqCst);
    let closed = eventually("the circuit to close again", WAIT, || async {
        let (_, s) = api
            .call(Method::GET, &format!("/v1/subscriptions/{id}"), None)
            .await;
        (s["circuit"]["state"] == "closed").then_some(s)
    })
    .await;
    assert_eq!(closed["circuit"]["consecutive_failures"], 0, "{closed}");
    assert!(closed["circuit"]["open_until"].is_null(), "{closed}");
    eventually("the circuit_open gauge back at 0", WAIT, || metric(0.0)).await;
    rx.wait_delivered(10, WAIT).await;
    relay.shutdown().await;
}
