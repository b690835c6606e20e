//! End-to-end tests: a real PostgreSQL (source and store), a throwaway MariaDB with its
//! binlog on (mysql sources), hookrelay in-process or as a child process, and real
//! HTTP receivers on 127.0.0.1.

mod harness;

mod claims;
mod cli;
mod console;
mod delivery;
mod deploy;
mod faults;
mod filters;
mod idle;
mod leadership;
mod leaks;
mod mongo;
mod mysql;
mod operator;
mod ordering;
mod outside_bytes;
mod pipeline;
mod readiness;
mod readme;
mod receivers;
mod scale_out;
mod steering;
mod tables;
mod values;
