//! The disk's fsync baseline, recorded with every run because commit rates here move
//! with it: `pg_test_fsync -s 1`, read up to the `fdatasync` figure of "one 8kB write"
//! (Linux's default `wal_sync_method`), then stopped to save the other ~14 s of tests.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context};
use serde::Serialize;

pub const PG_TEST_FSYNC: &str = "/usr/lib/postgresql/15/bin/pg_test_fsync";

#[derive(Debug, Clone, Serialize)]
pub struct FsyncBaseline {
    /// `fdatasync` of one 8 kB write, ops/s.
    pub fdatasync_ops_per_s: f64,
    /// The lines read, for the record.
    pub output: String,
}

/// Runs `pg_test_fsync` (path from `PG_TEST_FSYNC` env or the Debian default) with its
/// test file in `dir`.
pub fn measure(dir: &Path) -> anyhow::Result<FsyncBaseline> {
    let bin = std::env::var("PG_TEST_FSYNC").unwrap_or_else(|_| PG_TEST_FSYNC.to_owned());
    let file = dir.join("pg_test_fsync.tmp");
    let mut child = Command::new(&bin)
        .args(["-s", "1", "-f"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {bin}"))?;
    let stdout = child.stdout.take().context("pg_test_fsync stdout")?;
    let mut output = String::new();
    let mut found = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading pg_test_fsync output")?;
        output.push_str(&line);
        output.push('\n');
        if let Some(v) = parse_fdatasync(&line) {
            found = Some(v);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&file);
    match found {
        Some(fdatasync_ops_per_s) => Ok(FsyncBaseline {
            fdatasync_ops_per_s,
            output,
        }),
        None => bail!("{bin} printed no fdatasync figure:\n{output}"),
    }
}

/// `        fdatasync                          6540.137 ops/sec     153 usecs/op`
fn parse_fdatasync(line: &str) -> Option<f64> {
    let mut words = line.split_whitespace();
    if words.next()? != "fdatasync" {
        return None;
    }
    let value: f64 = words.next()?.parse().ok()?;
    (words.next()? == "ops/sec").then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fdatasync_line() {
        assert_eq!(
            parse_fdatasync(
                "        fdatasync                          6540.137 ops/sec     153 usecs/op"
            ),
            Some(6540.137)
        );
        assert_eq!(parse_fdatasync("        fsync   6875.982 ops/sec"), None);
        assert_eq!(parse_fdatasync("        fdatasync      n/a"), None);
    }
}
