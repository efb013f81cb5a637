"""WSGI entry point (gunicorn whim.wsgi).

Loading it also puts the secret-redacting filter on gunicorn's own access and error loggers
(``orchestration.logfilters``): however gunicorn is started (``make run``, the image, compose,
the tests, an operator's ``--access-logfile -``), a worker token in a request path never
reaches its log in clear.
"""

import os

from django.core.wsgi import get_wsgi_application

from orchestration.logfilters import redact_server_logs

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "whim.settings")

application = get_wsgi_application()
redact_server_logs()
