#!/usr/bin/env bash
# The benchmark (docs/benchmarks.md; not part of the test run): builds the release binaries and
# runs target/release/hookrelay-bench against the local PostgreSQL. It drops and
# recreates the databases hookrelay_bench_store and hookrelay_bench_src, starts
# hookrelay as a child process per workload, and writes .bench/results-<time>.json,
# .bench/latest.json and a table on stdout. A full run takes 10-20 minutes; --quick
# (every workload 10x smaller but 12, the pipeline's cost) takes about 3. Other
# arguments go to hookrelay-bench (e.g. --only c,1,7; see --help). Other work on
# the machine disturbs the figures: the "other" column of the CPU table shows how much.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

ensure_postgres
cargo build --release -p hookrelay -p hookrelay-bench
exec target/release/hookrelay-bench "$@"
