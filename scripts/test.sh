#!/usr/bin/env bash
# The whole test suite: unit tests, the admin API's tests, the end-to-end tests and
# the short fault suite (real PostgreSQL on 127.0.0.1:5432 plus throwaway PostgreSQL
# servers started with initdb/pg_ctl, throwaway MariaDB servers with their binlog on
# for the mysql source, real HTTP receivers on 127.0.0.1).
# scripts/faults.sh --long runs the long fault suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

ensure_postgres
ensure_mariadb_binaries
# The network-partition tests make a network namespace; without the right to (not
# root, no CAP_NET_ADMIN) they skip, and that must show.
netns_probe="hookrelay-probe-$$"
if ip netns add "$netns_probe" 2>/dev/null; then
  ip netns del "$netns_probe"
else
  netns_notice="NOTICE: cannot create network namespaces here (needs root / CAP_NET_ADMIN): the network-partition tests (faults::partition) are SKIPPED in this run"
  echo "$netns_notice" >&2
  # Said again at the end, where a reader of the results looks.
  trap 'echo "$netns_notice" >&2' EXIT
fi
# The fault suite's failpoints are compiled into the test build only.
features=(--features hookrelay/failpoints)
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "${features[@]}" "$@"
  # nextest does not run doctests
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast "${features[@]}" "$@"
fi
