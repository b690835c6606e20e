//! A store an earlier version left with deliveries open as rows, before new
//! deliveries went into runs (sql/V18), is taken as it is: no migration of the rows,
//! each open one sent once after the upgrade, the finished ones never again, and new
//! events delivered in runs beside them.

use std::{collections::HashMap, time::Duration};

use hookrelay_store::Store;

use crate::harness::*;

/// The last migration before runs.
const BEFORE_RUNS: u32 = 17;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_rows_from_before_runs_are_sent_once_after_the_upgrade() {
    let env = Env::new().await;
    let rx = TestReceiver::start().await;
    let old = Store::connect(&env.store.url(), 2).expect("store");
    old.migrate_to(BEFORE_RUNS).await.expect("migrate");
    let sub = old
        .create_subscription(&subscription_to(&rx.url))
        .await
        .expect("subscription");
    // As that version wrote them: events 1-2 pending (2 leased by a process that is
    // gone), 3-4 retrying and due, 5 succeeded, 6 failed; 7 pending behind 3's key.
    let store = env.store.connect().await;
    store
        .batch_execute(&format!(
            "insert into hookrelay.events
                    (id, source, event_type, order_key, committed_at, body, deliveries_left)
             select 'evt_old' || g, 'shop', 'orders.insert', case when g = 7 then 3 else g end,
                    now(), '{{\"n\":' || g || '}}', 1
               from generate_series(1, 7) g;
             insert into hookrelay.deliveries
                    (event_seq, subscription_id, order_key, status, attempts, lease_owner,
                     lease_until, last_error)
             select e.seq, '{sub}', e.order_key,
                    (array['pending', 'pending', 'retrying', 'retrying', 'succeeded',
                           'failed', 'pending'])[n],
                    (array[0, 1, 2, 1, 1, 5, 0])[n],
                    case when n = 2 then 'gone-host-1' end,
                    case when n = 2 then now() - interval '1 second' end,
                    case when n in (3, 4, 6) then 'HTTP 500' end
               from (select e.*, substr(e.id, 8)::int as n from hookrelay.events e) e
              order by e.seq;
             insert into hookrelay.subscription_work (subscription_id, due_at)
             values ('{sub}', now());",
            sub = sub.id
        ))
        .await
        .expect("the old store's rows");

    let relay = start_relay(env.config()).await;
    let source = env.source.connect().await;
    source
        .batch_execute("insert into orders (id, status) values (1, 'new')")
        .await
        .expect("a new change");
    rx.wait_delivered(6, Duration::from_secs(60)).await;
    // Every outcome recorded: nothing open, no run left.
    eventually(
        "every outcome recorded",
        Duration::from_secs(30),
        || async {
            let open: i64 = store
                .query_one(
                    "select (select count(*) from hookrelay.deliveries
                          where status in ('pending', 'retrying'))
                      + (select count(*) from hookrelay.runs)",
                    &[],
                )
                .await
                .expect("open")
                .get(0);
            (open == 0).then_some(())
        },
    )
    .await;

    let mut sent: HashMap<String, usize> = HashMap::new();
    for r in rx.requests() {
        *sent.entry(r.id.clone()).or_default() += 1;
    }
    let old_ones: Vec<&str> = {
        let mut ids: Vec<&str> = sent
            .keys()
            .map(String::as_str)
            .filter(|id| id.starts_with("evt_old"))
            .collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(
        old_ones,
        ["evt_old1", "evt_old2", "evt_old3", "evt_old4", "evt_old7"],
        "each open row sent, the finished ones not"
    );
    assert_eq!(sent.len(), 6, "and the new change: {sent:?}");
    assert!(sent.values().all(|n| *n == 1), "each once: {sent:?}");
    // The key the retry held went in commit order.
    let order: Vec<String> = rx
        .delivered()
        .iter()
        .map(|r| r.id.clone())
        .filter(|id| id == "evt_old3" || id == "evt_old7")
        .collect();
    assert_eq!(order, ["evt_old3", "evt_old7"]);
    let stored: i64 = store
        .query_one(DELIVERIES_STORED, &[])
        .await
        .expect("stored")
        .get(0);
    assert_eq!(stored, 8, "seven old deliveries and the new one");
    relay.shutdown().await;
}
