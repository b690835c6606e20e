//! Stored events for the admin API, newest first.
//!
//! Listings page by key (`seq < last seen`), never by offset, so a page costs the same
//! at any depth and events committed while a client pages do not shift what it sees.

use tokio_postgres::Row;

use crate::{
    listing::{fetch_count, page_end, Conditions},
    model::{EventFilter, Page, StoredEvent},
    Store, StoreError,
};

const COLUMNS: &str = "seq, id, source, event_type, committed_at, created_at, body";

impl Store {
    /// One event by its id (`evt_…`), or [`StoreError::NotFound`].
    pub async fn get_event(&self, id: &str) -> Result<StoredEvent, StoreError> {
        let client = self.client().await?;
        let sql = format!("select {COLUMNS} from hookrelay.events where id = $1");
        let stmt = client.prepare_cached(&sql).await?;
        match client.query_opt(&stmt, &[&id]).await? {
            Some(row) => event_from_row(&row),
            None => Err(StoreError::NotFound),
        }
    }

    /// Events matching `filter`, newest (highest `seq`) first.
    pub async fn list_events(&self, filter: &EventFilter) -> Result<Page<StoredEvent>, StoreError> {
        let fetch = fetch_count(filter.limit);
        let mut w = Conditions::default();
        if let Some(v) = &filter.source {
            w.add("source = ?", v);
        }
        if let Some(v) = &filter.event_type {
            w.add("event_type = ?", v);
        }
        if let Some(v) = &filter.since {
            w.add("committed_at >= ?", v);
        }
        if let Some(v) = &filter.until {
            w.add("committed_at < ?", v);
        }
        if let Some(v) = &filter.before_seq {
            w.add("seq < ?", v);
        }
        let sql = format!(
            "select {COLUMNS} from hookrelay.events{} order by seq desc limit {}",
            w.where_clause(),
            w.param(&fetch)
        );
        let client = self.client().await?;
        let stmt = client.prepare_cached(&sql).await?;
        let rows = client.query(&stmt, w.params()).await?;
        let mut items = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = page_end(&mut items, filter.limit, |e| e.seq);
        Ok(Page { items, next })
    }
}

fn event_from_row(row: &Row) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        seq: row.try_get(0)?,
        id: row.try_get(1)?,
        source: row.try_get(2)?,
        event_type: row.try_get(3)?,
        committed_at: row.try_get(4)?,
        created_at: row.try_get(5)?,
        body: row.try_get(6)?,
    })
}
