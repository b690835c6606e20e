//! Deliveries in runs (sql/V18): a run's element with neither a row nor a receipt's
//! element is an open, pending delivery to everything outside the pipeline: listings,
//! the single view, replay, the backlog, a subscription's delete, expiry and a 410.
//! Runs are written here by SQL as a batch writes them (ids from the deliveries'
//! sequence, each element counted on its event), beside rows and receipts made
//! through the store's own functions.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use chrono::{Duration, Utc};
use hookrelay_core::ChangeEvent;
use hookrelay_store::{model::SubscriptionChanges, OutcomeStatus, Store};
use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::harness::{all_pages, claim_all, event, outcome, TestApi};

/// Allocates `n` delivery ids from the deliveries' identity sequence, as a batch does.
async fn next_ids(raw: &Client, n: usize) -> Vec<i64> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let id: i64 = raw
            .query_one(
                "select nextval(pg_get_serial_sequence('hookrelay.deliveries', 'id'))",
                &[],
            )
            .await
            .expect("nextval")
            .get(0);
        ids.push(id);
    }
    ids
}

/// The stored seq of event `evt_testNNNN`.
async fn seq(raw: &Client, n: u32) -> i64 {
    raw.query_one(
        "select seq from hookrelay.events where id = $1",
        &[&format!("evt_test{n:04}")],
    )
    .await
    .expect("event")
    .get(0)
}

/// Writes a run of `subscription`'s deliveries `ids` of events `events` (one each,
/// in id order) and counts each on its event, as a batch does; leased to a process
/// elsewhere (in flight there), so this test's claims leave it alone. Returns its id.
async fn insert_run(raw: &Client, subscription: &str, ids: &[i64], events: &[u32]) -> i64 {
    let mut seqs = Vec::new();
    for n in events {
        seqs.push(seq(raw, *n).await);
    }
    raw.execute(
        "insert into hookrelay.runs
             (id, last_delivery, subscription_id, lease_owner, lease_until, leases,
              delivery_ids, event_seqs, order_keys)
         values (($1::bigint[])[1], ($1::bigint[])[cardinality($1::bigint[])], $2,
                 'elsewhere', now() + interval '1 hour', 0, $1, $3,
                 array_fill(null::bigint, array[cardinality($1)]))",
        &[&ids, &subscription, &seqs],
    )
    .await
    .expect("run");
    raw.execute(
        "update hookrelay.events set deliveries_left = deliveries_left + 1
          where seq = any ($1)",
        &[&seqs],
    )
    .await
    .expect("count");
    ids[0]
}

/// Every event counts exactly its stored deliveries: rows, receipts' elements and
/// runs' open elements.
async fn assert_counts_match(raw: &Client, case: &str) {
    let wrong: Vec<(i64, i32, i64)> = raw
        .query(
            "with stored as (
                 select event_seq as seq from hookrelay.deliveries
                 union all
                 select unnest(event_seqs) from hookrelay.receipts
                 union all
                 select x.seq from hookrelay.runs r
                  cross join lateral unnest(r.delivery_ids, r.event_seqs) as x(id, seq)
                  where not exists (select from hookrelay.deliveries d where d.id = x.id)
                    and not exists (select from hookrelay.receipts c
                                     where x.id = any (c.delivery_ids))
             )
             select e.seq, e.deliveries_left,
                    (select count(*) from stored s where s.seq = e.seq) as n
               from hookrelay.events e
              where e.deliveries_left <> (select count(*) from stored s where s.seq = e.seq)",
            &[],
        )
        .await
        .expect("counts")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(wrong.is_empty(), "{case}: (seq, count, stored): {wrong:?}");
}

/// Commits `events` as delivery rows: `subs` paused meanwhile (a paused
/// subscription's deliveries wait as rows, not in runs) and resumed after.
async fn commit_rows(store: &Store, subs: &[&str], events: &[ChangeEvent], position: &str) {
    let enabled = |on: bool| SubscriptionChanges {
        enabled: Some(on),
        ..Default::default()
    };
    for sub in subs {
        store
            .update_subscription(sub, &enabled(false))
            .await
            .expect("pause");
    }
    store
        .commit_batch("shop", events, position)
        .await
        .expect("commit");
    for sub in subs {
        store
            .update_subscription(sub, &enabled(true))
            .await
            .expect("resume");
    }
}

fn subscribe_to(types: &[&str]) -> Value {
    json!({"url": "https://r.example.com/", "event_types": types})
}

/// What a delivery is expected to be: its subscription, status and event.
#[derive(Clone)]
struct Expected {
    sub: String,
    status: &'static str,
    event: u32,
}

#[tokio::test]
async fn open_run_elements_are_pending_deliveries_everywhere() {
    let api = TestApi::new().await;
    let raw = api.db.raw_client().await;
    let store = api.store();
    let sub = |v: Value| v["id"].as_str().expect("id").to_owned();
    let a = sub(api.subscribe(subscribe_to(&["orders.*"])).await);
    let b = sub(api.subscribe(subscribe_to(&["orders.*"])).await);
    let now = Utc::now();
    let mut expected: BTreeMap<i64, Expected> = BTreeMap::new();

    // Rows: events 1..6 and 13..18 (orders) for A and B. Events 7..12 and 21 (notes)
    // match nobody, so they have runs only, written between the row batches so the
    // three kinds interleave by id; A's and B's first runs interleave with each other.
    let orders = |r: std::ops::RangeInclusive<u32>| -> Vec<_> {
        r.map(|n| event(n, "orders.insert", now)).collect()
    };
    commit_rows(store, &[&a, &b], &orders(1..=6), "6").await;
    let notes: Vec<_> = (7..=12)
        .chain([21])
        .map(|n| event(n, "notes.insert", now))
        .collect();
    store
        .commit_batch("shop", &notes, "12")
        .await
        .expect("commit");
    let i = next_ids(&raw, 5).await;
    let ra1 = insert_run(&raw, &a, &[i[0], i[2], i[4]], &[7, 8, 9]).await;
    let rb1 = insert_run(&raw, &b, &[i[1], i[3]], &[7, 8]).await;
    let rb1_open = i[3];
    for (id, event) in [(i[0], 7), (i[2], 8), (i[4], 9)] {
        let e = Expected {
            sub: a.clone(),
            status: "pending",
            event,
        };
        expected.insert(id, e);
    }
    for (id, event) in [(i[1], 7), (i[3], 8)] {
        let e = Expected {
            sub: b.clone(),
            status: "pending",
            event,
        };
        expected.insert(id, e);
    }
    commit_rows(store, &[&a, &b], &orders(13..=18), "18").await;
    let i = next_ids(&raw, 3).await;
    insert_run(&raw, &a, &i, &[10, 11, 12]).await;
    let ra2 = i.clone();
    for (id, event) in i.iter().zip([10, 11, 12]) {
        let e = Expected {
            sub: a.clone(),
            status: "pending",
            event,
        };
        expected.insert(*id, e);
    }
    // C is subscribed to nothing that comes: it has runs only.
    let c = sub(api.subscribe(subscribe_to(&["invoices.delete"])).await);
    let i = next_ids(&raw, 3).await;
    let rc = insert_run(&raw, &c, &i, &[10, 11, 21]).await;
    for (id, event) in i.iter().zip([10, 11, 21]) {
        let e = Expected {
            sub: c.clone(),
            status: "pending",
            event,
        };
        expected.insert(*id, e);
    }

    // The rows' outcomes: A's first six succeed together (a receipt), B's fail; A's
    // later six retry, B's later six succeed one at a time (they keep their rows).
    let claimed = claim_all(store).await;
    assert_eq!(claimed.len(), 24);
    let retry_at = now + Duration::hours(1);
    let mut first = Vec::new();
    for d in &claimed {
        let n: u32 = d.event_id["evt_test".len()..]
            .parse()
            .expect("event number");
        let (status, code, label) = match (d.subscription_id == a, n <= 6) {
            (true, true) => (OutcomeStatus::Succeeded, 200, "succeeded"),
            (false, true) => (OutcomeStatus::Failed, 500, "failed"),
            (true, false) => (OutcomeStatus::Retry { at: retry_at }, 503, "retrying"),
            (false, false) => (OutcomeStatus::Succeeded, 200, "succeeded"),
        };
        let o = outcome(d, status, code);
        if d.subscription_id == b && n > 6 {
            store.record_outcomes("test", &[o]).await.expect("record");
        } else {
            first.push(o);
        }
        let e = Expected {
            sub: d.subscription_id.clone(),
            status: label,
            event: n,
        };
        expected.insert(d.delivery_id, e);
    }
    store.record_outcomes("test", &first).await.expect("record");
    let receipts: i64 = raw
        .query_one("select count(*) from hookrelay.receipts", &[])
        .await
        .expect("receipts")
        .get(0);
    assert_eq!(receipts, 1, "A's six first successes");

    // Recorded elements, as the recorder leaves them: A's second run's first retries
    // (a row, same id), B's first run's first succeeded (a receipt's element). Each
    // takes over its element's count. A's first run was leased once and its first
    // element's attempt logged after its lease was lost.
    raw.execute(
        "insert into hookrelay.deliveries
             (id, event_seq, subscription_id, status, attempts, next_attempt_at, last_error)
         overriding system value
         select $1::bigint, seq, $2::text, 'retrying', 1, now() + interval '1 hour', 'endpoint answered 503'
           from hookrelay.events where id = 'evt_test0010'",
        &[&ra2[0], &a],
    )
    .await
    .expect("row");
    expected.get_mut(&ra2[0]).expect("element").status = "retrying";
    raw.execute(
        "insert into hookrelay.receipts
             (subscription_id, first_delivery, last_delivery, delivery_ids, event_seqs,
              created_ats, started_ats, durations_ms, status_codes, bodies)
         select $1, $2, $2, array[$2::bigint], array[seq], array[now()], array[now()],
                array[9], array[200], array['ok'::bytea]
           from hookrelay.events where id = 'evt_test0007'",
        &[&b, &rb1],
    )
    .await
    .expect("receipt");
    expected.get_mut(&rb1).expect("element").status = "succeeded";
    raw.execute(
        "update hookrelay.runs set leases = 1 where id = $1",
        &[&ra1],
    )
    .await
    .expect("leases");
    raw.execute(
        "insert into hookrelay.attempts
             (delivery_id, attempt, started_at, duration_ms, status_code, error)
         values ($1, 1, now(), 30, 503, 'endpoint answered 503')",
        &[&ra1],
    )
    .await
    .expect("attempt");
    // C's run is an hour old.
    raw.execute(
        "update hookrelay.runs set created_at = now() - interval '1 hour' where id = $1",
        &[&rc],
    )
    .await
    .expect("age");

    // Then two more events for A and B: pending rows, above every run.
    commit_rows(store, &[&a, &b], &orders(19..=20), "20").await;
    for r in raw
        .query(
            "select d.id, d.subscription_id, e.id from hookrelay.deliveries d
               join hookrelay.events e on e.seq = d.event_seq
              where d.status = 'pending'",
            &[],
        )
        .await
        .expect("pending rows")
    {
        let event: String = r.get(2);
        let n = event["evt_test".len()..].parse().expect("event number");
        let e = Expected {
            sub: r.get(1),
            status: "pending",
            event: n,
        };
        expected.insert(r.get(0), e);
    }
    assert_eq!(expected.len(), 24 + 11 + 4);
    assert_counts_match(&raw, "set up").await;

    // Listings: each delivery once, newest first, in pages of any size, under every
    // filter; a recorded element shows as its row or its receipt's element.
    let event_of = |id: &i64| expected[id].event;
    type Keep<'a> = Box<dyn Fn(&Expected) -> bool + 'a>;
    let cases: Vec<(String, Keep)> = vec![
        (String::new(), Box::new(|_: &Expected| true)),
        (
            "&status=pending".into(),
            Box::new(|e: &Expected| e.status == "pending"),
        ),
        (
            "&status=retrying".into(),
            Box::new(|e: &Expected| e.status == "retrying"),
        ),
        (
            "&status=succeeded".into(),
            Box::new(|e: &Expected| e.status == "succeeded"),
        ),
        (
            format!("&subscription_id={a}"),
            Box::new(|e: &Expected| e.sub == a),
        ),
        (
            format!("&subscription_id={a}&status=pending"),
            Box::new(|e: &Expected| e.sub == a && e.status == "pending"),
        ),
        (
            format!("&subscription_id={c}"),
            Box::new(|e: &Expected| e.sub == c),
        ),
        (
            "&event_type=notes.insert".into(),
            Box::new(|e: &Expected| (7..=12).contains(&e.event) || e.event == 21),
        ),
        (
            "&event_id=evt_test0007".into(),
            Box::new(|e: &Expected| e.event == 7),
        ),
        (
            "&event_id=evt_test0010&status=pending".into(),
            Box::new(|e: &Expected| e.event == 10 && e.status == "pending"),
        ),
    ];
    for (query, keep) in &cases {
        let mut want: Vec<i64> = expected
            .iter()
            .filter(|(_, e)| keep(e))
            .map(|(id, _)| *id)
            .collect();
        want.reverse();
        assert!(!want.is_empty(), "{query}");
        for limit in [1, 2, 3, 7, 100] {
            assert_eq!(
                all_pages(&api, query, limit).await.0,
                want,
                "{query} limit {limit}"
            );
        }
    }
    let page = api
        .get("/v1/deliveries?status=pending&limit=100")
        .await
        .json();
    for d in page["data"].as_array().expect("data") {
        let id = d["id"].as_i64().expect("id");
        assert_eq!(d["subscription_id"], expected[&id].sub.as_str(), "{id}");
        assert_eq!(d["status"], "pending");
        assert!(
            d["event_id"]
                .as_str()
                .expect("event id")
                .ends_with(&format!("{:04}", event_of(&id))),
            "{d}"
        );
    }
    // Created an hour ago: only C's run.
    let half_hour_ago = (Utc::now() - Duration::minutes(30))
        .to_rfc3339()
        .replace('+', "%2B");
    let old = all_pages(&api, &format!("&until={half_hour_ago}"), 2)
        .await
        .0;
    let want: Vec<i64> = expected
        .iter()
        .rev()
        .filter(|(_, e)| e.sub == c)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(old, want);
    let since = all_pages(
        &api,
        &format!("&since={half_hour_ago}&subscription_id={c}"),
        5,
    )
    .await
    .0;
    assert!(since.is_empty(), "{since:?}");

    // The single view: an open element with the attempt logged for it, a recorded
    // one as its row.
    let one = api.get(&format!("/v1/deliveries/{ra1}")).await;
    assert_eq!(one.status, StatusCode::OK);
    let one = one.json();
    assert_eq!(one["status"], "pending");
    assert_eq!(one["subscription_id"], a.as_str());
    assert_eq!(one["event_id"], "evt_test0007");
    assert_eq!(one["attempt_count"], 1, "{one}");
    assert_eq!(one["last_status_code"], Value::Null);
    assert_eq!(one["attempts"].as_array().expect("attempts").len(), 1);
    assert_eq!(one["attempts"][0]["status_code"], 503);
    let row = api.get(&format!("/v1/deliveries/{}", ra2[0])).await.json();
    assert_eq!(row["status"], "retrying");
    let receipted = api.get(&format!("/v1/deliveries/{rb1}")).await.json();
    assert_eq!(receipted["status"], "succeeded");
    let missing = api.get("/v1/deliveries/999999").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // Replayed, an open element stays as it is (it may be in flight); its
    // subscription is due.
    raw.execute(
        "update hookrelay.subscription_work set due_at = null where subscription_id = $1",
        &[&a],
    )
    .await
    .expect("settle");
    let res = api
        .post(&format!("/v1/deliveries/{}/replay", ra2[1]), json!({}))
        .await;
    assert_eq!(res.status, StatusCode::ACCEPTED);
    assert_eq!(res.json()["status"], "pending");
    assert_eq!(res.json()["id"], ra2[1]);
    let due: bool = raw
        .query_one(
            "select due_at is not null from hookrelay.subscription_work where subscription_id = $1",
            &[&a],
        )
        .await
        .expect("work")
        .get(0);
    assert!(due, "replay marks the subscription due");
    let runs: i64 = raw
        .query_one("select count(*) from hookrelay.runs", &[])
        .await
        .expect("runs")
        .get(0);
    assert_eq!(runs, 4, "the run is untouched");
    assert_counts_match(&raw, "replay").await;

    // The backlog counts open elements as pending, C's with only runs too.
    let backlog: BTreeMap<String, (i64, i64, f64)> = store
        .backlog()
        .await
        .expect("backlog")
        .into_iter()
        .map(|b| (b.subscription_id, (b.pending, b.retrying, b.oldest_seconds)))
        .collect();
    let of = |s: &str| {
        backlog
            .get(s)
            .copied()
            .expect("subscription in the backlog")
    };
    assert_eq!((of(&a).0, of(&a).1), (2 + 3 + 2, 6 + 1));
    assert_eq!((of(&b).0, of(&b).1), (2 + 1, 0));
    assert_eq!((of(&c).0, of(&c).1), (3, 0));
    assert!(of(&c).2 >= 3600.0, "C's oldest is its run: {}", of(&c).2);

    // Deleting C takes its open elements off their events: event 21 had C's only.
    let res = api.delete(&format!("/v1/subscriptions/{c}")).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    expected.retain(|_, e| e.sub != c);
    assert_counts_match(&raw, "delete").await;
    let left: Vec<i32> = raw
        .query(
            "select deliveries_left from hookrelay.events
              where id in ('evt_test0010', 'evt_test0011', 'evt_test0012', 'evt_test0021')
              order by seq",
            &[],
        )
        .await
        .expect("counts")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec![1, 1, 1, 0], "A's remain on events 10-12");
    assert_eq!(all_pages(&api, "", 9).await.0.len(), expected.len());

    // Expiry fails the open elements of a run past its life that nobody holds, not
    // those of one leased to a live process.
    raw.execute(
        "update hookrelay.runs set created_at = now() - interval '4 days' where id in ($1, $2)",
        &[&ra1, &rb1],
    )
    .await
    .expect("age");
    raw.execute(
        "update hookrelay.runs set lease_owner = 'other', lease_until = now() + interval '1 hour'
          where id = $1",
        &[&rb1],
    )
    .await
    .expect("lease");
    raw.execute(
        "update hookrelay.runs set lease_owner = null, lease_until = null where id = $1",
        &[&ra1],
    )
    .await
    .expect("waiting");
    let expired = store.expire_deliveries().await.expect("sweep");
    assert_eq!(expired, Some(3), "A's first run's three");
    let failed: Vec<(i64, i32, String)> = raw
        .query(
            "select id, attempts, last_error from hookrelay.deliveries
              where status = 'failed' and event_seq in (select seq from hookrelay.events
                                                        where id in ('evt_test0007', 'evt_test0008', 'evt_test0009'))
              order by id",
            &[],
        )
        .await
        .expect("failed")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(failed.len(), 3, "{failed:?}");
    for (id, attempts, error) in &failed {
        assert_eq!(expected[id].sub, a);
        assert_eq!(*attempts, 1, "as many attempts as the run's leases");
        assert!(
            error.starts_with("expired: not delivered within dispatch.max_age"),
            "{error}"
        );
        expected.get_mut(id).expect("element").status = "failed";
    }
    let runs: Vec<i64> = raw
        .query("select id from hookrelay.runs order by id", &[])
        .await
        .expect("runs")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        runs,
        vec![rb1, ra2[0]],
        "the expired run is gone, the leased one stays"
    );
    assert_counts_match(&raw, "expiry").await;
    let one = api.get(&format!("/v1/deliveries/{ra1}")).await.json();
    assert_eq!(one["status"], "failed");
    assert_eq!(one["attempts"].as_array().expect("attempts").len(), 1);

    // A 410 fails B's open elements in runs no other live process holds: one waiting
    // and one leased here, not one leased elsewhere.
    let claimed = claim_all(store).await;
    let to_b = claimed
        .iter()
        .find(|d| d.subscription_id == b)
        .expect("a pending row of B");
    let i = next_ids(&raw, 2).await;
    let waiting = insert_run(&raw, &b, &i[..1], &[12]).await;
    let here = insert_run(&raw, &b, &i[1..], &[21]).await;
    raw.execute(
        "update hookrelay.runs set lease_owner = null, lease_until = null where id = $1",
        &[&waiting],
    )
    .await
    .expect("waiting");
    raw.execute(
        "update hookrelay.runs set lease_owner = 'test', lease_until = now() + interval '1 minute',
                leases = 1
          where id = $1",
        &[&here],
    )
    .await
    .expect("lease");
    assert_counts_match(&raw, "more runs").await;
    store
        .record_outcomes("test", &[outcome(to_b, OutcomeStatus::Gone, 410)])
        .await
        .expect("record");
    let gone: Vec<(i64, String, i32)> = raw
        .query(
            "select id, last_error, attempts from hookrelay.deliveries where id = any ($1) order by id",
            &[&vec![waiting, here]],
        )
        .await
        .expect("failed")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        gone,
        vec![
            (
                waiting,
                "subscription disabled: endpoint answered 410 Gone".into(),
                0
            ),
            (
                here,
                "subscription disabled: endpoint answered 410 Gone".into(),
                1
            ),
        ]
    );
    let runs: Vec<i64> = raw
        .query("select id from hookrelay.runs order by id", &[])
        .await
        .expect("runs")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(runs, vec![rb1, ra2[0]], "the one leased elsewhere stays");
    assert_counts_match(&raw, "gone").await;
    // and it refuses a replay like a row of a gone subscription
    let res = api
        .post(&format!("/v1/deliveries/{rb1_open}/replay"), json!({}))
        .await;
    assert_eq!(res.status, StatusCode::CONFLICT);
}
