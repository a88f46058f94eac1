#!/usr/bin/env bash
# A throw-away PostgreSQL server for tests and benchmarks (fleet mode), on a Unix socket only.
#
#   scripts/pg.sh start DIR   initdb + pg_ctl start in DIR (created), print the store URL
#   scripts/pg.sh stop DIR    stop it (fast shutdown) and delete DIR
#   scripts/pg.sh pause DIR / resume DIR   stop and restart the same cluster (fault tests)
#
# PostgreSQL refuses to run as root, so the server runs as the `postgres` user; Debian's
# package puts initdb/pg_ctl in /usr/lib/postgresql/N/bin, off the PATH. When they are
# missing the script installs the package (we run as root on CI machines). No TCP:
# listen_addresses='' and the socket lives in DIR; local connections are trusted.
set -euo pipefail

action=${1:?usage: pg.sh start|stop|pause|resume DIR}
dir=${2:?usage: pg.sh start|stop|pause|resume DIR}

bindir() {
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    if [ -z "$found" ] || [ ! -x "$found/initdb" ]; then
        echo "pg.sh: installing postgresql (initdb/pg_ctl not found)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
        found=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    fi
    echo "$found"
}

as_postgres() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

BIN=$(bindir)
case "$action" in
    start)
        mkdir -p "$dir"
        [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
        chmod 700 "$dir"
        as_postgres "$BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 \
            --no-sync >"$dir/initdb.log" 2>&1
        as_postgres "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
            -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c fsync=off \
                -c max_connections=200 -c synchronous_commit=on" >/dev/null
        as_postgres "$BIN/createdb" -h "$dir" -U postgres guardrail
        chmod 755 "$dir"  # the socket is reached by the (root) test processes
        echo "postgresql:///guardrail?host=$dir&user=postgres"
        ;;
    pause)
        as_postgres "$BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
        ;;
    resume)
        as_postgres "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
            -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c fsync=off \
                -c max_connections=200" >/dev/null
        ;;
    stop)
        if [ -f "$dir/data/postmaster.pid" ]; then
            as_postgres "$BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null || true
        fi
        rm -rf "$dir"
        ;;
    *)
        echo "usage: pg.sh start|stop|pause|resume DIR" >&2
        exit 2
        ;;
esac
