//! Events: the stored envelope as-is, listings newest first with filters and cursors.

use axum::http::{header, StatusCode};
use chrono::{Duration, Utc};
use serde_json::{json, Value};

use crate::harness::{event, TestApi};

#[tokio::test]
async fn events_are_listed_newest_first_and_read_as_stored() {
    let api = TestApi::new().await;
    let t0 = Utc::now() - Duration::hours(1);
    let events: Vec<_> = (1..=5)
        .map(|n| {
            let t = if n % 2 == 0 {
                "customers.update"
            } else {
                "orders.insert"
            };
            event(n, t, t0 + Duration::minutes(i64::from(n)))
        })
        .collect();
    api.store()
        .commit_batch("shop", &events, "5")
        .await
        .expect("commit");
    let mut crm = event(6, "orders.insert", t0 + Duration::minutes(6));
    crm.source = "crm".into();
    api.store()
        .commit_batch("crm", &[crm], "1")
        .await
        .expect("commit");

    let ids = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|e| e["id"].as_str().expect("id").to_owned())
            .collect()
    };
    let all = api.get("/v1/events").await.json();
    assert_eq!(
        ids(&all),
        [
            "evt_test0006",
            "evt_test0005",
            "evt_test0004",
            "evt_test0003",
            "evt_test0002",
            "evt_test0001"
        ]
    );
    assert_eq!(all["next_cursor"], Value::Null);
    let stored: Value = serde_json::from_str(&events[4].body).expect("json");
    assert_eq!(all["data"][1], stored, "the envelope as stored");

    let q = |query: &str| {
        let api = &api;
        let path = format!("/v1/events?{query}");
        async move {
            let res = api.get(&path).await;
            assert_eq!(res.status, StatusCode::OK, "{path}");
            res.json()
        }
    };
    assert_eq!(ids(&q("source=crm").await), ["evt_test0006"]);
    assert_eq!(
        ids(&q("source=shop&event_type=customers.update").await),
        ["evt_test0004", "evt_test0002"]
    );
    let at = |n: i64| (t0 + Duration::minutes(n)).to_rfc3339().replace('+', "%2B");
    assert_eq!(
        ids(&q(&format!("since={}&until={}", at(2), at(4))).await),
        ["evt_test0003", "evt_test0002"],
        "since inclusive, until exclusive, on committed_at"
    );

    // Paging by two: three pages, every event once.
    let mut seen = Vec::new();
    let mut path = "/v1/events?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = api.get(&path).await.json();
        pages += 1;
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/events?limit=2&cursor={c}"),
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids(&all));

    let res = api.get("/v1/events/evt_test0003").await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        res.headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    assert_eq!(
        res.body,
        events[2].body.as_bytes(),
        "the exact stored bytes"
    );
    assert_eq!(res.json()["type"], json!("orders.insert"));
}
