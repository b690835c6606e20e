#!/usr/bin/env bash
# The fault suite on its own. Short form (what CI runs inside scripts/test.sh):
#   scripts/faults.sh
# Long form: 50 kill -9 rounds, a 1,000,000-event backlog behind a dead endpoint and a
# 1,000,000-row transaction, in release builds (takes tens of minutes):
#   scripts/faults.sh --long
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_postgres
warn_if_no_netns

args=(-p hookrelay --locked --features failpoints --no-capture -E 'test(/^faults::/)')
if [ "${1:-}" = "--long" ]; then
  export FAULTS_LONG=1
  args+=(--cargo-profile release --profile long)
fi
mkdir -p .bench
cargo nextest run "${args[@]}" 2>&1 | tee ".bench/faults-$(date +%Y%m%dT%H%M%S).log"
