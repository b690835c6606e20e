//! Source leadership: one process reads a source at a time, or per-key order breaks.
//!
//! ```text
//!  try_lock_source ── pg_try_advisory_lock on a connection of its own ──▶ taken?
//!        │ yes: bump the source's epoch (source_leaders) ──▶ SourceLock { epoch }
//!        ▼
//!  keeper task: every 2 s read the epoch back, within 4 s ──▶ confirmed
//!        │ no answer in time, connection gone, or a newer epoch
//!        ▼
//!  SourceLock::lost() resolves ──▶ the supervisor stops reading, goes to standby
//! ```
//!
//! The lock is the session's: when the holder's process dies the connection drops and
//! the server releases it. When the holder's *host* vanishes silently, the server ends
//! the session once its keepalives go unanswered (`liveness`: 10 s at the earliest
//! after the last packet). The holder's heartbeat gives up sooner (6 s at the most
//! after its last confirmed round trip), so it has stopped reading before another
//! process can have taken the lock. Should it still commit late (a batch already on
//! the wire), the epoch fences it: every batch commits only under the epoch its
//! reader took over with (see `batch`), and a takeover bumps it.

use std::{fmt, time::Duration};

use tokio::task::JoinHandle;

use crate::{Store, StoreError};

/// How often the holder confirms its lock.
const CONFIRM_EVERY: Duration = Duration::from_secs(2);
/// How long one confirmation may take before the holder gives the lock up. Together
/// with `CONFIRM_EVERY` it stays under `liveness::SERVER_NOTICES_AFTER`.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(4);
/// How long taking the lock may take in all: connecting, locking, and the epoch bump,
/// which waits for a deposed leader's batch still holding the epoch row.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(25);

const BUMP_EPOCH: &str = "
insert into hookrelay.source_leaders as l (source, epoch, holder, since)
values ($1, 1, $2, now())
on conflict (source) do update
   set epoch = l.epoch + 1, holder = excluded.holder, since = now()
returning epoch";

const READ_EPOCH: &str = "select epoch from hookrelay.source_leaders where source = $1";

/// Why a held lock was given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockLost {
    /// The lock's connection closed or failed.
    Connection(String),
    /// The store did not confirm the lock in time.
    Unconfirmed(Duration),
    /// Another process took the source over (a newer epoch).
    Deposed { ours: i64, current: i64 },
}

impl fmt::Display for LockLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockLost::Connection(e) => write!(f, "the lock's store connection failed: {e}"),
            LockLost::Unconfirmed(t) => {
                write!(f, "the store did not confirm the lock within {t:?}")
            }
            LockLost::Deposed { ours, current } => write!(
                f,
                "another process took the source over (epoch {current}, ours {ours})"
            ),
        }
    }
}

/// A held source lock. Dropping it closes the connection and releases the lock.
pub struct SourceLock {
    epoch: i64,
    keeper: JoinHandle<LockLost>,
}

impl SourceLock {
    /// The leadership epoch this lock was taken with: batches commit under it.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Resolves when the lock can no longer be counted on, saying why.
    pub async fn lost(&mut self) -> LockLost {
        match (&mut self.keeper).await {
            Ok(why) => why,
            Err(e) => LockLost::Connection(format!("lock keeper ended: {e}")),
        }
    }
}

impl Drop for SourceLock {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl Store {
    /// Tries to become the reader of `source`; `None` when another process is. On
    /// success the source's epoch has been bumped and the lock is kept confirmed.
    pub async fn try_lock_source(&self, source: &str) -> Result<Option<SourceLock>, StoreError> {
        tokio::time::timeout(TAKEOVER_TIMEOUT, self.take_lock(source))
            .await
            .map_err(|_| StoreError::Timeout("taking the source lock"))?
    }

    async fn take_lock(&self, source: &str) -> Result<Option<SourceLock>, StoreError> {
        let (client, conn) = self.connector.connect().await?;
        let mut conn = tokio::spawn(conn);
        let got: bool = client
            .query_one(
                "select pg_try_advisory_lock(hashtextextended('hookrelay.source:' || $1, 0))",
                &[&source],
            )
            .await?
            .try_get(0)?;
        if !got {
            conn.abort();
            return Ok(None);
        }
        let me = crate::process_name();
        // Names the leader for `/v1/sources` in any process (see `leaders`).
        client
            .execute(
                "select set_config('application_name', $1, false)",
                &[&format!("hookrelay leader {me}")],
            )
            .await?;
        let epoch: i64 = client
            .query_one(BUMP_EPOCH, &[&source, &me])
            .await?
            .try_get(0)?;
        let read = client.prepare(READ_EPOCH).await?;
        let source = source.to_owned();
        let keeper = tokio::spawn(async move {
            loop {
                tokio::select! {
                    ended = &mut conn => {
                        return LockLost::Connection(match ended {
                            Ok(Ok(())) => "closed".to_owned(),
                            Ok(Err(e)) => crate::describe_pg(&e),
                            Err(e) => e.to_string(),
                        });
                    }
                    _ = tokio::time::sleep(CONFIRM_EVERY) => {}
                }
                let confirmed =
                    tokio::time::timeout(CONFIRM_TIMEOUT, client.query_opt(&read, &[&source]))
                        .await;
                match confirmed {
                    Err(_) => return LockLost::Unconfirmed(CONFIRM_TIMEOUT),
                    Ok(Err(e)) => return LockLost::Connection(crate::describe_pg(&e)),
                    Ok(Ok(row)) => {
                        let current = row.and_then(|r| r.try_get::<_, i64>(0).ok()).unwrap_or(0);
                        if current != epoch {
                            return LockLost::Deposed {
                                ours: epoch,
                                current,
                            };
                        }
                    }
                }
            }
        });
        Ok(Some(SourceLock { epoch, keeper }))
    }
}

/// Who leads each source right now, from the store's lock table and epochs: the
/// leading process's name (`<host>-<pid>`), since when its lock connection exists,
/// when the store last saw it confirm the lock (its session's last query), and the
/// source's current epoch.
const LEADERS: &str = "
select w.source, substr(a.application_name, length('hookrelay leader ') + 1) as process,
       a.backend_start as since, a.query_start as confirmed_at, e.epoch
  from unnest($1::text[]) as w(source)
  cross join lateral (select hashtextextended('hookrelay.source:' || w.source, 0) as k) key
  join pg_locks l on l.locktype = 'advisory' and l.granted and l.objsubid = 1
   and l.database = (select oid from pg_database where datname = current_database())
   and l.classid = ((key.k >> 32) & 4294967295)::oid
   and l.objid = (key.k & 4294967295)::oid
  join pg_stat_activity a on a.pid = l.pid
  left join hookrelay.source_leaders e on e.source = w.source";

/// A source's leader as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub source: String,
    /// `<host>-<pid>` of the leading process.
    pub process: String,
    pub since: chrono::DateTime<chrono::Utc>,
    /// When the store last saw the leader confirm its lock.
    pub confirmed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The leadership epoch its batches commit under.
    pub epoch: Option<i64>,
}

impl Store {
    /// The current leader of each of `sources` that has one.
    pub async fn leaders(&self, sources: &[String]) -> Result<Vec<Leader>, StoreError> {
        let client = self.client().await?;
        let rows = client.query(LEADERS, &[&sources]).await?;
        rows.iter()
            .map(|r| {
                Ok(Leader {
                    source: r.try_get("source")?,
                    process: r.try_get("process")?,
                    since: r.try_get("since")?,
                    confirmed_at: r.try_get("confirmed_at")?,
                    epoch: r.try_get("epoch")?,
                })
            })
            .collect()
    }
}

// The holder gives up (at most `CONFIRM_EVERY + CONFIRM_TIMEOUT` after its last
// confirmed round trip) before the server can have released its lock to another.
const _: () = assert!(
    CONFIRM_EVERY.as_secs() + CONFIRM_TIMEOUT.as_secs()
        < crate::liveness::SERVER_NOTICES_AFTER.as_secs()
);
