//! Transaction-mode connection poolers (PgBouncer `pool_mode = transaction`, the
//! pooled URLs of Supabase and Neon) are refused: hookrelay keeps state in its
//! sessions across transactions (the session advisory lock that makes one process a
//! source's leader, LISTEN, prepared statements, session settings), and such a pooler
//! hands each transaction to whichever server session is free. Through one, two
//! processes could both "hold" a source's lock, and prepared statements collide
//! (`prepared statement "s4" already exists`).
//!
//! The probe, two connections to the same URL:
//!
//! ```text
//!  A: select pg_backend_pid()                  → a   (A's transaction ends)
//!  B: begin; select pg_backend_pid()           → b   (B holds its session meanwhile)
//!  B: rollback
//!  A: select pg_backend_pid()                  → a'
//! ```
//!
//! Directly, or through a session-mode pooler, every client connection has a server
//! session of its own for its whole life: b ≠ a and a' = a. Through a transaction
//! pooler, A's server session went back to the pool when its transaction ended, and
//! PgBouncer hands out the most recently freed one first, so B gets it (b = a) or A
//! comes back on another one (a' ≠ a). A statement-mode pooler refuses B's `begin`.
//! The probe uses the simple query protocol only, so it runs through any pooler.
//!
//! A finding is conclusive (a server session of one's own never changes pid), but a
//! round can miss: another client of the same pooler (a second hookrelay starting
//! beside this one) may take session a just before B's `begin` and hand it back
//! before A asks again. So the probe runs several rounds and stops at the first
//! finding; on a direct connection that costs a few round trips more. B lets its
//! session go before A asks again: probes of several processes each holding one
//! session while waiting for another could otherwise take a small pool's every
//! session and wait on each other until the probe's time runs out.

use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::PgConnector;

/// How long the probe waits for a session (a pooler with every server session
/// busy); past it the probe says nothing rather than guess.
const PROBE_WAIT: Duration = Duration::from_secs(10);

/// Rounds before the probe concludes there is no pooler (see the module doc).
const PROBE_ROUNDS: usize = 5;

/// What to use instead, for every refusal.
const INSTEAD: &str = "hookrelay keeps a session across transactions (the advisory lock \
     that makes one process a source's leader, LISTEN, prepared statements), which a \
     transaction pooler does not; use the direct URL (Supabase: db.<project>.supabase.co:5432 \
     or the session pooler on port 5432; Neon: the host without -pooler; PgBouncer: \
     pool_mode = session); see \"Connecting to managed databases\" in the README";

/// `Some(why)` when `connector`'s URL leads through a transaction- or
/// statement-mode pooler; `None` when each connection has a session of its own (or
/// the probe could not tell within its time).
pub async fn transaction_pooler(
    connector: &PgConnector,
) -> Result<Option<String>, tokio_postgres::Error> {
    let (a, a_conn) = connector.connect().await?;
    let a_driver = tokio::spawn(a_conn);
    let (b, b_conn) = connector.connect().await?;
    let b_driver = tokio::spawn(b_conn);
    let verdict = tokio::time::timeout(PROBE_WAIT, async {
        for _ in 0..PROBE_ROUNDS {
            if let Some(found) = probe(&a, &b).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    })
    .await;
    drop((a, b));
    a_driver.abort();
    b_driver.abort();
    match verdict {
        Err(_elapsed) => Ok(None),
        Ok(Ok(found)) => Ok(found),
        Ok(Err(e)) if is_statement_pooling(&e) => Ok(Some(format!(
            "the URL leads through a connection pooler in statement mode ({}); {INSTEAD}",
            crate::describe_pg(&e)
        ))),
        Ok(Err(e)) => Err(e),
    }
}

async fn probe(a: &Client, b: &Client) -> Result<Option<String>, tokio_postgres::Error> {
    let first = backend_pid(a, "select pg_backend_pid()").await?;
    let other = backend_pid(b, "begin; select pg_backend_pid()").await?;
    b.simple_query("rollback").await?;
    let again = backend_pid(a, "select pg_backend_pid()").await?;
    Ok(if other == first {
        Some(format!(
            "the URL leads through a connection pooler in transaction mode: two \
             connections were served by the same server session (pid {first}); {INSTEAD}"
        ))
    } else if again != first {
        Some(format!(
            "the URL leads through a connection pooler in transaction mode: one \
             connection was served by server session {first}, then by {again}; {INSTEAD}"
        ))
    } else {
        None
    })
}

async fn backend_pid(c: &Client, sql: &str) -> Result<String, tokio_postgres::Error> {
    Ok(c.simple_query(sql)
        .await?
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_default())
}

/// PgBouncer's refusal of a transaction block in statement mode.
fn is_statement_pooling(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| db.message().contains("statement pooling mode"))
}

/// An error that a transaction pooler causes (a prepared statement of another
/// client's session, or one that went missing): worth saying so where it is reported.
pub fn looks_like_transaction_pooler(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        matches!(db.code().code(), "42P05" | "26000")
            && db.message().starts_with("prepared statement \"s")
    })
}

/// The hint [`crate::describe_pg`] adds to such an error.
pub(crate) const POOLER_HINT: &str = "a connection pooler in transaction mode between \
     hookrelay and PostgreSQL does this; use a direct or session-mode URL";
