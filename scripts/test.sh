#!/usr/bin/env bash
# The whole test suite: unit tests, the admin API's tests, the end-to-end tests and
# the short fault suite (real PostgreSQL on 127.0.0.1:5432 plus throwaway PostgreSQL
# servers started with initdb/pg_ctl, throwaway MariaDB servers with their binlog on
# for the mysql source, PgBouncer in front of PostgreSQL for the pooler tests, real
# HTTP receivers on 127.0.0.1, headless Chromium for the console).
# scripts/faults.sh --long runs the long fault suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

ensure_postgres
ensure_mariadb_binaries
ensure_chromium
warn_if_no_netns
ensure_pgbouncer
# The fault suite's failpoints are compiled into the test build only.
features=(--features hookrelay/failpoints)
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "${features[@]}" "$@"
  # nextest does not run doctests
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast "${features[@]}" "$@"
fi
