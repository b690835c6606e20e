//! Idle subscriptions cost nothing, against the real store: a claim reads
//! only the subscriptions with due work, and work that comes due later on an idle
//! subscription (a retry, a replay, an expired lease, a new batch) is found; a batch's
//! fan-out reads only the subscriptions its filters could match, and picks exactly the
//! ones the documented filter rules name.

use std::time::{Duration, Instant};

use chrono::Utc;
use hookrelay_core::ChangeEvent;
use hookrelay_store::{
    model::{NewSubscription, OrderingMode},
    Claim, Outcome, OutcomeStatus, Store,
};
use serde_json::Value;

use crate::harness::{outcome, subscription_to, TestDb, FANNED_OUT};

const IDLE: i64 = 10_000;

async fn store(db: &TestDb) -> Store {
    let store = Store::connect(&db.url(), 4).expect("store");
    store.migrate().await.expect("migrate");
    store
}

async fn subscribe(store: &Store, types: &[&str]) -> String {
    store
        .create_subscription(&NewSubscription {
            event_types: Some(types.iter().map(|t| t.to_string()).collect()),
            ..subscription_to("http://127.0.0.1:9/")
        })
        .await
        .expect("subscription")
        .id
}

/// `IDLE` enabled subscriptions whose types never match, written straight into the
/// table (10,000 API calls would only slow the test down).
async fn add_idle(db: &TestDb) {
    db.connect()
        .await
        .execute(
            "insert into hookrelay.subscriptions (id, url, event_types, type_patterns, secret)
             select 'sub_idle' || lpad(n::text, 5, '0'), 'http://127.0.0.1:9/', '{other.*}',
                    '{other.%}', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
               from generate_series(1, $1::bigint) n",
            &[&IDLE],
        )
        .await
        .expect("idle subscriptions");
}

async fn commit(store: &Store, tag: &str, n: u32) -> u64 {
    let events: Vec<ChangeEvent> = (0..n)
        .map(|i| ChangeEvent {
            id: format!("evt_{tag}{i:04}"),
            event_type: "orders.update".into(),
            source: "shop".into(),
            order_key: i64::from(i),
            committed_at: Utc::now(),
            body: format!("{{\"n\":{i}}}"),
        })
        .collect();
    store
        .commit_batch("shop", &events, tag)
        .await
        .expect("commit")
        .deliveries
}

async fn claim(store: &Store, lease: Duration) -> Claim {
    store
        .claim_due_deliveries("owner", 256, lease, 64, &[])
        .await
        .expect("claim")
}

/// Rows a plan node and its children read from `tables`: returned, filtered out or
/// rechecked, times the node's loops.
fn rows_read(node: &Value, tables: &[&str]) -> f64 {
    let own = if node["Relation Name"]
        .as_str()
        .is_some_and(|r| tables.contains(&r))
    {
        let n = |k: &str| node[k].as_f64().unwrap_or(0.0);
        (n("Actual Rows") + n("Rows Removed by Filter") + n("Rows Removed by Index Recheck"))
            * n("Actual Loops").max(1.0)
    } else {
        0.0
    };
    let children: f64 = node["Plans"]
        .as_array()
        .map(|ps| ps.iter().map(|p| rows_read(p, tables)).sum())
        .unwrap_or(0.0);
    own + children
}

/// Shared buffers the plan's scans of `tables` touched (a bitmap heap scan's count
/// includes its index scans).
fn buffers_read(node: &Value, tables: &[&str]) -> i64 {
    if node["Relation Name"]
        .as_str()
        .is_some_and(|r| tables.contains(&r))
    {
        return node["Shared Hit Blocks"].as_i64().unwrap_or(0)
            + node["Shared Read Blocks"].as_i64().unwrap_or(0);
    }
    node["Plans"]
        .as_array()
        .map(|ps| ps.iter().map(|p| buffers_read(p, tables)).sum())
        .unwrap_or(0)
}

/// A plan's nodes, one a line, with their relation and actual rows (for messages).
fn outline(node: &Value, depth: usize, out: &mut String) {
    let n = |k: &str| node[k].as_f64().unwrap_or(0.0);
    out.push_str(&format!(
        "{}{} {} {} rows x{} loops, {} removed\n",
        "  ".repeat(depth),
        node["Node Type"].as_str().unwrap_or("?"),
        node["Relation Name"]
            .as_str()
            .or(node["Index Name"].as_str())
            .unwrap_or(""),
        n("Actual Rows"),
        n("Actual Loops"),
        n("Rows Removed by Filter")
    ));
    for p in node["Plans"].as_array().into_iter().flatten() {
        outline(p, depth + 1, out);
    }
}

/// The claim as the dispatcher runs it, under `EXPLAIN (ANALYZE, BUFFERS)` in a
/// transaction that is rolled back: (rows read from the subscription tables, shared
/// buffers touched by the whole statement).
async fn explain_claim(db: &TestDb) -> (f64, i64) {
    let mut c = db.connect().await;
    let tx = c.transaction().await.expect("tx");
    // The relaxed pool's settings (see hookrelay-store/src/lib.rs).
    tx.batch_execute(
        "set local jit = off; set local random_page_cost = 1.1; \
         set local plan_cache_mode = force_generic_plan",
    )
    .await
    .expect("settings");
    let sql = format!(
        "explain (analyze, buffers, format json) {}",
        hookrelay_store::statements::CLAIM_DUE
    );
    let none: Vec<String> = Vec::new();
    let (rooms, cursors): (Vec<i32>, Vec<i64>) = (Vec::new(), Vec::new());
    let row = tx
        .query_one(
            &sql,
            &[&256i64, &60f64, &"explain", &none, &64i32, &rooms, &cursors],
        )
        .await
        .expect("explain the claim");
    let plan: Value = row.get(0);
    tx.rollback().await.expect("rollback");
    let top = &plan[0]["Plan"];
    let rows = rows_read(top, &["subscriptions", "subscription_work"]);
    let buffers = top["Shared Hit Blocks"].as_i64().unwrap_or(0)
        + top["Shared Read Blocks"].as_i64().unwrap_or(0);
    (rows, buffers)
}

/// A batch's statement under `EXPLAIN (ANALYZE, BUFFERS)` with a generic plan (what a
/// cached statement settles on), rolled back: the plan's top node. Events of type
/// `orders.update` with order keys `keys`; with `offer`, the form that leases to the
/// local dispatcher, each subscription named offered that much room.
async fn batch_plan(
    db: &TestDb,
    tag: &str,
    keys: std::ops::Range<i64>,
    offer: Option<(&[String], i32)>,
) -> Value {
    let mut c = db.connect().await;
    let tx = c.transaction().await.expect("tx");
    tx.batch_execute("set local jit = off; set local plan_cache_mode = force_generic_plan")
        .await
        .expect("settings");
    let sql = format!(
        "explain (analyze, buffers, format json) {}",
        hookrelay_store::statements::insert_events_and_deliveries(offer.is_some(), false)
    );
    let n = keys.clone().count();
    let ids: Vec<String> = (0..n).map(|i| format!("evt_{tag}{i:04}")).collect();
    let sources = vec!["shop"; n];
    let types = vec!["orders.update"; n];
    let keys: Vec<i64> = keys.collect();
    let times = vec![Utc::now(); n];
    let bodies = vec!["{}"; n];
    let row = match offer {
        None => tx
            .query_one(&sql, &[&ids, &sources, &types, &keys, &times, &bodies])
            .await
            .expect("explain the batch"),
        Some((subs, room)) => {
            let rooms = vec![room; subs.len()];
            tx.query_one(
                &sql,
                &[
                    &ids, &sources, &types, &keys, &times, &bodies, &"owner", &subs, &rooms,
                    &60.0f64,
                ],
            )
            .await
            .expect("explain the offered batch")
        }
    };
    let plan: Value = row.get(0);
    tx.rollback().await.expect("rollback");
    plan[0]["Plan"].clone()
}

/// [`batch_plan`] for `n` events with no offer: (rows and shared buffers it read from
/// the subscription tables, the plan's outline).
async fn explain_batch(db: &TestDb, tag: &str, n: usize) -> (f64, i64, String) {
    let top = batch_plan(db, tag, 0..n as i64, None).await;
    let tables = ["subscriptions", "subscription_matchers"];
    let rows = rows_read(&top, &tables);
    let buffers = buffers_read(&top, &tables);
    let mut plan = String::new();
    outline(&top, 0, &mut plan);
    (rows, buffers, plan)
}

#[tokio::test]
async fn a_batch_reads_only_the_subscriptions_it_could_match() {
    let db = TestDb::new("idle").await;
    let store = store(&db).await;
    for types in [&["orders.*"][..], &["*.update"], &["orders.update", "x.*"]] {
        subscribe(&store, types).await;
    }
    // Warm, then measure, before the idle ones exist.
    explain_batch(&db, "warm", 100).await;
    let (alone_rows, alone_buffers, _) = explain_batch(&db, "alone", 100).await;
    add_idle(&db).await;
    db.connect()
        .await
        .batch_execute("analyze hookrelay.subscriptions; analyze hookrelay.subscription_matchers")
        .await
        .expect("analyze");
    explain_batch(&db, "warm2", 100).await;
    let (rows, buffers, plan) = explain_batch(&db, "beside", 100).await;
    eprintln!(
        "a 100-event batch for 3 subscriptions: alone read {alone_rows} subscription rows, \
         {alone_buffers} buffers; beside {IDLE} idle ones {rows} rows, {buffers} buffers"
    );
    // Matching every enabled subscription's patterns read all 10,003 rows (per event,
    // as the generic plan had it: a million LIKEs for this batch). The index reads
    // the three candidates, each once per (source, type) and once to fetch it.
    assert!(rows <= 3.0 * 3.0, "read {rows} subscription rows:\n{plan}");
    // The index is one level deeper with 10,000 more entries: a probe per prefix and
    // suffix of the type costs a page more. The subscriptions table alone holds
    // about 200 pages.
    assert!(
        buffers <= alone_buffers + 40,
        "{buffers} buffers beside idle subscriptions, {alone_buffers} without:\n{plan}"
    );
    assert_eq!(commit(&store, "real", 100).await, 300);
}

#[tokio::test]
async fn a_claim_reads_only_subscriptions_with_due_work() {
    let db = TestDb::new("idle").await;
    let store = store(&db).await;
    add_idle(&db).await;
    let a = subscribe(&store, &["orders.*"]).await;
    let b = subscribe(&store, &["*.update"]).await;
    // Some idle ones had work once, all of it finished: they must settle out too.
    let was_busy = subscribe(&store, &["orders.update"]).await;
    assert_eq!(commit(&store, "first", 2).await, 6);
    let c = claim(&store, Duration::from_secs(60)).await;
    assert_eq!(c.deliveries.len(), 6);
    let done: Vec<Outcome> = c
        .deliveries
        .iter()
        .map(|d| outcome(d, OutcomeStatus::Succeeded))
        .collect();
    store.record_outcomes("owner", &done).await.expect("record");
    // The claim after that finds nothing open and settles all three.
    assert!(claim(&store, Duration::from_secs(60))
        .await
        .deliveries
        .is_empty());
    let due: i64 = db
        .connect()
        .await
        .query_one(
            "select count(*) from hookrelay.subscription_work where due_at is not null",
            &[],
        )
        .await
        .expect("due")
        .get(0);
    assert_eq!(due, 0, "finished subscriptions stay due");
    let (idle_rows, idle_buffers) = explain_claim(&db).await;

    // Now work for two of them (the third no longer matches).
    store
        .update_subscription(
            &was_busy,
            &hookrelay_store::model::SubscriptionChanges {
                event_types: Some(Some(vec!["orders.insert".into()])),
                ..Default::default()
            },
        )
        .await
        .expect("update");
    assert_eq!(commit(&store, "second", 5).await, 10);
    let (rows, buffers) = explain_claim(&db).await;
    eprintln!(
        "claim with {IDLE} idle subscriptions: nothing due read {idle_rows} subscription \
         rows, {idle_buffers} buffers; 2 due read {rows} rows, {buffers} buffers"
    );
    // Naming every enabled subscription read all 10,003 rows; the due set reads the
    // two due ones (once per delivery claimed, to sign it).
    assert!(idle_rows <= 1.0, "read {idle_rows} subscription rows");
    assert!(rows <= 40.0, "read {rows} subscription rows");
    assert!(
        buffers < 400,
        "the claim touched {buffers} buffers; the subscriptions table alone holds more"
    );

    let c = claim(&store, Duration::from_secs(60)).await;
    let mut subs: Vec<&str> = c
        .deliveries
        .iter()
        .map(|d| d.subscription_id.as_str())
        .collect();
    subs.dedup();
    subs.sort_unstable();
    subs.dedup();
    let mut want = vec![a.as_str(), b.as_str()];
    want.sort_unstable();
    assert_eq!(subs, want);
    assert_eq!(c.deliveries.len(), 10);
}

async fn due_at(db: &TestDb, sub: &str) -> Option<chrono::DateTime<Utc>> {
    db.connect()
        .await
        .query_one(
            "select due_at from hookrelay.subscription_work where subscription_id = $1",
            &[&sub],
        )
        .await
        .expect("due_at")
        .get(0)
}

/// Claims until one returns something or `deadline` passes.
async fn claim_until_found(store: &Store, lease: Duration, deadline: Duration) -> Claim {
    let until = Instant::now() + deadline;
    loop {
        let c = claim(store, lease).await;
        if !c.deliveries.is_empty() || Instant::now() > until {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn work_that_comes_due_on_an_idle_subscription_is_claimed() {
    let db = TestDb::new("idle").await;
    let store = store(&db).await;
    add_idle(&db).await;
    let sub = subscribe(&store, &["orders.*"]).await;
    let long = Duration::from_secs(60);

    // A retry: the subscription settles until the retry's time, then it is claimed.
    assert_eq!(commit(&store, "retry", 1).await, 1);
    let c = claim(&store, long).await;
    assert_eq!(c.deliveries.len(), 1);
    let at = Utc::now() + chrono::Duration::milliseconds(800);
    store
        .record_outcomes(
            "owner",
            &[outcome(&c.deliveries[0], OutcomeStatus::Retry { at })],
        )
        .await
        .expect("record");
    assert!(claim(&store, long).await.deliveries.is_empty());
    let settled = due_at(&db, &sub).await.expect("due at the retry's time");
    assert!(
        (settled - at).num_milliseconds().abs() <= 1,
        "due at {settled}, the retry is at {at}"
    );
    let c = claim_until_found(&store, long, Duration::from_secs(10)).await;
    assert_eq!(c.deliveries.len(), 1, "the retry was never claimed");
    assert!(Utc::now() >= at, "claimed before its time");
    assert_eq!(c.deliveries[0].attempt, 2);
    let first = c.deliveries[0].clone();
    store
        .record_outcomes("owner", &[outcome(&first, OutcomeStatus::Failed)])
        .await
        .expect("record");
    assert!(claim(&store, long).await.deliveries.is_empty());
    assert_eq!(due_at(&db, &sub).await, None, "nothing open: not due");

    // A replay of the failed delivery is claimed at once.
    store
        .replay_delivery(first.delivery_id)
        .await
        .expect("replay");
    let c = claim(&store, Duration::from_secs(1)).await;
    assert_eq!(c.deliveries.len(), 1, "the replay was not claimed");

    // Its lease expires unrecorded (a crashed process): claimed again after it.
    assert!(claim(&store, long).await.deliveries.is_empty());
    assert!(due_at(&db, &sub).await.is_some(), "in flight: still due");
    let c = claim_until_found(&store, long, Duration::from_secs(10)).await;
    assert_eq!(
        c.deliveries.len(),
        1,
        "the expired lease was never reclaimed"
    );
    store
        .record_outcomes(
            "owner",
            &[outcome(&c.deliveries[0], OutcomeStatus::Succeeded)],
        )
        .await
        .expect("record");
    assert!(claim(&store, long).await.deliveries.is_empty());
    assert_eq!(due_at(&db, &sub).await, None);

    // A new batch for the idle subscription is claimed at once.
    assert_eq!(commit(&store, "later", 3).await, 3);
    assert_eq!(claim(&store, long).await.deliveries.len(), 3);
}

/// Fan-out matches each (source, type) pair of a batch once; the subscriptions it
/// picks must be exactly the documented filters': globs over `<table>.<op>` with `*`
/// and `?` (SQL wildcards and backslashes literal), and the `sources` list.
#[tokio::test]
async fn fan_out_picks_the_subscriptions_the_filters_name() {
    use hookrelay_core::filter::glob_matches;
    let db = TestDb::new("idle").await;
    let store = store(&db).await;
    // (event_types, sources); None = every one.
    type Filter<'a> = (Option<&'a [&'a str]>, Option<&'a [&'a str]>);
    let filters: &[Filter] = &[
        (None, None),
        (Some(&["orders.*"]), None),
        (Some(&["*.delete"]), None),
        (Some(&["orders.insert", "customers.*"]), None),
        (Some(&["order_items.?nsert"]), None),
        (Some(&["100%_off.*"]), None),
        (Some(&["a\\b.*"]), None),
        (Some(&["*"]), Some(&["shop"])),
        (None, Some(&["legacy", "docs"])),
        (Some(&["orders.*"]), Some(&["legacy"])),
        (Some(&["other.*"]), None),
        (Some(&["*.update", "*.delete"]), Some(&["shop", "docs"])),
        // each way a glob is indexed (sql/V8): by prefix, by suffix, by neither
        (Some(&["ord*rt"]), None),
        (Some(&["o*.delete"]), None),
        (Some(&["?rders.*"]), None),
        (Some(&["*s.ins*"]), None),
        (Some(&["customers.deleted"]), None),
        (Some(&["orders.insert*"]), None),
        (None, Some(&["shop"])),
        (Some(&["ørders.*", "Order Items.?nsert"]), None),
    ];
    let mut subs = Vec::new();
    for (types, sources) in filters {
        let id = store
            .create_subscription(&NewSubscription {
                event_types: types.map(|t| t.iter().map(|g| g.to_string()).collect()),
                sources: sources.map(|s| s.iter().map(|n| n.to_string()).collect()),
                ..subscription_to("http://127.0.0.1:9/")
            })
            .await
            .expect("subscription")
            .id;
        subs.push((id, *types, *sources));
    }
    let kinds = [
        ("shop", "orders.insert"),
        ("shop", "orders.update"),
        ("shop", "orders_archive.update"),
        ("shop", "customers.delete"),
        ("shop", "customers.deleted"),
        ("legacy", "orders.delete"),
        ("legacy", "order_items.insert"),
        ("docs", "orderXitems.insert"),
        ("docs", "100%_off.insert"),
        ("docs", "100x_off.insert"),
        ("shop", "a\\b.update"),
        ("shop", "ab.update"),
        ("docs", "orders.insert"),
        ("docs", "ordinary.insert"),
        ("shop", "ørders.delete"),
        ("legacy", "Order Items.insert"),
        ("shop", "o.delete"),
    ];
    // One batch per source, every type in it, several events per type.
    let mut n = 0;
    for source in ["shop", "legacy", "docs"] {
        let events: Vec<ChangeEvent> = kinds
            .iter()
            .filter(|(s, _)| *s == source)
            .flat_map(|(s, t)| (0..3).map(move |k| (s, t, k)))
            .map(|(s, t, k)| {
                n += 1;
                ChangeEvent {
                    id: format!("evt_match{n:04}"),
                    event_type: t.to_string(),
                    source: s.to_string(),
                    order_key: k,
                    committed_at: Utc::now(),
                    body: "{}".into(),
                }
            })
            .collect();
        store
            .commit_batch(source, &events, "1")
            .await
            .expect("commit");
    }
    let c = db.connect().await;
    for (source, event_type) in kinds {
        // the old form of the match, straight over the subscriptions (the oracle the
        // index must agree with)
        let like_any: Vec<String> = c
            .query(
                "select id from hookrelay.subscriptions s
                  where s.enabled
                    and (s.type_patterns is null or $2 like any (s.type_patterns))
                    and (s.sources is null or $1 = any (s.sources))
                  order by 1",
                &[&source, &event_type],
            )
            .await
            .expect("like any")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let got: Vec<String> = c
            .query(
                &format!(
                    "select distinct d.subscription_id from {FANNED_OUT} d
                       join hookrelay.events e on e.seq = d.event_seq
                      where e.source = $1 and e.event_type = $2 order by 1"
                ),
                &[&source, &event_type],
            )
            .await
            .expect("deliveries")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut want: Vec<String> = subs
            .iter()
            .filter(|(_, types, sources)| {
                types.is_none_or(|ts| ts.iter().any(|g| glob_matches(g, event_type)))
                    && sources.is_none_or(|ss| ss.contains(&source))
            })
            .map(|(id, _, _)| id.clone())
            .collect();
        want.sort_unstable();
        assert_eq!(got, want, "{source} {event_type}");
        assert_eq!(like_any, want, "{source} {event_type}: the old match");
        let per_event: i64 = c
            .query_one(
                &format!(
                    "select count(*) from {FANNED_OUT} d
                       join hookrelay.events e on e.seq = d.event_seq
                      where e.source = $1 and e.event_type = $2"
                ),
                &[&source, &event_type],
            )
            .await
            .expect("count")
            .get(0);
        assert_eq!(per_event, 3 * want.len() as i64, "{source} {event_type}");
    }
}

/// Random globs over a small alphabet (wildcards, LIKE's own wildcards, backslashes,
/// pieces of names) against random types, in one batch: every event goes to exactly
/// the subscriptions whose globs match it by the documented rule.
#[tokio::test]
async fn fan_out_agrees_with_the_glob_rule_on_random_filters() {
    use hookrelay_core::filter::glob_matches;
    let db = TestDb::new("idle").await;
    let store = store(&db).await;
    const PIECES: &[&str] = &["*", "?", "%", "_", "\\", ".", "o", "or", "ders", "x", "ins"];
    // xorshift: the same tables every run
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let text = |next: &mut dyn FnMut(usize) -> usize, wild: bool| {
        let len = 1 + next(5);
        (0..len)
            .map(|_| {
                let p = PIECES[next(PIECES.len())];
                if !wild && (p == "*" || p == "?") {
                    "r"
                } else {
                    p
                }
            })
            .collect::<String>()
    };
    let mut subs = Vec::new();
    for _ in 0..150 {
        let globs: Vec<String> = (0..1 + next(3)).map(|_| text(&mut next, true)).collect();
        let id = store
            .create_subscription(&NewSubscription {
                event_types: Some(globs.clone()),
                ordering: OrderingMode::None,
                ..subscription_to("http://127.0.0.1:9/")
            })
            .await
            .expect("subscription")
            .id;
        subs.push((id, globs));
    }
    let mut types: Vec<String> = (0..200).map(|_| text(&mut next, false)).collect();
    // and types the globs were made from, so that many match
    types.extend(
        subs.iter()
            .take(50)
            .map(|(_, g)| g[0].replace(['*', '?'], "o")),
    );
    types.sort_unstable();
    types.dedup();
    let events: Vec<ChangeEvent> = types
        .iter()
        .enumerate()
        .map(|(i, t)| ChangeEvent {
            id: format!("evt_rand{i:04}"),
            event_type: t.clone(),
            source: "shop".into(),
            order_key: i as i64,
            committed_at: Utc::now(),
            body: "{}".into(),
        })
        .collect();
    store
        .commit_batch("shop", &events, "1")
        .await
        .expect("commit");
    let c = db.connect().await;
    let mut matched = 0;
    for t in &types {
        let got: Vec<String> = c
            .query(
                &format!(
                    "select d.subscription_id from {FANNED_OUT} d
                       join hookrelay.events e on e.seq = d.event_seq
                      where e.event_type = $1 order by 1"
                ),
                &[t],
            )
            .await
            .expect("deliveries")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut want: Vec<String> = subs
            .iter()
            .filter(|(_, globs)| globs.iter().any(|g| glob_matches(g, t)))
            .map(|(id, _)| id.clone())
            .collect();
        want.sort_unstable();
        matched += want.len();
        assert_eq!(got, want, "type {t:?}");
    }
    assert!(
        matched > 50,
        "the tables should match now and then: {matched}"
    );
}

/// Rows every node of a plan produced, times its loops: linear in a batch's size for
/// a sound plan, quadratic for one that loops a subquery per row.
fn rows_processed(node: &Value) -> f64 {
    let n = |k: &str| node[k].as_f64().unwrap_or(0.0);
    let children: f64 = node["Plans"]
        .as_array()
        .map(|ps| ps.iter().map(rows_processed).sum())
        .unwrap_or(0.0);
    n("Actual Rows") * n("Actual Loops").max(1.0) + children
}

/// The batch that leases fresh deliveries to the local dispatcher (an offer) looks up
/// each new delivery's key once, by index, and does work in proportion to its size,
/// beside a backlog of open deliveries. Its first form had the generic plan hash
/// every open delivery of the store on each batch, and loop over the batch's
/// deliveries once per delivery: a 1,000-event batch for 10 subscriptions ran for
/// over a minute.
#[tokio::test]
async fn a_batch_with_an_offer_does_work_in_proportion_to_its_size() {
    let db = TestDb::new("offer").await;
    let store = store(&db).await;
    let mut subs = Vec::new();
    for types in [&["orders.*"][..], &["*.update"], &["orders.update"]] {
        subs.push(subscribe(&store, types).await);
    }
    // A backlog: 2,000 events, 6,000 open deliveries, keys 0-1,999.
    commit(&store, "backlog", 2_000).await;
    db.connect()
        .await
        .batch_execute("analyze hookrelay.deliveries")
        .await
        .expect("analyze");
    let n = 1_000i64;
    // Keys 1,500-2,499: half of them have an open delivery in the backlog.
    let offer = Some((&subs[..], 128));
    batch_plan(&db, "warm", 1_500..1_500 + n, offer).await;
    let top = batch_plan(&db, "measured", 1_500..1_500 + n, offer).await;
    let (processed, deliveries_read) = (rows_processed(&top), rows_read(&top, &["deliveries"]));
    let mut plan = String::new();
    outline(&top, 0, &mut plan);
    eprintln!(
        "an offered {n}-event batch for 3 subscriptions: {processed} rows through its \
         plan, {deliveries_read} delivery rows read"
    );

    // 3,000 new deliveries, each through a few dozen nodes (80,000 rows in all when
    // written); the quadratic plan put millions through.
    assert!(
        processed <= 150.0 * n as f64,
        "{processed} rows through the plan:\n{plan}"
    );
    // The inserts' 3,000 rows, and at most one open delivery per new one (the lookup
    // stops at the first); hashing the backlog read all 6,000 open ones besides.
    assert!(
        deliveries_read <= 6.0 * n as f64,
        "{deliveries_read} delivery rows read:\n{plan}"
    );
}
