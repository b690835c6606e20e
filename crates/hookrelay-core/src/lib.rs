//! hookrelay's vocabulary, with no I/O: the event envelope and its deterministic id,
//! configuration, webhook signing, sealing secrets at rest, retry backoff and
//! subscription filters.
//!
//! Everything here is a pure function or plain data so the rules that the contract
//! (`DESIGN.md` Part 1) fixes can be unit-tested without a database or a socket.

pub mod backoff;
pub mod catalog;
pub mod config;
pub mod event;
pub mod filter;
pub mod network;
pub mod origin;
pub mod row_filter;
pub mod scope;
pub mod sealing;
pub mod signature;
pub mod stats;
pub mod status;
pub mod tasks;
pub mod tls;

pub use config::{Config, ConfigError};
pub use event::{ChangeEvent, Op};
