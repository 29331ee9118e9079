#!/bin/sh
# Entrypoint of the `postgres-replica` service: a streaming hot standby of `postgres`.
#
# First start (empty data directory): clone the primary with pg_basebackup as the `replicator`
# role (password in PGPASSWORD), streaming the WAL written meanwhile; --write-recovery-conf adds
# standby.signal and primary_conninfo. Every start: run postgres, which follows the primary and
# serves read-only queries. Writes on it fail with SQLSTATE 25006.
set -eu

# PostgreSQL refuses a data directory that others can read (the image's may be 1777).
mkdir -p "$PGDATA"
chmod 0700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_basebackup --host="$PRIMARY_HOST" --port="${PRIMARY_PORT:-5432}" --username=replicator \
    --pgdata="$PGDATA" --wal-method=stream --write-recovery-conf --checkpoint=fast --no-password; do
    echo "pg_basebackup from $PRIMARY_HOST failed; retrying in 2 s" >&2
    find "$PGDATA" -mindepth 1 -delete
    sleep 2
  done
fi

exec postgres -c hot_standby=on -c max_connections=100
