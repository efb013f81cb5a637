# Whim — developer entry points. Everything uses the virtualenv in .venv (scripts/bootstrap.sh).
#
#   make run        web + Celery worker + beat + Flower in the foreground (scripts/run.sh)
#   make test       from a fresh clone: packages, .venv, PostgreSQL + Redis, every check, pytest
#   make lint       ruff check + ruff format --check      make format     apply ruff fixes/format
#   make typecheck  mypy                                   make services   start PostgreSQL + Redis
#   make imports    the import contract (import-linter)
#   make bench      benchmarks (bench/)                    make clean      caches and build output
#   make docker     start a Docker engine                  make worker-image  build the agent image
#
# PYTEST_ARGS passes extra arguments to pytest, e.g. make test PYTEST_ARGS='-k claim -x'.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.ONESHELL:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

VENV := .venv
PY := $(VENV)/bin/python
RUFF := $(VENV)/bin/ruff
MYPY := $(VENV)/bin/mypy
PYTEST_ARGS ?=
# make test: processes for the in-process tests (pytest-xdist; auto = one per core), and the
# markers of the end-to-end tests, which run after them one at a time.
TEST_JOBS ?= auto
END_TO_END := celery or docker or embedded
BENCH_ARGS ?=
COMPOSE_FILE := docker-compose.yml
COMPOSE_NODE_FILE := docker-compose.node.yml
# Not $(MAKE) in recipes: with .ONESHELL a recipe naming $(MAKE) runs even under `make -n`.
SUBMAKE := $(MAKE) --no-print-directory

.PHONY: help run test check lint format typecheck imports services bootstrap compose-check bench \
	clean distclean

help:
	@sed -n '3,12p' Makefile | sed 's/^# \{0,1\}//'

bootstrap:
	bash scripts/bootstrap.sh

run:
	@exec bash scripts/run.sh

services:
	@bash scripts/services.sh >/dev/null
	echo 'PostgreSQL and Redis are running. For this shell: eval "$$(scripts/services.sh)"'

# One command from a fresh clone. services.sh's output is captured first (eval "$(...)" would
# hide its exit status), then the same checks CI relies on, then the whole test suite.
test:
	@bash scripts/bootstrap.sh
	services_env="$$(bash scripts/services.sh)"
	eval "$$services_env"
	echo "== ruff check"
	$(RUFF) check .
	echo "== ruff format --check"
	$(RUFF) format --check .
	echo "== mypy"
	$(MYPY) .
	echo "== import contract (lint-imports)"
	$(VENV)/bin/lint-imports
	echo "== manage.py check"
	$(PY) manage.py check
	echo "== manage.py makemigrations --check"
	$(PY) manage.py makemigrations --check --dry-run
	$(SUBMAKE) compose-check
	echo "== Docker engine and worker image (end-to-end tests)"
	bash scripts/docker.sh
	bash workers/image/build.sh
	export REDIS_URL="redis://127.0.0.1:$${REDIS_PORT:-6379}/15"
	# The in-process tests on every core (pytest-xdist, a test database per process); then the
	# end-to-end ones, which start real Celery, gunicorn, containers and engines and time
	# what they see, one at a time. Both always run; 5 (nothing selected, e.g. by -k) is fine.
	echo "== pytest: in-process tests ($(TEST_JOBS) processes)"
	unit=0; $(PY) -m pytest -n $(TEST_JOBS) -m "not ($(END_TO_END))" $(PYTEST_ARGS) || unit=$$?
	echo "== pytest: end-to-end tests ($(END_TO_END))"
	e2e=0; $(PY) -m pytest -m "$(END_TO_END)" $(PYTEST_ARGS) || e2e=$$?
	for code in $$unit $$e2e; do [[ $$code == 0 || $$code == 5 ]] || exit $$code; done

# The static checks alone (no database needed): make check
check: lint typecheck imports compose-check
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

lint:
	$(RUFF) check .
	$(RUFF) format --check .

format:
	$(RUFF) check --fix .
	$(RUFF) format .

typecheck:
	$(MYPY) .

# The one direction of imports (.importlinter; README "Architecture").
imports:
	$(VENV)/bin/lint-imports

# Validate docker-compose.yml without a Docker daemon or registry. Tried in order:
# `docker compose` (v2 plugin), `docker-compose` (Debian's v1, installed by bootstrap.sh),
# then a structural check with PyYAML. Required variables get placeholder values here only.
compose-check:
	@echo "== compose config ($(COMPOSE_FILE), $(COMPOSE_FILE) + $(COMPOSE_NODE_FILE))"
	export SECRET_KEY="$${SECRET_KEY:-compose-validation-only}"
	export FLOWER_BASIC_AUTH="$${FLOWER_BASIC_AUTH:-validate:only}"
	# The worker-only host's required settings, placeholders for validation only.
	node_env=(WHIM_DATABASE_URL=postgres://whim:x@db.invalid:5432/whim
		WHIM_REDIS_URL=redis://queue.invalid:6379/0 WHIM_NODE=validate
		WHIM_CALLBACK_URL=http://web.invalid:8001)
	if docker compose version >/dev/null 2>&1; then
		docker compose -f $(COMPOSE_FILE) config -q
		env "$${node_env[@]}" docker compose -f $(COMPOSE_FILE) -f $(COMPOSE_NODE_FILE) config -q
		echo "docker compose config: OK"
	elif command -v docker-compose >/dev/null 2>&1; then
		docker-compose -f $(COMPOSE_FILE) config -q
		env "$${node_env[@]}" docker-compose -f $(COMPOSE_FILE) -f $(COMPOSE_NODE_FILE) config -q
		echo "docker-compose (v1) config: OK"
	else
		pybin=""
		for cand in $(PY) /usr/bin/python3 python3; do
			if "$$cand" -c 'import yaml' >/dev/null 2>&1; then pybin="$$cand"; break; fi
		done
		if [[ -z "$$pybin" ]]; then
			echo "no docker compose, docker-compose or PyYAML to validate $(COMPOSE_FILE)" >&2
			echo "run scripts/bootstrap.sh as root (installs docker-compose)" >&2
			exit 1
		fi
		# (no indented Python here: .ONESHELL strips leading whitespace from recipe lines)
		"$$pybin" - $(COMPOSE_FILE) $(COMPOSE_NODE_FILE) <<-'EOF'
		import sys, yaml
		doc = yaml.safe_load(open(sys.argv[1]))
		services = doc.get("services") or {}
		missing = {"postgres", "redis", "web", "worker", "beat", "flower"} - set(services)
		assert not missing, f"missing services: {sorted(missing)}"
		bad = [n for n, s in services.items() if "image" not in s and "build" not in s]
		assert not bad, f"services without image or build: {bad}"
		deps = [(n, d) for n, s in services.items() for d in s.get("depends_on") or {}]
		unknown = [f"{n} -> {d}" for n, d in deps if d not in services]
		assert not unknown, f"depends_on unknown services: {unknown}"
		node = yaml.safe_load(open(sys.argv[2]))
		extra = set(node.get("services") or {}) - set(services)
		assert not extra, f"the node override names services docker-compose.yml lacks: {extra}"
		env = node["services"]["worker"]["environment"]
		needed = {"DATABASE_URL", "REDIS_URL", "WHIM_NODE", "WHIM_CALLBACK_URL"} - set(env)
		assert not needed, f"the node override does not set {sorted(needed)}"
		print("compose structure (PyYAML fallback): OK")
		EOF
	fi

# Benchmarks print figures against a baseline measured in the same run (bench/core.py says how
# a module plugs in). BENCH_ARGS passes e.g. --smoke, --only pickup, --json PATH.
bench:
	@bash scripts/bootstrap.sh
	services_env="$$(bash scripts/services.sh)"
	eval "$$services_env"
	$(PY) -m bench $(BENCH_ARGS)

# Caches and build output. Keeps .venv and the single-machine data (.run/whim.sqlite3,
# .run/secret_key); `make distclean` removes those too.
clean:
	rm -rf .mypy_cache .ruff_cache .pytest_cache build dist test-artifacts .run/static
	find . -path ./.venv -prune -o -type d -name __pycache__ -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) .run *.egg-info

# A Docker engine (scripts/docker.sh: installs Debian's docker.io and starts dockerd if nothing
# answers) and the worker image ${WORKER_IMAGE:-whim-worker:latest} (workers/image/build.sh:
# FROM python:3.12-slim when a registry answers, else a local debootstrap base, made once).
.PHONY: docker worker-image

docker:
	@bash scripts/docker.sh

worker-image: docker
	@bash workers/image/build.sh
