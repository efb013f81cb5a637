#!/usr/bin/env bash
# Bootstrap a checkout: system packages (Debian) and the project virtualenv in .venv.
#
# Idempotent and cheap when nothing changed: apt is only touched when a package is missing
# (one `apt-get update`, then one install), and pip only runs when pyproject.toml differs
# from the one the venv was last installed from (hash kept in .venv/.whim-install-stamp).
#
# Environment:
#   WHIM_SKIP_APT=1   never touch apt (also implied when not root)
#   PYTHON=python3.x  interpreter used to create .venv (default: python3)
#   FORCE_PIP=1       reinstall the project even if pyproject.toml is unchanged
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[bootstrap] %s\n' "$*" >&2; }
die() { printf '[bootstrap] ERROR: %s\n' "$*" >&2; exit 1; }

PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP="$VENV/.whim-install-stamp"

# --- System packages ---------------------------------------------------------------------
# Required: the services that `make test` and a PostgreSQL/Redis `make run` need, and
# chromium, the browser tests/test_browser.py drives with Playwright.
# Optional: docker-compose (v1, Python) is only used to validate docker-compose.yml offline.
REQUIRED_PKGS=(postgresql redis-server chromium)
OPTIONAL_PKGS=(docker-compose)

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# A Debian system python3 without the venv module cannot create .venv.
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    REQUIRED_PKGS+=(python3 python3-venv)
elif ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [[ "$(command -v "$PYTHON")" == /usr/bin/* ]]; then
        REQUIRED_PKGS+=(python3-venv)
    fi
fi

apt_install() {
    local missing_req=() missing_opt=() p
    for p in "${REQUIRED_PKGS[@]}"; do is_installed "$p" || missing_req+=("$p"); done
    for p in "${OPTIONAL_PKGS[@]}"; do is_installed "$p" || missing_opt+=("$p"); done
    if ((${#missing_req[@]} + ${#missing_opt[@]} == 0)); then
        log "system packages present: ${REQUIRED_PKGS[*]} ${OPTIONAL_PKGS[*]}"
        return 0
    fi
    if [[ "${WHIM_SKIP_APT:-}" == 1 ]]; then
        log "WHIM_SKIP_APT=1: not installing ${missing_req[*]} ${missing_opt[*]}"
        return 0
    fi
    if [[ "$(id -u)" != 0 ]]; then
        log "not root: skipping apt. Missing packages: ${missing_req[*]} ${missing_opt[*]}"
        log "  install them yourself, e.g.: sudo apt-get install -y ${missing_req[*]} ${missing_opt[*]}"
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        log "apt-get not found (not Debian?): please install ${missing_req[*]} ${missing_opt[*]} yourself"
        return 0
    fi

    export DEBIAN_FRONTEND=noninteractive
    # The postgresql package creates its first cluster with the locale in the environment; under
    # C/POSIX (common in CI containers) that is SQL_ASCII. Make it UTF-8.
    case "${LC_ALL:-${LANG:-}}" in
        "" | C | POSIX) export LC_ALL=C.UTF-8 LANG=C.UTF-8 ;;
    esac
    local apt_opts=(-y -q -o Dpkg::Use-Pty=0 --no-install-recommends)
    log "apt-get update (missing: ${missing_req[*]} ${missing_opt[*]})"
    apt-get update -q >/dev/null || die "apt-get update failed"

    if ((${#missing_req[@]})); then
        log "apt-get install ${missing_req[*]}"
        apt-get install "${apt_opts[@]}" "${missing_req[@]}" >/dev/null \
            || die "apt-get install ${missing_req[*]} failed"
    fi
    if ((${#missing_opt[@]})); then
        log "apt-get install ${missing_opt[*]} (optional)"
        if ! apt-get install "${apt_opts[@]}" "${missing_opt[@]}" >/dev/null; then
            log "warning: could not install ${missing_opt[*]}; docker-compose.yml will be"
            log "  validated with the PyYAML fallback instead, and browser tests are skipped"
        fi
    fi
}

apt_install

# --- Virtualenv ----------------------------------------------------------------------------
if [[ -x "$VENV/bin/python" ]] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log ".venv is broken (its interpreter does not run): recreating it"
    rm -rf "$VENV"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found; install Python >= 3.11"
    "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
        || die "$PYTHON is $("$PYTHON" -V 2>&1); Whim needs Python >= 3.11"
    log "creating .venv with $("$PYTHON" -V 2>&1)"
    "$PYTHON" -m venv "$VENV" || die "python -m venv failed"
fi

want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$want" != "$have" || "${FORCE_PIP:-}" == 1 ]]; then
    log "installing the project: pip install -e '.[dev]'"
    pip_opts=(--disable-pip-version-check --no-input -q)
    "$VENV/bin/python" -m pip install "${pip_opts[@]}" --upgrade pip >/dev/null \
        || log "warning: could not upgrade pip; continuing with the bundled one"
    "$VENV/bin/python" -m pip install "${pip_opts[@]}" -e '.[dev]' \
        || die "pip install -e '.[dev]' failed"
    printf '%s\n' "$want" >"$STAMP"
    log "project installed (stamp $STAMP)"
else
    log ".venv is up to date with pyproject.toml"
fi
