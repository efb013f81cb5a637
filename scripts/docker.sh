#!/usr/bin/env bash
# Make sure a Docker engine answers on /var/run/docker.sock: install Debian's docker.io if there
# is no dockerd, and start dockerd in the background (no systemd needed) if `docker info` does
# not answer. Idempotent: when the engine already answers, nothing is touched.
#
#     scripts/docker.sh            # or: make docker
#     scripts/docker.sh --restart  # stop the running dockerd, then start it again
#
# dockerd runs with its defaults (data in /var/lib/docker, socket /var/run/docker.sock, its own
# containerd) plus the flags in DOCKERD_FLAGS below; its log is .run/dockerd.log.
#
# Environment:
#   DOCKER_TIMEOUT           seconds to wait for the engine to answer (default 60)
#   DOCKERD_STORAGE_DRIVER   force a storage driver (default: dockerd picks; overlay2 on ext4,
#                            vfs where overlay cannot be mounted, e.g. inside another overlay)
#   DOCKERD_EXTRA_FLAGS      more dockerd flags, split on whitespace
#   WHIM_SKIP_APT=1          never touch apt
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TIMEOUT="${DOCKER_TIMEOUT:-60}"
RUN_DIR="$ROOT/.run"
LOG_FILE="$RUN_DIR/dockerd.log"
PID_FILE=/var/run/docker.pid

log() { printf '[docker] %s\n' "$*" >&2; }
die() {
    printf '[docker] ERROR: %s\n' "$*" >&2
    exit 1
}

[[ "$TIMEOUT" =~ ^[0-9]+$ ]] || die "DOCKER_TIMEOUT must be a number of seconds, got '$TIMEOUT'"

# Why these flags (all checked on a Debian 12 VM without systemd, cgroup v1, ext4 root):
# - cgroupfs: the systemd cgroup driver needs a running systemd; cgroupfs is what enforces
#   --memory/--memory-swap/--pids-limit when dockerd manages the cgroup tree itself.
# - iptables and ip forwarding stay on (the defaults): user-defined bridge networks need the
#   NAT and isolation rules, and containers reach the host on their bridge's gateway address.
# - the log level "warn" keeps .run/dockerd.log readable (info logs every gRPC reconnect).
DOCKERD_FLAGS=(
    --exec-opt native.cgroupdriver=cgroupfs
    --iptables=true
    --ip-forward=true
    --log-level warn
)
if [[ -n "${DOCKERD_STORAGE_DRIVER:-}" ]]; then
    DOCKERD_FLAGS+=(--storage-driver "$DOCKERD_STORAGE_DRIVER")
fi
if [[ -n "${DOCKERD_EXTRA_FLAGS:-}" ]]; then
    read -r -a extra <<<"$DOCKERD_EXTRA_FLAGS"
    DOCKERD_FLAGS+=("${extra[@]}")
fi

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

mkdir -p "$RUN_DIR"
# Two callers at once must not both install or both start a dockerd.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$RUN_DIR/docker.lock"
    flock -w "$((TIMEOUT + 600))" 9 || die "another scripts/docker.sh is still running (lock $RUN_DIR/docker.lock)"
fi

# --- Install --------------------------------------------------------------------------------
# docker.io brings dockerd, containerd, runc, tini and the docker CLI; iptables is a dependency
# of it but is also checked on its own, as dockerd cannot set up bridge networks without it.
ensure_installed() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v docker >/dev/null 2>&1 || missing+=(docker.io)
    command -v iptables >/dev/null 2>&1 || missing+=(iptables)
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    # Unique, order kept.
    local pkgs=() p
    for p in "${missing[@]}"; do
        [[ " ${pkgs[*]-} " == *" $p "* ]] || pkgs+=("$p")
    done
    [[ "${WHIM_SKIP_APT:-}" != 1 ]] || die "WHIM_SKIP_APT=1 and missing: ${pkgs[*]}"
    [[ "$(id -u)" == 0 ]] || die "not root: install ${pkgs[*]} yourself (sudo apt-get install ${pkgs[*]})"
    command -v apt-get >/dev/null 2>&1 || die "no apt-get: install Docker Engine (${pkgs[*]}) yourself"

    # The package's maintainer scripts would try to start the daemon through the init system,
    # which fails (or starts it with other flags) without systemd; it is started below instead.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    local rc=0 out start=$SECONDS
    out="$(mktemp)"
    log "installing ${pkgs[*]} (apt-get update + install)"
    {
        apt-get update -q &&
            apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends "${pkgs[@]}"
    } >"$out" 2>&1 || rc=$?
    if ((made_policy)); then rm -f "$policy"; fi
    if ((rc != 0)); then
        tail -n 30 "$out" | sed 's/^/    /' >&2
        rm -f "$out"
        die "apt-get install ${pkgs[*]} failed"
    fi
    rm -f "$out"
    log "installed ${pkgs[*]} in $((SECONDS - start))s"
    command -v dockerd >/dev/null 2>&1 || die "docker.io installed but there is still no dockerd on PATH"
}

# --- Start ---------------------------------------------------------------------------------
# alive <pid> [name]: the process exists, is not a zombie, and (if given) is called name.
# A zombie counts as dead: kill -0 succeeds on one, and where PID 1 is slow to reap orphans
# (this VM's init is) a killed dockerd or containerd stays a zombie for a while.
alive() {
    local stat state
    [[ "$1" =~ ^[0-9]+$ ]] || return 1
    stat="$(cat /proc/"$1"/stat 2>/dev/null)" || return 1
    state="${stat##*) }"
    state="${state%% *}"
    [[ "$state" != Z && "$state" != X ]] || return 1
    [[ -z "${2:-}" || "$(cat /proc/"$1"/comm 2>/dev/null)" == "$2" ]]
}

dockerd_running() {
    [[ -f "$PID_FILE" ]] && alive "$(cat "$PID_FILE" 2>/dev/null)" dockerd
}

# A dockerd that was killed leaves its pid files behind. dockerd refuses to start while its pid
# file names a live process, and reuses the containerd its pid file names when that one looks
# alive (hanging on a dead socket if it is a zombie), so drop both when they name the dead.
remove_stale_pid_files() {
    local f pid
    for f in "$PID_FILE" /var/run/docker/containerd/containerd.pid; do
        [[ -f "$f" ]] || continue
        pid="$(cat "$f" 2>/dev/null || true)"
        if ! alive "$pid"; then
            log "removing stale $f (pid $pid is gone)"
            rm -f "$f"
        fi
    done
}

start_dockerd() {
    [[ "$(id -u)" == 0 ]] || die "the Docker engine does not answer and only root can start dockerd"
    log "starting dockerd ${DOCKERD_FLAGS[*]} (log: $LOG_FILE)"
    printf '\n=== %s scripts/docker.sh: dockerd %s\n' "$(date -u +%FT%TZ)" "${DOCKERD_FLAGS[*]}" >>"$LOG_FILE"
    # dockerd does not daemonize: run it in its own session, and close every descriptor the
    # caller may have open (a `$(...)`, a `| tee`, a CI runner's pipe, the lock above), so no
    # caller waits on it forever.
    (
        for fd in /proc/"$BASHPID"/fd/*; do
            fd="${fd##*/}"
            if [[ "$fd" =~ ^[0-9]+$ ]] && ((fd > 2)); then
                eval "exec $fd>&-" 2>/dev/null || true
            fi
        done
        exec setsid dockerd "${DOCKERD_FLAGS[@]}" </dev/null >>"$LOG_FILE" 2>&1
    ) &
    STARTED_PID=$!
}

wait_ready() {
    local deadline=$((SECONDS + TIMEOUT))
    until engine_answers; do
        if [[ -n "${STARTED_PID:-}" ]] && ! alive "$STARTED_PID"; then
            tail -n 20 "$LOG_FILE" | sed 's/^/    /' >&2
            die "dockerd exited during startup; see $LOG_FILE"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 20 "$LOG_FILE" | sed 's/^/    /' >&2
            die "the Docker engine did not answer within ${TIMEOUT}s; see $LOG_FILE"
        fi
        sleep 0.25
    done
}

# --restart (fault tests, operators): stop the running dockerd first (SIGTERM, as a service
# manager would; containers die with it), then start it again as below.
stop_dockerd() {
    local pid deadline
    dockerd_running || return 0
    pid="$(cat "$PID_FILE")"
    log "stopping dockerd (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + TIMEOUT))
    while alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
    if alive "$pid"; then
        log "dockerd did not stop within ${TIMEOUT}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
}

ensure_installed
if [[ "${1:-}" == "--restart" ]]; then
    stop_dockerd
fi
if engine_answers; then
    log "Docker engine is running ($(docker info -f '{{.ServerVersion}}, {{.Driver}}, cgroup v{{.CgroupVersion}}' 2>/dev/null))"
    exit 0
fi
STARTED_PID=""
started_at=$SECONDS
if dockerd_running; then
    log "dockerd (pid $(cat "$PID_FILE")) is running but not answering yet; waiting"
else
    remove_stale_pid_files
    start_dockerd
fi
wait_ready
log "Docker engine is ready after $((SECONDS - started_at))s ($(docker info -f '{{.ServerVersion}}, {{.Driver}}, cgroup v{{.CgroupVersion}}' 2>/dev/null))"
