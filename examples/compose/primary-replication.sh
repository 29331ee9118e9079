#!/bin/sh
# Mounted into the primary's /docker-entrypoint-initdb.d: runs once, when its data directory is
# first initialised. Creates the role the standby streams as and lets it connect for
# replication (the image's pg_hba.conf has `host all all all`, which excludes replication).
set -eu

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=password="$REPLICATION_PASSWORD" <<'SQL'
create role replicator with replication login password :'password';
SQL

echo 'host replication replicator all scram-sha-256' >> "$PGDATA/pg_hba.conf"
