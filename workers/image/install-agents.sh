#!/usr/bin/env bash
# Installs the agent CLIs into the worker image. Run by the Dockerfile, as root, at build time
# (build.sh stages it into the context); never inside a running worker.
#
# Environment (the Dockerfile's build arguments):
#   WORKER_AGENTS           comma list of agents to install (claude, codex); empty = none
#   WORKER_AGENTS_REQUIRED  1: an agent that cannot be installed fails the build; otherwise the
#                           build goes on without it (WORKER_AGENTS left at its default)
#   CLAUDE_CODE_VERSION, CODEX_VERSION   the pinned npm versions
#   BUILD_CA                a PEM file of extra CAs npm trusts for this install (a TLS proxy
#                           between the build and registry.npmjs.org); empty file = none
#
# Node.js and npm come from Debian (apt, from the mirror the base is configured with). Each
# package is installed globally (/usr/local/lib/node_modules, links in /usr/local/bin, owned by
# root, readable by everyone), then run as the agent user (uid 1001) to prove it works. What
# ended up installed is written to /etc/whim/agents, one line per agent: "<name> <version>" or
# "<name> missing: <why>"; build.sh reads it back. npm's cache is not left in the image.
set -uo pipefail

STATUS_FILE=/etc/whim/agents
REQUIRED="${WORKER_AGENTS_REQUIRED:-0}"
WORK="$(mktemp -d /tmp/agents.XXXXXX)"

say() { printf '[worker-image] %s\n' "$*"; }

cleanup() {
    rm -rf "$WORK" /root/.npm /root/.config /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
}
trap cleanup EXIT

mkdir -p "$(dirname "$STATUS_FILE")"
: >"$STATUS_FILE"
chmod 0644 "$STATUS_FILE"

# missing <agent> <package@version> <why>: a clear line, then fail or go on.
missing() {
    if [[ "$REQUIRED" == 1 ]]; then
        say "ERROR: agent $1 ($2) cannot be installed: $3"
        say "ERROR: WORKER_AGENTS=$WORKER_AGENTS asked for it explicitly, so the build fails"
        exit 1
    fi
    say "WARNING: agent $1 ($2) NOT installed: $3"
    say "WARNING: building the image without $1 (WORKER_AGENTS left at its default)"
    printf '%s missing: %s\n' "$1" "$3" >>"$STATUS_FILE"
}

# last_error <log>: the most telling line of a failed command's output, on one line.
last_error() {
    local line
    line="$(grep -E 'ERR!|^E: |[Ee]rror' "$1" | grep -v -e 'complete log of this run' -e '_logs/' |
        tail -n 3 | tr '\n' ' ')"
    [[ -n "$line" ]] || line="$(tail -n 3 "$1" | tr '\n' ' ')"
    printf '%s' "${line:0:400}"
}

IFS=',' read -r -a AGENTS <<<"${WORKER_AGENTS:-}"
if ((${#AGENTS[@]} == 0)); then
    say "agents: none installed (WORKER_AGENTS=none)"
    exit 0
fi

declare -A PACKAGE=([claude]="@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION:?}"
    [codex]="@openai/codex@${CODEX_VERSION:?}")

# --- Node.js and npm from Debian ------------------------------------------------------------
node_problem=""
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    say "installing Node.js and npm from Debian (apt-get)"
    apt_start=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -q && apt-get install -y -q -o Dpkg::Use-Pty=0 \
        --no-install-recommends nodejs npm; } >"$WORK/apt.log" 2>&1; then
        node_problem="apt-get install nodejs npm failed: $(last_error "$WORK/apt.log")"
    fi
fi
if [[ -z "$node_problem" ]]; then
    major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
    if ((major < 18)); then
        node_problem="Node.js $(node --version 2>/dev/null || echo '(none)') is older than 18"
    else
        say "Node.js $(node --version), npm $(npm --version) (apt-get: $((SECONDS - ${apt_start:-$SECONDS}))s)"
    fi
fi

# --- The packages -------------------------------------------------------------------------
npm_env=(NPM_CONFIG_CACHE="$WORK/npm-cache" NPM_CONFIG_UPDATE_NOTIFIER=false)
if [[ -s "${BUILD_CA:-}" ]]; then
    npm_env+=(NODE_EXTRA_CA_CERTS="$BUILD_CA")
fi

# as_agent <argv...>: run as uid 1001 with a throwaway home (codex writes ~/.codex on start).
as_agent() {
    local home="$WORK/home"
    mkdir -p "$home" && chown 1001:1001 "$home"
    env -i PATH="$PATH" HOME="$home" LANG=C.UTF-8 \
        setpriv --reuid=1001 --regid=1001 --init-groups "$@"
}

# Claude Code's postinstall copies (hard links) its platform's native binary over
# bin/claude.exe; npm 9 installs the musl build beside the glibc one. Drop the unused copies.
claude_trim() {
    local root=/usr/local/lib/node_modules/@anthropic-ai/claude-code dir
    for dir in "$root"/node_modules/@anthropic-ai/claude-code-*; do
        [[ -f "$dir/claude" && ! "$dir/claude" -ef "$root/bin/claude.exe" ]] && rm -rf "$dir"
    done
    return 0
}

for agent in "${AGENTS[@]}"; do
    pkg="${PACKAGE[$agent]:-}"
    if [[ -z "$pkg" ]]; then
        missing "$agent" "?" "unknown agent (known: ${!PACKAGE[*]})"
        continue
    fi
    if [[ -n "$node_problem" ]]; then
        missing "$agent" "$pkg" "$node_problem"
        continue
    fi
    say "npm install --global $pkg"
    start=$SECONDS
    if ! env "${npm_env[@]}" npm install --global --no-audit --no-fund --fetch-retries=2 \
        --fetch-retry-maxtimeout=20000 "$pkg" >"$WORK/npm-$agent.log" 2>&1; then
        missing "$agent" "$pkg" "npm install failed: $(last_error "$WORK/npm-$agent.log")"
        continue
    fi
    [[ "$agent" == claude ]] && claude_trim
    if ! version="$(as_agent "$agent" --version 2>"$WORK/version-$agent.err")"; then
        missing "$agent" "$pkg" "installed, but '$agent --version' failed as the agent user: $(last_error "$WORK/version-$agent.err")"
        continue
    fi
    version="$(printf '%s' "$version" | head -n1)"
    say "agent $agent: $version (npm $pkg, $((SECONDS - start))s)"
    printf '%s %s\n' "$agent" "${pkg##*@}" >>"$STATUS_FILE"
done
exit 0
