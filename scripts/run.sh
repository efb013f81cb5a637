#!/usr/bin/env bash
# `make run`: bootstrap, migrate, then run web (gunicorn), Celery worker, Celery beat and Flower
# in the foreground, each line of output prefixed with the process name.
#
# DATABASE_URL / REDIS_URL select PostgreSQL and Redis. With neither set, Whim runs in
# single-machine mode (SQLite + a filesystem Celery broker under .run/, decided by the
# settings). For the local services: eval "$(scripts/services.sh)" && make run
#
# Ctrl-C / SIGTERM stops all four (SIGTERM, then SIGKILL after STOP_TIMEOUT seconds) and
# exits 0. A Celery process (worker, beat, flower) that dies on its own is restarted with
# backoff, up to RESTART_LIMIT (5) times; if the web process dies, or a Celery one dies once
# more, the others are stopped and this exits non-zero.
#
# Environment: PORT (8000), WHIM_CALLBACK_PORT (PORT + 1), FLOWER_PORT (5555),
# FLOWER_BASIC_AUTH (user:password),
# WORKER_CONCURRENCY (2), STOP_TIMEOUT (30).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[run] %s\n' "$*" >&2; }
die() {
    printf '[run] ERROR: %s\n' "$*" >&2
    exit 1
}

if ((BASH_VERSINFO[0] < 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] < 1))); then
    die "needs bash >= 5.1 (this is $BASH_VERSION)"
fi
command -v setsid >/dev/null 2>&1 || die "setsid (util-linux) is required"

PORT="${PORT:-8000}"
# The callback listener: the one port worker containers reach (it serves /w/… only).
export WHIM_CALLBACK_PORT="${WHIM_CALLBACK_PORT:-$((PORT + 1))}"
FLOWER_PORT="${FLOWER_PORT:-5555}"
WORKER_CONCURRENCY="${WORKER_CONCURRENCY:-2}"
STOP_TIMEOUT="${STOP_TIMEOUT:-30}"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
CELERY="$VENV/bin/celery"

bash "$ROOT/scripts/bootstrap.sh"

export PYTHONUNBUFFERED=1

mask_url() { sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"; }

if [[ -z "${DATABASE_URL:-}" && -z "${REDIS_URL:-}" ]]; then
    cat >&2 <<EOF
[run] ================================================================================
[run]  Single-machine mode: DATABASE_URL and REDIS_URL are not set, so Whim uses SQLite
[run]  and a filesystem Celery broker under .run/. For PostgreSQL and Redis:
[run]      eval "\$(scripts/services.sh)" && make run
[run] ================================================================================
EOF
else
    if [[ -n "${DATABASE_URL:-}" ]]; then
        log "database: $(mask_url "$DATABASE_URL")"
    else
        log "database: SQLite under .run/ (DATABASE_URL not set)"
    fi
    if [[ -n "${REDIS_URL:-}" ]]; then
        log "broker:   $(mask_url "$REDIS_URL")"
    else
        log "broker:   filesystem broker under .run/ (REDIS_URL not set)"
    fi
fi

log "manage.py migrate"
"$PY" manage.py migrate --noinput
log "manage.py collectstatic"
"$PY" manage.py collectstatic --noinput -v0
log "manage.py whim_setup"
"$PY" manage.py whim_setup

# --- Supervision ---------------------------------------------------------------------------
PIDS=()          # leader pid of each child; each child is its own session / process group
declare -A NAMES # pid -> name
PREFIX_PIDS=()   # the sed processes that prefix output
STOP=""          # set by the signal traps
FORCE=""         # set by a second signal during shutdown
STOPPED=0        # set once stop_all has run

# Whatever ends this script (an unexpected error included) must not leave children behind.
# shellcheck disable=SC2317  # called from the EXIT trap
on_exit() {
    local pid
    if ((!STOPPED && ${#PIDS[@]})); then
        log "exiting unexpectedly: stopping the children"
        stop_all
    fi
    for pid in "${PIDS[@]}"; do
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
}
trap on_exit EXIT

trap 'STOP=INT' INT
trap 'STOP=TERM' TERM
trap 'STOP=HUP' HUP

# start <name> <command...>: run the command in its own session (so a Ctrl-C reaches only us,
# and we can kill its whole process tree), output prefixed with "[name] ".
start() {
    local name="$1" fd
    shift
    # The prefixer is our child, not the command's; it ignores INT/TERM/HUP so the last lines a
    # stopping process writes still come out, and ends at EOF when the process (tree) is gone.
    exec {fd}> >(
        trap '' INT TERM HUP
        exec sed -u "s/^/$(printf '%-7s' "[$name]") /"
    )
    PREFIX_PIDS+=("$!")
    setsid "$@" </dev/null >&"$fd" 2>&1 {fd}>&- &
    PIDS+=("$!")
    NAMES[$!]="$name"
    exec {fd}>&-
    log "started $name (pid $!)"
}

alive() { kill -0 "$1" 2>/dev/null; }

stop_all() {
    local pid deadline
    STOPPED=1
    for pid in "${PIDS[@]}"; do
        if alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    deadline=$((SECONDS + STOP_TIMEOUT))
    while ((SECONDS < deadline)) && [[ -z "$FORCE" ]]; do
        local any=0
        for pid in "${PIDS[@]}"; do
            if alive "$pid"; then any=1; fi
        done
        ((any)) || break
        sleep 0.2 || true # a signal kills sleep; that must not trip set -e
    done
    for pid in "${PIDS[@]}"; do
        if alive "$pid"; then
            if [[ -n "$FORCE" ]]; then
                log "${NAMES[$pid]}: SIGKILL (interrupted again)"
            else
                log "${NAMES[$pid]} did not stop within ${STOP_TIMEOUT}s: SIGKILL"
            fi
        fi
        # The whole process group: also pool processes / gunicorn workers left behind.
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    # Let the prefixers print the last lines before our final message.
    deadline=$((SECONDS + 3))
    for pid in "${PREFIX_PIDS[@]}"; do
        while alive "$pid" && ((SECONDS < deadline)); do sleep 0.05 || true; done
    done
}

# Flower is always behind basic auth: FLOWER_BASIC_AUTH (user:password), or a login made once
# for this checkout and kept in .run/flower_auth (mode 0600).
if [[ -z "${FLOWER_BASIC_AUTH:-}" ]]; then
    auth_file="$ROOT/.run/flower_auth"
    if [[ ! -s "$auth_file" ]]; then
        mkdir -p "$ROOT/.run"
        (umask 077 && printf 'admin:%s\n' "$("$PY" -c 'import secrets; print(secrets.token_urlsafe(12))')" >"$auth_file")
    fi
    FLOWER_BASIC_AUTH="$(cat "$auth_file")"
    flower_login_note="login ${FLOWER_BASIC_AUTH%%:*} / ${FLOWER_BASIC_AUTH#*:} (from .run/flower_auth)"
else
    flower_login_note="basic auth from FLOWER_BASIC_AUTH"
fi
flower_args=(-A whim flower --address=127.0.0.1 "--port=$FLOWER_PORT" "--basic-auth=$FLOWER_BASIC_AUTH")

# --- Where agents run: Docker when an engine and the worker image can be had, else local ---
web_binds=(-b "127.0.0.1:$PORT")
runtime="${WHIM_RUNTIME:-auto}"
if [[ "$runtime" == "auto" || "$runtime" == "docker" ]]; then
    if bash "$ROOT/scripts/docker.sh" >&2 && bash "$ROOT/workers/image/build.sh" >&2; then
        export WHIM_RUNTIME=docker
        gateway="$("$PY" manage.py whim_runtime --gateway)"
        # Containers call back through the worker network's gateway, on a listener of its
        # own that serves worker callbacks only (the firewall lets them reach nothing else).
        web_binds+=(-b "$gateway:$WHIM_CALLBACK_PORT")
        export ALLOWED_HOSTS="${ALLOWED_HOSTS:-localhost,127.0.0.1,[::1]},$gateway"
        export WHIM_CALLBACK_URL="${WHIM_CALLBACK_URL:-http://$gateway:$WHIM_CALLBACK_PORT}"
        log "runtime: docker (worker image ${WORKER_IMAGE:-whim-worker:latest}, callbacks via $gateway)"
    elif [[ "$runtime" == "docker" ]]; then
        die "WHIM_RUNTIME=docker, but no Docker engine or worker image could be had (see above)"
    else
        export WHIM_RUNTIME=local
    fi
fi
if [[ "${WHIM_RUNTIME:-}" == "local" ]]; then
    log "runtime: local — agents run as processes on THIS machine, NOT ISOLATED"
elif [[ "${WHIM_RUNTIME:-}" == "fake" ]]; then
    log "runtime: fake — no agent runs; the mock plays it (metadata.mock)"
fi

launch() {
    case "$1" in
    web) start web "$VENV/bin/gunicorn" whim.wsgi "${web_binds[@]}" -w 2 --graceful-timeout 20 ;;
    worker) start worker "$CELERY" -A whim worker -l INFO --concurrency "$WORKER_CONCURRENCY" ;;
    beat) start beat "$CELERY" -A whim beat -l INFO ;;
    flower) start flower "$CELERY" "${flower_args[@]}" ;;
    esac
}
for name in web worker beat flower; do launch "$name"; done

log "Whim:   http://127.0.0.1:$PORT/"
log "Flower: http://127.0.0.1:$FLOWER_PORT/ ($flower_login_note)"
log "Ctrl-C stops everything."

exit_code=0
declare -A RESTARTS=()
RESTART_LIMIT="${RESTART_LIMIT:-5}"
while [[ -z "$STOP" ]]; do
    died_pid=""
    status=0
    wait -n -p died_pid "${PIDS[@]}" || status=$?
    if [[ -n "${died_pid:-}" ]]; then
        name="${NAMES[$died_pid]}"
        # A supervisor's job: a Celery process that dies (e.g. kombu giving up on a lost
        # broker) is started again, with backoff, up to RESTART_LIMIT times; the rows are the
        # truth and the sweeps finish whatever it was doing. The web process is not restarted.
        if [[ -z "$STOP" && "$name" != web ]] && ((${RESTARTS[$name]:-0} < RESTART_LIMIT)); then
            RESTARTS[$name]=$((${RESTARTS[$name]:-0} + 1))
            delay=$((2 ** (${RESTARTS[$name]} - 1)))
            log "$name (pid $died_pid) exited with status $status; restart ${RESTARTS[$name]}/$RESTART_LIMIT in ${delay}s"
            remaining=()
            for pid in "${PIDS[@]}"; do [[ "$pid" == "$died_pid" ]] || remaining+=("$pid"); done
            PIDS=("${remaining[@]}")
            sleep "$delay" || true
            [[ -n "$STOP" ]] || launch "$name"
            continue
        fi
        log "$name (pid $died_pid) exited with status $status; stopping the others"
        exit_code=$((status == 0 ? 1 : status))
        break
    fi
    if [[ -z "$STOP" ]] && ((status == 127)); then
        log "no children left to wait for"
        exit_code=1
        break
    fi
done

# A second Ctrl-C does not abandon the shutdown; it skips the wait and kills at once.
trap 'FORCE=1' INT TERM HUP
if [[ -n "$STOP" ]]; then
    log "received SIG$STOP: stopping web, worker, beat and flower (up to ${STOP_TIMEOUT}s)"
fi
stop_all
if ((exit_code == 0)); then
    log "stopped"
else
    log "stopped because $name died (exit $exit_code)"
fi
exit "$exit_code"
