"""The plumbing every fake HTTP service shares: a server on 127.0.0.1 (or ``host``) in a daemon
thread."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class FakeServer:
    """Bound at construction (``port`` 0: any free one), serving from ``start`` to ``stop``.
    Subclasses set their own state first, then call ``super().__init__``, and give the
    request handler in ``_handler_class``."""

    def __init__(self, *, port: int = 0, host: str = "127.0.0.1") -> None:
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base(self) -> str:
        address = self._server.server_address
        return f"http://{address[0]!s}:{address[1]}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError
