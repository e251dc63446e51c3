"""The example configs in examples/ are what a user copies: each must load, mean what it says,
and hold nothing secret."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mbe_gateway.config import Config, load_config
from mbe_gateway.logs import redact

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPT = str(Path(sys.executable).with_name("mbe-gateway"))
NAMES = (
    "telegram.toml",
    "all-channels.toml",
    "ollama-local-fallback.toml",
    "anthropic-local-fallback.toml",
    "remote-mbe.toml",
)


def example(name: str) -> Config:
    return load_config(EXAMPLES / name)


def test_the_examples_directory_holds_the_five_promised_setups() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.toml")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_example_loads_through_the_real_config_loader(name: str) -> None:
    config = example(name)
    assert config.exists
    enabled = [n for n in ("telegram", "discord", "slack") if getattr(config.channels, n).enabled]
    assert enabled, "an example a user copies should answer somewhere"
    assert config.control.host == "127.0.0.1"  # no example opens the control plane to the network


def test_the_telegram_example_is_one_telegram_bot_behind_pairing() -> None:
    config = example("telegram.toml")
    telegram = config.channels.telegram
    assert telegram.enabled and telegram.token is not None and telegram.token.name == "telegram_token"
    assert telegram.dm_policy == "pairing" and telegram.allow_groups == ()
    assert not config.channels.discord.enabled and not config.channels.slack.enabled
    assert [p.kind for p in config.llm.providers] == ["local"]
    assert config.mbe.url is None and config.mbe.command is None  # the embedded engine


def test_the_three_channel_example_enables_each_platform_with_its_own_secrets() -> None:
    channels = example("all-channels.toml").channels
    assert channels.telegram.enabled and channels.discord.enabled and channels.slack.enabled
    names = {
        channels.telegram.token.name if channels.telegram.token else None,
        channels.discord.token.name if channels.discord.token else None,
        channels.slack.bot_token.name if channels.slack.bot_token else None,
        channels.slack.app_token.name if channels.slack.app_token else None,
    }
    assert names == {"telegram_token", "discord_token", "slack_bot_token", "slack_app_token"}
    assert {channels.telegram.dm_policy, channels.discord.dm_policy, channels.slack.dm_policy} == {"pairing"}


def test_the_ollama_example_asks_ollama_on_this_machine_first_and_the_local_model_last() -> None:
    first, *_, last = example("ollama-local-fallback.toml").llm.providers
    url = urlsplit(first.base_url or "")
    assert first.kind == "openai" and url.hostname == "127.0.0.1" and url.port == 11434
    assert url.path == "/v1" and first.model
    assert first.api_key is None  # a local Ollama wants no key
    assert last.kind == "local"


def test_the_anthropic_example_asks_claude_first_with_a_local_fallback() -> None:
    providers = example("anthropic-local-fallback.toml").llm.providers
    assert [p.kind for p in providers] == ["anthropic", "local"]
    assert providers[0].api_key is not None and providers[0].api_key.name == "anthropic_api_key"


def test_the_remote_mbe_example_reaches_mbe_over_http_with_a_key() -> None:
    mbe = example("remote-mbe.toml").mbe
    assert mbe.url is not None and urlsplit(mbe.url).scheme in ("http", "https")
    assert urlsplit(mbe.url).path == "/mcp"
    assert mbe.command is None  # no embedded engine is spawned
    assert mbe.api_key is not None and mbe.api_key.name == "mbe_api_key"


@pytest.mark.parametrize("name", NAMES)
def test_no_example_holds_anything_token_shaped(name: str) -> None:
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    assert redact(text) == text, "looks like a real credential"
    # Long runs of letters and digits (keys, tokens, hashes) have no place in a copied file either.
    assert re.findall(r"[A-Za-z0-9_-]{32,}", text) == []


@pytest.mark.parametrize("name", NAMES)
def test_every_secret_an_example_uses_comes_with_the_command_that_stores_it(name: str) -> None:
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    used = set(re.findall(r'"secret:([a-z0-9_]+)"', text))
    assert used, "each example needs at least one secret (a bot token)"
    told = set(re.findall(r"mbe-gateway secrets set ([a-z0-9_]+)", text))
    assert used <= told, f"no `mbe-gateway secrets set` line for {sorted(used - told)}"


@pytest.fixture
def env(tmp_path: Path, home: Path) -> dict[str, str]:
    """A fresh machine: the isolated home, no keyring, no secrets in the environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MBE_GATEWAY_SECRET_")}
    return {
        **clean,
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "COLUMNS": "400",
    }


def test_each_example_passes_config_check_as_a_user_runs_it(env: dict[str, str]) -> None:
    said = {}
    for name in NAMES:
        check = subprocess.run(
            [SCRIPT, "--config", str(EXAMPLES / name), "config", "check"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert check.returncode == 0, f"{name}: {check.stderr}"
        said[name] = check.stdout
    assert all("is valid" in out for out in said.values())
    assert all("`mbe-gateway doctor` checks its secrets" in out for out in said.values())  # the next step
    assert "channels on: telegram, discord, slack" in said["all-channels.toml"]
    assert "MBE: url http://gpu-box:8001/mcp" in said["remote-mbe.toml"]


def test_doctor_on_a_copied_example_names_each_secret_still_to_store(env: dict[str, str], home: Path) -> None:
    # `config check` validates the file only (and says so, pointing here);
    # `doctor` is what says which secrets are missing, and how to set each one here.
    path = str(EXAMPLES / "all-channels.toml")
    doctor = subprocess.run(
        [SCRIPT, "--config", path, "doctor"], env=env, capture_output=True, text=True, timeout=120
    )
    assert doctor.returncode == 1
    assert "Traceback" not in doctor.stdout + doctor.stderr
    for name in ("telegram_token", "discord_token", "slack_bot_token", "slack_app_token", "openai_api_key"):
        assert f"✗ secret {name}" in doctor.stdout
        assert f"MBE_GATEWAY_SECRET_{name.upper()}" in doctor.stdout  # and how to set it here
    assert "needs the secrets above" in doctor.stdout  # nothing is dialled without them
