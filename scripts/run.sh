#!/usr/bin/env bash
# The main job: start hookrelay on the local PostgreSQL with deploy/hookrelay.toml.
# Creates the store database "hookrelay" and a demo source database "shop" with an
# "orders" table when they are missing, builds the release binary, and runs it.
# Extra arguments go to `hookrelay run` (e.g. --config my.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

ensure_postgres
ensure_database hookrelay
ensure_database shop
sql shop -c "create table if not exists public.orders (
  id bigserial primary key,
  status text not null default 'pending',
  total numeric(12,2) not null default 0,
  updated_at timestamptz not null default now())"

cargo build --release --locked -p hookrelay
exec target/release/hookrelay run --config "${HOOKRELAY_CONFIG:-deploy/hookrelay.toml}" "$@"
