#!/usr/bin/env bash
# A second Docker engine on this machine, for the two-node tests (tests/test_docker_nodes.py)
# and for trying "several hosts" on one: its own dockerd with its own socket, data root, exec
# root, pid file, config file, bridge interface and address pool, beside the main engine
# (scripts/docker.sh), which it never touches.
#
#     scripts/docker-node.sh start [NODE]   # start (idempotent) and load the worker image
#     scripts/docker-node.sh stop [NODE]    # SIGTERM: dockerd stops its containers and exits
#     scripts/docker-node.sh kill [NODE]    # SIGKILL: the host dies (dockerd, containerd,
#                                           # shims and containers)
#     scripts/docker-node.sh status [NODE]  # exit 0 when the engine answers
#     scripts/docker-node.sh host [NODE]    # print its DOCKER_HOST (unix://...)
#     scripts/docker-node.sh destroy [NODE] # stop, kill what is left, remove bridge and data
#
# NODE defaults to "b". Everything lives under .run/dockerd-NODE/ (data, exec root, log, pid
# file) and the socket is .run/dockerd-NODE.sock; DOCKER_NODE_DIR moves all of it.
#
# Why --iptables=false: both engines share this kernel's iptables. A dockerd that manages
# iptables removes and re-creates the DOCKER and DOCKER-ISOLATION-STAGE-1/2 chains when it
# starts, so starting (or restarting, as the tests do) a second one would wipe the main
# engine's rules under everybody using it. With it off, this engine adds no rules at all and
# its bridges are covered by what is already there: the main engine's FORWARD policy DROP
# (nothing accepts traffic from or between this engine's bridges, br_netfilter passes bridged
# traffic through it) and its jump into DOCKER-USER, where Whim's firewall
# (workers/firewall.py) installs the worker network's rules — Whim applies them for this
# engine's worker network exactly as for the main one (INPUT: only the callback port;
# DOCKER-USER: link-local and, with WORKER_EGRESS=none, everything else dropped). What is
# lost is NAT: containers here cannot reach beyond this host (WORKER_EGRESS=allowlist/open
# would need it); on a real second host its only dockerd keeps --iptables=true.
#
# Environment:
#   WORKER_IMAGE            image copied from the main engine (default whim-worker:latest);
#                           loaded with `docker save | docker load`, no registry, and only
#                           when the image id differs
#   DOCKER_NODE_DIR         state directory (default .run/dockerd-NODE)
#   DOCKER_NODE_BRIDGE_CIDR the bridge interface's address (default 10.213.X.1/24, X from a
#                           hash of the state directory)
#   DOCKER_NODE_POOL        address pool for its networks, /24 each (default 10.Y.0.0/16,
#                           Y in 214..253 from the same hash)
#   DOCKER_TIMEOUT          seconds to wait for the engine (default 60)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ACTION="${1:-start}"
NODE="${2:-b}"
[[ "$NODE" =~ ^[a-z0-9]{1,8}$ ]] || {
    echo "[docker-node] ERROR: NODE must be 1-8 of [a-z0-9], got '$NODE'" >&2
    exit 2
}
TIMEOUT="${DOCKER_TIMEOUT:-60}"
DIR="${DOCKER_NODE_DIR:-$ROOT/.run/dockerd-$NODE}"
SOCK="$DIR.sock"
HOST="unix://$SOCK"
PID_FILE="$DIR/dockerd.pid"
LOG_FILE="$DIR/dockerd.log"
# Interface names and subnets are the kernel's, shared by every engine on this machine (and
# by every checkout that runs its own node engines): derive them from the state directory.
TAG="$(printf '%s' "$DIR" | sha256sum | cut -c1-8)"
BRIDGE="wd-$TAG"
BRIDGE_CIDR="${DOCKER_NODE_BRIDGE_CIDR:-10.213.$((16#${TAG:0:2} % 250 + 1)).1/24}"
POOL="${DOCKER_NODE_POOL:-10.$((16#${TAG:2:2} % 40 + 214)).0.0/16}"
IMAGE="${WORKER_IMAGE:-whim-worker:latest}"

log() { printf '[docker-node %s] %s\n' "$NODE" "$*" >&2; }
die() {
    printf '[docker-node %s] ERROR: %s\n' "$NODE" "$*" >&2
    exit 1
}

# alive <pid> [name]: exists, is not a zombie, and (if given) is called name.
alive() {
    local stat state
    [[ "$1" =~ ^[0-9]+$ ]] || return 1
    stat="$(cat /proc/"$1"/stat 2>/dev/null)" || return 1
    state="${stat##*) }"
    state="${state%% *}"
    [[ "$state" != Z && "$state" != X ]] || return 1
    [[ -z "${2:-}" || "$(cat /proc/"$1"/comm 2>/dev/null)" == "$2" ]]
}

pid() { cat "$PID_FILE" 2>/dev/null || true; }
running() { alive "$(pid)" dockerd; }
answers() { timeout 10 docker -H "$HOST" info >/dev/null 2>&1; }

ensure_bridge() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        log "creating bridge $BRIDGE ($BRIDGE_CIDR)"
        ip link add "$BRIDGE" type bridge
        ip addr add "$BRIDGE_CIDR" dev "$BRIDGE"
    fi
    ip link set "$BRIDGE" up
}

start() {
    [[ "$(id -u)" == 0 ]] || die "only root can start a dockerd"
    command -v dockerd >/dev/null 2>&1 || die "no dockerd: run scripts/docker.sh first"
    if answers; then
        return 0
    fi
    mkdir -p "$DIR/data" "$DIR/exec"
    [[ -f "$DIR/daemon.json" ]] || echo '{}' >"$DIR/daemon.json"
    if ! running; then
        # A killed dockerd leaves its pid file, and its containerd (killed with it, and maybe
        # a zombie for a while where PID 1 reaps slowly) leaves one that dockerd would trust
        # and wait on; a containerd still alive is reused.
        rm -f "$PID_FILE"
        if ! alive "$(containerd_pid)"; then
            rm -f "$DIR/exec/containerd/containerd.pid"
        fi
        ensure_bridge
        local flags=(
            -H "$HOST"
            --data-root "$DIR/data"
            --exec-root "$DIR/exec"
            --pidfile "$PID_FILE"
            --config-file "$DIR/daemon.json" # never /etc/docker/daemon.json: the main one's
            --bridge "$BRIDGE"
            --default-address-pool "base=$POOL,size=24"
            # A dockerd that finds a stale default "bridge" network at start, with an address
            # pool set and live restore off, deletes the interface named docker0: the MAIN
            # engine's bridge on this host. Live restore skips that (and a crash test kills
            # the containers itself: see "kill").
            --live-restore
            --iptables=false
            --ip-forward=false # a kernel setting the main engine already owns
            --ip-masq=false
            --exec-opt native.cgroupdriver=cgroupfs
            --cgroup-parent "/whim-docker-$NODE"
            # If a system containerd is what both engines use, keep to a namespace of our own.
            --containerd-namespace "whim-$NODE"
            --containerd-plugins-namespace "whim-$NODE-plugins"
            --log-level warn
        )
        log "starting dockerd on $HOST (log: $LOG_FILE)"
        printf '\n=== %s docker-node.sh: dockerd %s\n' "$(date -u +%FT%TZ)" "${flags[*]}" >>"$LOG_FILE"
        (
            for fd in /proc/"$BASHPID"/fd/*; do
                fd="${fd##*/}"
                if [[ "$fd" =~ ^[0-9]+$ ]] && ((fd > 2)); then
                    eval "exec $fd>&-" 2>/dev/null || true
                fi
            done
            exec setsid dockerd "${flags[@]}" </dev/null >>"$LOG_FILE" 2>&1
        ) &
        STARTED=$!
    fi
    local deadline=$((SECONDS + TIMEOUT))
    until answers; do
        if [[ -n "${STARTED:-}" ]] && ! alive "$STARTED"; then
            tail -n 20 "$LOG_FILE" | sed 's/^/    /' >&2
            die "dockerd exited during startup; see $LOG_FILE"
        fi
        ((SECONDS < deadline)) || die "the engine did not answer within ${TIMEOUT}s; see $LOG_FILE"
        sleep 0.25
    done
    log "engine ready on $HOST"
}

load_image() {
    local want have
    want="$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null)" ||
        die "the main engine has no $IMAGE (make worker-image)"
    have="$(docker -H "$HOST" image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
    if [[ "$want" == "$have" ]]; then
        return 0
    fi
    log "loading $IMAGE from the main engine (docker save | docker load)"
    docker save "$IMAGE" | docker -H "$HOST" load -q >/dev/null
}

stop() {
    local p deadline
    p="$(pid)"
    running || return 0
    log "stopping dockerd (pid $p)"
    kill -TERM "$p" 2>/dev/null || true
    deadline=$((SECONDS + TIMEOUT))
    while alive "$p" && ((SECONDS < deadline)); do sleep 0.2; done
    if alive "$p"; then
        kill -KILL "$p" 2>/dev/null || true
    fi
}

# The pids of the shims serving the containerd at $1 (matched by their command line).
local_shims() {
    local f
    for f in /proc/[0-9]*/cmdline; do
        if tr '\0' ' ' 2>/dev/null <"$f" | grep -qF -- "-address $1 "; then
            f="${f#/proc/}"
            echo "${f%/cmdline}"
        fi
    done
}

# Everything this engine runs, by its own files: dockerd, its containerd, the shims.
containerd_pid() { cat "$DIR/exec/containerd/containerd.pid" 2>/dev/null || true; }

mkdir -p "$(dirname "$DIR")"
case "$ACTION" in
start)
    exec 9>"$DIR.lock"
    flock -w "$((TIMEOUT + 600))" 9 || die "another docker-node.sh holds $DIR.lock"
    start
    load_image
    ;;
stop) stop ;;
kill)
    # The host dies: its dockerd, its containerd and every container with them (SIGKILL).
    p="$(pid)"
    if running; then
        log "SIGKILL dockerd (pid $p), its containerd and its containers"
        kill -KILL "$p"
        while alive "$p"; do sleep 0.1; done
    fi
    c="$(containerd_pid)"
    local_shims "$DIR/exec/containerd/containerd.sock" | xargs -r kill -KILL 2>/dev/null || true
    if alive "$c" containerd; then
        kill -KILL "$c" 2>/dev/null || true
    fi
    # The containers' own processes, by the cgroup parent this engine puts them under.
    cat /sys/fs/cgroup/pids/whim-docker-"$NODE"/*/cgroup.procs \
        /sys/fs/cgroup/whim-docker-"$NODE"/*/cgroup.procs 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    ;;
status) answers ;;
host) echo "$HOST" ;;
destroy)
    stop
    c="$(containerd_pid)"
    if alive "$c" containerd; then
        # Its shims are its children in the process tree only until they re-parent: find them
        # by the containerd address in their command line.
        local_shims "$DIR/exec/containerd/containerd.sock" | xargs -r kill -KILL 2>/dev/null || true
        kill -TERM "$c" 2>/dev/null || true
    fi
    ip link del "$BRIDGE" 2>/dev/null || true
    # Mounts under the data root (overlay layers) must go before the tree does.
    grep -o " $DIR/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$DIR" "$SOCK" "$DIR.lock"
    ;;
*) die "unknown action '$ACTION' (start, stop, kill, status, host, destroy)" ;;
esac
