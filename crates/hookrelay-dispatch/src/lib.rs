//! The dispatcher: lease due deliveries, sign and POST them, record what happened.
//!
//! ```text
//!  claimer ──claim_due_deliveries (lease committed)──▶ worker pool (bounded)
//!     ▲  │                                               ▲  │ sign, POST, classify
//!     │  └─offer: room of drained subscriptions          │  ▼
//!     │       ──▶ source batch leases at insert ──hand───┘ recorder (batched record_outcomes;
//!     │ wake: deliveries left for a claim, room that    │  splits a batch around a refused
//!     │       a backlog can use, recorded outcomes, timer  outcome)
//!     └──────────────────────────────────────────────────┘
//! ```
//!
//! A subscription whose last claim found nothing else waiting is drained: the batches
//! of this process's sources lease its fresh deliveries to the dispatcher as they
//! insert them, within the room it offered, and hand them over once committed, so a
//! dispatcher that keeps up sends without claiming. A backlog is always claimed,
//! oldest first; fresh deliveries never pass it.
//!
//! No transaction is held across an HTTP call. An outcome is written only by the
//! lease holder; if the process dies mid-attempt the lease expires and another
//! dispatcher sends the delivery again with the same event id (at-least-once).

mod breaker;
mod classify;
mod client;
mod dispatcher;
mod recorder;
mod send;

pub use classify::{classify, Verdict};
pub use client::{build_client, check_target, ClientError};
pub use dispatcher::Dispatcher;
pub use send::attempt;
