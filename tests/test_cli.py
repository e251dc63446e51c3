"""The `mbe-gateway` command as a user runs it: the real console script in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from mbe_gateway import contract
from mbe_gateway.config import SecretsSettings, default_config_text
from mbe_gateway.secrets import Secrets

SCRIPT = str(Path(sys.executable).with_name("mbe-gateway"))
HEAVY = ("mcp", "aiosqlite", "keyring", "jieba", "anyio", "aiogram", "hikari", "slack_sdk")
TOKEN = "8123456789:AAH-cli-token-value"


@pytest.fixture
def env(tmp_path: Path, home: Path) -> dict[str, str]:
    """The subprocess environment: the isolated home, and a keyring that cannot store anything."""
    return {
        **os.environ,
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "COLUMNS": "200",
    }


def run(
    env: dict[str, str], *args: str, stdin: str = "", module: bool = False
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mbe_gateway"] if module else [SCRIPT]
    return subprocess.run([*command, *args], input=stdin, env=env, capture_output=True, text=True, timeout=60)


def test_help_is_answered_without_importing_the_heavy_parts(env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mbe_gateway", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "secrets" in done.stdout and "doctor" in done.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines()}
    assert "typer" in imported
    assert imported.isdisjoint(HEAVY), imported & set(HEAVY)


def test_a_bad_config_is_one_red_line_exit_1_and_touches_no_data(
    env: dict[str, str], home: Path, tmp_path: Path
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[mbe]\ncall_timeout = "abc"\n')
    for command in (["config", "check"], ["secrets", "list"]):
        done = run({**env, "FORCE_COLOR": "1"}, "--config", str(config), *command)
        assert done.returncode == 1
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and "\x1b[1;31m" in lines[0], done.stderr  # red
        assert f'{config}: [mbe] call_timeout: expected a number of seconds > 0, got "abc"' in lines[0]
        assert "Traceback" not in done.stderr and done.stdout == ""
    assert list(home.iterdir()) == []


def test_debug_shows_the_traceback(env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[mbe\n")
    done = run(env, "--debug", "--config", str(config), "config", "check")
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "ConfigError" in done.stderr and "line 1, column 5" in done.stderr


def test_usage_errors_exit_2(env: dict[str, str]) -> None:
    assert run(env, "secrets", "set").returncode == 2
    assert run(env, "no-such-command").returncode == 2


def test_init_writes_the_default_file_and_force_starts_over_keeping_a_backup(
    env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "nested" / "dir" / "config.toml"
    first = run(env, "--config", str(config), "init", "--yes", "--skip-doctor")
    assert first.returncode == 0 and str(config) in first.stdout
    assert config.read_text() == default_config_text()
    config.write_text("# my edits\n")
    kept = run(env, "--config", str(config), "init", "--yes", "--skip-doctor")  # edits: nothing to change
    assert kept.returncode == 0 and "is unchanged" in kept.stdout
    assert config.read_text() == "# my edits\n"
    forced = run(env, "--config", str(config), "init", "--yes", "--skip-doctor", "--force")
    assert forced.returncode == 0
    assert config.read_text() == default_config_text()
    assert config.with_name("config.toml.bak").read_text() == "# my edits\n"
    checked = run(env, "--config", str(config), "config", "check")
    assert checked.returncode == 0 and "is valid" in checked.stdout


def test_config_path_follows_the_option_then_the_environment(env: dict[str, str], tmp_path: Path) -> None:
    assert run(env, "config", "path").stdout.strip() == str(tmp_path / "config.toml")  # MBE_GATEWAY_CONFIG
    assert run(env, "--config", "/elsewhere/c.toml", "config", "path").stdout.strip() == "/elsewhere/c.toml"


def test_a_secret_round_trips_via_stdin_and_list_shows_only_its_name(
    env: dict[str, str], home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyring_env = {**env, "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring"}
    config = tmp_path / "config.toml"
    config.write_text('[secrets]\nbackend = "keyring"\n')
    stored = run(keyring_env, "secrets", "set", "telegram_token", stdin=TOKEN + "\n", module=True)
    assert stored.returncode == 0, stored.stderr
    assert "telegram_token" in stored.stdout and TOKEN not in stored.stdout + stored.stderr

    listed = run(keyring_env, "secrets", "list")
    assert listed.returncode == 0 and "telegram_token" in listed.stdout and "keyring" in listed.stdout
    assert TOKEN not in listed.stdout + listed.stderr

    for name in ("PYTHON_KEYRING_BACKEND", "XDG_DATA_HOME"):  # read it back through the real API
        monkeypatch.setenv(name, keyring_env[name])
    import keyring.core

    keyring.core.init_backend()
    try:
        assert Secrets(SecretsSettings(backend="keyring"), home).get("telegram_token") == TOKEN
    finally:
        monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
        keyring.core.init_backend()

    assert run(keyring_env, "secrets", "delete", "telegram_token").returncode == 0
    assert "No secrets yet" in run(keyring_env, "secrets", "list").stdout


def test_storing_a_secret_without_a_secure_keyring_says_what_to_do_instead(env: dict[str, str]) -> None:
    done = run(env, "secrets", "set", "telegram_token", stdin=TOKEN)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1
    assert "MBE_GATEWAY_SECRET_TELEGRAM_TOKEN" in done.stderr and 'backend = "file"' in done.stderr
    assert TOKEN not in done.stderr + done.stdout


def test_version_names_the_program(env: dict[str, str]) -> None:
    done = run(env, "version", module=True)
    assert done.returncode == 0 and done.stdout.startswith("mbe-gateway 0.")


@pytest.mark.anyio
async def test_the_engine_command_serves_the_mbe_tools_over_stdio(
    tmp_path: Path, env: dict[str, str]
) -> None:
    db = tmp_path / "engine" / "engine.sqlite3"
    params = StdioServerParameters(command=SCRIPT, args=["engine", "--db", str(db)], env=env)
    async with Client(params, read_timeout_seconds=30) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
    assert set(contract.REQUIRED_TOOLS) <= tools
    assert db.exists()


def test_token_prints_the_control_token_for_the_page_and_says_where_the_page_is(env: dict[str, str]) -> None:
    admin, read = "a" * 43, "r" * 43
    tokens = {"MBE_GATEWAY_SECRET_CONTROL_ADMIN_TOKEN": admin, "MBE_GATEWAY_SECRET_CONTROL_READ_TOKEN": read}
    shown = run({**env, **tokens}, "token")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == admin + "\n"  # stdout is the token alone: `mbe-gateway token | pbcopy`
    assert "http://127.0.0.1:18789/" in shown.stderr and admin not in shown.stderr
    assert run({**env, **tokens}, "token", "--read").stdout == read + "\n"
    missing = run(env, "token")
    assert missing.returncode == 1 and missing.stdout == ""
    assert "control_admin_token" in missing.stderr and "mbe-gateway init" in missing.stderr
