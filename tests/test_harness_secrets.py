"""The container's secrets come on stdin, not in its configuration: the supervisor reads the
one line the Docker runtime writes (``harness.supervisor.read_secrets``) and hands it to the
harness's environment; anything else on stdin is refused with a message that never quotes
it, and the container exits (78) rather than run without them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from workers.harness.harness.supervisor import (
    EXIT_NO_SECRETS,
    MAX_SECRETS,
    SecretsError,
    read_secrets,
)

HARNESS = Path(__file__).resolve().parent.parent / "workers" / "harness"

# The harness stand-in: what it got in its environment, and what is left on its stdin.
PROBE = (
    "import json, os, sys; print(json.dumps({'env': dict(os.environ), 'stdin': sys.stdin.read()}))"
)


def supervise(stdin: bytes, **env: str) -> subprocess.CompletedProcess[bytes]:
    """The real supervisor's main (as root: the harness as uid 1000, as in the image), on the
    system interpreter, as in the image (this test's may live where uid 1000 cannot reach)."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    assert python is not None, "no /usr/bin/python3"
    code = (
        "import sys; from harness import supervisor; "
        f"sys.exit(supervisor.main([{python!r}, '-c', {PROBE!r}]))"
    )
    return subprocess.run(
        [python, "-c", code],
        input=stdin,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(HARNESS), **env},
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_the_secrets_line_reaches_the_harness_environment_and_nothing_after_it() -> None:
    secrets = {"WORKER_TOKEN": "t0k", "ORCHESTRATOR_URL": "http://h:1/w/t0k", "npm-token": "k y"}
    line = json.dumps(secrets).encode() + b"\n"

    done = supervise(line + b"a second line\n", WHIM_SECRETS_ON_STDIN="1", WORKER_ID="w")

    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert {name: seen["env"].get(name) for name in secrets} == secrets
    assert seen["env"]["WORKER_ID"] == "w"
    assert "WHIM_SECRETS_ON_STDIN" not in seen["env"]
    assert seen["stdin"] == ""  # /dev/null: the rest of the line's stream is never read


def test_without_the_flag_stdin_is_left_alone() -> None:
    done = supervise(b'{"WORKER_TOKEN": "t0k"}\n', WORKER_TOKEN="from-env")

    seen = json.loads(done.stdout)
    assert seen["env"]["WORKER_TOKEN"] == "from-env"
    assert seen["stdin"] == '{"WORKER_TOKEN": "t0k"}\n'


@pytest.mark.parametrize(
    ("stdin", "says"),
    [
        pytest.param(b"hunter2 not json\n", "not JSON", id="not_json"),
        pytest.param(b'["hunter2"]\n', "not an object", id="not_an_object"),
        pytest.param(b'{"A=B": "hunter2"}\n', "not an object", id="bad_name"),
        pytest.param(b'{"": "hunter2"}\n', "not an object", id="empty_name"),
        pytest.param(b'{"TOKEN": 7}\n', "not an object", id="not_text"),
        pytest.param(b'{"TOKEN": "hunter2\\u0000"}\n', "not an object", id="nul"),
        pytest.param(b'{"TOKEN": "hunter2"}', "closed before", id="no_newline"),
        pytest.param(b"", "closed before", id="empty"),
    ],
)
def test_anything_but_the_secrets_line_stops_the_container_without_quoting_it(
    stdin: bytes, says: str
) -> None:
    done = supervise(stdin, WHIM_SECRETS_ON_STDIN="1")

    assert done.returncode == EXIT_NO_SECRETS
    assert done.stdout == b""  # the harness never started
    assert says in done.stderr.decode()
    assert b"hunter2" not in done.stderr


def test_no_line_in_time_is_an_error_not_a_wait_forever() -> None:
    read, write = os.pipe()
    try:
        started = time.monotonic()
        with pytest.raises(SecretsError, match="within"):
            read_secrets(read, timeout=0.3)
        assert time.monotonic() - started < 5
    finally:
        os.close(read)
        os.close(write)


def write_all(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the reader stopped and closed its end
        os.write(fd, data)


def test_a_line_longer_than_the_bound_is_refused() -> None:
    read, write = os.pipe()
    try:
        line = b'{"A": "' + b"x" * MAX_SECRETS + b'"}\n'
        threading.Thread(target=write_all, args=(write, line), daemon=True).start()
        with pytest.raises(SecretsError, match="longer than"):
            read_secrets(read, timeout=5)
    finally:
        os.close(read)
        os.close(write)
