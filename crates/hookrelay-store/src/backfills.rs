//! Backfills (DESIGN §1.8): what the admin API asks for, and the progress the source's
//! leader commits with each chunk.
//!
//! ```text
//!  api ── create_backfill ──▶ backfills (running, tables, last_key null)
//!  source leader ── running_backfill ──▶ reads a chunk after last_key
//!        └─ commit_batch_with_backfill: the journal batch up to the chunk's high
//!           watermark + the chunk's read events (deliveries to that subscription
//!           only) + the new last_key / rows / tables_done, one transaction, fenced
//!           by the leadership epoch like every batch
//!  api ── cancel_backfill ──▶ cancelled; the next chunk's progress update finds it
//!         no longer running and its read events are dropped with it
//! ```
//!
//! Read event ids derive from (backfill id, table, key), so a chunk read again after a
//! crash stores nothing twice.

use chrono::{DateTime, Utc};
use hookrelay_core::ChangeEvent;
use tokio_postgres::Row;

use crate::{row_filters::Candidate, Store, StoreError};

/// A backfill as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backfill {
    pub id: String,
    pub subscription_id: String,
    pub source: String,
    pub tables: Vec<String>,
    pub tables_done: i32,
    /// The key (JSON text of the key columns) of the last row read in the table being
    /// read; `None`: that table from its start.
    pub last_key: Option<String>,
    pub rows: i64,
    pub state: BackfillState,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

impl Backfill {
    /// The table being read (`schema.table` as configured), if any is left.
    pub fn current_table(&self) -> Option<&str> {
        usize::try_from(self.tables_done)
            .ok()
            .and_then(|i| self.tables.get(i))
            .map(String::as_str)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackfillState {
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl BackfillState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackfillState::Running => "running",
            BackfillState::Completed => "completed",
            BackfillState::Failed => "failed",
            BackfillState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "running" => BackfillState::Running,
            "completed" => BackfillState::Completed,
            "failed" => BackfillState::Failed,
            "cancelled" => BackfillState::Cancelled,
            other => return Err(StoreError::Corrupt(format!("backfill state {other:?}"))),
        })
    }
}

/// One chunk of a backfill, committed with the batch that reached its high watermark.
#[derive(Debug, Clone)]
pub struct BackfillChunk {
    pub backfill_id: String,
    /// The chunk's rows less those that changed between its watermarks, as `read`
    /// events (ids from backfill id, table and key).
    pub events: Vec<ChangeEvent>,
    /// The key of the chunk's last row, read from next; `None` with `table_done`.
    pub last_key: Option<String>,
    /// The chunk came back short: its table is done.
    pub table_done: bool,
}

/// What committing a chunk found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkOutcome {
    /// The backfill was still running (false: cancelled or gone; nothing written).
    pub applied: bool,
    /// This chunk ended its last table.
    pub completed: bool,
}

/// What `cancel_backfill` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    Now(Backfill),
    /// It had ended already (state given).
    AlreadyEnded(BackfillState),
}

/// Totals for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackfillTotals {
    pub running: i64,
    /// Rows sent as read events by the backfills in the store.
    pub rows: i64,
}

const COLUMNS: &str = "id, subscription_id, source, tables, tables_done, last_key, rows, state, \
                       error, created_at, updated_at, ended_at";

fn from_row(r: &Row) -> Result<Backfill, StoreError> {
    Ok(Backfill {
        id: r.try_get("id")?,
        subscription_id: r.try_get("subscription_id")?,
        source: r.try_get("source")?,
        tables: r.try_get("tables")?,
        tables_done: r.try_get("tables_done")?,
        last_key: r.try_get("last_key")?,
        rows: r.try_get("rows")?,
        state: BackfillState::parse(r.try_get("state")?)?,
        error: r.try_get("error")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        ended_at: r.try_get("ended_at")?,
    })
}

/// The chunk's progress, only while the backfill runs; the subscription it feeds,
/// with what its deliveries need.
const ADVANCE: &str = "
update hookrelay.backfills b
   set last_key = $2,
       tables_done = b.tables_done + $3,
       rows = b.rows + $4,
       state = case when b.tables_done + $3 >= cardinality(b.tables) then 'completed' else 'running' end,
       ended_at = case when b.tables_done + $3 >= cardinality(b.tables) then now() end,
       updated_at = now()
 where b.id = $1 and b.state = 'running'
returning b.subscription_id, b.state = 'completed' as completed,
          (select s.filter from hookrelay.subscriptions s where s.id = b.subscription_id) as filter";

/// The chunk's read events, stored once by id, and a delivery for each (that the
/// subscription's types and filter admit, `$7`) to the backfill's subscription only:
/// never fanned out to the others.
const READ_EVENTS: &str = "
with input as (
    select * from unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[],
                         $6::text[], $7::bool[])
        with ordinality as t(id, source, event_type, order_key, committed_at, body, pass, ord)
),
sub as (
    select s.id, s.ordering, s.enabled, s.type_patterns
      from hookrelay.subscriptions s
     where s.id = $8 and s.disabled_by is distinct from 'gone'
),
judged as (
    select i.*, i.pass and exists (
               select from sub
                where sub.type_patterns is null
                   or exists (select from unnest(sub.type_patterns) p where i.event_type like p)
           ) as deliver
      from input i
),
ins as (
    insert into hookrelay.events (id, source, event_type, order_key, committed_at, body, deliveries_left)
    select id, source, event_type, order_key, committed_at, body, case when deliver then 1 else 0 end
      from judged
     order by ord
    on conflict (id) do nothing
    returning seq, order_key, deliveries_left
),
dlv as (
    insert into hookrelay.deliveries (event_seq, subscription_id, order_key)
    select ins.seq, sub.id, case when sub.ordering = 'key' then ins.order_key end
      from ins cross join sub
     where ins.deliveries_left = 1
     order by ins.seq
    returning id
),
work as (
    insert into hookrelay.subscription_work as w (subscription_id, due_at)
    select sub.id, now() from sub where sub.enabled and exists (select from dlv)
    on conflict (subscription_id) do update
       set due_at = least(w.due_at, excluded.due_at), marks = w.marks + 1
)
select (select count(*) from ins) as events, (select count(*) from dlv) as deliveries,
       (select min(id) from dlv) as first_id";

impl Store {
    /// Starts a backfill of `tables` of `source` for a subscription (the tables were
    /// checked against the configuration by the caller).
    pub async fn create_backfill(
        &self,
        subscription_id: &str,
        source: &str,
        tables: &[String],
    ) -> Result<Backfill, StoreError> {
        let client = self.client().await?;
        let id = format!("bf_{}", ulid::Ulid::new());
        let row = client
            .query_opt(
                &format!(
                    "insert into hookrelay.backfills (id, subscription_id, source, tables)
                     select $1, s.id, $3, $4 from hookrelay.subscriptions s where s.id = $2
                     returning {COLUMNS}"
                ),
                &[&id, &subscription_id, &source, &tables],
            )
            .await?;
        from_row(&row.ok_or(StoreError::NotFound)?)
    }

    pub async fn backfill(&self, id: &str) -> Result<Option<Backfill>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("select {COLUMNS} from hookrelay.backfills where id = $1"),
                &[&id],
            )
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Backfills, newest first: a subscription's, or all (at most 1,000).
    pub async fn list_backfills(
        &self,
        subscription_id: Option<&str>,
    ) -> Result<Vec<Backfill>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "select {COLUMNS} from hookrelay.backfills
                      where $1::text is null or subscription_id = $1
                      order by created_at desc, id desc limit 1000"
                ),
                &[&subscription_id],
            )
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Cancels a running backfill; `None` when there is no such backfill.
    pub async fn cancel_backfill(&self, id: &str) -> Result<Option<Cancelled>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "update hookrelay.backfills
                        set state = 'cancelled', ended_at = now(), updated_at = now()
                      where id = $1 and state = 'running'
                     returning {COLUMNS}"
                ),
                &[&id],
            )
            .await?;
        if let Some(row) = row {
            return Ok(Some(Cancelled::Now(from_row(&row)?)));
        }
        Ok(self
            .backfill(id)
            .await?
            .map(|b| Cancelled::AlreadyEnded(b.state)))
    }

    /// The oldest running backfill of `source`: the one its leader reads next.
    pub async fn running_backfill(&self, source: &str) -> Result<Option<Backfill>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "select {COLUMNS} from hookrelay.backfills
                      where source = $1 and state = 'running'
                      order by created_at, id limit 1"
                ),
                &[&source],
            )
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Ends a running backfill as failed (a table it cannot read), under the source's
    /// leadership epoch when one is given.
    pub async fn fail_backfill(
        &self,
        id: &str,
        error: &str,
        source: &str,
        epoch: Option<i64>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "update hookrelay.backfills
                    set state = 'failed', error = $2, ended_at = now(), updated_at = now()
                  where id = $1 and state = 'running'
                    and ($4::bigint is null or exists (
                          select from hookrelay.source_leaders l
                           where l.source = $3 and l.epoch = $4 for share))",
                &[&id, &crate::storable(error), &source, &epoch],
            )
            .await?;
        Ok(())
    }

    /// Running backfills and the rows they have all sent, for `/metrics`.
    pub async fn backfill_totals(&self) -> Result<BackfillTotals, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "select count(*) filter (where state = 'running') as running,
                        coalesce(sum(rows), 0)::bigint as rows
                   from hookrelay.backfills",
                &[],
            )
            .await?;
        Ok(BackfillTotals {
            running: row.try_get("running")?,
            rows: row.try_get("rows")?,
        })
    }

    /// Inside a batch's transaction: the chunk's progress, then its read events and
    /// their deliveries (see `READ_EVENTS`). Adds what it created to `outcome`; the
    /// subscription given deliveries goes to `waiting`.
    pub(crate) async fn apply_chunk(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        chunk: &BackfillChunk,
        outcome: &mut crate::BatchOutcome,
        waiting: &mut Vec<String>,
    ) -> Result<ChunkOutcome, StoreError> {
        let rows = i64::try_from(chunk.events.len()).unwrap_or(i64::MAX);
        let stmt = tx.prepare_cached(ADVANCE).await?;
        let advanced = tx
            .query_opt(
                &stmt,
                &[
                    &chunk.backfill_id,
                    &chunk.last_key,
                    &i32::from(chunk.table_done),
                    &rows,
                ],
            )
            .await?;
        let Some(advanced) = advanced else {
            return Ok(ChunkOutcome::default());
        };
        let subscription: String = advanced.try_get("subscription_id")?;
        let completed: bool = advanced.try_get("completed")?;
        let filter: Option<String> = advanced.try_get("filter")?;
        let done = ChunkOutcome {
            applied: true,
            completed,
        };
        if chunk.events.is_empty() {
            return Ok(done);
        }
        let events = &chunk.events;
        let pass: Vec<bool> = match filter {
            None => vec![true; events.len()],
            Some(filter) => {
                let mut kinds: Vec<(&str, &str)> = events
                    .iter()
                    .map(|e| (e.source.as_str(), e.event_type.as_str()))
                    .collect();
                kinds.sort_unstable();
                kinds.dedup();
                let candidates: Vec<Candidate> = kinds
                    .into_iter()
                    .map(|(source, event_type)| Candidate {
                        source: source.to_owned(),
                        event_type: event_type.to_owned(),
                        subscription: subscription.clone(),
                        filter: filter.clone(),
                    })
                    .collect();
                let passed = self.row_filters.passes(events, &candidates);
                let passed: std::collections::HashSet<&str> =
                    passed.events.iter().map(String::as_str).collect();
                events
                    .iter()
                    .map(|e| passed.contains(e.id.as_str()))
                    .collect()
            }
        };
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let sources: Vec<&str> = events.iter().map(|e| e.source.as_str()).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let keys: Vec<i64> = events.iter().map(|e| e.order_key).collect();
        let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.committed_at).collect();
        let bodies: Vec<&str> = events.iter().map(|e| e.body.as_str()).collect();
        let stmt = tx.prepare_cached(READ_EVENTS).await?;
        let row = tx
            .query_one(
                &stmt,
                &[
                    &ids,
                    &sources,
                    &types,
                    &keys,
                    &times,
                    &bodies,
                    &pass,
                    &subscription,
                ],
            )
            .await?;
        let added: i64 = row.try_get("events")?;
        let deliveries: i64 = row.try_get("deliveries")?;
        let first: Option<i64> = row.try_get("first_id")?;
        outcome.events += added as u64;
        outcome.deliveries += deliveries as u64;
        outcome.first_waiting = match (outcome.first_waiting, first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if deliveries > 0 && !waiting.contains(&subscription) {
            waiting.push(subscription);
        }
        Ok(done)
    }
}
