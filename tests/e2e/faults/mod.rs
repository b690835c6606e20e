//! The fault suite (issue 3): crashes, restarts, lost connections, network partitions
//! and bad receivers, each checked against a ledger of what committed. `FAULTS_LONG=1`
//! runs the long form (50 kills instead of 5).

mod backlog;
mod ledger;
mod netns;
mod partition;
mod pg_instance;
mod receivers;
mod restarts;

#[cfg(feature = "failpoints")]
mod failpoints;

mod kills;

use std::time::Duration;

use crate::harness::TestReceiver;
pub use ledger::{check, Generator, Ledger, Report};
pub use pg_instance::PgInstance;

/// Waits until every committed change arrived (or `timeout`), then reports.
pub async fn wait_nothing_lost(rx: &TestReceiver, ledger: &Ledger, timeout: Duration) -> Report {
    let deadline = std::time::Instant::now() + timeout;
    rx.wait_delivered(ledger.len(), timeout).await;
    loop {
        let report = check(ledger, &rx.requests());
        if report.lost.is_empty() || std::time::Instant::now() > deadline {
            return report;
        }
        // Something is still missing: look again after the next arrival (or soon).
        let seen = rx.requests().len();
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            rx.wait_for("one more request", timeout, move |log| log.len() > seen),
        )
        .await;
    }
}

/// Lets the generator commit at least `n` more changes.
pub async fn let_commit(gen: &Generator, n: usize) {
    let target = gen.ledger.len() + n;
    crate::harness::eventually(
        "the generator to commit more",
        Duration::from_secs(60),
        || async { (gen.ledger.len() >= target).then_some(()) },
    )
    .await;
}

/// Long mode multiplies the fault counts.
pub fn long_mode() -> bool {
    std::env::var("FAULTS_LONG").is_ok_and(|v| v == "1")
}
