#!/usr/bin/env bash
# Makes sure the local PostgreSQL that hookrelay's store, demo and tests use is up.
# Sourced by run.sh and test.sh; safe to run again.
set -euo pipefail

PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
PGUSER=${PGUSER:-postgres}
export PGHOST PGPORT PGUSER

pg_up() { pg_isready -h "$PGHOST" -p "$PGPORT" -q 2>/dev/null; }

ensure_postgres() {
  if ! command -v pg_isready >/dev/null; then
    echo "scripts/services.sh: PostgreSQL client tools are missing; installing postgresql" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  if pg_up; then return 0; fi
  echo "PostgreSQL is not answering on $PGHOST:$PGPORT; starting it" >&2
  if command -v pg_ctlcluster >/dev/null; then
    local version
    version=$(ls /etc/postgresql | sort -V | tail -1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  fi
  for _ in $(seq 1 60); do
    pg_up && return 0
    sleep 0.5
  done
  echo "PostgreSQL did not come up on $PGHOST:$PGPORT" >&2
  return 1
}

# The MariaDB server binaries the mysql tests start throwaway servers from (their
# own datadir and port, binlog on); the machine's own MariaDB service is not used.
ensure_mariadb_binaries() {
  if command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ]; then
    if command -v mariadb-install-db >/dev/null; then return 0; fi
  fi
  echo "scripts/services.sh: mariadbd or mariadb-install-db is missing (the mysql source tests need them); installing mariadb-server" >&2
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null; }; then
    echo "could not install mariadb-server: install it by hand (apt-get install mariadb-server) and run again" >&2
    return 1
  fi
}

# Headless Chromium and its WebDriver for the console's browser test (e2e console::).
# Once they are here the test must find them: CONSOLE_TEST_BROWSER=required makes
# a missing browser a failure instead of a loud skip.
ensure_chromium() {
  if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
    echo "scripts/services.sh: chromium or chromedriver is missing (the console's browser test needs them); installing chromium chromium-driver" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }; then
      echo "NOTICE: could not install chromium chromium-driver: the console's browser test is SKIPPED in this run" >&2
      return 0
    fi
  fi
  export CONSOLE_TEST_BROWSER=required
}

# The network-partition tests (faults::partition) make a network namespace; where that
# is not allowed (not root, no CAP_NET_ADMIN, no iproute2) they skip, and that must
# show: said now, and again when the calling script exits, where results are read.
warn_if_no_netns() {
  local probe="hookrelay-probe-$$"
  if ip netns add "$probe" 2>/dev/null; then
    ip netns del "$probe"
    return 0
  fi
  netns_notice="NOTICE: cannot create network namespaces here (needs root / CAP_NET_ADMIN and iproute2): the network-partition tests (faults::partition) are SKIPPED in this run"
  echo "$netns_notice" >&2
  trap 'echo "$netns_notice" >&2' EXIT
}

# PgBouncer, which the pooler tests start in front of PostgreSQL (their own config and
# port); the package's own service is not used.
ensure_pgbouncer() {
  if command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ]; then return 0; fi
  echo "scripts/services.sh: pgbouncer is missing (the connection-pooler tests need it); installing pgbouncer" >&2
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null; }; then
    echo "could not install pgbouncer: install it by hand (apt-get install pgbouncer) and run again" >&2
    return 1
  fi
}

# psql against a database, quietly, stopping on the first error.
sql() {
  local db=$1
  shift
  psql -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d "$db" -v ON_ERROR_STOP=1 -qAt "$@"
}

ensure_database() {
  local db=$1
  if [ "$(sql postgres -c "select 1 from pg_database where datname = '$db'")" != "1" ]; then
    sql postgres -c "create database \"$db\""
  fi
}
