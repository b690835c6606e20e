//! Filters on row content (DESIGN §1.9): several subscriptions on one table, each
//! given exactly the changes its CEL filter selects, before and after a PATCH; an
//! expression that fails for an event is false for it and counted, and holds nothing
//! else up.

use std::{collections::BTreeSet, time::Duration};

use serde_json::{json, Value};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(30);

/// The (op, id, status) of every event a receiver got.
fn seen(rx: &TestReceiver) -> BTreeSet<(String, i64, String)> {
    rx.delivered()
        .iter()
        .map(|r| {
            let b = r.json();
            let row = if b["after"].is_null() {
                &b["before"]
            } else {
                &b["after"]
            };
            (
                b["op"].as_str().unwrap_or_default().to_owned(),
                row["id"].as_i64().unwrap_or_default(),
                row["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn set(items: &[(&str, i64, &str)]) -> BTreeSet<(String, i64, String)> {
    items
        .iter()
        .map(|(op, id, s)| ((*op).to_owned(), *id, (*s).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_subscription_gets_what_its_filter_selects() {
    let env = Env::new().await;
    let relay = start_relay(env.config()).await;
    let api = Api::new(relay.api_addr);
    let (all, changed, big, deletes) = (
        TestReceiver::start().await,
        TestReceiver::start().await,
        TestReceiver::start().await,
        TestReceiver::start().await,
    );
    api.subscribe(&all.url, json!({})).await;
    let status_changed = api
        .subscribe(
            &changed.url,
            json!({ "filter": "op == \"update\" && before.status != after.status" }),
        )
        .await;
    // `total` is NUMERIC: a string in the event, compared as a number.
    let above = api
        .subscribe(&big.url, json!({ "filter": "double(after.total) > 100.0" }))
        .await;
    api.subscribe(
        &deletes.url,
        json!({ "filter": "table == \"orders\" && op == \"delete\"" }),
    )
    .await;
    assert_eq!(
        status_changed["filter"],
        "op == \"update\" && before.status != after.status"
    );

    let db = env.source.connect().await;
    db.batch_execute(
        "insert into orders (id, status, total) values (1, 'new', 10), (2, 'new', 250.50);
         update orders set status = 'paid' where id = 1;
         update orders set total = 300 where id = 1;
         delete from orders where id = 2;",
    )
    .await
    .unwrap();
    all.wait_delivered(5, WAIT).await;
    // A marker every subscription but the status one selects, so the others have
    // had their chance at everything before it.
    db.batch_execute("insert into orders (id, status, total) values (9, 'marker', 999)")
        .await
        .unwrap();
    big.wait_delivered(3, WAIT).await;
    changed.wait_delivered(1, WAIT).await;
    deletes.wait_delivered(1, WAIT).await;
    all.wait_delivered(6, WAIT).await;

    assert_eq!(seen(&changed), set(&[("update", 1, "paid")]));
    assert_eq!(
        seen(&big),
        set(&[
            ("insert", 2, "new"),
            ("update", 1, "paid"),
            ("insert", 9, "marker")
        ])
    );
    assert_eq!(seen(&deletes), set(&[("delete", 2, "new")]));

    // A delete has no `after`: the threshold filter fails for it (counted, not sent).
    let (_, metrics) = api.call(reqwest::Method::GET, "/metrics", None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    let failures = sample(
        &metrics,
        &format!(
            "hookrelay_subscription_filter_failures_total{{subscription_id=\"{}\"}}",
            above["id"].as_str().unwrap_or_default()
        ),
    );
    assert_eq!(failures, Some(1.0), "{metrics}");

    // PATCH: the status subscription now wants every delete; applies from now on.
    let (status, patched) = api
        .call(
            reqwest::Method::PATCH,
            &format!(
                "/v1/subscriptions/{}",
                status_changed["id"].as_str().unwrap()
            ),
            Some(json!({ "filter": "op == \"delete\"" })),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    db.batch_execute(
        "update orders set status = 'shipped' where id = 1; delete from orders where id = 9;",
    )
    .await
    .unwrap();
    changed.wait_delivered(2, WAIT).await;
    all.wait_delivered(8, WAIT).await;
    assert_eq!(
        seen(&changed),
        set(&[("update", 1, "paid"), ("delete", 9, "marker")])
    );
    // `null` removes it: everything from now on.
    let (status, _) = api
        .call(
            reqwest::Method::PATCH,
            &format!(
                "/v1/subscriptions/{}",
                status_changed["id"].as_str().unwrap()
            ),
            Some(json!({ "filter": Value::Null })),
        )
        .await;
    assert_eq!(status, 200);
    db.batch_execute("insert into orders (id, status) values (3, 'late')")
        .await
        .unwrap();
    changed.wait_delivered(3, WAIT).await;
    assert!(seen(&changed).contains(&("insert".to_owned(), 3, "late".to_owned())));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_that_does_not_parse_is_a_422_naming_it_and_where() {
    let env = Env::new().await;
    let relay = start_relay(env.config()).await;
    let api = Api::new(relay.api_addr);
    for (filter, says) in [
        ("after.total >", "column 14"),
        ("row.total > 1", "unknown variable `row`"),
    ] {
        let (status, problem) = api
            .call(
                reqwest::Method::POST,
                "/v1/subscriptions",
                Some(json!({ "url": "http://127.0.0.1:9/h", "filter": filter })),
            )
            .await;
        assert_eq!(status, 422, "{problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("filter") && detail.contains(says),
            "{detail}"
        );
    }
    relay.shutdown().await;
}
