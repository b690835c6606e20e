//! Deliveries: filters, cursor paging, the single view with attempts, replay one and
//! bulk, over rows made through the store's own functions (commit, claim, record).

use std::collections::BTreeSet;

use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use hookrelay_store::OutcomeStatus;
use serde_json::{json, Value};

use crate::harness::{all_pages, claim_all, event, ids, outcome, TestApi};

/// Two subscriptions over 8 events (5 `orders.insert`, 3 `customers.update`):
/// A's orders deliveries failed (500), A's customers ones succeeded, all of B's are
/// retrying in an hour (503).
struct Fixture {
    api: TestApi,
    a: String,
    b: String,
}

async fn fixture() -> Fixture {
    let api = TestApi::new().await;
    let a = api
        .subscribe(json!({"url": "https://a.example.com/"}))
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let b = api
        .subscribe(json!({"url": "https://b.example.com/"}))
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let now = Utc::now();
    let events: Vec<_> = (1..=8)
        .map(|n| {
            let t = if n <= 5 {
                "orders.insert"
            } else {
                "customers.update"
            };
            event(n, t, now)
        })
        .collect();
    let out = api
        .store()
        .commit_batch("shop", &events, "8")
        .await
        .expect("commit");
    assert_eq!((out.events, out.deliveries), (8, 16));
    let claimed = claim_all(api.store()).await;
    assert_eq!(claimed.len(), 16);
    // Each event's body comes once per claim and is shared by its deliveries: each
    // delivery still carries its own event's id and body.
    for d in &claimed {
        let body: Value = serde_json::from_slice(&d.body).expect("body is the envelope");
        assert_eq!(body["id"].as_str(), Some(d.event_id.as_str()));
    }
    let retry_at = now + Duration::hours(1);
    let outcomes: Vec<_> = claimed
        .iter()
        .map(|d| {
            let is_order = std::str::from_utf8(&d.body)
                .expect("utf-8 body")
                .contains("orders.insert");
            if d.subscription_id == a && is_order {
                outcome(d, OutcomeStatus::Failed, 500)
            } else if d.subscription_id == a {
                outcome(d, OutcomeStatus::Succeeded, 200)
            } else {
                outcome(d, OutcomeStatus::Retry { at: retry_at }, 503)
            }
        })
        .collect();
    api.store()
        .record_outcomes("test", &outcomes)
        .await
        .expect("record");
    Fixture { api, a, b }
}

fn data(page: &Value) -> &Vec<Value> {
    page["data"].as_array().expect("data")
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().expect("timestamp").parse().expect("RFC 3339")
}

#[tokio::test]
async fn list_filters_and_shape() {
    let Fixture { api, a, b } = fixture().await;

    let all = api.get("/v1/deliveries").await.json();
    assert_eq!(data(&all).len(), 16);
    assert_eq!(all["next_cursor"], Value::Null);
    let listed = ids(&all);
    let mut sorted = listed.clone();
    sorted.sort_unstable_by(|x, y| y.cmp(x));
    assert_eq!(listed, sorted, "newest (highest id) first");

    let first = &data(&all)[0];
    let keys: BTreeSet<&str> = first
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let want: BTreeSet<&str> = [
        "id",
        "event_id",
        "event_type",
        "subscription_id",
        "status",
        "attempt_count",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "created_at",
        "updated_at",
    ]
    .into();
    assert_eq!(keys, want);

    let count = |q: String| {
        let api = &api;
        async move {
            let res = api.get(&format!("/v1/deliveries?{q}")).await;
            assert_eq!(res.status, StatusCode::OK, "{q}");
            res.json()
        }
    };
    let of_a = count(format!("subscription_id={a}")).await;
    assert_eq!(data(&of_a).len(), 8);
    assert!(data(&of_a)
        .iter()
        .all(|d| d["subscription_id"] == a.as_str()));

    let failed = count("status=failed".into()).await;
    assert_eq!(data(&failed).len(), 5);
    for d in data(&failed) {
        assert_eq!(d["subscription_id"], a.as_str());
        assert_eq!(d["event_type"], "orders.insert");
        assert_eq!(d["last_status_code"], 500);
        assert_eq!(d["last_error"], "endpoint answered 500");
        assert_eq!(d["attempt_count"], 1);
    }

    let customers_of_a = count(format!("subscription_id={a}&event_type=customers.update")).await;
    assert_eq!(data(&customers_of_a).len(), 3);
    assert!(data(&customers_of_a)
        .iter()
        .all(|d| d["status"] == "succeeded"));

    let retrying = count("status=retrying".into()).await;
    assert_eq!(data(&retrying).len(), 8);
    assert!(data(&retrying)
        .iter()
        .all(|d| d["subscription_id"] == b.as_str()));

    let created: Vec<DateTime<Utc>> = data(&all).iter().map(|d| time(&d["created_at"])).collect();
    let earliest = created.iter().min().expect("rows");
    let latest = created.iter().max().expect("rows");
    let enc = |t: &DateTime<Utc>| t.to_rfc3339().replace('+', "%2B");
    assert_eq!(
        data(&count(format!("since={}", enc(earliest))).await).len(),
        16,
        "since is inclusive"
    );
    let after = *latest + Duration::microseconds(1);
    assert_eq!(
        data(&count(format!("since={}", enc(&after))).await).len(),
        0
    );
    assert_eq!(
        data(&count(format!("until={}", enc(earliest))).await).len(),
        0,
        "until is exclusive"
    );
    assert_eq!(
        data(&count(format!("until={}", enc(&after))).await).len(),
        16
    );
    assert_eq!(
        data(&count("subscription_id=sub_none".into()).await).len(),
        0
    );
}

#[tokio::test]
async fn cursor_pages_cover_everything_once() {
    let Fixture { api, a, .. } = fixture().await;
    let everything = ids(&api.get("/v1/deliveries?limit=1000").await.json());
    assert_eq!(everything.len(), 16);

    for limit in [1, 3, 5, 16] {
        let (paged, pages) = all_pages(&api, "", limit).await;
        assert_eq!(
            paged, everything,
            "limit {limit}: same rows, same order, no duplicates"
        );
        assert_eq!(pages, 16_usize.div_ceil(limit as usize), "limit {limit}");
    }

    let of_a = ids(&api
        .get(&format!("/v1/deliveries?subscription_id={a}"))
        .await
        .json());
    let (paged, pages) = all_pages(&api, &format!("&subscription_id={a}"), 3).await;
    assert_eq!(paged, of_a);
    assert_eq!(pages, 3);

    // A delivery cursor means nothing to the event listing.
    let page = api.get("/v1/deliveries?limit=2").await.json();
    let cursor = page["next_cursor"].as_str().expect("more pages");
    api.get(&format!("/v1/events?cursor={cursor}"))
        .await
        .assert_problem(StatusCode::BAD_REQUEST, Some("cursor"), "foreign cursor");
}

/// A subscription's pending deliveries and those past pending are in two indexes
/// (sql/V12). Interleaved by id (a replayed old one, new ones, finished ones
/// between), they still list as one sequence, newest first, each once, in pages of
/// any size; and a subscription's delete takes both kinds.
#[tokio::test]
async fn a_subscriptions_pending_and_finished_deliveries_list_and_go_as_one() {
    let Fixture { api, a, b } = fixture().await;
    let fresh: Vec<_> = (9..=14)
        .map(|n| event(n, "orders.insert", Utc::now()))
        .collect();
    api.store()
        .commit_batch("shop", &fresh, "14")
        .await
        .expect("commit");
    let raw = api.db.raw_client().await;
    let oldest_failed: i64 = raw
        .query_one(
            "select min(id) from hookrelay.deliveries where subscription_id = $1 and status = 'failed'",
            &[&a],
        )
        .await
        .expect("failed one")
        .get(0);
    api.post(&format!("/v1/deliveries/{oldest_failed}/replay"), json!({}))
        .await;

    let truth: Vec<(i64, String)> = raw
        .query(
            &format!("select id, status from ({EVERY_DELIVERY}) d order by id desc"),
            &[&a],
        )
        .await
        .expect("deliveries")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(truth.len(), 14);
    let pending: Vec<i64> = truth
        .iter()
        .filter(|(_, s)| s == "pending")
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(pending.len(), 7, "{truth:?}");
    assert_eq!(pending.last(), Some(&oldest_failed));
    let want: Vec<i64> = truth.iter().map(|(id, _)| *id).collect();

    for limit in [1, 2, 5, 14, 100] {
        let (paged, _) = all_pages(&api, &format!("&subscription_id={a}"), limit).await;
        assert_eq!(paged, want, "limit {limit}");
    }
    let one_page = api
        .get(&format!("/v1/deliveries?subscription_id={a}&limit=100"))
        .await
        .json();
    let statuses: Vec<(i64, &str)> = data(&one_page)
        .iter()
        .map(|d| {
            (
                d["id"].as_i64().expect("id"),
                d["status"].as_str().expect("status"),
            )
        })
        .collect();
    let truth_ref: Vec<(i64, &str)> = truth.iter().map(|(id, s)| (*id, s.as_str())).collect();
    assert_eq!(statuses, truth_ref);

    let res = api.delete(&format!("/v1/subscriptions/{a}")).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    assert_eq!(
        deliveries_of(&raw, &a).await,
        0,
        "pending and finished deliveries go, rows and receipts"
    );
    assert_eq!(
        deliveries_of(&raw, &b).await,
        14,
        "the other subscription keeps all of its"
    );
}

/// Every delivery of subscription `$1` as stored: its rows, the elements of its
/// receipts (first attempts that succeeded), and its runs' elements with neither
/// (pending).
const EVERY_DELIVERY: &str = "
select id, status from hookrelay.deliveries where subscription_id = $1
union all
select x.id, 'succeeded' from hookrelay.receipts r
 cross join lateral unnest(r.delivery_ids) as x(id)
 where r.subscription_id = $1
union all
select x.id, 'pending' from hookrelay.runs r
 cross join lateral unnest(r.delivery_ids) as x(id)
 where r.subscription_id = $1
   and not exists (select from hookrelay.deliveries d where d.id = x.id)
   and not exists (select from hookrelay.receipts c
                    where int8range(c.first_delivery, c.last_delivery, '[]') @> x.id
                      and x.id = any (c.delivery_ids))";

async fn deliveries_of(raw: &tokio_postgres::Client, subscription_id: &str) -> i64 {
    raw.query_one(
        &format!("select count(*) from ({EVERY_DELIVERY}) d"),
        &[&subscription_id],
    )
    .await
    .expect("count")
    .get(0)
}

#[tokio::test]
async fn cursor_pages_neither_skip_nor_repeat_while_deliveries_arrive() {
    let Fixture { api, .. } = fixture().await;
    let before = ids(&api.get("/v1/deliveries?limit=1000").await.json());
    let events_before = api.get("/v1/events?limit=1000").await.json();
    let events_before: Vec<String> = data(&events_before)
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();

    // Page through both listings, committing new events (new deliveries at the top)
    // and finishing some open deliveries (rows changing under the cursor) between
    // every two pages.
    let mut paged = Vec::new();
    let mut paged_events = Vec::new();
    // `Some(query)` while a listing has pages left.
    let mut deliveries_next = Some(String::new());
    let mut events_next = Some(String::new());
    let mut next_event = 100;
    for page_no in 0.. {
        assert!(page_no < 50, "paging does not end");
        if let Some(cursor) = deliveries_next.take() {
            let page = api
                .get(&format!("/v1/deliveries?limit=3{cursor}"))
                .await
                .json();
            paged.extend(ids(&page));
            deliveries_next = page["next_cursor"].as_str().map(|c| format!("&cursor={c}"));
        }
        if let Some(cursor) = events_next.take() {
            let page = api.get(&format!("/v1/events?limit=2{cursor}")).await.json();
            paged_events.extend(
                data(&page)
                    .iter()
                    .map(|e| e["id"].as_str().expect("id").to_owned()),
            );
            events_next = page["next_cursor"].as_str().map(|c| format!("&cursor={c}"));
        }
        if deliveries_next.is_none() && events_next.is_none() {
            break;
        }

        let fresh: Vec<_> = (0..2)
            .map(|i| event(next_event + i, "orders.insert", Utc::now()))
            .collect();
        next_event += 2;
        api.store()
            .commit_batch("shop", &fresh, &next_event.to_string())
            .await
            .expect("commit");
        let claimed = claim_all(api.store()).await;
        let outcomes: Vec<_> = claimed
            .iter()
            .take(3)
            .map(|d| outcome(d, OutcomeStatus::Succeeded, 200))
            .collect();
        api.store()
            .record_outcomes("test", &outcomes)
            .await
            .expect("record");
    }
    // The first page may already hold rows that arrived after `before` was read (it
    // starts at the newest): past that, exactly what was there, once, in order.
    let first_old = paged
        .iter()
        .position(|id| before.contains(id))
        .expect("old rows listed");
    assert!(paged[..first_old].iter().all(|id| !before.contains(id)));
    assert_eq!(paged[first_old..], before[..], "no skip, no repeat");
    let first_old = paged_events
        .iter()
        .position(|id| events_before.contains(id))
        .expect("old events listed");
    assert_eq!(paged_events[first_old..], events_before[..]);
}

#[tokio::test]
async fn single_delivery_shows_every_attempt() {
    let Fixture { api, .. } = fixture().await;
    let failed = api.get("/v1/deliveries?status=failed&limit=1").await.json();
    let d = &data(&failed)[0];
    let id = d["id"].as_i64().expect("id");

    let res = api.get(&format!("/v1/deliveries/{id}")).await;
    assert_eq!(res.status, StatusCode::OK);
    let detail = res.json();
    assert_eq!(detail["id"], id);
    assert_eq!(detail["event_id"], d["event_id"]);
    assert_eq!(detail["status"], "failed");
    let attempts = detail["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1);
    let at = &attempts[0];
    assert_eq!(at["attempt"], 1);
    assert_eq!(at["status_code"], 500);
    assert_eq!(at["duration_ms"], 12);
    assert_eq!(at["error"], "endpoint answered 500");
    assert_eq!(at["response_body"], "answer 500");
    assert!(at["started_at"].is_string());
}

#[tokio::test]
async fn replay_one_schedules_the_same_event_again() {
    let Fixture { api, a, b } = fixture().await;
    let failed = api.get("/v1/deliveries?status=failed&limit=1").await.json();
    let before = data(&failed)[0].clone();
    let id = before["id"].as_i64().expect("id");
    assert!(!api.dispatcher_asked_to_rescan());

    let res = api
        .post(&format!("/v1/deliveries/{id}/replay"), json!({}))
        .await;
    assert_eq!(
        res.status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    let after = res.json();
    assert_eq!(after["id"], id);
    assert_eq!(after["event_id"], before["event_id"]);
    assert_eq!(after["status"], "pending");
    assert_eq!(after["attempt_count"], 0);
    assert_eq!(
        after["last_status_code"], 500,
        "kept until the next attempt"
    );
    assert!(time(&after["next_attempt_at"]) <= Utc::now());
    assert!(
        api.dispatcher_asked_to_rescan(),
        "replay wakes the dispatcher"
    );

    // The dispatcher's next claim takes it, with the same event id and body.
    let claimed = crate::harness::claim_all(api.store()).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].delivery_id, id);
    assert_eq!(
        claimed[0].event_id,
        before["event_id"].as_str().expect("event id")
    );
    assert_eq!(claimed[0].subscription_id, a);
    assert_eq!(claimed[0].attempt, 1);

    // A retrying delivery is only made due now; its attempts are left alone.
    let retrying = api
        .get(&format!("/v1/deliveries?subscription_id={b}&limit=1"))
        .await
        .json();
    let r = data(&retrying)[0].clone();
    assert!(time(&r["next_attempt_at"]) > Utc::now() + Duration::minutes(30));
    let res = api
        .post(&format!("/v1/deliveries/{}/replay", r["id"]), json!({}))
        .await;
    assert_eq!(res.status, StatusCode::ACCEPTED);
    let r2 = res.json();
    assert_eq!(r2["status"], "retrying");
    assert_eq!(r2["attempt_count"], 1);
    assert!(time(&r2["next_attempt_at"]) <= Utc::now());

    // A succeeded one goes out again too.
    let ok = api
        .get("/v1/deliveries?status=succeeded&limit=1")
        .await
        .json();
    let ok_id = data(&ok)[0]["id"].as_i64().expect("id");
    let res = api
        .post(&format!("/v1/deliveries/{ok_id}/replay"), json!({}))
        .await;
    assert_eq!(res.json()["status"], "pending");
}

#[tokio::test]
async fn bulk_replay_follows_its_filters() {
    let Fixture { api, a, b } = fixture().await;
    let replay = |body: Value| {
        let api = &api;
        async move {
            let res = api.post("/v1/replay", body.clone()).await;
            assert_eq!(
                res.status,
                StatusCode::ACCEPTED,
                "{body}: {}",
                String::from_utf8_lossy(&res.body)
            );
            res.json()["replayed"].as_u64().expect("replayed")
        }
    };
    let future = (Utc::now() + Duration::hours(1)).to_rfc3339();
    assert_eq!(
        replay(json!({"subscription_id": a, "since": future})).await,
        0
    );
    assert_eq!(
        replay(json!({"subscription_id": a, "status": "succeeded", "event_type": "orders.insert"}))
            .await,
        0
    );
    assert!(
        !api.dispatcher_asked_to_rescan(),
        "nothing replayed, nobody woken"
    );

    let failed_before = ids(&api.get("/v1/deliveries?status=failed").await.json());
    assert_eq!(
        replay(json!({"subscription_id": a})).await,
        5,
        "default status: failed"
    );
    assert!(api.dispatcher_asked_to_rescan());
    let pending = api
        .get(&format!(
            "/v1/deliveries?subscription_id={a}&status=pending"
        ))
        .await
        .json();
    assert_eq!(
        ids(&pending),
        failed_before,
        "the same deliveries, now pending"
    );
    assert!(data(&pending).iter().all(|d| d["attempt_count"] == 0));
    assert_eq!(
        data(&api.get("/v1/deliveries?status=failed").await.json()).len(),
        0
    );

    assert_eq!(
        replay(
            json!({"subscription_id": a, "status": "succeeded", "event_type": "customers.update"})
        )
        .await,
        3
    );
    assert_eq!(
        replay(json!({"subscription_id": b, "status": "retrying"})).await,
        8
    );
    let still_retrying = api.get("/v1/deliveries?status=retrying").await.json();
    assert_eq!(
        data(&still_retrying).len(),
        8,
        "retrying ones keep their status"
    );
    assert!(data(&still_retrying)
        .iter()
        .all(|d| time(&d["next_attempt_at"]) <= Utc::now() && d["attempt_count"] == 1));
}

#[tokio::test]
async fn paused_subscriptions_queue_and_replay_gone_ones_fail_and_refuse() {
    let Fixture { api, b, .. } = fixture().await;
    let of = |status: &'static str| {
        let api = &api;
        let b = b.clone();
        async move {
            data(
                &api.get(&format!(
                    "/v1/deliveries?subscription_id={b}&status={status}"
                ))
                .await
                .json(),
            )
            .len()
        }
    };
    let res = api
        .patch(&format!("/v1/subscriptions/{b}"), json!({"enabled": false}))
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        res.json()["disabled_reason"],
        "paused through the admin API"
    );
    assert_eq!(of("retrying").await, 8, "pausing keeps B's open deliveries");

    // Replays and new events queue for a paused subscription; nothing is claimed.
    let res = api.post("/v1/replay", json!({"subscription_id": b})).await;
    assert_eq!(res.status, StatusCode::ACCEPTED);
    assert_eq!(
        res.json()["replayed"],
        0,
        "bulk replay defaults to failed ones"
    );
    let res = api
        .post(
            "/v1/replay",
            json!({"subscription_id": b, "status": "retrying"}),
        )
        .await;
    assert_eq!(res.json()["replayed"], 8);
    let out = api
        .store()
        .commit_batch("shop", &[event(9, "orders.insert", Utc::now())], "9")
        .await
        .expect("commit");
    assert_eq!(out.deliveries, 2, "A and the paused B");
    let claimed = claim_all(api.store()).await;
    assert!(
        claimed.iter().all(|d| d.subscription_id != b),
        "nothing of a paused subscription is claimed"
    );
    assert_eq!(of("pending").await, 1);
    // That claim took the paused B out of the due set (the replay had put it there);
    // new events queue without putting it back, so claims do not look at it.
    api.store()
        .commit_batch("shop", &[event(11, "orders.insert", Utc::now())], "11")
        .await
        .expect("commit");
    assert_eq!(of("pending").await, 2);
    let due: Option<chrono::DateTime<Utc>> = api
        .db
        .raw_client()
        .await
        .query_one(
            "select due_at from hookrelay.subscription_work where subscription_id = $1",
            &[&b],
        )
        .await
        .expect("work row")
        .get(0);
    assert_eq!(due, None, "a paused subscription is not due");

    let res = api
        .patch(&format!("/v1/subscriptions/{b}"), json!({"enabled": true}))
        .await;
    assert_eq!(res.json()["disabled_reason"], json!(null));
    assert!(
        api.dispatcher_asked_to_rescan(),
        "resuming wakes the dispatcher"
    );
    let claimed: Vec<_> = claim_all(api.store())
        .await
        .into_iter()
        .filter(|d| d.subscription_id == b)
        .collect();
    assert_eq!(claimed.len(), 10, "everything queued is due once resumed");

    // A 410 disables B for good: its open deliveries fail, new events skip it, and
    // replays are refused until it is enabled again.
    api.store()
        .record_outcomes("test", &[outcome(&claimed[0], OutcomeStatus::Gone, 410)])
        .await
        .expect("record");
    let got = api.get(&format!("/v1/subscriptions/{b}")).await.json();
    assert_eq!(got["enabled"], false);
    assert_eq!(got["disabled_reason"], "endpoint answered 410 Gone");
    assert_eq!(
        (
            of("failed").await,
            of("pending").await,
            of("retrying").await
        ),
        (10, 0, 0),
        "the 410 failed every open one (the others were leased to this owner)"
    );
    let out = api
        .store()
        .commit_batch("shop", &[event(10, "orders.insert", Utc::now())], "10")
        .await
        .expect("commit");
    assert_eq!(out.deliveries, 1, "only A");
    let one = ids(&api
        .get(&format!("/v1/deliveries?subscription_id={b}&status=failed"))
        .await
        .json())[0];
    api.post(&format!("/v1/deliveries/{one}/replay"), json!({}))
        .await
        .assert_problem(
            StatusCode::CONFLICT,
            None,
            "replay of a subscription whose endpoint is gone",
        );
    api.post("/v1/replay", json!({"subscription_id": b}))
        .await
        .assert_problem(
            StatusCode::CONFLICT,
            None,
            "bulk replay of a subscription whose endpoint is gone",
        );
    // Pausing a gone subscription leaves it gone.
    api.patch(&format!("/v1/subscriptions/{b}"), json!({"enabled": false}))
        .await;
    api.post("/v1/replay", json!({"subscription_id": b}))
        .await
        .assert_problem(StatusCode::CONFLICT, None, "still gone");

    api.patch(&format!("/v1/subscriptions/{b}"), json!({"enabled": true}))
        .await;
    let res = api.post("/v1/replay", json!({"subscription_id": b})).await;
    assert_eq!(res.status, StatusCode::ACCEPTED);
    assert_eq!(res.json()["replayed"], 10);
}

/// A first attempt that succeeded is kept on the delivery's row, not as an attempt
/// row (one row write less per delivered event); the API lists it exactly as before, oldest first, also when a replay
/// adds attempts after it (numbered on from the earlier ones), and a replay's first
/// attempt never takes its place.
#[tokio::test]
async fn a_first_success_kept_on_the_delivery_reads_as_an_attempt() {
    let api = TestApi::new().await;
    api.subscribe(json!({"url": "https://a.example.com/"}))
        .await;
    let now = Utc::now();
    let events = [
        event(1, "orders.insert", now),
        event(2, "orders.insert", now),
    ];
    api.store()
        .commit_batch("shop", &events, "2")
        .await
        .expect("commit");
    let raw = api.db.raw_client().await;
    let due_now = OutcomeStatus::Retry {
        at: Utc::now() - Duration::seconds(1),
    };
    let claimed = claim_all(api.store()).await;
    let (one, two) = (claimed[0].delivery_id, claimed[1].delivery_id);
    let first = vec![
        outcome(&claimed[0], OutcomeStatus::Succeeded, 200),
        outcome(&claimed[1], due_now, 500),
    ];
    api.store()
        .record_outcomes("test", &first)
        .await
        .expect("record");
    assert_eq!(
        attempt_rows(&raw, one).await,
        0,
        "the first success is kept inline"
    );
    assert_eq!(
        attempt_rows(&raw, two).await,
        1,
        "a failure is an attempt row"
    );
    let mut two_log = vec![first[1].clone()];
    two_log.extend(record(&api, vec![(two, 200, OutcomeStatus::Succeeded)]).await);
    assert_eq!(
        attempt_rows(&raw, two).await,
        2,
        "a success after a failure is a row"
    );

    let detail = api.get(&format!("/v1/deliveries/{one}")).await.json();
    assert_attempts(&detail, &first[..1]);
    assert_eq!(detail["status"], "succeeded");
    assert_eq!(detail["last_status_code"], 200);

    // Replays: both start a fresh retry budget; the listing numbers on.
    for id in [one, two] {
        let res = api
            .post(&format!("/v1/deliveries/{id}/replay"), json!({}))
            .await;
        assert_eq!(res.status, StatusCode::ACCEPTED);
    }
    let mut one_log = vec![first[0].clone()];
    let again = record(
        &api,
        vec![(one, 503, due_now), (two, 201, OutcomeStatus::Succeeded)],
    )
    .await;
    one_log.push(again[0].clone());
    two_log.push(again[1].clone());
    one_log.extend(record(&api, vec![(one, 204, OutcomeStatus::Succeeded)]).await);
    assert_eq!(
        attempt_rows(&raw, two).await,
        3,
        "attempt 1 after a replay is a row when older attempts exist"
    );

    let detail = api.get(&format!("/v1/deliveries/{one}")).await.json();
    assert_attempts(&detail, &one_log);
    assert_eq!(detail["last_status_code"], 204);
    let detail = api.get(&format!("/v1/deliveries/{two}")).await.json();
    assert_attempts(&detail, &two_log);
}

/// Attempt rows of delivery `id`.
async fn attempt_rows(raw: &tokio_postgres::Client, id: i64) -> i64 {
    raw.query_one(
        "select count(*) from hookrelay.attempts where delivery_id = $1",
        &[&id],
    )
    .await
    .expect("count")
    .get(0)
}

/// Claims, then records one outcome per planned (delivery id, code, status).
async fn record(
    api: &TestApi,
    plan: Vec<(i64, i32, OutcomeStatus)>,
) -> Vec<hookrelay_store::Outcome> {
    let claimed = claim_all(api.store()).await;
    let outcomes: Vec<_> = plan
        .iter()
        .map(|&(id, code, status)| {
            let d = claimed
                .iter()
                .find(|d| d.delivery_id == id)
                .unwrap_or_else(|| panic!("delivery {id} claimed: {claimed:?}"));
            outcome(d, status, code)
        })
        .collect();
    api.store()
        .record_outcomes("test", &outcomes)
        .await
        .expect("record");
    outcomes
}

/// `detail["attempts"]` are `log`, in order, field by field.
fn assert_attempts(detail: &Value, log: &[hookrelay_store::Outcome]) {
    use base64::Engine as _;
    let got = detail["attempts"].as_array().expect("attempts");
    assert_eq!(got.len(), log.len(), "{detail}");
    for (n, (a, o)) in (1..).zip(got.iter().zip(log)) {
        let keys: BTreeSet<&str> = a
            .as_object()
            .expect("object")
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from([
                "attempt",
                "started_at",
                "duration_ms",
                "status_code",
                "error",
                "response_body",
                "response_body_base64"
            ]),
            "{a}"
        );
        let body = o.response_body.as_deref().expect("a body");
        // Numbered over the delivery's life, replays included.
        assert_eq!(a["attempt"], n, "{a}");
        assert_eq!(a["status_code"], o.status_code.expect("a code"), "{a}");
        assert_eq!(a["duration_ms"], o.duration_ms, "{a}");
        assert_eq!(a["error"], json!(o.error), "{a}");
        assert_eq!(
            a["response_body"],
            String::from_utf8_lossy(body).as_ref(),
            "{a}"
        );
        assert_eq!(
            a["response_body_base64"],
            base64::engine::general_purpose::STANDARD.encode(body),
            "{a}"
        );
        let at = time(&a["started_at"]);
        assert!(
            (at - o.started_at).num_microseconds().map(i64::abs) < Some(1),
            "{a} vs {}",
            o.started_at
        );
    }
}

/// `event_id` lists where one event went: its delivery to each subscription.
#[tokio::test]
async fn an_events_deliveries_list_by_event_id() {
    let Fixture { api, a, b } = fixture().await;
    let all = api.get("/v1/deliveries").await.json();
    let event_id = data(&all)[0]["event_id"]
        .as_str()
        .expect("event id")
        .to_owned();

    let res = api
        .get(&format!("/v1/deliveries?event_id={event_id}"))
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let page = res.json();
    let mut subs: Vec<&str> = data(&page)
        .iter()
        .map(|d| {
            assert_eq!(d["event_id"], event_id.as_str(), "{d}");
            d["subscription_id"].as_str().expect("subscription id")
        })
        .collect();
    subs.sort_unstable();
    let mut want = vec![a.as_str(), b.as_str()];
    want.sort_unstable();
    assert_eq!(subs, want, "one delivery per subscription: {page}");

    let of_a = api
        .get(&format!(
            "/v1/deliveries?event_id={event_id}&subscription_id={a}"
        ))
        .await
        .json();
    assert_eq!(data(&of_a).len(), 1, "{of_a}");
    assert_eq!(data(&of_a)[0]["subscription_id"], a.as_str());

    let none = api.get("/v1/deliveries?event_id=evt_none").await.json();
    assert_eq!(data(&none).len(), 0, "{none}");
}

/// First attempts that succeeded are kept in receipts, one per subscription per
/// recorded batch (a batch with only a few of a subscription's keeps them on their
/// rows). Many receipts, interleaved by id with rows (failures, a small batch's
/// successes, a replayed one), still list as one sequence newest first, each once, in
/// pages of any size, and by event; the single view and a replay find a receipt's
/// delivery.
#[tokio::test]
async fn deliveries_kept_in_many_receipts_list_page_and_replay_like_rows() {
    let api = TestApi::new().await;
    let sub = api
        .subscribe(json!({"url": "https://r.example.com/"}))
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let now = Utc::now();
    let events: Vec<_> = (1..=123).map(|n| event(n, "orders.insert", now)).collect();
    api.store()
        .commit_batch("shop", &events, "123")
        .await
        .expect("commit");
    let claimed = claim_all(api.store()).await;
    assert_eq!(claimed.len(), 123);
    // Recorded ten at a time, the last of each ten a failure (it keeps its row):
    // twelve receipts of nine; then three successes alone, kept on their rows.
    for chunk in claimed.chunks(10) {
        let outcomes: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if i == 9 {
                    outcome(d, OutcomeStatus::Failed, 500)
                } else {
                    outcome(d, OutcomeStatus::Succeeded, 200)
                }
            })
            .collect();
        api.store()
            .record_outcomes("test", &outcomes)
            .await
            .expect("record");
    }
    let raw = api.db.raw_client().await;
    let receipts: Vec<i32> = raw
        .query(
            "select cardinality(delivery_ids) from hookrelay.receipts order by id",
            &[],
        )
        .await
        .expect("receipts")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        receipts,
        vec![9; 12],
        "one receipt per batch of nine successes"
    );
    let rows: i64 = raw
        .query_one("select count(*) from hookrelay.deliveries", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 15, "the failures and the small batch keep their rows");

    let mut everything: Vec<i64> = claimed.iter().map(|d| d.delivery_id).collect();
    everything.sort_unstable_by(|x, y| y.cmp(x));
    for limit in [2, 7, 25, 123] {
        let (paged, _) = all_pages(&api, "", limit).await;
        assert_eq!(paged, everything, "limit {limit}");
    }
    let ok = all_pages(&api, "&status=succeeded", 9).await.0;
    assert_eq!(ok.len(), 111);
    let failed = all_pages(&api, "&status=failed", 4).await.0;
    assert_eq!(failed.len(), 12);

    // The oldest event's delivery, found by event: the walk reads every receipt.
    let first = &claimed[0];
    let by_event = api
        .get(&format!("/v1/deliveries?event_id={}", first.event_id))
        .await
        .json();
    assert_eq!(ids(&by_event), vec![first.delivery_id]);
    assert_eq!(data(&by_event)[0]["status"], "succeeded");

    let one = api
        .get(&format!("/v1/deliveries/{}", first.delivery_id))
        .await
        .json();
    assert_eq!(one["status"], "succeeded");
    assert_eq!(one["subscription_id"], sub.as_str());
    assert_eq!(one["attempts"].as_array().expect("attempts").len(), 1);
    assert_eq!(one["attempts"][0]["status_code"], 200);
    assert_eq!(one["attempts"][0]["response_body"], "answer 200");

    // Replayed, it is a row again with the same id, listed once, pending.
    let res = api
        .post(
            &format!("/v1/deliveries/{}/replay", first.delivery_id),
            json!({}),
        )
        .await;
    assert_eq!(res.status, StatusCode::ACCEPTED);
    let (paged, _) = all_pages(&api, "", 7).await;
    assert_eq!(paged, everything, "still each once");
    let pending = all_pages(&api, "&status=pending", 5).await.0;
    assert_eq!(pending, vec![first.delivery_id]);
    let again = claim_all(api.store()).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery_id, first.delivery_id);
    assert_eq!(again[0].event_id, first.event_id);
    api.store()
        .record_outcomes("test", &[outcome(&again[0], OutcomeStatus::Succeeded, 201)])
        .await
        .expect("record");
    let one = api
        .get(&format!("/v1/deliveries/{}", first.delivery_id))
        .await
        .json();
    assert_eq!(one["status"], "succeeded");
    let codes: Vec<i64> = one["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["status_code"].as_i64().expect("code"))
        .collect();
    assert_eq!(
        codes,
        vec![200, 201],
        "the receipt's attempt first, then the replay's"
    );

    // A bulk replay of succeeded ones reaches the receipts: 107 left in them, the
    // small batch's three rows, and the replayed one that succeeded again as a row.
    let res = api
        .post(
            "/v1/replay",
            json!({"subscription_id": sub, "status": "succeeded"}),
        )
        .await;
    assert_eq!(res.json()["replayed"], 111);
    let pending = all_pages(&api, "&status=pending", 20).await.0;
    assert_eq!(pending.len(), 111);
    let (paged, _) = all_pages(&api, "", 13).await;
    assert_eq!(paged, everything, "still each once");
}
