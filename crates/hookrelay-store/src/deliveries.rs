//! Deliveries for the admin API: list, read with attempts, replay.
//!
//! A delivery is a row of `deliveries`, an element of a receipt once its first
//! attempt succeeded (sql/V17), or, until its first outcome, an open element of a run
//! (sql/V18, see `runs`). Listings merge the three newest first, each in one snapshot
//! (so a delivery moving from one to another meanwhile shows once); a receipt's
//! element replayed gets its row back, with the same id, and is shown as that row.
//!
//! A replay schedules a delivery again now, keeping its event (so the same
//! `webhook-id` goes out):
//!
//! ```text
//!  failed / succeeded ──replay──▶ pending, attempts = 0, due now, lease cleared,
//!                                  a whole dispatch.max_age to live from now
//!  pending / retrying ──replay──▶ due now (lease, attempts and age untouched: it may
//!                                  be in flight, and its outcome must still be recorded)
//!  open in a run ───────replay──▶ its subscription due now, nothing else: as pending
//! ```
//! `last_error` and `last_status_code` stay until the next attempt overwrites them.
//! Deliveries of a paused subscription are replayed into its queue: they wait as
//! `pending` with the rest and go out, in order, once it is resumed. Those of a
//! subscription whose endpoint answered 410 are not ([`StoreError::Conflict`]): it
//! must be enabled again first, as it gets no new events either.

use deadpool_postgres::GenericClient;
use tokio_postgres::{IsolationLevel, Row};

use crate::{
    listing::{fetch_count, page_end, Conditions},
    model::{Attempt, BulkReplay, Delivery, DeliveryDetail, DeliveryFilter, DeliveryStatus, Page},
    runs::{select_run_elements, SELECT_RUN_ELEMENT},
    Store, StoreError,
};

const SELECT_DELIVERY: &str = "
select d.id, e.id, e.event_type, d.subscription_id, d.status, d.attempts,
       d.next_attempt_at, d.last_status_code, d.last_error, d.created_at, d.updated_at
  from hookrelay.deliveries d
  join hookrelay.events e on e.seq = d.event_seq";

/// Every attempt, oldest first: a first attempt that succeeded is kept in a receipt
/// (sql/V17; before that, on the delivery's row, sql/V9) and is always the oldest,
/// the others are attempt rows.
const SELECT_ATTEMPTS: &str = "
select 1, x.started, x.ms, x.code, null::text, x.body, 0 as kept, 0::bigint as n
  from hookrelay.receipts r
 cross join lateral unnest(r.delivery_ids, r.started_ats, r.durations_ms, r.status_codes,
                           r.bodies) as x(id, started, ms, code, body)
 where int8range(r.first_delivery, r.last_delivery, '[]') @> $1::bigint and x.id = $1
union all
select 1, first_attempt_at, first_attempt_ms, first_attempt_code, null::text,
       first_attempt_body, 0 as kept, 0::bigint as n
  from hookrelay.deliveries where id = $1 and first_attempt_at is not null
union all
select attempt, started_at, duration_ms, status_code, error, response_body, 1, id
  from hookrelay.attempts where delivery_id = $1
 order by kept, n";

/// The delivery a receipt holds as element `$1`, in `SELECT_DELIVERY`'s shape.
const SELECT_RECEIPTED: &str = "
select x.id, e.id, e.event_type, r.subscription_id, 'succeeded', 1, x.created_at, x.code,
       null::text, x.created_at, r.recorded_at
  from hookrelay.receipts r
 cross join lateral unnest(r.delivery_ids, r.event_seqs, r.created_ats, r.status_codes)
       as x(id, seq, created_at, code)
  join hookrelay.events e on e.seq = x.seq
 where int8range(r.first_delivery, r.last_delivery, '[]') @> $1::bigint and x.id = $1";

/// Gives receipt elements (`receipted`, a CTE of `id, seq, created_at,
/// subscription_id`) their rows back as replayed: pending, due now, a fresh attempt
/// budget and life, the same id. Each new row counts on its event (sql/V11) as the
/// receipt's element still does. Returns how many rows it made.
const REVIVE: &str = "
revived as (
    insert into hookrelay.deliveries
           (id, event_seq, subscription_id, order_key, status, attempts, next_attempt_at,
            replayed_at, created_at, updated_at)
    overriding system value
    select x.id, x.seq, x.subscription_id,
           case when s.ordering = 'key' then e.order_key end,
           'pending', 0, now(), now(), x.created_at, now()
      from receipted x
      join hookrelay.events e on e.seq = x.seq
      join hookrelay.subscriptions s on s.id = x.subscription_id
    on conflict (id) do nothing
    returning event_seq
),
counted as (
    update hookrelay.events e set deliveries_left = e.deliveries_left + c.n
      from (select event_seq, count(*)::int as n from revived group by event_seq) c
     where e.seq = c.event_seq
)
select count(*) from revived";

/// The replay rule above, as the `SET` of an update of `hookrelay.deliveries d`.
const REPLAY_SET: &str = "
set status = case when d.status in ('failed', 'succeeded') then 'pending' else d.status end,
    attempts = case when d.status in ('failed', 'succeeded') then 0 else d.attempts end,
    lease_owner = case when d.status in ('failed', 'succeeded') then null else d.lease_owner end,
    lease_until = case when d.status in ('failed', 'succeeded') then null else d.lease_until end,
    replayed_at = case when d.status in ('failed', 'succeeded') then now() else d.replayed_at end,
    next_attempt_at = now(),
    updated_at = now()";

/// A replay gives its subscription due work (see sql/V6 and `claim`).
pub(crate) const MARK_DUE: &str = "
insert into hookrelay.subscription_work as w (subscription_id, due_at)
values ($1, now())
on conflict (subscription_id) do update
   set due_at = least(w.due_at, excluded.due_at), marks = w.marks + 1";

impl Store {
    /// Deliveries matching `filter`, newest (highest id) first.
    pub async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Page<Delivery>, StoreError> {
        let fetch = fetch_count(filter.limit);
        let status = filter.status.map(DeliveryStatus::as_str);
        let mut w = Conditions::default();
        if let Some(v) = status {
            w.add_fixed(format!("d.status = '{v}'"));
        }
        add_filters(&mut w, filter, &ROWS);
        let limit = w.param(&fetch);
        let sql = if filter.subscription_id.is_some() && status.is_none() {
            // A subscription's deliveries are in two indexes, its pending ones and
            // those past pending (sql/V12): each read newest first, then merged
            let conds = w.where_clause();
            format!(
                "({SELECT_DELIVERY}{conds} and d.status = 'pending' order by d.id desc limit {limit})
                 union all
                 ({SELECT_DELIVERY}{conds} and d.status <> 'pending' order by d.id desc limit {limit})
                 order by 1 desc limit {limit}"
            )
        } else {
            format!(
                "{SELECT_DELIVERY}{} order by d.id desc limit {limit}",
                w.where_clause()
            )
        };
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let stmt = tx.prepare_cached(&sql).await?;
        let rows = tx.query(&stmt, w.params()).await?;
        let mut items = rows
            .iter()
            .map(delivery_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let receipted = matches!(filter.status, None | Some(DeliveryStatus::Succeeded));
        if receipted {
            items.extend(receipted_page(&tx, filter, fetch).await?);
        }
        let in_runs = matches!(filter.status, None | Some(DeliveryStatus::Pending));
        if in_runs {
            items.extend(run_elements_page(&tx, filter, fetch).await?);
        }
        if receipted || in_runs {
            items.sort_unstable_by_key(|d| std::cmp::Reverse(d.id));
            items.truncate(fetch as usize);
        }
        tx.commit().await?;
        let next = page_end(&mut items, filter.limit, |d| d.id);
        Ok(Page { items, next })
    }

    /// One delivery with every attempt (oldest first), or [`StoreError::NotFound`].
    pub async fn get_delivery(&self, id: i64) -> Result<DeliveryDetail, StoreError> {
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let delivery = fetch_delivery(&tx, id).await?;
        let stmt = tx.prepare_cached(SELECT_ATTEMPTS).await?;
        let attempts = tx
            .query(&stmt, &[&id])
            .await?
            .iter()
            .map(attempt_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit().await?;
        // One numbering over the delivery's life, as a receiver counts its arrivals:
        // a replay's attempts continue it (the stored number restarts at 1 with the
        // replay's fresh retry budget).
        let attempts = attempts
            .into_iter()
            .zip(1..)
            .map(|(a, n)| Attempt { attempt: n, ..a })
            .collect();
        Ok(DeliveryDetail { delivery, attempts })
    }

    /// Schedules one delivery again now (see the module doc) and returns it.
    pub async fn replay_delivery(&self, id: i64) -> Result<Delivery, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row: Option<String> = tx
            .query_opt(
                "select subscription_id from hookrelay.deliveries where id = $1",
                &[&id],
            )
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        match row {
            Some(subscription_id) => {
                require_not_gone(&tx, &subscription_id).await?;
                let sql = format!("update hookrelay.deliveries d {REPLAY_SET} where d.id = $1");
                tx.execute(&sql, &[&id]).await?;
                tx.execute(MARK_DUE, &[&subscription_id]).await?;
            }
            None => match fetch_one(&tx, SELECT_RECEIPTED, id).await? {
                Some(receipted) => {
                    let subscription_id = receipted.subscription_id;
                    require_not_gone(&tx, &subscription_id).await?;
                    let mut x = Conditions::default();
                    x.add(
                        "int8range(r.first_delivery, r.last_delivery, '[]') @> ?::bigint",
                        &id,
                    );
                    x.add("x.id = ?", &id);
                    revive(&tx, x).await?;
                    tx.execute(MARK_DUE, &[&subscription_id]).await?;
                }
                None => {
                    // Open in a run: pending, and maybe in flight, so as for a
                    // pending row only its subscription is made due.
                    let subscription_id = fetch_one(&tx, SELECT_RUN_ELEMENT, id)
                        .await?
                        .ok_or(StoreError::NotFound)?
                        .subscription_id;
                    require_not_gone(&tx, &subscription_id).await?;
                    tx.execute(MARK_DUE, &[&subscription_id]).await?;
                }
            },
        }
        let delivery = fetch_delivery(&tx, id).await?;
        tx.commit().await?;
        Ok(delivery)
    }

    /// Schedules again every delivery of one subscription in a status (and optionally
    /// of an event type, created in a time range); returns how many.
    pub async fn replay_deliveries(&self, req: &BulkReplay) -> Result<u64, StoreError> {
        let status = req.status.as_str();
        let mut w = Conditions::default();
        w.add("d.subscription_id = ?", &req.subscription_id);
        w.add_fixed(format!("d.status = '{status}'"));
        if let Some(v) = &req.event_type {
            w.add(
                "exists (select 1 from hookrelay.events e \
                         where e.seq = d.event_seq and e.event_type = ?)",
                v,
            );
        }
        if let Some(v) = &req.since {
            w.add("d.created_at >= ?", v);
        }
        if let Some(v) = &req.until {
            w.add("d.created_at < ?", v);
        }
        let sql = format!(
            "update hookrelay.deliveries d {REPLAY_SET}{}",
            w.where_clause()
        );
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        require_not_gone(&tx, &req.subscription_id).await?;
        let mut n = tx.execute(&sql, w.params()).await?;
        if req.status == DeliveryStatus::Succeeded {
            n += revive_receipted(&tx, req).await?;
        }
        if n > 0 {
            tx.execute(MARK_DUE, &[&req.subscription_id]).await?;
        }
        tx.commit().await?;
        Ok(n)
    }
}

/// Holds the subscription's row (FOR SHARE, so it cannot be disabled or deleted
/// under the replay) and refuses a missing one or one whose endpoint answered 410.
async fn require_not_gone(
    client: &impl GenericClient,
    subscription_id: &str,
) -> Result<(), StoreError> {
    let row = client
        .query_opt(
            "select disabled_by from hookrelay.subscriptions where id = $1 for share",
            &[&subscription_id],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
    if row.try_get::<_, Option<&str>>(0)? == Some("gone") {
        Err(StoreError::Conflict(format!(
            "subscription {subscription_id} is disabled because its endpoint answered \
             410 Gone; enable it before replaying"
        )))
    } else {
        Ok(())
    }
}

/// Delivery `id` wherever it is: its row, a receipt's element, or a run's open
/// element.
async fn fetch_delivery(client: &impl GenericClient, id: i64) -> Result<Delivery, StoreError> {
    let row_sql = format!("{SELECT_DELIVERY} where d.id = $1");
    for sql in [row_sql.as_str(), SELECT_RECEIPTED, SELECT_RUN_ELEMENT] {
        if let Some(delivery) = fetch_one(client, sql, id).await? {
            return Ok(delivery);
        }
    }
    Err(StoreError::NotFound)
}

/// The delivery `sql` (in `SELECT_DELIVERY`'s shape, `$1` the id) finds, if any.
async fn fetch_one(
    client: &impl GenericClient,
    sql: &str,
    id: i64,
) -> Result<Option<Delivery>, StoreError> {
    let stmt = client.prepare_cached(sql).await?;
    client
        .query_opt(&stmt, &[&id])
        .await?
        .map(|row| delivery_from_row(&row))
        .transpose()
}

/// A read-only transaction over one snapshot: a delivery is recorded (a run's element
/// becomes a row or a receipt's, a row a receipt's) between the statements of one
/// listing or view, which would otherwise show it twice or not at all.
async fn snapshot(
    client: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    Ok(client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

/// The newest `fetch` open run elements matching `filter`, newest first. Runs live
/// for milliseconds unless their subscription's endpoint is down, so they are few: the
/// filters go on each element and one sort makes the page, read through
/// `runs_subscription` when a subscription is given.
async fn run_elements_page(
    client: &impl GenericClient,
    filter: &DeliveryFilter,
    fetch: i64,
) -> Result<Vec<Delivery>, StoreError> {
    let mut c = Conditions::default();
    if let Some(v) = &filter.before_id {
        // a run holds no delivery below its id
        c.add("r.id < ?", v);
    }
    add_filters(&mut c, filter, &RUN_ELEMENTS);
    let fetch_p = c.param(&fetch);
    let sql = format!(
        "{}{} order by x.id desc limit {fetch_p}",
        select_run_elements!(),
        c.where_clause()
    );
    let stmt = client.prepare_cached(&sql).await?;
    client
        .query(&stmt, c.params())
        .await?
        .iter()
        .map(delivery_from_row)
        .collect()
}

/// Receipts read per look at first; each look that cannot yet tell the page reads
/// this many times more.
const RECEIPTS_FIRST: i64 = 8;
const RECEIPTS_GROWTH: i64 = 8;

/// The newest `fetch` receipt elements matching `filter` (none replayed: those are
/// rows again), newest first.
///
/// Receipts are walked by their highest delivery id: an element of a receipt not yet
/// read is no higher than that receipt's `last_delivery`, so once `fetch` elements
/// above the next receipt's `last_delivery` are in hand, the page is known. Until then
/// the walk reads more receipts (a filter that few elements pass can walk them all,
/// as it would walk the rows).
async fn receipted_page(
    client: &impl GenericClient,
    filter: &DeliveryFilter,
    fetch: i64,
) -> Result<Vec<Delivery>, StoreError> {
    let mut take = RECEIPTS_FIRST;
    loop {
        let mut c = Conditions::default();
        let read = which_receipts(&mut c, filter);
        add_filters(&mut c, filter, &RECEIPT_ELEMENTS);
        c.add_fixed("not exists (select from hookrelay.deliveries d where d.id = x.id)".into());
        let elements = c.take_where();
        let take_p = c.param(&take);
        let fetch_p = c.param(&fetch);
        let sql = format!(
            "with r as (
                 select * from hookrelay.receipts r{read}
                  order by r.last_delivery desc limit {take_p}
             )
             select x.id, e.id, e.event_type, r.subscription_id, 'succeeded', 1, x.created_at,
                    x.code, null::text, x.created_at, r.recorded_at
               from r
              cross join lateral unnest(r.delivery_ids, r.event_seqs, r.created_ats,
                                        r.status_codes) as x(id, seq, created_at, code)
               join hookrelay.events e on e.seq = x.seq{elements}
              order by x.id desc limit {fetch_p}"
        );
        let stmt = client.prepare_cached(&sql).await?;
        let items = client
            .query(&stmt, c.params())
            .await?
            .iter()
            .map(delivery_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        // The highest delivery id a receipt not read yet can hold.
        let mut c = Conditions::default();
        let read = which_receipts(&mut c, filter);
        let take_p = c.param(&take);
        let sql = format!(
            "select r.last_delivery from hookrelay.receipts r{read}
              order by r.last_delivery desc offset {take_p} limit 1"
        );
        let stmt = client.prepare_cached(&sql).await?;
        let unread: Option<i64> = client
            .query_opt(&stmt, c.params())
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        let known = match unread {
            None => true,
            Some(top) => items.len() as i64 >= fetch && items.last().is_some_and(|d| d.id > top),
        };
        if known {
            return Ok(items);
        }
        take = take.saturating_mul(RECEIPTS_GROWTH);
    }
}

/// Where a listing's filters look in one form of stored delivery: a row (`d`), a
/// receipt's element (`x` of receipt `r`, whose subscription `which_receipts` picks),
/// a run's open element (`x` of run `r`).
struct Columns {
    subscription: Option<&'static str>,
    id: &'static str,
    created_at: &'static str,
}

const ROWS: Columns = Columns {
    subscription: Some("d.subscription_id"),
    id: "d.id",
    created_at: "d.created_at",
};
const RECEIPT_ELEMENTS: Columns = Columns {
    subscription: None,
    id: "x.id",
    created_at: "x.created_at",
};
const RUN_ELEMENTS: Columns = Columns {
    subscription: Some("r.subscription_id"),
    id: "x.id",
    created_at: "r.created_at",
};

/// The listing's filters on one form of stored delivery (its event is `e`), so rows,
/// receipts and runs are filtered alike.
fn add_filters<'a>(c: &mut Conditions<'a>, filter: &'a DeliveryFilter, cols: &Columns) {
    if let (Some(v), Some(col)) = (&filter.subscription_id, cols.subscription) {
        c.add(&format!("{col} = ?"), v);
    }
    if let Some(v) = &filter.event_type {
        c.add("e.event_type = ?", v);
    }
    if let Some(v) = &filter.event_id {
        // No index leads from an event to its deliveries (sql/V11 dropped it to
        // spare every delivery its writes): the newest-first walk of the primary
        // key finds a recent event's deliveries at once and an old one's after a
        // scan, which an operator's look-up can afford and the pipeline need not pay.
        c.add("e.id = ?", v);
    }
    if let Some(v) = &filter.since {
        c.add(&format!("{} >= ?", cols.created_at), v);
    }
    if let Some(v) = &filter.until {
        c.add(&format!("{} < ?", cols.created_at), v);
    }
    if let Some(v) = &filter.before_id {
        c.add(&format!("{} < ?", cols.id), v);
    }
}

/// The receipts a listing reads (for its statement and for the look past it).
fn which_receipts<'a>(c: &mut Conditions<'a>, filter: &'a DeliveryFilter) -> String {
    if let Some(v) = &filter.subscription_id {
        c.add("r.subscription_id = ?", v);
    }
    if let Some(v) = &filter.before_id {
        c.add("r.first_delivery < ?", v);
    }
    c.take_where()
}

/// A bulk replay of succeeded deliveries reaches the receipts' elements too.
async fn revive_receipted(
    client: &impl GenericClient,
    req: &BulkReplay,
) -> Result<u64, StoreError> {
    let mut x = Conditions::default();
    x.add("r.subscription_id = ?", &req.subscription_id);
    if let Some(v) = &req.since {
        x.add("x.created_at >= ?", v);
    }
    if let Some(v) = &req.until {
        x.add("x.created_at < ?", v);
    }
    if let Some(v) = &req.event_type {
        x.add(
            "exists (select 1 from hookrelay.events e \
                     where e.seq = x.seq and e.event_type = ?)",
            v,
        );
    }
    revive(client, x).await
}

/// Gives the receipt elements that match `x` (over `r`, a receipt, and `x`, its
/// element: `id, seq, created_at`) their rows back, as `REVIVE` says; one not
/// replayed yet only. Returns how many.
async fn revive(client: &impl GenericClient, mut x: Conditions<'_>) -> Result<u64, StoreError> {
    x.add_fixed("not exists (select from hookrelay.deliveries d where d.id = x.id)".into());
    let sql = format!(
        "with receipted as (
             select x.id, x.seq, x.created_at, r.subscription_id
               from hookrelay.receipts r
              cross join lateral unnest(r.delivery_ids, r.event_seqs, r.created_ats)
                    as x(id, seq, created_at){}
         ),
         {REVIVE}",
        x.where_clause()
    );
    let n: i64 = client.query_one(&sql, x.params()).await?.try_get(0)?;
    Ok(n as u64)
}

fn delivery_from_row(row: &Row) -> Result<Delivery, StoreError> {
    let id: i64 = row.try_get(0)?;
    let status: String = row.try_get(4)?;
    let status = DeliveryStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("delivery {id} status {status:?}")))?;
    Ok(Delivery {
        id,
        event_id: row.try_get(1)?,
        event_type: row.try_get(2)?,
        subscription_id: row.try_get(3)?,
        status,
        attempt_count: row.try_get(5)?,
        next_attempt_at: row.try_get(6)?,
        last_status_code: row.try_get(7)?,
        last_error: row.try_get(8)?,
        created_at: row.try_get(9)?,
        updated_at: row.try_get(10)?,
    })
}

fn attempt_from_row(row: &Row) -> Result<Attempt, StoreError> {
    use base64::Engine as _;
    let body: Option<Vec<u8>> = row.try_get(5)?;
    Ok(Attempt {
        attempt: row.try_get(0)?,
        started_at: row.try_get(1)?,
        duration_ms: row.try_get(2)?,
        status_code: row.try_get(3)?,
        error: row.try_get(4)?,
        response_body: body
            .as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned()),
        response_body_base64: body
            .as_deref()
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
    })
}
