#!/usr/bin/env bash
# PostgreSQL 15 with wal2json and wal_level=logical on 127.0.0.1:5432, a test user and database.
# Idempotent: installs if missing, configures, starts if down, waits, prints the URL line.
source "$(dirname "$0")/_lib.sh"
apt_install postgresql postgresql-15-wal2json

CONF=/etc/postgresql/15/main/postgresql.conf
if ! grep -q "beam-etl" "$CONF"; then
  cat >> "$CONF" <<'CONF'
# beam-etl test settings
listen_addresses = '127.0.0.1'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
fsync = off
# synchronous_commit stays on: logical decoding (CDC tests) only sees flushed WAL
CONF
fi
if ! pg_ctlcluster 15 main status >/dev/null 2>&1; then
  pg_ctlcluster 15 main start
fi
wait_for "PostgreSQL" 60 pg_isready -h 127.0.0.1 -p 5432
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='beam_etl'\"" | grep -q 1 || \
  su postgres -c "psql -qc \"CREATE ROLE beam_etl LOGIN SUPERUSER REPLICATION PASSWORD 'beam_etl'\""
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='beam_etl'\"" | grep -q 1 || \
  su postgres -c "psql -qc 'CREATE DATABASE beam_etl OWNER beam_etl'"
echo "BEAM_ETL_TEST_POSTGRES_URL=postgresql://beam_etl:beam_etl@127.0.0.1:5432/beam_etl"
