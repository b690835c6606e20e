//! Which `hookrelay run` processes use this store, so `rotate-master-key` can refuse
//! while any does: a process still holding the old key would fail to open every
//! secret after the rotation (its deliveries would wait until it is restarted).
//!
//! ```text
//!  hookrelay run ── connection of its own ── pg_advisory_lock_shared(running) ── held
//!                   (application_name "hookrelay run <host>-<pid>"; taken again after
//!                    the connection drops)
//!  rotate-master-key ── in its transaction: pg_try_advisory_xact_lock(running)
//!                        refused: some process holds it shared, or leads a source, or
//!                        has a delivery leased ──▶ refused, naming them
//!                        taken: a process starting meanwhile waits for the commit
//! ```
//!
//! Source leaders and live leases are checked too, so a process of an older version
//! (without this lock) is noticed as well.

use std::time::Duration;

use crate::{PgConnector, Store, StoreError};
use deadpool_postgres::Transaction;
use tokio::task::JoinHandle;

const RUNNING: &str = "select hashtextextended('hookrelay.running', 0)";

/// Held by a running process: while it lives, `rotate-master-key` refuses.
#[derive(Debug)]
pub struct Presence {
    keeper: JoinHandle<()>,
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Who else uses the store, as `rotate-master-key` finds them.
const USERS: &str = "
select coalesce(string_agg(distinct regexp_replace(a.application_name, '^hookrelay (run|leader) ', ''), ', '), '')
  from pg_stat_activity a
 where a.datname = current_database()
   and a.pid <> pg_backend_pid()
   and (a.application_name like 'hookrelay run %' or a.application_name like 'hookrelay leader %')";

impl Store {
    /// Announces this process as running until the returned guard is dropped (see
    /// the module doc). The lock is taken again whenever its connection drops.
    pub fn announce_running(&self) -> Presence {
        let pg = self.connector.clone();
        let me = format!("hookrelay run {}", crate::process_name());
        let keeper = tokio::spawn(async move {
            let mut delay = Duration::from_millis(500);
            loop {
                match hold(&pg, &me).await {
                    Ok(()) => delay = Duration::from_millis(500),
                    Err(e) => {
                        tracing::debug!(error = %e, "announcing this process to the store failed; trying again")
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        });
        Presence { keeper }
    }
}

/// Takes the shared lock on a connection of its own and holds it until the
/// connection ends.
async fn hold(pg: &PgConnector, me: &str) -> Result<(), StoreError> {
    let (client, conn) = pg.connect().await?;
    let conn = tokio::spawn(conn);
    client
        .execute("select set_config('application_name', $1, false)", &[&me])
        .await?;
    client
        .execute(&format!("select pg_advisory_lock_shared(({RUNNING}))"), &[])
        .await?;
    let _ = conn.await;
    Ok(())
}

/// In `tx`: refuses unless no other hookrelay process uses the store; then holds
/// processes that start meanwhile off until `tx` ends.
pub(crate) async fn refuse_while_running(tx: &Transaction<'_>) -> Result<(), StoreError> {
    let alone: bool = tx
        .query_one(
            &format!("select pg_try_advisory_xact_lock(({RUNNING}))"),
            &[],
        )
        .await?
        .try_get(0)?;
    let users: String = tx.query_one(USERS, &[]).await?.try_get(0)?;
    let leased: i64 = tx
        .query_one(
            // rows, and runs (sql/V18) by their deliveries: a run is leased whole
            "select (select count(*) from hookrelay.deliveries
                      where lease_owner is not null and lease_until > now())
                  + (select coalesce(sum(cardinality(delivery_ids)), 0)::bigint
                       from hookrelay.runs
                      where lease_owner is not null and lease_until > now())",
            &[],
        )
        .await?
        .try_get(0)?;
    if alone && users.is_empty() && leased == 0 {
        return Ok(());
    }
    let mut why = Vec::new();
    if !users.is_empty() {
        why.push(format!("running: {users}"));
    } else if !alone {
        why.push("a hookrelay process is running".to_owned());
    }
    if leased > 0 {
        why.push(format!("{leased} deliveries are leased to a dispatcher"));
    }
    Err(StoreError::Conflict(format!(
        "hookrelay is still using this store ({}); stop every hookrelay process, then \
         rotate (deliveries leased by a process that was killed free up once their \
         lease expires)",
        why.join("; ")
    )))
}
