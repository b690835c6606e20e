//! The claim's cursor contract, against the real store: what the dispatcher's
//! per-subscription cursors rely on (see hookrelay-store/src/claim.rs).

use std::time::Duration;

use chrono::Utc;
use hookrelay_core::ChangeEvent;
use hookrelay_store::{
    model::SubscriptionChanges, Claim, ClaimProgress, ClaimRoom, Offer, Outcome, OutcomeStatus,
    Store,
};

use crate::harness::{outcome, subscription_to, TestDb, FANNED_OUT};

const LEASE: Duration = Duration::from_secs(60);

async fn store_with_subscription(db: &TestDb) -> (Store, String) {
    let store = Store::connect(&db.url(), 4).expect("store");
    store.migrate().await.expect("migrate");
    let sub = store
        .create_subscription(&subscription_to("http://127.0.0.1:9/"))
        .await
        .expect("subscription");
    (store, sub.id)
}

/// Events `n` in order; `key(n)` picks each one's order key.
fn events(ns: std::ops::Range<u32>, key: impl Fn(u32) -> i64) -> Vec<ChangeEvent> {
    ns.map(|n| ChangeEvent {
        id: format!("evt_claim{n:04}"),
        event_type: "orders.update".into(),
        source: "shop".into(),
        order_key: key(n),
        committed_at: Utc::now(),
        body: format!("{{\"n\":{n}}}"),
    })
    .collect()
}

/// Commits [`events`] `ns` as delivery rows, the cursors' subject: `sub` is paused
/// meanwhile (a paused subscription's deliveries wait as rows, not in runs) and
/// resumed after. Returns the first delivery's id.
async fn commit(
    store: &Store,
    sub: &str,
    ns: std::ops::Range<u32>,
    key: impl Fn(u32) -> i64,
) -> i64 {
    let enabled = |on: bool| SubscriptionChanges {
        enabled: Some(on),
        ..Default::default()
    };
    store
        .update_subscription(sub, &enabled(false))
        .await
        .expect("pause");
    let events = events(ns.clone(), key);
    let out = store
        .commit_batch("shop", &events, &ns.end.to_string())
        .await
        .expect("commit");
    assert_eq!(out.deliveries, events.len() as u64);
    store
        .update_subscription(sub, &enabled(true))
        .await
        .expect("resume");
    out.first_waiting.expect("deliveries were created")
}

async fn claim(store: &Store, sub: &str, room: usize, cursor: i64) -> Claim {
    store
        .claim_due_deliveries(
            "owner",
            256,
            LEASE,
            room,
            &[ClaimRoom {
                subscription_id: sub.into(),
                room,
                cursor,
            }],
        )
        .await
        .expect("claim")
}

fn ids(c: &Claim) -> Vec<i64> {
    c.deliveries.iter().map(|d| d.delivery_id).collect()
}

fn only_progress(c: &Claim) -> &ClaimProgress {
    assert_eq!(c.progress.len(), 1, "{:?}", c.progress);
    &c.progress[0]
}

#[tokio::test]
async fn claims_start_above_the_cursor_and_report_how_far_they_saw() {
    let db = TestDb::new("claims").await;
    let (store, sub) = store_with_subscription(&db).await;
    let first = commit(&store, &sub, 0..6, i64::from).await;

    let c = claim(&store, &sub, 3, 0).await;
    assert_eq!(ids(&c), vec![first, first + 1, first + 2]);
    let p = only_progress(&c);
    assert_eq!((p.hold, p.reach), (None, Some(first + 2)));

    // Above the cursor only; the first three are leased anyway.
    let c = claim(&store, &sub, 3, first + 2).await;
    assert_eq!(ids(&c), vec![first + 3, first + 4, first + 5]);

    // Nothing pending above the cursor: reach is the subscription's newest row.
    let c = claim(&store, &sub, 3, first + 5).await;
    assert!(c.deliveries.is_empty());
    assert_eq!(only_progress(&c).reach, Some(first + 5));

    // From the start, everything leased is passed over, not held.
    let c = claim(&store, &sub, 8, 0).await;
    assert!(c.deliveries.is_empty());
    let p = only_progress(&c);
    assert_eq!((p.hold, p.reach), (None, Some(first + 5)));
    assert_eq!(c.enabled, vec![sub.clone()]);

    // A subscription without room is not looked at, but still named as enabled.
    let c = claim(&store, &sub, 0, 0).await;
    assert!(c.deliveries.is_empty() && c.progress.is_empty());
    assert_eq!(c.enabled, vec![sub]);
}

#[tokio::test]
async fn a_blocked_key_holds_the_cursor_below_it() {
    let db = TestDb::new("claims").await;
    let (store, sub) = store_with_subscription(&db).await;
    // Rows 0 and 2 share a key; 1 and 3 have their own.
    let first = commit(&store, &sub, 0..4, |n| {
        if n % 2 == 0 {
            7
        } else {
            100 + i64::from(n)
        }
    })
    .await;

    let c = claim(&store, &sub, 8, 0).await;
    assert_eq!(ids(&c), vec![first, first + 1, first + 3]);
    let p = only_progress(&c);
    assert_eq!(
        (p.hold, p.reach),
        (Some(first + 2), Some(first + 3)),
        "row 2 waits for row 0, so the cursor must stay below it"
    );
}

#[tokio::test]
async fn rows_below_the_cursor_wait_for_a_rescan() {
    let db = TestDb::new("claims").await;
    let (store, sub) = store_with_subscription(&db).await;
    let first = commit(&store, &sub, 0..2, i64::from).await;
    // What a late-committing batch looks like to a cursor already past it.
    let c = claim(&store, &sub, 8, first + 1).await;
    assert!(c.deliveries.is_empty());
    let c = claim(&store, &sub, 8, first - 1).await;
    assert_eq!(ids(&c), vec![first, first + 1]);
}

/// A source re-reads what it had not acknowledged when hookrelay stopped, so a batch
/// may hold changes already stored. The batch is written without skipping ids (cheaper
/// per event); one that hits a stored id is written again, skipping them. Either way
/// (with an offer or without) the stored ones are neither stored nor delivered twice,
/// and the new ones and the checkpoint are kept.
#[tokio::test]
async fn a_batch_holding_stored_changes_stores_and_delivers_only_the_new_ones() {
    let db = TestDb::new("claims_reread").await;
    let (store, sub) = store_with_subscription(&db).await;
    let first = store
        .commit_batch("shop", &events(0..4, i64::from), "4")
        .await
        .expect("first batch");
    assert_eq!((first.events, first.deliveries), (4, 4));
    // in flight to the offer's owner: the new ones may be handed to it behind them
    let c = claim(&store, &sub, 8, 0).await;
    assert_eq!(c.deliveries.len(), 4);

    // half stored, half new, with an offer: only the new ones are handed over
    let offer = Offer {
        owner: "owner".into(),
        lease: LEASE,
        rooms: vec![(sub.clone(), 100)],
    };
    let (again, handed) = store
        .commit_batch_offered("shop", &events(2..8, i64::from), "8", Some(&offer), None)
        .await
        .expect("overlapping batch");
    assert_eq!((again.events, again.deliveries), (4, 4));
    let mut sent: Vec<&str> = handed
        .deliveries
        .iter()
        .map(|d| d.event_id.as_str())
        .collect();
    sent.sort_unstable();
    assert_eq!(
        sent,
        [
            "evt_claim0004",
            "evt_claim0005",
            "evt_claim0006",
            "evt_claim0007"
        ]
    );

    // all stored, without an offer: nothing new, but the checkpoint still moves
    let none = store
        .commit_batch("shop", &events(0..8, i64::from), "9")
        .await
        .expect("stored batch");
    assert_eq!((none.events, none.deliveries), (0, 0));
    let checkpoint = store
        .load_checkpoint("shop")
        .await
        .expect("checkpoint")
        .expect("saved");
    assert_eq!(checkpoint.position, "9");

    let client = db.connect().await;
    let per_event: Vec<(String, i64)> = client
        .query(
            &format!(
                "select e.id, count(d.event_seq) from hookrelay.events e
                   left join {FANNED_OUT} d on d.event_seq = e.seq
                  group by e.id order by e.id"
            ),
            &[],
        )
        .await
        .expect("events")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: Vec<(String, i64)> = (0..8).map(|n| (format!("evt_claim{n:04}"), 1)).collect();
    assert_eq!(per_event, expected);
}

async fn runs_left(db: &TestDb) -> Vec<(i64, Option<String>, i32)> {
    db.connect()
        .await
        .query(
            "select id, lease_owner, leases from hookrelay.runs order by id",
            &[],
        )
        .await
        .expect("runs")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// A run handed to a process that then died: once its lease runs out, a claim takes
/// it again for the deliveries with no outcome recorded only, as their second
/// attempt; the ones recorded (a success, a retry) are not sent again.
#[tokio::test]
async fn a_run_whose_process_died_is_taken_again_for_what_has_no_outcome() {
    let db = TestDb::new("claims_runs").await;
    let (store, sub) = store_with_subscription(&db).await;
    let offer = Offer {
        owner: "dead".into(),
        lease: LEASE,
        rooms: vec![(sub.clone(), 100)],
    };
    let (out, handed) = store
        .commit_batch_offered("shop", &events(0..8, i64::from), "8", Some(&offer), None)
        .await
        .expect("batch");
    assert_eq!(out.deliveries, 8);
    assert_eq!(handed.deliveries.len(), 8, "handed as one run");
    assert!(out.first_waiting.is_none());
    let d = &handed.deliveries;
    store
        .record_outcomes(
            "dead",
            &[
                outcome(&d[0], OutcomeStatus::Succeeded),
                outcome(
                    &d[1],
                    OutcomeStatus::Retry {
                        at: Utc::now() + chrono::Duration::hours(1),
                    },
                ),
                outcome(&d[2], OutcomeStatus::Succeeded),
            ],
        )
        .await
        .expect("three outcomes");
    // Not the last of the run: it stays, leased to the dead process.
    let runs = runs_left(&db).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].1.as_deref(), Some("dead"));
    // While the lease holds, nobody else takes it.
    assert!(claim(&store, &sub, 100, 0).await.deliveries.is_empty());

    db.connect()
        .await
        .execute(
            "update hookrelay.runs set lease_until = now() - interval '1 second'",
            &[],
        )
        .await
        .expect("the lease runs out");
    let c = claim(&store, &sub, 100, 0).await;
    let again: Vec<i64> = ids(&c);
    let want: Vec<i64> = d[3..].iter().map(|d| d.delivery_id).collect();
    assert_eq!(again, want, "only those with no outcome, with their ids");
    assert!(c.deliveries.iter().all(|d| d.attempt == 2));
    let done: Vec<Outcome> = c
        .deliveries
        .iter()
        .map(|d| outcome(d, OutcomeStatus::Succeeded))
        .collect();
    store.record_outcomes("owner", &done).await.expect("record");
    assert!(
        runs_left(&db).await.is_empty(),
        "the last outcome ends the run"
    );
    // The dead process's late outcome for one of them is only logged.
    store
        .record_outcomes("dead", &[outcome(&d[3], OutcomeStatus::Succeeded)])
        .await
        .expect("late outcome");
    let client = db.connect().await;
    let stored: i64 = client
        .query_one(crate::harness::DELIVERIES_STORED, &[])
        .await
        .expect("stored")
        .get(0);
    assert_eq!(stored, 8, "each delivery once");
    let retrying: i64 = client
        .query_one(
            "select count(*) from hookrelay.deliveries where status = 'retrying' and id = $1",
            &[&d[1].delivery_id],
        )
        .await
        .expect("retrying")
        .get(0);
    assert_eq!(retrying, 1);
}

/// A claim whose room ends inside a run sends what fits and keeps the rest in the
/// run; once those outcomes are recorded the run is given back, and the next claim
/// sends the rest as their first attempt.
#[tokio::test]
async fn a_room_ending_inside_a_run_sends_the_rest_later_as_first_attempts() {
    let db = TestDb::new("claims_runs").await;
    let (store, sub) = store_with_subscription(&db).await;
    store
        .commit_batch("shop", &events(0..8, i64::from), "8")
        .await
        .expect("batch");
    let first = claim(&store, &sub, 3, 0).await;
    assert_eq!(first.deliveries.len(), 3);
    let runs = runs_left(&db).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].1.as_deref(), Some("owner"));
    // Leased: another claim meanwhile takes none of the rest.
    assert!(claim(&store, &sub, 8, 0).await.deliveries.is_empty());
    let done: Vec<Outcome> = first
        .deliveries
        .iter()
        .map(|d| outcome(d, OutcomeStatus::Succeeded))
        .collect();
    store.record_outcomes("owner", &done).await.expect("record");
    assert_eq!(runs_left(&db).await[0].1, None, "given back");

    let rest = claim(&store, &sub, 8, 0).await;
    assert_eq!(rest.deliveries.len(), 5);
    assert!(rest.deliveries.iter().all(|d| d.attempt == 1));
    let mut all: Vec<i64> = ids(&first);
    all.extend(ids(&rest));
    let mut sorted = all.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 8, "each once: {all:?}");
}

/// A run's delivery held back for its key becomes a row, and the run never hands it
/// out again: here the claim that held it sent nothing from the run (its room of one
/// ended there), and the next claim sends the run's rest and the row, each once.
#[tokio::test]
async fn a_delivery_held_as_a_row_is_not_sent_from_its_run_too() {
    let db = TestDb::new("claims_runs").await;
    let (store, sub) = store_with_subscription(&db).await;
    store
        .commit_batch("shop", &events(0..1, |_| 7), "1")
        .await
        .expect("first");
    let in_flight = claim(&store, &sub, 8, 0).await;
    assert_eq!(in_flight.deliveries.len(), 1, "key 7's first, in flight");
    store
        .commit_batch("shop", &events(1..3, |n| 6 + i64::from(n)), "3")
        .await
        .expect("second: keys 7 and 8");
    // Room for one: key 7's second is held as a row, key 8's lies past the room.
    let none = claim(&store, &sub, 1, 0).await;
    assert!(none.deliveries.is_empty(), "{:?}", ids(&none));
    let first = &in_flight.deliveries[0];
    store
        .record_outcomes("owner", &[outcome(first, OutcomeStatus::Succeeded)])
        .await
        .expect("key 7's first done");
    let rest = claim(&store, &sub, 8, 0).await;
    let mut sent: Vec<&str> = rest
        .deliveries
        .iter()
        .map(|d| d.event_id.as_str())
        .collect();
    sent.sort_unstable();
    assert_eq!(sent, ["evt_claim0001", "evt_claim0002"], "each once");
}
