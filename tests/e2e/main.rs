//! End-to-end tests: a real PostgreSQL (source and store), a throwaway MariaDB with its
//! binlog on (mysql sources), hookrelay in-process or as a child process, and real
//! HTTP receivers on 127.0.0.1.

mod harness;

mod claims;
mod cli;
mod conformance;
mod console;
mod delivery;
mod deploy;
mod faults;
mod filters;
mod flood;
mod idle;
mod leadership;
mod leaks;
mod lifetime;
mod mongo;
mod mysql;
mod operator;
mod ordering;
mod outside_bytes;
mod pipeline;
mod pooler;
mod readiness;
mod receivers;
mod scale_out;
mod scope;
mod steering;
mod tables;
mod tls;
mod unreadable_secret;
mod upgrade;
mod url_secrets;
mod values;
