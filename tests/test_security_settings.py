"""HTTPS, cookies and security headers from the environment (issue 9, LOW).

Behind TLS, the ``SECURE_*``, cookie and proxy variables make ``manage.py check --deploy``
clean; unset, the defaults keep ``make run`` on plain http://127.0.0.1 working. Every response
carries the Content-Security-Policy, ``nosniff`` and a referrer policy.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from typing import Any

import pytest
from django.test import Client

from tests.callbacks_support import token_of
from tests.conftest import ROOT
from tests.factories import running_attempt

DEPLOY_ENV = {
    "DEBUG": "0",
    "ALLOWED_HOSTS": "whim.example.com",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "SECURE_SSL_REDIRECT": "true",
    "SESSION_COOKIE_SECURE": "true",
    "CSRF_COOKIE_SECURE": "true",
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
}


def check_deploy(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "DJANGO_"))}
    env.update(SECRET_KEY=secrets.token_urlsafe(50), **extra)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_the_https_settings_from_the_environment() -> None:
    done = check_deploy(DEPLOY_ENV)

    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "security.W" not in output and "security.E" not in output, output
    assert "no issues" in output, output


def test_without_them_check_deploy_names_each_missing_https_setting() -> None:
    """The control: the clean run above is the variables' doing, not a silenced check."""
    done = check_deploy({"DEBUG": "0", "ALLOWED_HOSTS": "whim.example.com"})

    output = done.stdout + done.stderr
    for warning in ("W004", "W008", "W012", "W016"):
        assert f"security.{warning}" in output, output


def test_the_proxy_header_names_what_a_tls_proxy_sets() -> None:
    show = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.SECURE_PROXY_SSL_HEADER)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "whim.settings"}
    for value, expected in [
        ("X-Forwarded-Proto", "('HTTP_X_FORWARDED_PROTO', 'https')"),
        ("X-Forwarded-Ssl: on", "('HTTP_X_FORWARDED_SSL', 'on')"),
        ("", "None"),
    ]:
        done = subprocess.run(
            [sys.executable, "-c", show],
            cwd=ROOT,
            env={**env, "SECURE_PROXY_SSL_HEADER": value},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.stdout.strip() == expected, done.stderr


# --- in-process: what the settings do to requests ------------------------------------------


@pytest.mark.django_db
def test_by_default_plain_http_works_and_cookies_are_not_secure_only(client: Client) -> None:
    resp = client.get("/accounts/login/")

    assert resp.status_code == 200
    assert not resp.cookies["csrftoken"]["secure"]
    assert "Strict-Transport-Security" not in resp


@pytest.mark.django_db
def test_every_response_carries_the_policy_and_the_security_headers(client: Client) -> None:
    for path in ("/accounts/login/", "/health", "/api/nothing-here"):
        resp = client.get(path)
        policy = resp["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert resp["X-Content-Type-Options"] == "nosniff"
        assert resp["Referrer-Policy"] == "same-origin"


@pytest.mark.django_db
def test_an_empty_policy_setting_sends_no_header(client: Client, settings: Any) -> None:
    settings.CONTENT_SECURITY_POLICY = ""

    assert "Content-Security-Policy" not in client.get("/accounts/login/")


@pytest.fixture
def https_settings(settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True


@pytest.mark.django_db
@pytest.mark.usefixtures("https_settings")
def test_with_https_on_the_console_redirects_and_a_proxied_request_is_secure(
    client: Client,
) -> None:
    plain = client.get("/accounts/login/")
    assert plain.status_code == 301 and plain["Location"].startswith("https://")

    proxied = client.get("/accounts/login/", headers={"X-Forwarded-Proto": "https"})
    assert proxied.status_code == 200
    assert proxied["Strict-Transport-Security"].startswith("max-age=3600")
    assert proxied.cookies["csrftoken"]["secure"]


@pytest.mark.django_db
@pytest.mark.usefixtures("https_settings", "retry_policy")
def test_with_https_on_worker_callbacks_and_health_are_still_served_over_http(
    client: Client,
) -> None:
    """Containers call back over the plain-HTTP worker network; a redirect would lose them."""
    _, worker = running_attempt()
    token = token_of(worker)

    in_path = client.post(
        f"/w/{token}/api/worker/{worker.pk}/heartbeat", '{"iteration": 1}', "application/json"
    )
    in_header = client.post(
        f"/api/worker/{worker.pk}/heartbeat",
        '{"iteration": 2}',
        "application/json",
        headers={"Authorization": f"Bearer {token}"},
    )

    assert in_path.status_code == 200, in_path.content
    assert in_header.status_code == 200, in_header.content
    assert client.get("/health").status_code == 200
