//! How long a delivery lives (DESIGN §1.12): a dead endpoint's deliveries end `failed`
//! once older than `dispatch.max_age`, whether or not the circuit let them be tried,
//! or after `max_attempts` when the breaker is off; a healthy neighbour gets every
//! event meanwhile, and a replay gives a failed delivery a whole life again.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::{json, Value};

use hookrelay::Relay;

use crate::harness::*;

const EVENTS: usize = 50;

async fn with_status(api: &Api, sub_id: &str, status: &str) -> Vec<Value> {
    let (code, page) = api
        .call(
            Method::GET,
            &format!("/v1/deliveries?subscription_id={sub_id}&status={status}&limit=1000"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{page}");
    page["data"].as_array().cloned().unwrap_or_default()
}

/// A relay, a dead endpoint and a healthy one, both subscribed, and when the rows
/// were inserted.
struct Scene {
    _env: Env,
    relay: Relay,
    api: Api,
    dead: TestReceiver,
    dead_sub: String,
    /// Paused from the start: its deliveries wait, untried.
    paused_sub: String,
    healthy: TestReceiver,
    t0: Instant,
}

/// A relay with `dispatch` settings on top of the test ones, a dead endpoint (always
/// 500) and a healthy one, both subscribed; then `EVENTS` inserted rows.
async fn dead_and_healthy(edit: impl FnOnce(&mut hookrelay_core::config::DispatchConfig)) -> Scene {
    let env = Env::new().await;
    let mut cfg = env.config();
    edit(&mut cfg.dispatch);
    let relay = start_relay(cfg).await;
    let api = Api::new(relay.api_addr);
    let dead = TestReceiver::scripted(Arc::new(|_, _| Reply::status(500))).await;
    let healthy = TestReceiver::start().await;
    let dead_sub = api.subscribe(&dead.url, json!({})).await;
    api.subscribe(&healthy.url, json!({})).await;
    let paused = api
        .subscribe(&healthy.url, json!({ "enabled": false }))
        .await;
    let t0 = Instant::now();
    env.source
        .connect()
        .await
        .batch_execute(&format!(
            "insert into orders (id, status) select g, 'new' from generate_series(1, {EVENTS}) g"
        ))
        .await
        .expect("insert");
    Scene {
        _env: env,
        relay,
        api,
        dead,
        dead_sub: dead_sub["id"].as_str().expect("id").to_owned(),
        paused_sub: paused["id"].as_str().expect("id").to_owned(),
        healthy,
        t0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoints_deliveries_fail_at_max_age_with_the_circuit_open() {
    let Scene {
        _env,
        relay,
        api,
        dead,
        dead_sub,
        paused_sub,
        healthy,
        t0,
    } = dead_and_healthy(|d| {
        d.max_attempts = 1000;
        d.max_age = Duration::from_secs(20);
        // A short cool-down: the replay below waits for one probe.
        d.circuit.max_cooldown = Duration::from_secs(2);
    })
    .await;
    let sub_id = dead_sub.as_str();
    healthy
        .wait_delivered(EVENTS, Duration::from_secs(30))
        .await;

    let failed = eventually(
        "every delivery to the dead endpoint to be failed",
        Duration::from_secs(60),
        || async {
            let f = with_status(&api, sub_id, "failed").await;
            (f.len() == EVENTS).then_some(f)
        },
    )
    .await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(19),
        "none fails before its max age ({took:?})"
    );
    // The first claim sent each once; then the circuit opened and let one probe
    // through per cool-down (without it, 20 s of 50-400 ms backoff is dozens of
    // attempts each). The last error says why they ended anyway.
    let attempted = dead.requests().len();
    assert!(
        attempted < EVENTS * 2,
        "the circuit held the backlog back ({attempted} attempts)"
    );
    for d in &failed {
        let err = d["last_error"].as_str().unwrap_or_default();
        assert!(
            err.starts_with("expired: not delivered within dispatch.max_age (20s)"),
            "{d}"
        );
    }
    assert_eq!(
        healthy.distinct_delivered(),
        EVENTS,
        "the neighbour got all"
    );
    // A paused subscription's deliveries age too: never tried, failed all the same.
    let paused = eventually(
        "the paused subscription's deliveries to be failed",
        Duration::from_secs(10),
        || async {
            let f = with_status(&api, &paused_sub, "failed").await;
            (f.len() == EVENTS).then_some(f)
        },
    )
    .await;
    assert!(paused.iter().all(|d| d["attempt_count"] == 0
        && d["last_error"] == "expired: not delivered within dispatch.max_age (20s)"));

    // A replay starts a failed delivery's life over: the endpoint is back, and each
    // is delivered once the circuit's next probe succeeds, not expired again.
    dead.set_script(Arc::new(|_, _| Reply::ok()));
    let (code, body) = api
        .call(
            Method::POST,
            "/v1/replay",
            Some(json!({ "subscription_id": sub_id, "status": "failed" })),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["replayed"], EVENTS);
    dead.wait_delivered(EVENTS, Duration::from_secs(20)).await;
    let ok = eventually("the replays recorded", Duration::from_secs(20), || async {
        let s = with_status(&api, sub_id, "succeeded").await;
        (s.len() == EVENTS).then_some(s)
    })
    .await;
    assert_eq!(ok.len(), EVENTS);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_breaker_off_a_dead_endpoints_deliveries_use_their_attempts_at_once() {
    let Scene {
        _env,
        relay,
        api,
        dead,
        dead_sub,
        healthy,
        t0,
        ..
    } = dead_and_healthy(|d| {
        d.max_attempts = 3;
        d.circuit.failures = 0;
    })
    .await;
    let sub_id = dead_sub.as_str();
    let failed = eventually(
        "every delivery to the dead endpoint to be failed",
        Duration::from_secs(30),
        || async {
            let f = with_status(&api, sub_id, "failed").await;
            (f.len() == EVENTS).then_some(f)
        },
    )
    .await;
    let took = t0.elapsed();
    // Every delivery was tried max_attempts times: no circuit held any back (with
    // the default breaker, 10 failures in a row would have opened it).
    let counts: Vec<&Value> = failed.iter().map(|d| &d["attempt_count"]).collect();
    assert!(counts.iter().all(|n| **n == 3), "{counts:?}");
    assert_eq!(dead.requests().len(), EVENTS * 3);
    let errors: Vec<&Value> = failed.iter().map(|d| &d["last_error"]).collect();
    assert!(errors.iter().all(|e| *e == "HTTP 500"), "{errors:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    healthy
        .wait_delivered(EVENTS, Duration::from_secs(30))
        .await;
    relay.shutdown().await;
}
