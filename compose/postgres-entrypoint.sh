#!/bin/sh
# Initialises the cluster on first start (superuser arv, database arv), then runs
# the server in the foreground.
set -e
# The password of arv is ARV_PG_PASSWORD, the one the daemons' DATABASE_URL
# carries (docker-compose.yml); it is read only on the first start.
if [ ! -f "$PGDATA/PG_VERSION" ]; then
    # Only characters a URL carries as they are: the daemons' DATABASE_URL
    # holds it as it is, and libpq would decode a %XX in it.
    case ${ARV_PG_PASSWORD:-} in
    "" | *[!A-Za-z0-9._~-]*)
        echo "ARV_PG_PASSWORD must be set, of letters, digits and -._~ only" >&2
        exit 1
        ;;
    esac
    pwfile=$(mktemp)
    printf '%s\n' "$ARV_PG_PASSWORD" >"$pwfile"
    initdb -D "$PGDATA" -U arv --auth-local=trust --auth-host=scram-sha-256 \
        --pwfile="$pwfile"
    rm -f "$pwfile"
    echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -w start -o "-c listen_addresses=''"
    psql -U arv -d postgres -c "CREATE DATABASE arv"
    pg_ctl -D "$PGDATA" -w stop
fi
# max_wal_size: room for checkpoint_timeout of the ingest's WAL at 10,000
# events/s (docs/operations.md, Sizing), so that checkpoints come by time.
exec postgres -D "$PGDATA" -c listen_addresses='*' -c max_wal_size=8GB
