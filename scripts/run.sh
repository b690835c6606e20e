#!/usr/bin/env bash
# The main job. With no arguments: `hookrelay demo`, a self-contained tour on the
# local PostgreSQL (scratch databases, a built-in receiver that verifies every
# signature, a retry and a replay), serving its admin API until Ctrl-C.
# `scripts/run.sh serve [args]`: hookrelay itself with deploy/hookrelay.toml; creates
# the store database "hookrelay" and a source database "shop" with an "orders" table
# when they are missing. Extra arguments go to `hookrelay run` (e.g. --config my.toml).
# Secrets are encrypted at rest under HOOKRELAY_MASTER_KEY: when it is not set, a key
# is made once and kept in .state/master-key (git-ignored, mode 600), so the store's
# secrets stay readable across runs. Production keeps its key elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

ensure_postgres
if [[ ! -x target/release/hookrelay ]]; then
  echo "run.sh: building the release binary first (about 7-8 minutes on 2 cores; later runs start at once)" >&2
fi
cargo build --release --locked -p hookrelay
if [ "${1:-}" != "serve" ]; then
  exec target/release/hookrelay demo "$@"
fi
shift
ensure_database hookrelay
ensure_database shop
sql shop -c "create table if not exists public.orders (
  id bigserial primary key,
  status text not null default 'pending',
  total numeric(12,2) not null default 0,
  updated_at timestamptz not null default now())"

if [[ -z "${HOOKRELAY_MASTER_KEY:-}" ]]; then
  key_file=.state/master-key
  if [[ ! -s "$key_file" ]]; then
    mkdir -p .state
    (umask 077 && head -c 32 /dev/urandom | base64 > "$key_file")
    echo "run.sh: made a master key for local runs in $key_file" >&2
  fi
  HOOKRELAY_MASTER_KEY="$(cat "$key_file")"
  export HOOKRELAY_MASTER_KEY
fi

exec target/release/hookrelay run --config "${HOOKRELAY_CONFIG:-deploy/hookrelay.toml}" "$@"
