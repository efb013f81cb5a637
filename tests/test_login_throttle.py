"""Login throttling: per username and per address, on the console's and the admin's login,
shared by every web process (PostgreSQL rows), with a clear message that never says whether
the name exists. Time passes by moving the rows' timestamps back, never by sleeping."""

from __future__ import annotations

import datetime as dt
import io
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client

from orchestration.models import LoginThrottle
from orchestration.services.logins import login_failure_record
from tests.conftest import CeleryWorkers, free_port, start_web, stop_processes
from tests.helpers import STAFF_NAME, STAFF_PASSWORD, USER_NAME, USER_PASSWORD, logged_in_client

pytestmark = pytest.mark.django_db

CONSOLE, ADMIN = "/accounts/login/", "/admin/login/"
HERE, THERE = "198.51.100.7", "203.0.113.9"  # documentation addresses: only REMOTE_ADDR values
LOCKED = "Too many failed logins; try again in 15 minutes."


@pytest.fixture(autouse=True)
def _fast_hasher(settings: Any) -> None:
    """Dozens of logins per test: a fast hash (autouse, so the users are made with it too)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def without_csrf_token(page: str) -> str:
    return re.sub(r"(csrfmiddlewaretoken\" value=\"|X-CSRFToken\": \")[^\"]+", r"\1", page)


def login(path: str, username: str, password: str, *, address: str = HERE) -> Any:
    client = Client()
    resp = client.post(path, {"username": username, "password": password}, REMOTE_ADDR=address)
    resp.logged_in = "_auth_user_id" in client.session  # type: ignore[attr-defined]
    return resp


def fail(times: int, path: str = CONSOLE, *, username: str = USER_NAME, address: str = HERE) -> Any:
    resp = None
    for _ in range(times):
        resp = login(path, username, "wrong password", address=address)
        assert not resp.logged_in
    return resp


def rewind(minutes: int) -> None:
    """Let ``minutes`` pass for every throttle row."""
    back = dt.timedelta(minutes=minutes)
    for row in LoginThrottle.objects.all():
        row.window_started_at -= back
        if row.locked_until:
            row.locked_until -= back
        row.save()


def test_thirty_wrong_passwords_are_not_all_answered_normally(user: Any) -> None:
    answers = [login(CONSOLE, USER_NAME, f"guess {n}").status_code for n in range(30)]
    assert answers[:4] == [200] * 4
    assert set(answers[5:]) == {429}


def test_the_sixth_attempt_is_refused_even_with_the_right_password(user: Any) -> None:
    fifth = fail(5)
    assert LOCKED in fifth.content.decode()  # the failure that locks says so at once

    sixth = login(CONSOLE, USER_NAME, USER_PASSWORD)

    assert not sixth.logged_in
    assert sixth.status_code == 429
    assert LOCKED in sixth.content.decode()


def test_four_failures_still_let_the_right_password_in(user: Any) -> None:
    fail(4)
    assert login(CONSOLE, USER_NAME, USER_PASSWORD).logged_in


def test_a_locked_name_does_not_lock_another_user_at_another_address(user: Any, staff: Any) -> None:
    fail(5)
    assert login(CONSOLE, STAFF_NAME, STAFF_PASSWORD, address=THERE).logged_in


def test_the_name_is_locked_from_every_address(user: Any) -> None:
    fail(5)
    assert not login(CONSOLE, USER_NAME, USER_PASSWORD, address=THERE).logged_in
    assert not login(CONSOLE, USER_NAME.upper(), USER_PASSWORD, address=THERE).logged_in


def test_twenty_failures_from_one_address_lock_the_address_for_every_name(
    user: Any, staff: Any
) -> None:
    for n in range(20):
        fail(1, username=f"nobody-{n}")

    assert not login(CONSOLE, USER_NAME, USER_PASSWORD).logged_in
    assert LOCKED in login(CONSOLE, STAFF_NAME, STAFF_PASSWORD).content.decode()
    assert login(CONSOLE, USER_NAME, USER_PASSWORD, address=THERE).logged_in


def test_after_the_lockout_the_right_password_works_again(user: Any) -> None:
    fail(5)
    rewind(14)
    assert "try again in 1 minute." in login(CONSOLE, USER_NAME, USER_PASSWORD).content.decode()
    rewind(1)
    assert login(CONSOLE, USER_NAME, USER_PASSWORD).logged_in


def test_failures_older_than_the_window_are_not_counted(user: Any) -> None:
    fail(4)
    rewind(16)
    fail(4)
    assert login(CONSOLE, USER_NAME, USER_PASSWORD).logged_in


def test_a_success_clears_the_names_count(user: Any) -> None:
    fail(4)
    assert login(CONSOLE, USER_NAME, USER_PASSWORD).logged_in
    fail(4)
    assert login(CONSOLE, USER_NAME, USER_PASSWORD).logged_in


def test_a_lockout_says_the_same_whether_or_not_the_name_exists(user: Any) -> None:
    fail(5, username=USER_NAME)
    fail(5, username="no-such-person", address=THERE)
    real = login(CONSOLE, USER_NAME, "anything")
    unknown = login(CONSOLE, "no-such-person", "anything", address=THERE)
    assert (real.status_code, unknown.status_code) == (429, 429)
    assert without_csrf_token(real.content.decode()).replace(USER_NAME, "X") == (
        without_csrf_token(unknown.content.decode()).replace("no-such-person", "X")
    )


def test_the_admin_login_is_throttled_too(staff: Any) -> None:
    fail(5, ADMIN, username=STAFF_NAME)
    resp = login(ADMIN, STAFF_NAME, STAFF_PASSWORD)
    assert not resp.logged_in
    assert LOCKED in resp.content.decode()
    assert not login(ADMIN, STAFF_NAME, STAFF_PASSWORD, address=THERE).logged_in  # the name


def test_failures_on_both_login_pages_add_up(staff: Any) -> None:
    fail(3, CONSOLE, username=STAFF_NAME)
    fail(2, ADMIN, username=STAFF_NAME)
    assert not login(CONSOLE, STAFF_NAME, STAFF_PASSWORD).logged_in


def test_the_limits_come_from_the_settings(user: Any, settings: Any) -> None:
    settings.LOGIN_FAILURES_PER_USER = 2
    settings.LOGIN_LOCKOUT_SECONDS = 120
    resp = fail(2)
    assert "Too many failed logins; try again in 2 minutes." in resp.content.decode()
    settings.LOGIN_FAILURES_PER_USER = 0  # off
    settings.LOGIN_FAILURES_PER_ADDRESS = 0
    LoginThrottle.objects.all().delete()
    fail(10)
    assert login(CONSOLE, USER_NAME, USER_PASSWORD).logged_in


def test_the_address_comes_from_the_configured_proxy_header(user: Any, settings: Any) -> None:
    settings.LOGIN_ADDRESS_HEADER = "X-Forwarded-For"
    for n in range(20):
        Client().post(
            CONSOLE,
            {"username": f"n{n}", "password": "x"},
            REMOTE_ADDR="127.0.0.1",
            HTTP_X_FORWARDED_FOR=f"1.2.3.4, {HERE}",
        )
    assert LoginThrottle.objects.get(scope="address").key == HERE
    assert login(CONSOLE, USER_NAME, USER_PASSWORD, address="127.0.0.1").logged_in


# --- unlocking -------------------------------------------------------------------------------


def unlock_command(*args: str) -> str:
    out = io.StringIO()
    call_command("whim_login_unlock", *args, stdout=out)
    return out.getvalue().strip()


def test_whim_login_unlock_lifts_a_names_lockout(user: Any) -> None:
    fail(5)
    assert unlock_command("--user", USER_NAME.upper()) == (
        "Unlocked 1; their failed logins are forgotten."
    )
    assert login(CONSOLE, USER_NAME, USER_PASSWORD).logged_in


def test_whim_login_unlock_lifts_an_addresses_lockout_or_everyones(user: Any) -> None:
    for n in range(20):
        fail(1, username=f"n{n}")
    assert unlock_command("--address", THERE) == "Unlocked 0; their failed logins are forgotten."
    assert not login(CONSOLE, USER_NAME, USER_PASSWORD).logged_in
    assert unlock_command("--address", HERE).startswith("Unlocked 1;")
    assert login(CONSOLE, USER_NAME, USER_PASSWORD).logged_in
    fail(5)
    assert unlock_command("--all").startswith("Unlocked 1;")
    assert not LoginThrottle.objects.exists()


def test_whim_login_unlock_needs_to_be_told_whom() -> None:
    with pytest.raises(CommandError, match="--user"):
        unlock_command()


def test_an_admin_unlocks_in_the_admin_and_an_operator_cannot(
    user: Any, staff_client: Client, superuser_client: Client
) -> None:
    fail(5)
    row = LoginThrottle.objects.get(scope="user")
    data = {"action": "unlock", "_selected_action": [str(row.pk)]}
    url = "/admin/orchestration/loginthrottle/"
    staff_client.post(url, data)  # an operator
    assert not login(CONSOLE, USER_NAME, USER_PASSWORD).logged_in
    page = superuser_client.post(url, data, follow=True).content.decode()
    assert "Unlocked 1" in page
    assert login(CONSOLE, USER_NAME, USER_PASSWORD).logged_in


# --- one count for every process -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_failures_recorded_at_once_from_many_connections_are_all_counted(settings: Any) -> None:
    """Each thread has its own database connection, as each gunicorn worker does: a count
    kept per process, or read-modify-written without a lock, would lose some."""
    settings.LOGIN_FAILURES_PER_USER = 1000
    settings.LOGIN_FAILURES_PER_ADDRESS = 1000
    start = threading.Barrier(8)

    def one() -> None:
        try:
            start.wait()
            for _ in range(5):
                login_failure_record(username="target", address=HERE)
        finally:
            connection.close()

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = dict(LoginThrottle.objects.values_list("scope", "failures"))
    assert counts == {"user": 40, "address": 40}


def test_a_logged_in_client_is_not_throttled_by_other_names_failures(user: Any) -> None:
    fail(5, username="someone-else", address=THERE)
    assert logged_in_client(user).get("/queue/").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_a_gunicorn_with_two_worker_processes_keeps_one_count(
    django_user_model: Any, tmp_path: Path
) -> None:
    """The production shape: every attempt on a new connection, taken by whichever worker
    process accepts it; the sixth is still refused."""
    django_user_model.objects.create_user(USER_NAME, password=USER_PASSWORD)
    port = free_port()
    web = start_web(
        env={**CeleryWorkers({}).env, "PORT": str(port)},  # its env points at the test database
        binds=[f"127.0.0.1:{port}"],
        log=tmp_path / "web.log",
    )
    try:
        base = f"http://127.0.0.1:{port}{CONSOLE}"
        answers = [http_login(base, USER_NAME, f"guess {n}")[0] for n in range(5)]
        status, page = http_login(base, USER_NAME, USER_PASSWORD)
    finally:
        stop_processes([web], grace=5)
    assert answers == [200, 200, 200, 200, 429]
    assert (status, LOCKED in page) == (429, True)


def http_login(url: str, username: str, password: str) -> tuple[int, str]:
    """GET the form (CSRF cookie and token), then POST it, each on a new connection."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    form = opener.open(url, timeout=30).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    assert token, form[:500]
    data = urllib.parse.urlencode(
        {"username": username, "password": password, "csrfmiddlewaretoken": token.group(1)}
    ).encode()
    try:
        resp = opener.open(urllib.request.Request(url, data=data), timeout=30)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    return resp.status, resp.read().decode()
