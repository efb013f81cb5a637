#!/usr/bin/env bash
# Build the worker image (`make worker-image`): ${WORKER_IMAGE:-whim-worker:latest}.
#
# Works without any registry. The base image is picked in this order:
#   1. $WORKER_BASE_IMAGE if set (used as is; docker may pull it);
#   2. python:3.12-slim if it is already present locally;
#   3. whim-base:bookworm if it was already made by an earlier run (the cache);
#   4. python:3.12-slim pulled, if a registry answers within $WORKER_PULL_TIMEOUT seconds;
#   5. otherwise whim-base:bookworm is made here: `debootstrap --variant=minbase` of Debian
#      bookworm (python3, git, ca-certificates, openssh-client) from the Debian mirror apt is
#      configured with, then `docker import`. This takes a few minutes, once.
# The image itself is built by docker's classic builder from a context staged in
# .run/worker-image/context (the Dockerfile beside this script, install-agents.sh, build-ca.pem
# and a copy of workers/harness/ as app/, empty if there is none yet); docker's layer cache makes
# a rebuild with no changes quick.
#
# Agents (install-agents.sh): Node.js and npm from Debian, then the Claude Code and Codex CLIs
# from npm at the versions pinned in the Dockerfile. Left at its default, a CLI that cannot be
# installed is reported (one WARNING line naming the package and why) and the image is built
# without it; the next build then tries again. Asked for explicitly, it fails the build.
#
# Needs a running Docker engine (scripts/docker.sh; `make worker-image` runs it first) and, to
# make the local base, root and apt (debootstrap is installed if missing).
#
# Environment:
#   WORKER_IMAGE          tag to build (default whim-worker:latest)
#   WORKER_BASE_IMAGE     force a base image, skipping the selection above
#   WORKER_LOCAL_BASE     tag of the locally made base (default whim-base:bookworm)
#   WORKER_PULL_TIMEOUT   seconds to give `docker pull python:3.12-slim` (default 20; 0 = never pull)
#   DEBIAN_MIRROR         mirror for debootstrap (default: the one in /etc/apt/sources.list[.d])
#   DEBIAN_SUITE          Debian release for the local base (default bookworm)
#   WORKER_REBUILD_BASE=1 remake the local base even if it exists
#   WORKER_AGENTS         agent CLIs to install: a comma list of claude, codex; `none` for
#                         none; unset or empty: both, best effort (see above)
#   WORKER_BUILD_CA       PEM file of extra CAs npm trusts while installing them (a TLS proxy
#                         in front of registry.npmjs.org); default $NODE_EXTRA_CA_CERTS if set
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

WORKER_IMAGE="${WORKER_IMAGE:-whim-worker:latest}"
DEFAULT_BASE=python:3.12-slim
DEBIAN_SUITE="${DEBIAN_SUITE:-bookworm}"
LOCAL_BASE="${WORKER_LOCAL_BASE:-whim-base:$DEBIAN_SUITE}"
PULL_TIMEOUT="${WORKER_PULL_TIMEOUT:-20}"
BASE_PACKAGES=python3,git,ca-certificates,openssh-client
KNOWN_AGENTS=(claude codex)
WORK_DIR="$ROOT/.run/worker-image"
CONTEXT="$WORK_DIR/context"
ROOTFS="$WORK_DIR/rootfs"

log() { printf '[worker-image] %s\n' "$*" >&2; }
die() {
    printf '[worker-image] ERROR: %s\n' "$*" >&2
    exit 1
}

# --- Which agents: AGENTS (comma list, "" = none) and AGENTS_REQUIRED ------------------------
pick_agents() {
    local raw="${WORKER_AGENTS:-}" name known out=()
    raw="${raw//[[:space:]]/}"
    raw="${raw,,}"
    if [[ -z "$raw" ]]; then
        AGENTS="$(
            IFS=,
            echo "${KNOWN_AGENTS[*]}"
        )"
        AGENTS_REQUIRED=0
        return
    fi
    AGENTS_REQUIRED=1
    if [[ "$raw" == none ]]; then
        AGENTS=""
        return
    fi
    IFS=',' read -r -a names <<<"$raw"
    for name in "${names[@]}"; do
        [[ -n "$name" ]] || continue
        known=0
        for k in "${KNOWN_AGENTS[@]}"; do [[ "$name" == "$k" ]] && known=1; done
        ((known)) || die "WORKER_AGENTS: unknown agent '$name' (known: ${KNOWN_AGENTS[*]}; or none)"
        [[ " ${out[*]} " == *" $name "* ]] || out+=("$name")
    done
    ((${#out[@]})) || die "WORKER_AGENTS='$WORKER_AGENTS' names no agent; use none for none"
    AGENTS="$(
        IFS=,
        echo "${out[*]}"
    )"
}
AGENTS="" AGENTS_REQUIRED=0
pick_agents

BUILD_CA="${WORKER_BUILD_CA-${NODE_EXTRA_CA_CERTS:-}}"
[[ -z "$BUILD_CA" || -r "$BUILD_CA" ]] || die "WORKER_BUILD_CA: cannot read '$BUILD_CA'"

[[ "$PULL_TIMEOUT" =~ ^[0-9]+$ ]] || die "WORKER_PULL_TIMEOUT must be a number of seconds, got '$PULL_TIMEOUT'"
command -v docker >/dev/null 2>&1 || die "docker CLI not found; run scripts/docker.sh (or make docker) first"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer; run scripts/docker.sh (or make docker) first"

mkdir -p "$WORK_DIR"
# Two builds at once would debootstrap into the same directory.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$WORK_DIR/build.lock"
    flock 9
fi

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# timed <label> <command...>: run a command and log how long it took.
timed() {
    local label="$1" start=$SECONDS rc=0
    shift
    "$@" || rc=$?
    log "$label took $((SECONDS - start))s"
    return "$rc"
}

# --- The Debian mirror apt already uses ----------------------------------------------------
# First URI that serves $DEBIAN_SUITE with "main", from deb822 *.sources files or one-line
# *.list files. This is the mirror that is reachable when no registry is.
configured_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] || continue
        # Paragraphs are separated by blank lines; fields may be in any order.
        awk -v suite="$DEBIAN_SUITE" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && suites ~ ("(^| )" suite "( |$)") \
                    && comps ~ /(^| )main( |$)/ && enabled !~ /^[Nn]o/ && uris != "") {
                    split(uris, u, " "); print u[1]; found = 1; exit
                }
                types = suites = comps = uris = enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            {
                key = tolower($1); sub(/:$/, "", key)
                val = $0; sub(/^[^:]*:[ \t]*/, "", val)
                if (key == "types") types = val
                else if (key == "uris") uris = val
                else if (key == "suites") suites = val
                else if (key == "components") comps = val
                else if (key == "enabled") enabled = val
            }
            END { if (!found) flush() }
        ' "$f" | head -n1
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$f" ]] || continue
        # deb [options] URI suite component...
        awk -v suite="$DEBIAN_SUITE" '
            $1 != "deb" { next }
            { i = 2; if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ } }
            $(i + 1) == suite { for (j = i + 2; j <= NF; j++) if ($j == "main") { print $i; exit } }
        ' "$f" | head -n1
    done
}

pick_mirror() {
    if [[ -n "${DEBIAN_MIRROR:-}" ]]; then
        printf '%s' "$DEBIAN_MIRROR"
        return
    fi
    local m
    m="$(configured_mirror | head -n1)"
    printf '%s' "${m:-http://deb.debian.org/debian}"
}

ensure_debootstrap() {
    command -v debootstrap >/dev/null 2>&1 && return 0
    [[ "$(id -u)" == 0 ]] || die "debootstrap is not installed and we are not root: apt-get install debootstrap"
    command -v apt-get >/dev/null 2>&1 || die "debootstrap is not installed and there is no apt-get"
    export DEBIAN_FRONTEND=noninteractive
    local out rc=0
    out="$(mktemp)"
    log "installing debootstrap (apt-get update + install)"
    {
        apt-get update -q &&
            apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends debootstrap
    } >"$out" 2>&1 || rc=$?
    if ((rc != 0)); then
        tail -n 30 "$out" | sed 's/^/    /' >&2
        rm -f "$out"
        die "apt-get install debootstrap failed"
    fi
    rm -f "$out"
}

debootstrap_rootfs() {
    local mirror="$1" keyring_opts=()
    if [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]]; then
        keyring_opts=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
    fi
    rm -rf "$ROOTFS" # a half-made tree from an interrupted run is not reusable
    mkdir -p "$ROOTFS"
    if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" "${keyring_opts[@]}" \
        "$DEBIAN_SUITE" "$ROOTFS" "$mirror" >"$WORK_DIR/debootstrap.log" 2>&1; then
        tail -n 30 "$WORK_DIR/debootstrap.log" | sed 's/^/    /' >&2
        die "debootstrap failed; full log in $WORK_DIR/debootstrap.log"
    fi
    # Nothing of this is needed in the image: downloaded packages, apt lists, logs.
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
        "$ROOTFS"/var/log/* "$ROOTFS"/debootstrap
}

import_rootfs() {
    tar --numeric-owner --xattrs -C "$ROOTFS" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        --message "debootstrap --variant=minbase --include=$BASE_PACKAGES $DEBIAN_SUITE" \
        - "$LOCAL_BASE" >/dev/null
}

make_local_base() {
    [[ "$(id -u)" == 0 ]] || die "making the local base image needs root (debootstrap); or set WORKER_BASE_IMAGE"
    ensure_debootstrap
    local mirror
    mirror="$(pick_mirror)"
    log "building $LOCAL_BASE: debootstrap --variant=minbase $DEBIAN_SUITE from $mirror"
    log "  (this takes a few minutes, once; log: $WORK_DIR/debootstrap.log)"
    timed "debootstrap" debootstrap_rootfs "$mirror"
    log "importing $ROOTFS as $LOCAL_BASE"
    timed "docker import" import_rootfs || die "docker import of $ROOTFS failed"
    rm -rf "$ROOTFS"
}

pick_base() {
    if [[ -n "${WORKER_BASE_IMAGE:-}" ]]; then
        BASE="$WORKER_BASE_IMAGE"
        log "base image: $BASE (WORKER_BASE_IMAGE)"
        return
    fi
    if image_exists "$DEFAULT_BASE"; then
        BASE="$DEFAULT_BASE"
        log "base image: $BASE (present locally)"
        return
    fi
    if [[ "${WORKER_REBUILD_BASE:-}" != 1 ]] && image_exists "$LOCAL_BASE"; then
        BASE="$LOCAL_BASE"
        log "base image: $BASE (made earlier by debootstrap; WORKER_REBUILD_BASE=1 remakes it)"
        return
    fi
    if ((PULL_TIMEOUT > 0)); then
        log "trying docker pull $DEFAULT_BASE (giving up after ${PULL_TIMEOUT}s)"
        if timeout --kill-after=5 "$PULL_TIMEOUT" docker pull -q "$DEFAULT_BASE" >/dev/null 2>&1; then
            BASE="$DEFAULT_BASE"
            log "base image: $BASE (pulled)"
            return
        fi
        log "no registry: cannot pull $DEFAULT_BASE; making a local Debian base instead"
    fi
    make_local_base
    BASE="$LOCAL_BASE"
    log "base image: $BASE"
}

# The context's app/ is copied to /opt/whim, which is on PYTHONPATH, so it must hold the
# `harness` package: workers/harness/ is either a project directory with the package inside
# (workers/harness/harness/__main__.py, maybe bin/ etc. beside it) or the package itself.
stage_context() {
    local src="$ROOT/workers/harness"
    rm -rf "$CONTEXT"
    mkdir -p "$CONTEXT/app"
    cp "$ROOT/workers/image/Dockerfile" "$CONTEXT/Dockerfile"
    cp "$ROOT/workers/image/install-agents.sh" "$CONTEXT/install-agents.sh"
    if [[ -n "$BUILD_CA" && -n "$AGENTS" ]]; then
        cp "$BUILD_CA" "$CONTEXT/build-ca.pem"
    else
        : >"$CONTEXT/build-ca.pem"
    fi
    # Fresh copies get the time of the copy: fixed times and modes keep the layer cache stable.
    chmod 0644 "$CONTEXT/install-agents.sh" "$CONTEXT/build-ca.pem"
    touch -d @0 "$CONTEXT/install-agents.sh" "$CONTEXT/build-ca.pem"
    if [[ -d "$src/harness" ]]; then
        cp -a "$src/." "$CONTEXT/app/"
    elif [[ -d "$src" ]]; then
        mkdir -p "$CONTEXT/app/harness"
        cp -a "$src/." "$CONTEXT/app/harness/"
    else
        log "workers/harness/ does not exist yet: the image gets no harness package"
    fi
    # Bytecode differs run to run and would defeat the layer cache.
    find "$CONTEXT/app" \( -name __pycache__ -o -name '*.pyc' \) -prune -exec rm -rf {} +
}

build_image() {
    # The classic builder: BuildKit needs the buildx plugin in the CLI, which Debian's docker.io
    # and a bare static docker CLI lack. It is deprecated but present in every engine we target.
    DOCKER_BUILDKIT=0 docker build --force-rm \
        --build-arg "BASE_IMAGE=$BASE" \
        --build-arg "WORKER_AGENTS=$AGENTS" \
        --build-arg "WORKER_AGENTS_REQUIRED=$AGENTS_REQUIRED" \
        --build-arg "WORKER_AGENTS_ATTEMPT=$AGENTS_ATTEMPT" \
        --label "org.whim.base-image=$BASE" \
        -t "$WORKER_IMAGE" "$CONTEXT" 2>&1 \
        | grep --line-buffered -v -e 'DEPRECATED: The legacy builder' -e 'BuildKit is currently disabled' \
            -e 'Install the buildx component' -e 'https://docs.docker.com/go/buildx' -e 'environment-variable\.$' -e '^ *$' \
        | sed 's/^/    /' >&2
    return "${PIPESTATUS[0]}"
}

# What install-agents.sh wrote into the image, as "claude 2.1.197, codex missing: why".
# A default build that went without an agent leaves a marker: the next build passes a new
# WORKER_AGENTS_ATTEMPT, so the cached layer without it is not reused forever.
report_agents() {
    local status
    status="$(docker run --rm --network none --entrypoint cat "$WORKER_IMAGE" /etc/whim/agents 2>/dev/null)" ||
        status="(unknown: /etc/whim/agents unreadable)"
    if [[ -z "$AGENTS" ]]; then
        log "agents: none (WORKER_AGENTS=none)"
    else
        log "agents: $(printf '%s' "$status" | paste -sd, - | sed 's/,/, /g')"
    fi
    if grep -q ' missing: ' <<<"$status"; then
        date +%s >"$AGENTS_MARKER"
        log "WARNING: $WORKER_IMAGE lacks an agent CLI (above); the next build retries it"
    else
        rm -f "$AGENTS_MARKER"
    fi
}

AGENTS_MARKER="$WORK_DIR/agents-incomplete"
AGENTS_ATTEMPT=""
[[ -f "$AGENTS_MARKER" && -n "$AGENTS" ]] && AGENTS_ATTEMPT="$(date +%s)"
BASE=""
pick_base
stage_context
log "building $WORKER_IMAGE FROM $BASE (agents: ${AGENTS:-none}$([[ -n "$AGENTS" ]] && ((AGENTS_REQUIRED == 0)) && echo ', best effort'))"
timed "docker build" build_image || die "docker build of $WORKER_IMAGE failed"
log "built $WORKER_IMAGE ($(docker image inspect -f '{{.Id}}' "$WORKER_IMAGE" | cut -c1-19))"
report_agents
