"""The two login pages — the console's (/accounts/login/) and the admin's (/admin/login/) —
with login throttling (``services.logins``): a locked-out name or address is refused before
the password is even checked, with a message that says for how long."""

from __future__ import annotations

import ipaddress
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse

from orchestration.services.logins import (
    lockout_message,
    login_failure_record,
    login_locked_for,
    login_success_record,
)

THROTTLED = "throttled"


def client_address(request: HttpRequest | None) -> str:
    """The address a login comes from: ``LOGIN_ADDRESS_HEADER`` (the last entry, the one the
    proxy added) when configured and well-formed, else the connection's address."""
    if request is None:
        return ""
    remote = str(request.META.get("REMOTE_ADDR") or "")
    if settings.LOGIN_ADDRESS_HEADER:
        value = request.headers.get(settings.LOGIN_ADDRESS_HEADER, "")
        candidate = value.rsplit(",", 1)[-1].strip()
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            pass
    return remote


class ThrottledLogin:
    """Mixed into Django's login forms: check the lockout first, count a failure, clear the
    name's count on success."""

    request: HttpRequest | None
    cleaned_data: dict[str, Any]

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username") or ""
        password = self.cleaned_data.get("password") or ""
        if not (username and password):
            return super().clean()  # type: ignore[misc]
        address = client_address(self.request)
        wait = login_locked_for(username=username, address=address)
        if wait:
            raise forms.ValidationError(lockout_message(wait), code=THROTTLED)
        try:
            cleaned: dict[str, Any] = super().clean()  # type: ignore[misc]
        except forms.ValidationError as exc:
            if getattr(exc, "code", None) == "invalid_login":
                locked = login_failure_record(username=username, address=address)
                if locked:
                    raise forms.ValidationError(lockout_message(locked), code=THROTTLED) from exc
            raise
        login_success_record(username=username)
        return cleaned


class ConsoleLoginForm(ThrottledLogin, AuthenticationForm):
    """The console's login: any active user."""


class AdminLoginForm(ThrottledLogin, AdminAuthenticationForm):
    """The admin's login: staff only (Django's rule), throttled the same way."""


class ConsoleLoginView(auth_views.LoginView):
    """The console's login page; a locked-out login is answered 429."""

    authentication_form = ConsoleLoginForm

    def form_invalid(self, form: Any) -> HttpResponse:
        response = super().form_invalid(form)
        if any(e.code == THROTTLED for e in form.errors.as_data().get("__all__", [])):
            response.status_code = 429
        return response
