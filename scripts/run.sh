#!/usr/bin/env bash
# The main job. With no arguments: `hookrelay demo`, a self-contained tour on the
# local PostgreSQL (scratch databases, a built-in receiver that verifies every
# signature, a retry and a replay), serving its admin API until Ctrl-C.
# `scripts/run.sh serve [args]`: hookrelay itself with deploy/hookrelay.toml; creates
# the store database "hookrelay" and a source database "shop" with an "orders" table
# when they are missing. Extra arguments go to `hookrelay run` (e.g. --config my.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

ensure_postgres
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

exec target/release/hookrelay run --config "${HOOKRELAY_CONFIG:-deploy/hookrelay.toml}" "$@"
