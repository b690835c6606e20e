//! The dispatcher: lease due deliveries, sign and POST them, record what happened.
//!
//! ```text
//!  claimer ──claim_due_deliveries (lease committed)──▶ worker pool (bounded)
//!     ▲                                                   │ sign, POST, classify
//!     │ wake: new deliveries, recorded outcomes, timer     ▼
//!     └───────────────────────────────────────────── recorder (batched record_outcomes;
//!                                                   splits a batch around a refused outcome)
//! ```
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
