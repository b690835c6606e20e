//! Failpoints (compiled in with `--features hookrelay/failpoints`): the process
//! "dies" between the store commit and the source acknowledgement, and between a 2xx
//! and recording it. Nothing is lost; the re-sent delivery keeps its id.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_store_commit_and_journal_delete_duplicates_nothing() {
    let env = Env::new().await;
    let scenario = fail::FailScenario::setup();
    let (relay, _api, rx, _sub) = env.relay_with_receiver().await;
    // The next two batches commit to the store, then the reader fails before deleting
    // them from the journal; it reconnects and reads them again.
    fail::cfg("source.before_ack", "2*return").unwrap();
    let db = env.source.connect().await;
    db.batch_execute("insert into orders (id, status) select g, 'x' from generate_series(1, 50) g")
        .await
        .unwrap();
    db.batch_execute("insert into orders (id, status) values (51, 'y')")
        .await
        .unwrap();
    let got = rx.wait_delivered(51, Duration::from_secs(60)).await;
    // The re-read rows dedupe on their event id in the store: no second delivery.
    let marker = env.source.connect().await;
    marker
        .batch_execute("insert into orders (id, status) values (52, 'marker')")
        .await
        .unwrap();
    rx.wait_delivered(52, Duration::from_secs(60)).await;
    assert_eq!(
        rx.requests().len(),
        52,
        "each change delivered exactly once"
    );
    assert_eq!(got.len(), 51);
    // Delivery can overtake the acknowledgement (the reader may still be backing off
    // after the second failpoint), so wait for the journal to be emptied.
    eventually(
        "the journal to be acknowledged",
        Duration::from_secs(30),
        || async {
            let n: i64 = db
                .query_one("select count(*) from hookrelay.journal", &[])
                .await
                .ok()?
                .get(0);
            (n == 0).then_some(())
        },
    )
    .await;
    assert_eq!(
        rx.requests().len(),
        52,
        "still exactly once after the acknowledgement"
    );
    relay.shutdown().await;
    scenario.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_2xx_and_recording_resends_with_the_same_id() {
    let env = Env::new().await;
    let scenario = fail::FailScenario::setup();
    let mut cfg = env.config();
    cfg.dispatch.timeout = Duration::from_secs(1); // lease = 9 × timeout + 5 s
    let relay = start_relay(cfg).await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::start().await;
    let sub = api.subscribe(&rx.url, json!({})).await;
    fail::cfg("dispatch.before_record", "1*return").unwrap();
    env.source
        .connect()
        .await
        .batch_execute("insert into orders (id, status) values (1, 'x')")
        .await
        .unwrap();
    let log = rx
        .wait_for(
            "the re-send after the lease expired",
            Duration::from_secs(60),
            |log| log.len() >= 2,
        )
        .await;
    assert_eq!(
        log[0].id, log[1].id,
        "the re-send carries the same webhook-id"
    );
    assert_eq!(log[0].body, log[1].body);
    let gap = log[1].at - log[0].done;
    assert!(
        gap >= Duration::from_secs(5),
        "re-sent only after the lease expired ({gap:?})"
    );
    let sub_id = sub["id"].as_str().unwrap();
    eventually(
        "the delivery to be recorded as succeeded",
        Duration::from_secs(30),
        || async {
            let (_, page) = api
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/deliveries?subscription_id={sub_id}&status=succeeded"),
                    None,
                )
                .await;
            (page["data"].as_array().map_or(0, Vec::len) == 1).then_some(())
        },
    )
    .await;
    relay.shutdown().await;
    scenario.teardown();
}

/// A source's task that panics is noticed: `/readyz` turns 503 naming it, and the
/// relay reports the failure (`hookrelay run` then shuts down and exits 1, for its
/// supervisor to restart it), instead of going on without capturing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_task_that_panics_stops_the_relay_loudly() {
    let env = Env::new().await;
    let scenario = fail::FailScenario::setup();
    let relay = start_relay(env.config()).await;
    fail::cfg("source.before_commit", "1*panic(injected for the test)").unwrap();
    env.source
        .connect()
        .await
        .batch_execute("insert into orders (id, status) values (1, 'x')")
        .await
        .unwrap();
    let what = tokio::time::timeout(Duration::from_secs(30), relay.failed())
        .await
        .expect("the failure is reported");
    assert!(
        what.contains("source shop") && what.contains("injected for the test"),
        "{what}"
    );
    let ready = reqwest::get(format!("http://{}/readyz", relay.api_addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.unwrap();
    assert!(
        body.contains("tasks-ended") && body.contains("source shop"),
        "{body}"
    );
    relay.shutdown().await;
    scenario.teardown();
}
