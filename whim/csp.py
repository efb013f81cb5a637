"""The Content-Security-Policy header, on every response.

A small middleware rather than ``django-csp``: the policy is one static header (the templates
hold no inline script, style or handler, so no nonces are needed), and this keeps a dependency
out. ``settings.CONTENT_SECURITY_POLICY`` (env ``CONTENT_SECURITY_POLICY``) sets it; empty: none.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse


class ContentSecurityPolicyMiddleware:
    """Adds ``Content-Security-Policy`` unless the response already carries one."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        policy = settings.CONTENT_SECURITY_POLICY
        if policy and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = policy
        return response
