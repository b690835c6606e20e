//! Runs of deliveries (sql/V18) as everything outside the pipeline sees them: the
//! listings, the single view, replays, the backlog gauge, a subscription's delete, the
//! expiry sweep and a 410's disabling.
//!
//! A run is one row of `hookrelay.runs` holding up to 64 new deliveries of one
//! subscription as arrays (ids from the deliveries' identity sequence, event seqs,
//! order keys). Its element is a delivery that is open (`pending`) until it has a
//! receipt's element or a row of `deliveries` with its id; from then on that is the
//! delivery, and the run only waits for its other elements:
//!
//! ```text
//!  batch ──▶ run: element open (pending; counts on its event, sql/V11)
//!              │
//!              ├─ first success ─────────▶ receipt element (sql/V17) ─┐ the count
//!              ├─ anything else ─────────▶ row of `deliveries`       ─┘ passes on
//!              └─ expired / 410 / delete ▶ failed row (FAIL_OPEN), or gone with its
//!                                          subscription (its count taken off)
//!  run deleted once every element is recorded (by the recorder), or by FAIL_OPEN
//! ```
//!
//! Whoever ends open elements outside the recorder first locks their runs (FOR
//! UPDATE) in a statement of its own, then judges "open" in the next one: that one's
//! snapshot sees every outcome recorded before the lock was granted, and no outcome
//! can be recorded for a run after it (the recorder locks the run it records into).

/// The open elements of run `r`, as `x(id, seq, key)`, for a `cross join lateral`:
/// those with neither a row nor a receipt's element. The receipt is found through
/// its range (`receipts_range`, a GiST index) as the single view finds it. A literal,
/// for `concat!`.
macro_rules! open_elements {
    () => {
        "(
    select x.id, x.seq, x.key
      from unnest(r.delivery_ids, r.event_seqs, r.order_keys) as x(id, seq, key)
     where not exists (select from hookrelay.deliveries d where d.id = x.id)
       and not exists (select from hookrelay.receipts c
                        where int8range(c.first_delivery, c.last_delivery, '[]') @> x.id
                          and x.id = any (c.delivery_ids))
) x"
    };
}
pub(crate) use open_elements;

/// The open elements of runs `r` (`from hookrelay.runs r`, conditions after it) in
/// the shape of `deliveries::SELECT_DELIVERY`: pending, as many attempts as the run
/// was leased, due and created when the run was, with `x` the element and `e` its
/// event. A literal, for `concat!`.
macro_rules! select_run_elements {
    () => {
        concat!(
            "
select x.id, e.id, e.event_type, r.subscription_id, 'pending', r.leases, r.created_at,
       null::int, null::text, r.created_at, r.created_at
  from hookrelay.runs r
 cross join lateral ",
            $crate::runs::open_elements!(),
            "
  join hookrelay.events e on e.seq = x.seq"
        )
    };
}
pub(crate) use select_run_elements;

/// `$1` a delivery id: the open run element with that id. Runs' id ranges overlap (a
/// batch numbers its deliveries in event order, across subscriptions), so every run
/// that starts at or below the id is looked at: runs are few, and this is the single
/// view's last resort, after rows and receipts.
pub(crate) const SELECT_RUN_ELEMENT: &str = concat!(
    select_run_elements!(),
    "
 where r.id <= $1 and r.last_delivery >= $1 and x.id = $1"
);
