#!/usr/bin/env bash
# Start PostgreSQL and Redis for Whim if they are not running (no systemd needed), then print
# the environment that points Whim at them:
#
#     eval "$(scripts/services.sh)"
#
# Only `export ...` lines go to stdout; all progress goes to stderr. Idempotent.
#
# PostgreSQL: the Debian cluster on $PGPORT (default 5432) is started with pg_ctlcluster,
# created with pg_createcluster if there is none; role whim/whim (LOGIN SUPERUSER: the tests
# create and drop a test database) and database whim owned by it, reached over TCP at
# 127.0.0.1 with password auth.
# Redis: anything answering PING on 127.0.0.1:$REDIS_PORT (default 6379) is used; otherwise a
# non-persistent redis-server is started with its working files in .run/redis.
#
# Environment: PGPORT, REDIS_PORT, SERVICES_TIMEOUT (seconds to wait for each, default 60).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PGPORT="${PGPORT:-5432}"
REDIS_PORT="${REDIS_PORT:-6379}"
TIMEOUT="${SERVICES_TIMEOUT:-60}"
DB_NAME=whim
DB_USER=whim
DB_PASSWORD=whim
RUN_DIR="$ROOT/.run"
REDIS_DIR="$RUN_DIR/redis"
DATABASE_URL="postgres://$DB_USER:$DB_PASSWORD@127.0.0.1:$PGPORT/$DB_NAME"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"

log() { printf '[services] %s\n' "$*" >&2; }
die() {
    printf '[services] ERROR: %s\n' "$*" >&2
    exit 1
}

[[ "$PGPORT" =~ ^[0-9]+$ ]] || die "PGPORT must be a port number, got '$PGPORT'"
[[ "$REDIS_PORT" =~ ^[0-9]+$ ]] || die "REDIS_PORT must be a port number, got '$REDIS_PORT'"

# wait_for <description> <command...>: poll until the command succeeds or $TIMEOUT passes.
wait_for() {
    local what="$1"
    shift
    local deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.25
    done
    log "$what is ready"
}

# start_daemon <command...>: run a command that leaves a server behind. The server must not
# inherit our stdout (the caller's $(...) would wait for it forever), stderr (a `| tee` or a CI
# runner would never see EOF), the lock below, or any other descriptor the caller left open,
# so all of them are closed; the command's own output is shown on failure.
start_daemon() {
    local out rc=0
    out="$(mktemp)"
    (
        for fd in /proc/"$BASHPID"/fd/*; do
            fd="${fd##*/}"
            if [[ "$fd" =~ ^[0-9]+$ ]] && ((fd > 2)); then
                eval "exec $fd>&-" 2>/dev/null || true
            fi
        done
        exec "$@"
    ) </dev/null >"$out" 2>&1 || rc=$?
    if ((rc != 0)); then
        sed 's/^/    /' "$out" >&2
    fi
    rm -f "$out"
    return "$rc"
}

mkdir -p "$RUN_DIR"
# Two callers at once (say `make test` in two terminals) must not both start a server.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$RUN_DIR/services.lock"
    flock -w "$TIMEOUT" 9 || die "another scripts/services.sh is still running (lock $RUN_DIR/services.lock)"
fi

# --- PostgreSQL ----------------------------------------------------------------------------
# Does whim/whim already work over TCP with a password, as a superuser? Then nothing to do.
whim_login_ok() {
    local out
    out="$(PGPASSWORD="$DB_PASSWORD" PGCONNECT_TIMEOUT=5 psql -X -q -w -At \
        -h 127.0.0.1 -p "$PGPORT" -U "$DB_USER" -d "$DB_NAME" \
        -c 'select rolsuper from pg_roles where rolname = current_user' 2>/dev/null)" || return 1
    [[ "$out" == t ]]
}

# Run psql as the cluster's owner over the Unix socket.
as_postgres_psql() {
    local args=(psql -X -q -w -v ON_ERROR_STOP=1 -p "$PGPORT" -d postgres "$@")
    if [[ "$(id -un)" == "$PG_OWNER" ]]; then
        "${args[@]}"
    elif [[ "$(id -u)" == 0 ]]; then
        runuser -u "$PG_OWNER" -- "${args[@]}"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n -u "$PG_OWNER" -- "${args[@]}"
    else
        die "need to run as root or $PG_OWNER to create role/database $DB_USER (or create them yourself)"
    fi
}

# Newest installed PostgreSQL major version, e.g. 15.
installed_pg_version() {
    local d v best=""
    for d in /usr/lib/postgresql/*/bin/postgres; do
        [[ -x "$d" ]] || continue
        v="${d#/usr/lib/postgresql/}"
        v="${v%%/*}"
        if [[ -z "$best" ]] || ((${v%%.*} > ${best%%.*})); then best="$v"; fi
    done
    printf '%s' "$best"
}

pg_cluster_line() { # "<ver> <name> <port> <status> <owner> ..." of the cluster on $PGPORT
    pg_lsclusters -h 2>/dev/null | awk -v port="$PGPORT" '$3 == port { print; exit }'
}

ensure_postgres() {
    command -v pg_lsclusters >/dev/null 2>&1 \
        || die "PostgreSQL's Debian tools are not installed (pg_lsclusters). Run scripts/bootstrap.sh as root, or: apt-get install postgresql"

    local line ver name status
    line="$(pg_cluster_line)"
    if [[ -z "$line" ]]; then
        ver="$(installed_pg_version)"
        [[ -n "$ver" ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql; apt-get install postgresql"
        [[ "$(id -u)" == 0 ]] || die "no PostgreSQL cluster on port $PGPORT and not root to create one (pg_createcluster $ver main -p $PGPORT)"
        name=main
        if pg_lsclusters -h 2>/dev/null | awk -v v="$ver" '$1 == v && $2 == "main" { f = 1 } END { exit !f }'; then
            name=whim # main exists on another port; make a second cluster for this port
        fi
        log "creating PostgreSQL $ver cluster '$name' on port $PGPORT"
        pg_createcluster --locale=C.UTF-8 --encoding=UTF8 -p "$PGPORT" "$ver" "$name" >/dev/null \
            || die "pg_createcluster $ver $name failed"
        line="$(pg_cluster_line)"
        [[ -n "$line" ]] || die "pg_createcluster made no cluster on port $PGPORT"
    fi
    read -r ver name _ status PG_OWNER _ <<<"$line"

    if [[ "$status" != online* ]]; then
        log "starting PostgreSQL $ver/$name on port $PGPORT (was: $status)"
        if [[ "$(id -u)" == 0 || "$(id -un)" == "$PG_OWNER" ]]; then
            start_daemon pg_ctlcluster "$ver" "$name" start \
                || die "pg_ctlcluster $ver $name start failed; see /var/log/postgresql/postgresql-$ver-$name.log"
        else
            die "PostgreSQL $ver/$name is $status and only root or $PG_OWNER can start it: pg_ctlcluster $ver $name start"
        fi
    else
        log "PostgreSQL $ver/$name is running on port $PGPORT"
    fi
    wait_for "PostgreSQL (127.0.0.1:$PGPORT)" pg_isready -q -h 127.0.0.1 -p "$PGPORT" \
        || die "PostgreSQL did not accept connections on 127.0.0.1:$PGPORT within ${TIMEOUT}s; see /var/log/postgresql/postgresql-$ver-$name.log"

    if whim_login_ok; then
        log "role $DB_USER and database $DB_NAME are ready"
        return 0
    fi

    log "ensuring role $DB_USER (LOGIN SUPERUSER) and database $DB_NAME"
    as_postgres_psql <<SQL >&2 || die "could not create role/database $DB_USER"
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
        CREATE ROLE $DB_USER LOGIN SUPERUSER PASSWORD '$DB_PASSWORD';
    ELSE
        ALTER ROLE $DB_USER LOGIN SUPERUSER PASSWORD '$DB_PASSWORD';
    END IF;
END
\$\$;
SELECT 'CREATE DATABASE $DB_NAME OWNER $DB_USER ENCODING ''UTF8'' TEMPLATE template0'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB_NAME')
\gexec
ALTER DATABASE $DB_NAME OWNER TO $DB_USER;
SQL

    if whim_login_ok; then
        log "role $DB_USER and database $DB_NAME are ready"
        return 0
    fi

    # The role exists but a password login over 127.0.0.1 is still refused: pg_hba.conf has no
    # password rule for it (Debian's default has scram-sha-256 for 127.0.0.1/32). Put one first.
    # md5 also accepts SCRAM-hashed passwords, so it works whatever password_encryption is.
    local hba
    hba="$(as_postgres_psql -At -c 'show hba_file')" || die "could not read hba_file setting"
    log "pg_hba.conf refuses $DB_USER on 127.0.0.1; adding a password rule to $hba"
    local rule="host    all    $DB_USER    127.0.0.1/32    md5    # added by whim scripts/services.sh"
    if ! grep -qF "$rule" "$hba"; then
        local tmp
        tmp="$(mktemp)"
        { printf '%s\n' "$rule"; cat "$hba"; } >"$tmp"
        cat "$tmp" >"$hba" # keep owner and mode of the original file
        rm -f "$tmp"
    fi
    as_postgres_psql -c 'select pg_reload_conf()' >/dev/null || die "could not reload PostgreSQL"
    wait_for "password login for $DB_USER" whim_login_ok \
        || die "cannot log in as $DB_USER over 127.0.0.1:$PGPORT with a password; check $hba"
}

# Django creates the test database from template1: warn if that is not UTF-8 (a cluster made
# under the C locale is SQL_ASCII, which mangles non-ASCII text).
check_encoding() {
    local enc
    enc="$(PGPASSWORD="$DB_PASSWORD" psql -X -q -w -At -h 127.0.0.1 -p "$PGPORT" -U "$DB_USER" \
        -d "$DB_NAME" -c "select pg_encoding_to_char(encoding) from pg_database where datname = 'template1'" 2>/dev/null)" || return 0
    if [[ -n "$enc" && "$enc" != UTF8 ]]; then
        log "warning: template1 on port $PGPORT is $enc, not UTF8; test databases inherit it."
        log "  recreate the cluster under a UTF-8 locale, e.g.: pg_dropcluster --stop <ver> <name> &&"
        log "  LC_ALL=C.UTF-8 pg_createcluster -p $PGPORT <ver> <name>"
    fi
}

# --- Redis ---------------------------------------------------------------------------------
redis_ping() {
    [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]
}

ensure_redis() {
    command -v redis-cli >/dev/null 2>&1 \
        || die "redis-cli is not installed. Run scripts/bootstrap.sh as root, or: apt-get install redis-server"
    if redis_ping; then
        log "Redis is running on 127.0.0.1:$REDIS_PORT"
        return 0
    fi
    command -v redis-server >/dev/null 2>&1 \
        || die "redis-server is not installed. Run scripts/bootstrap.sh as root, or: apt-get install redis-server"
    mkdir -p "$REDIS_DIR"
    log "starting redis-server on 127.0.0.1:$REDIS_PORT (log: $REDIS_DIR/redis.log)"
    start_daemon redis-server --daemonize yes --port "$REDIS_PORT" --bind 127.0.0.1 \
        --save '' --appendonly no \
        --dir "$REDIS_DIR" --logfile "$REDIS_DIR/redis.log" \
        --pidfile "$REDIS_DIR/redis-$REDIS_PORT.pid" \
        || die "redis-server failed to start; see $REDIS_DIR/redis.log"
    wait_for "Redis (127.0.0.1:$REDIS_PORT)" redis_ping \
        || die "Redis did not answer PING on 127.0.0.1:$REDIS_PORT within ${TIMEOUT}s; see $REDIS_DIR/redis.log"
}

ensure_postgres
check_encoding
ensure_redis

printf 'export DATABASE_URL=%s\n' "$DATABASE_URL"
printf 'export REDIS_URL=%s\n' "$REDIS_URL"
