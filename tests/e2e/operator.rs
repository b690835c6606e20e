//! The operator surface: `/v1/sources` and `/metrics`.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_show_running_standby_and_error() {
    let env = Env::new().await;
    let (a, api, rx, _) = env.relay_with_receiver().await;
    env.source
        .connect()
        .await
        .batch_execute("insert into orders (id, status) values (1, 'new'), (2, 'new')")
        .await
        .unwrap();
    rx.wait_delivered(2, WAIT).await;

    let shop: Value = eventually("the source to report its events", WAIT, || async {
        let (status, body) = api.call(Method::GET, "/v1/sources/shop", None).await;
        assert_eq!(status, 200, "{body}");
        (body["events_captured"] == 2 && !body["position"].is_null()).then_some(body)
    })
    .await;
    assert_eq!(shop["kind"], "postgres");
    assert_eq!(shop["state"], "running");
    assert_eq!(shop["ready"], true);
    assert_eq!(shop["leader"]["is_this_process"], true, "{shop}");
    assert!(shop["lag_seconds"].as_f64().is_some(), "{shop}");
    // Caught up and idle is not behind: lag is 0, and stays 0 while nothing happens.
    eventually(
        "lag 0 once the reader has read everything",
        WAIT,
        || async {
            let (_, body) = api.call(Method::GET, "/v1/sources/shop", None).await;
            (body["lag_seconds"].as_f64() == Some(0.0)).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, idle) = api.call(Method::GET, "/v1/sources/shop", None).await;
    assert_eq!(idle["lag_seconds"].as_f64(), Some(0.0), "{idle}");
    assert!(!idle["last_event_at"].is_null(), "{idle}");
    assert!(shop["last_error"].is_null(), "{shop}");

    // A second process on the same store waits on standby behind the leader.
    let b = start_relay(env.config()).await;
    let api_b = Api::new(b.api_addr);
    let (_, list) = api_b.call(Method::GET, "/v1/sources", None).await;
    let view = &list["data"][0];
    assert_eq!(view["name"], "shop");
    assert_eq!(view["state"], "standby", "{list}");
    assert!(
        view["lag_seconds"].is_null(),
        "only the reader knows: {list}"
    );
    assert!(view["leader"]["process"].is_string(), "{list}");

    // A source whose database does not exist is in `error`, with the cause.
    let mut cfg = env.config();
    cfg.sources[0].name = "gone".into();
    cfg.sources[0].url = "postgres://postgres@127.0.0.1:5432/no_such_database_here".into();
    let c = hookrelay::Relay::start(cfg).await.expect("relay starts");
    let api_c = Api::new(c.api_addr);
    let gone: Value = eventually("the broken source to report an error", WAIT, || async {
        let (_, body) = api_c.call(Method::GET, "/v1/sources/gone", None).await;
        (body["state"] == "error").then_some(body)
    })
    .await;
    assert!(
        gone["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("no_such_database_here"),
        "{gone}"
    );
    assert!(gone["errors"].as_u64().unwrap_or(0) >= 1, "{gone}");
    let (status, body) = api_c.call(Method::GET, "/v1/sources/nope", None).await;
    assert_eq!(status, 404, "{body}");

    c.shutdown().await;
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_workload() {
    let env = Env::new().await;
    let mut cfg = env.config();
    cfg.dispatch.max_attempts = 100; // the failing endpoint stays `retrying`
    let relay = start_relay(cfg).await;
    let api = Api::new(relay.api_addr);
    let ok = TestReceiver::start().await;
    let ok_sub = api.subscribe(&ok.url, serde_json::json!({})).await;
    let bad = TestReceiver::scripted(std::sync::Arc::new(|_, _| Reply::status(500))).await;
    let bad_sub = api.subscribe(&bad.url, serde_json::json!({})).await;
    let (ok_id, bad_id) = (
        ok_sub["id"].as_str().unwrap(),
        bad_sub["id"].as_str().unwrap(),
    );
    env.source
        .connect()
        .await
        .batch_execute(
            "insert into orders (id, status) select g, 'new' from generate_series(1, 3) g",
        )
        .await
        .unwrap();
    ok.wait_delivered(3, WAIT).await;
    bad.wait_for("two attempts of each failing delivery", WAIT, |r| {
        r.len() >= 6
    })
    .await;

    let url = format!("{}/metrics", api.base);
    let text = eventually("the counts in /metrics", WAIT, || async {
        let resp = reqwest::get(&url).await.ok()?; // no token needed
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.ok()?;
        let done = sample(&text, &format!(
            "hookrelay_delivery_attempts_total{{subscription_id=\"{ok_id}\",outcome=\"succeeded\"}}"
        )) == Some(3.0)
            && sample(&text, &format!(
                "hookrelay_delivery_attempts_total{{subscription_id=\"{bad_id}\",outcome=\"retrying\"}}"
            ))
            .is_some_and(|n| n >= 6.0);
        done.then_some(text)
    })
    .await;
    assert_eq!(
        sample(
            &text,
            "hookrelay_events_captured_total{source=\"shop\",kind=\"postgres\"}"
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "hookrelay_source_ready{source=\"shop\",kind=\"postgres\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                "hookrelay_backlog_deliveries{{subscription_id=\"{bad_id}\",status=\"retrying\"}}"
            )
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                "hookrelay_backlog_deliveries{{subscription_id=\"{ok_id}\",status=\"pending\"}}"
            )
        ),
        None,
        "nothing open for the healthy endpoint"
    );
    assert!(
        sample(&text, "hookrelay_attempt_duration_seconds_count").is_some_and(|n| n >= 9.0),
        "{text}"
    );
    assert!(
        sample(&text, "hookrelay_source_lag_seconds{source=\"shop\"}").is_some(),
        "{text}"
    );
    assert!(
        sample(&text, "hookrelay_store_connections{state=\"idle\"}").is_some(),
        "{text}"
    );
    assert!(
        text.contains("# TYPE hookrelay_events_captured_total counter\n"),
        "Prometheus text: a counter's TYPE names its samples"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_send_reaches_the_endpoint_signed_and_reports_the_answer() {
    let env = Env::new().await;
    let (relay, api, rx, sub) = env.relay_with_receiver().await;
    let id = sub["id"].as_str().unwrap();
    let (status, result) = api
        .call(Method::POST, &format!("/v1/subscriptions/{id}/test"), None)
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["succeeded"], true, "{result}");
    assert_eq!(result["status_code"], 200);
    let got = rx.requests();
    assert_eq!(got.len(), 1, "sent once, at once");
    assert_eq!(got[0].json()["type"], "hookrelay.test");
    assert_eq!(got[0].id, result["event_id"].as_str().unwrap());
    assert!(verify_signature(sub["secret"].as_str().unwrap(), &got[0]));

    let failing = TestReceiver::scripted(std::sync::Arc::new(|_, _| Reply::status(503))).await;
    let bad = api.subscribe(&failing.url, serde_json::json!({})).await;
    let (status, result) = api
        .call(
            Method::POST,
            &format!("/v1/subscriptions/{}/test", bad["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(
        status, 200,
        "the test ran; the endpoint failed it: {result}"
    );
    assert_eq!(result["succeeded"], false);
    assert_eq!(result["status_code"], 503);

    let (status, _) = api
        .call(Method::POST, "/v1/subscriptions/sub_nope/test", None)
        .await;
    assert_eq!(status, 404);
    let (_, deliveries) = api.call(Method::GET, "/v1/deliveries", None).await;
    assert_eq!(
        deliveries["data"],
        serde_json::json!([]),
        "test sends are not stored"
    );
    relay.shutdown().await;
}

/// The one `bigint` a store query returns.
async fn count(store_db: &tokio_postgres::Client, sql: &str) -> i64 {
    store_db.query_one(sql, &[]).await.unwrap().get::<_, i64>(0)
}

/// Succeeded deliveries: elements of receipts (first attempts that succeeded in a
/// batch with several of their subscription's) and rows.
const SUCCEEDED: &str = "
select (select count(*) from hookrelay.deliveries where status = 'succeeded')
     + (select coalesce(sum(cardinality(delivery_ids)), 0)::bigint from hookrelay.receipts)";

/// Waits until `n` deliveries have their success recorded (outcomes are written in
/// batches just after the receiver answers).
async fn until_succeeded(store_db: &tokio_postgres::Client, n: i64) {
    eventually(&format!("{n} successes recorded"), WAIT, || async {
        (count(store_db, SUCCEEDED).await == n).then_some(())
    })
    .await;
}

/// One retention pass keeping succeeded deliveries for 7 days and failed ones for 30.
async fn prune_week_and_month(store: &hookrelay_store::Store) -> hookrelay_store::Pruned {
    let day = Duration::from_secs(24 * 3600);
    store
        .prune(day * 7, day * 30)
        .await
        .unwrap()
        .expect("no other pruner")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_old_finished_deliveries_and_their_events_only() {
    let env = Env::new().await;
    let relay = start_relay(env.config()).await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::start().await;
    api.subscribe(
        &rx.url,
        serde_json::json!({"event_types": ["orders.insert"]}),
    )
    .await;
    let db = env.source.connect().await;
    let store_db = env.store.connect().await;
    // Rows 1-3 succeed first; their successes (in receipts or on their rows) are
    // then made 8 days old.
    db.batch_execute(
        "insert into orders (id, status) select g, 'new' from generate_series(1, 3) g",
    )
    .await
    .unwrap();
    rx.wait_delivered(3, WAIT).await;
    until_succeeded(&store_db, 3).await;
    store_db
        .batch_execute(
            "update hookrelay.receipts set recorded_at = now() - interval '8 days';
             update hookrelay.deliveries set updated_at = now() - interval '8 days'
              where status = 'succeeded'",
        )
        .await
        .unwrap();
    db.batch_execute(
        "insert into orders (id, status) select g, 'new' from generate_series(4, 6) g;
         update orders set status = 'seen' where id = 1",
    )
    .await
    .unwrap();
    rx.wait_delivered(6, WAIT).await;
    until_succeeded(&store_db, 6).await;
    // Event 4 also has a delivery that failed 8 days ago (within 30d), and the update
    // event (no subscriber matched it) is 8 days old.
    store_db
        .batch_execute(
            "insert into hookrelay.deliveries (event_seq, subscription_id, status, attempts, updated_at)
             select d.seq, r.subscription_id, 'failed', 5, now() - interval '8 days'
               from hookrelay.events d, (select id as subscription_id from hookrelay.subscriptions) r
              where d.body::jsonb -> 'key' ->> 'id' = '4' and d.event_type = 'orders.insert';
             update hookrelay.events set deliveries_left = deliveries_left + 1
              where body::jsonb -> 'key' ->> 'id' = '4' and event_type = 'orders.insert';
             update hookrelay.events set created_at = now() - interval '8 days'
              where event_type = 'orders.update'",
        )
        .await
        .unwrap();
    let store = hookrelay_store::Store::connect(&env.store.url(), 2).unwrap();
    let pruned = prune_week_and_month(&store).await;
    assert_eq!(
        pruned,
        hookrelay_store::Pruned { deliveries: 3, attempts: 3, events: 4 },
        "3 old succeeded deliveries with their attempts and events, and the event nobody subscribed to"
    );
    assert_eq!(
        count(&store_db, SUCCEEDED).await,
        3,
        "the young successes stay"
    );
    assert_eq!(
        count(&store_db, "select count(*) from hookrelay.events").await,
        3
    );
    assert_eq!(
        count(
            &store_db,
            "select count(*) from hookrelay.deliveries where status = 'failed'"
        )
        .await,
        1,
        "a failed delivery is kept for 30 days"
    );
    let again = prune_week_and_month(&store).await;
    assert_eq!(
        again,
        hookrelay_store::Pruned::default(),
        "nothing left to prune"
    );
    relay.shutdown().await;
}

/// An event fanned out to two subscriptions stays while either keeps a delivery of
/// it: retention and a subscription's delete each take theirs off the event's count
/// (sql/V11), and the event goes with the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stays_until_its_last_delivery_goes() {
    let env = Env::new().await;
    let relay = start_relay(env.config()).await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::start().await;
    let only_inserts = serde_json::json!({"event_types": ["orders.insert"]});
    let first = api.subscribe(&rx.url, only_inserts.clone()).await;
    let second = api.subscribe(&rx.url, only_inserts).await;
    let first = first["id"].as_str().unwrap().to_owned();
    let second = second["id"].as_str().unwrap().to_owned();
    env.source
        .connect()
        .await
        .batch_execute("insert into orders (id, status) values (1, 'new'), (2, 'new')")
        .await
        .unwrap();
    let store_db = env.store.connect().await;
    until_succeeded(&store_db, 4).await;
    let left = "select coalesce(sum(deliveries_left), 0)::bigint from hookrelay.events";
    assert_eq!(
        count(&store_db, left).await,
        4,
        "each event counts its two deliveries"
    );

    store_db
        .execute(
            "with r as (
                 update hookrelay.receipts set recorded_at = now() - interval '8 days'
                  where subscription_id = $1
             )
             update hookrelay.deliveries set updated_at = now() - interval '8 days'
              where subscription_id = $1",
            &[&first],
        )
        .await
        .unwrap();
    let store = hookrelay_store::Store::connect(&env.store.url(), 2).unwrap();
    let pruned = prune_week_and_month(&store).await;
    assert_eq!(
        pruned,
        hookrelay_store::Pruned {
            deliveries: 2,
            attempts: 2,
            events: 0
        },
        "the first subscription's old deliveries go; the events still have the second's"
    );
    assert_eq!(count(&store_db, left).await, 2);

    let (status, body) = api
        .call(Method::DELETE, &format!("/v1/subscriptions/{second}"), None)
        .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        count(&store_db, left).await,
        0,
        "the delete took its deliveries off"
    );
    assert_eq!(
        count(&store_db, "select count(*) from hookrelay.events").await,
        2,
        "events without deliveries wait for the succeeded retention"
    );
    let young = prune_week_and_month(&store).await;
    assert_eq!(young, hookrelay_store::Pruned::default(), "still young");
    store_db
        .batch_execute("update hookrelay.events set created_at = now() - interval '8 days'")
        .await
        .unwrap();
    let old = prune_week_and_month(&store).await;
    assert_eq!(
        old,
        hookrelay_store::Pruned {
            deliveries: 0,
            attempts: 0,
            events: 2
        }
    );
    assert_eq!(
        count(&store_db, "select count(*) from hookrelay.events").await,
        0
    );
    relay.shutdown().await;
}
