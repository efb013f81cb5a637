"""WSGI entry point (gunicorn whim.wsgi).

Loading it also puts the secret-redacting filter on gunicorn's own access and error loggers
(``orchestration.logfilters``): however gunicorn is started (``make run``, the image, compose,
the tests, an operator's ``--access-logfile -``), a worker token in a request path never
reaches its log in clear. It also turns on tracing when an OTLP endpoint is configured
(``whim.telemetry``), before the handler loads its middleware.
"""

import os

from django.core.wsgi import get_wsgi_application

from orchestration.logfilters import redact_server_logs
from whim import telemetry

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "whim.settings")
telemetry.setup("whim-web")

application = get_wsgi_application()
redact_server_logs()
