//! What `/metrics` reads from the store at scrape time: the open backlog per
//! subscription and how stale each source's newest event is. Scrapes are rare (every
//! 15 s or so), so these are plain aggregates over the open-delivery indexes.

use chrono::{DateTime, Utc};

use crate::{Store, StoreError};

/// Open deliveries of one subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Backlog {
    pub subscription_id: String,
    pub pending: i64,
    pub retrying: i64,
    /// Age of the oldest open delivery, in seconds.
    pub oldest_seconds: f64,
}

/// Open rows and runs' open elements (pending, sql/V18), per subscription. One
/// statement, so an element recorded meanwhile counts once.
const BACKLOG: &str = concat!(
    "
with open as (
    select subscription_id, status, created_at
      from hookrelay.deliveries
     where status in ('pending', 'retrying')
    union all
    select r.subscription_id, 'pending', r.created_at
      from hookrelay.runs r
     cross join lateral ",
    crate::runs::open_elements!(),
    "
)
select subscription_id,
       count(*) filter (where status = 'pending'),
       count(*) filter (where status = 'retrying'),
       extract(epoch from now() - min(created_at))::float8
  from open
 group by subscription_id
 order by subscription_id"
);

impl Store {
    /// Open deliveries per subscription, whether rows or in runs.
    pub async fn backlog(&self) -> Result<Vec<Backlog>, StoreError> {
        let client = self.client().await?;
        let rows = client.query(BACKLOG, &[]).await?;
        rows.iter()
            .map(|r| {
                Ok(Backlog {
                    subscription_id: r.try_get(0)?,
                    pending: r.try_get(1)?,
                    retrying: r.try_get(2)?,
                    oldest_seconds: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Each source's newest stored event time.
    pub async fn last_event_times(&self) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "select source, last_event_at from hookrelay.checkpoints
                  where last_event_at is not null order by source",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Store connections: (open, idle) over both pools.
    pub fn pool_connections(&self) -> (usize, usize) {
        let (a, b) = (self.pool.status(), self.relaxed.status());
        (a.size + b.size, a.available + b.available)
    }
}
