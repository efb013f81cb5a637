"""A repository's ``.whim/config.toml`` and the item's metadata decide the attempt's settings
(issue 10): defaults otherwise, an unknown key a warning, a wrong type or a broken file a
permanent ``CONFIG_ERROR`` naming the key — and the file, which an earlier agent may have
written, is never a way out of the checkout. Also the pipeline's knobs in harness/config.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from workers.harness.harness.config import Config
from workers.harness.harness.errors import Category, ConfigError
from workers.harness.harness.repoconfig import MAX_CONFIG_BYTES, RepoSettings, repo_settings_load

BASE_ENV = {"ORCHESTRATOR_URL": "http://127.0.0.1:9/w/tok", "WORKER_ID": "w1", "WORK_ITEM_ID": "7"}


def config(**env: str) -> Config:
    return Config.from_env({**BASE_ENV, **env})


def write(checkout: Path, text: str) -> None:
    (checkout / ".whim").mkdir(exist_ok=True)
    (checkout / ".whim" / "config.toml").write_text(text)


def load(
    checkout: Path, metadata: dict[str, Any] | None = None, max_iterations: int = 50, **env: str
) -> RepoSettings:
    return repo_settings_load(
        checkout, metadata=metadata or {}, config=config(**env), max_iterations=max_iterations
    )


def refused(checkout: Path, *words: str, metadata: dict[str, Any] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load(checkout, metadata)
    message = str(caught.value)
    assert caught.value.category == Category.CONFIG_ERROR
    for word in words:
        assert word in message, message
    return message


def test_without_a_file_the_defaults_come_from_the_environment_and_the_item(tmp_path: Path) -> None:
    settings = load(tmp_path, max_iterations=12, WHIM_AGENT="claude", FIX_ITERATIONS="3")
    assert settings == RepoSettings(
        agent="claude",
        model="",
        max_iterations=12,
        test_command=None,
        setup_command=None,
        review=True,
        verification=False,
        fix_iterations=3,
        warnings=(),
    )


def test_every_key_of_the_file_is_read(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
test_command = "pytest -q tests/unit"
setup_command = "pip install -e ."
agent = "codex"
model = "gpt-5-codex"
max_iterations = 5
review = false
verification = true
fix_iterations = 1
""",
    )
    settings = load(tmp_path)
    assert settings == RepoSettings(
        agent="codex",
        model="gpt-5-codex",
        max_iterations=5,
        test_command="pytest -q tests/unit",
        setup_command="pip install -e .",
        review=False,
        verification=True,
        fix_iterations=1,
        warnings=(),
    )


def test_metadata_overrides_the_file(tmp_path: Path) -> None:
    write(tmp_path, 'test_command = "make check"\nreview = true\nmodel = "a"\nfix_iterations = 4\n')
    metadata = {
        "testCommand": "npm test",
        "setupCommand": "npm ci",
        "agent": "claude",
        "model": "claude-opus-4-1",
        "review": False,
        "verification": True,
        "fixIterations": 0,
    }
    settings = load(tmp_path, metadata)
    assert (settings.test_command, settings.setup_command) == ("npm test", "npm ci")
    assert (settings.agent, settings.model) == ("claude", "claude-opus-4-1")
    assert (settings.review, settings.verification, settings.fix_iterations) == (False, True, 0)


def test_a_null_in_the_metadata_leaves_the_file_s_value(tmp_path: Path) -> None:
    write(tmp_path, 'test_command = "make check"\n')
    assert load(tmp_path, {"testCommand": None}).test_command == "make check"


def test_the_file_may_lower_the_item_s_iterations_but_never_raise_them(tmp_path: Path) -> None:
    write(tmp_path, "max_iterations = 3\n")
    assert load(tmp_path, max_iterations=10).max_iterations == 3
    write(tmp_path, "max_iterations = 500\n")
    assert load(tmp_path, max_iterations=10).max_iterations == 10


def test_an_unknown_key_is_a_warning_not_an_error(tmp_path: Path) -> None:
    write(tmp_path, 'tests = "pytest"\nreview = true\n[extra]\nx = 1\n')
    settings = load(tmp_path)
    assert settings.review is True
    assert len(settings.warnings) == 2
    assert "unknown key 'tests'" in settings.warnings[0]
    assert "unknown key 'extra'" in settings.warnings[1]


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('review = "yes"', "review"),
        ("review = 1", "review"),
        ("verification = 0", "verification"),
        ("fix_iterations = true", "fix_iterations"),  # a bool is not a count
        ('fix_iterations = "2"', "fix_iterations"),
        ("fix_iterations = 2.0", "fix_iterations"),
        ("fix_iterations = -1", "fix_iterations"),
        ("fix_iterations = 1000", "fix_iterations"),
        ("max_iterations = 0", "max_iterations"),
        ("max_iterations = 99999999999", "max_iterations"),
        ("test_command = 42", "test_command"),
        ('test_command = ""', "test_command"),
        ('test_command = "pytest\\nrm -rf /"', "test_command"),
        ("setup_command = ['pip', 'install']", "setup_command"),
        ('agent = "gpt"', "agent"),
        ("agent = true", "agent"),
        ('model = "--dangerously-skip-permissions"', "model"),
        ('model = "a b"', "model"),
        ("model = 4", "model"),
    ],
)
def test_a_wrong_type_or_value_is_a_config_error_naming_the_key(
    tmp_path: Path, line: str, key: str
) -> None:
    write(tmp_path, line + "\n")
    refused(tmp_path, ".whim/config.toml", key)


def test_a_long_command_is_refused(tmp_path: Path) -> None:
    write(tmp_path, f'test_command = "{"x" * 2001}"\n')
    refused(tmp_path, "test_command", "2000")


@pytest.mark.parametrize(
    ("metadata", "name"),
    [
        ({"review": "false"}, "metadata review"),
        ({"fixIterations": True}, "metadata fixIterations"),
        ({"testCommand": ["pytest"]}, "metadata testCommand"),
        ({"agent": "nobody"}, "metadata agent"),
    ],
)
def test_bad_metadata_is_a_config_error_naming_the_key(
    tmp_path: Path, metadata: dict[str, Any], name: str
) -> None:
    refused(tmp_path, name, metadata=metadata)


def test_unparsable_toml_names_the_line(tmp_path: Path) -> None:
    write(tmp_path, 'review = true\n\ntest_command = "unterminated\n')
    refused(tmp_path, "not valid TOML", "line 3")


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".whim").mkdir()
    (tmp_path / ".whim" / "config.toml").write_bytes(b'model = "\xff"\n')
    refused(tmp_path, "UTF-8")


def test_a_huge_file_is_refused_without_parsing_it(tmp_path: Path) -> None:
    write(tmp_path, "# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    refused(tmp_path, "larger than")


def test_a_symlink_out_of_the_checkout_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "host-secret.toml"
    outside.write_text('model = "leaked"\n')
    checkout = tmp_path / "repo"
    (checkout / ".whim").mkdir(parents=True)
    (checkout / ".whim" / "config.toml").symlink_to(outside)
    message = refused(checkout, "outside the repository")
    assert "leaked" not in message


def test_a_symlinked_whim_directory_out_of_the_checkout_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "config.toml").write_text("review = false\n")
    checkout = tmp_path / "repo"
    checkout.mkdir()
    (checkout / ".whim").symlink_to(elsewhere)
    refused(checkout, "outside the repository")


def test_a_symlink_within_the_checkout_is_read(tmp_path: Path) -> None:
    (tmp_path / "whim.toml").write_text("review = false\n")
    (tmp_path / ".whim").mkdir()
    (tmp_path / ".whim" / "config.toml").symlink_to("../whim.toml")
    assert load(tmp_path).review is False


def test_a_dangling_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".whim").mkdir()
    (tmp_path / ".whim" / "config.toml").symlink_to(tmp_path / "missing")
    refused(tmp_path, "leads nowhere")


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    (tmp_path / ".whim").mkdir()
    os.mkfifo(tmp_path / ".whim" / "config.toml")
    refused(tmp_path, "not a regular file")


def test_the_command_agent_needs_its_command(tmp_path: Path) -> None:
    write(tmp_path, 'agent = "command"\n')
    refused(tmp_path, "WHIM_AGENT_COMMAND")
    settings = load(tmp_path, WHIM_AGENT_COMMAND="my-agent --go")
    assert settings.agent == "command"


# --- the pipeline's knobs in harness/config.py ---------------------------------------------


def test_the_pipeline_knobs_have_the_contract_s_defaults() -> None:
    c = config()
    assert (c.fix_iterations, c.test_timeout, c.agent_idle_timeout) == (2, 900.0, 600.0)
    assert (c.reviewer, c.review_model) == ("agent", "claude-sonnet-4-5")
    assert c.anthropic_base_url == "https://api.anthropic.com"
    assert (c.anthropic_api_key, c.cost_cap_usd, c.worker_mode) == (None, None, "execution")
    assert not c.verifying


def test_the_pipeline_knobs_are_read_from_the_environment() -> None:
    c = config(
        FIX_ITERATIONS="0",
        TEST_TIMEOUT="30",
        AGENT_IDLE_TIMEOUT="45",
        WHIM_REVIEWER="Anthropic",
        AI_REVIEW_MODEL="claude-haiku-4-5",
        ANTHROPIC_BASE_URL="http://127.0.0.1:8080/",
        ANTHROPIC_API_KEY="sk-ant-test-key-1234",
        WHIM_COST_CAP_USD="1.25",
        WORKER_MODE="verification",
    )
    assert (c.fix_iterations, c.test_timeout, c.agent_idle_timeout) == (0, 30.0, 45.0)
    assert (c.reviewer, c.review_model) == ("anthropic", "claude-haiku-4-5")
    assert c.anthropic_base_url == "http://127.0.0.1:8080"
    assert c.anthropic_api_key == "sk-ant-test-key-1234"
    assert c.cost_cap_usd == 1.25
    assert c.verifying


def test_a_spent_cost_cap_means_nothing_more_may_be_spent() -> None:
    assert config(WHIM_COST_CAP_USD="-0.30").cost_cap_usd == 0.0


def test_the_anthropic_key_is_masked_in_the_log() -> None:
    from workers.harness.harness.logs import mask

    config(ANTHROPIC_API_KEY="sk-ant-masked-5678")
    assert "sk-ant-masked-5678" not in mask("key sk-ant-masked-5678")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FIX_ITERATIONS", "two"),
        ("FIX_ITERATIONS", "-1"),
        ("FIX_ITERATIONS", "21"),
        ("TEST_TIMEOUT", "soon"),
        ("WHIM_REVIEWER", "gpt"),
        ("WORKER_MODE", "judge"),
        ("ANTHROPIC_BASE_URL", "ftp://example.invalid"),
        ("WHIM_COST_CAP_USD", "ten"),
        ("WHIM_COST_CAP_USD", "nan"),
    ],
)
def test_a_bad_knob_is_a_config_error_naming_it(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        config(**{name: value})
