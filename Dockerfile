# One image for every Whim process: web (gunicorn), Celery worker, Celery beat and Flower.
# The command is chosen per service in docker-compose.yml; the default serves the web app.
#
#   docker build -t whim:latest .
#
# The image holds the orchestrator only. The agent containers it starts use WORKER_IMAGE
# (`make worker-image`), reached through the host's Docker engine socket.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WHIM_RUN_DIR=/app/.run

WORKDIR /app

# Non-root user that runs everything. In compose the worker also joins the group owning
# /var/run/docker.sock (DOCKER_GID) to start agent containers.
RUN groupadd --system --gid 10001 whim \
    && useradd --system --uid 10001 --gid whim --home-dir /app --shell /usr/sbin/nologin whim

# Dependencies first, in their own layer: install the project's dependencies from
# pyproject.toml against empty package stubs, so code changes do not reinstall them.
COPY pyproject.toml ./
RUN mkdir -p whim orchestration workers reviews \
    && touch whim/__init__.py orchestration/__init__.py workers/__init__.py reviews/__init__.py \
    && pip install . \
    && pip uninstall -y whim \
    && rm -rf whim orchestration workers reviews build *.egg-info

# The project itself, installed in place so BASE_DIR (templates, manage.py) is /app.
COPY . .
RUN pip install --no-deps -e . \
    && SECRET_KEY=collectstatic-build-only python manage.py collectstatic --noinput -v0 \
    && mkdir -p "$WHIM_RUN_DIR" \
    && chown -R whim:whim "$WHIM_RUN_DIR"

USER whim
EXPOSE 8000 5555

# No access log by default (one line per console poll). Turned on (GUNICORN_CMD_ARGS="--access-logfile -"),
# it shows worker tokens in callback paths (/w/<token>/…) as *** (orchestration/logfilters.py).
CMD ["gunicorn", "whim.wsgi", "--bind", "0.0.0.0:8000", "--workers", "2", "--graceful-timeout", "20"]
