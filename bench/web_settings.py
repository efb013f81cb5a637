"""Settings for the heartbeat benchmark's gunicorn: Whim's own, with the bench's URLconf.

The naive baseline view lives only here and in ``bench/web_urls.py``, never in the product.
"""

from whim.settings import *  # noqa: F403

ROOT_URLCONF = "bench.web_urls"
