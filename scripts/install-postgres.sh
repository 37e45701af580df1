#!/usr/bin/env bash
# Debian's PostgreSQL server binaries (initdb, pg_ctl, postgres) for tests/test_sweep_postgres.py,
# which starts a throwaway server in a temp folder. Installs with apt-get only when no initdb is
# found (on PATH or under /usr/lib/postgresql/*/bin) and we are root on a Debian-like system;
# otherwise it does nothing (the PostgreSQL sweep test then skips, saying why). The package's own
# cluster is not needed and is not started by the tests.
set -euo pipefail
if command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-postgres: no initdb found and this is not a root apt system;" \
       "the PostgreSQL sweep test will be skipped (install postgresql to run it)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql >/dev/null
ls /usr/lib/postgresql/*/bin/initdb
