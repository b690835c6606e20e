//! Integration tests of the admin API: the real router (called with `oneshot`, no
//! socket) over a real store in a fresh PostgreSQL database per test.

mod auth;
mod backfills;
mod deliveries;
mod events;
mod fuzz;
mod harness;
mod metrics;
mod openapi;
mod runs;
mod secrets;
mod slowloris;
mod subscriptions;
mod validation;
