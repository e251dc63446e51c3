"""`mbe-gateway init`, the setup wizard, as a user runs it: the real CLI in a subprocess,
answered on stdin (the interactive path) or by flags (the scripted path)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mbe_gateway.config import SecretsSettings, default_config_text, load_config
from mbe_gateway.secrets import Secrets

SCRIPT = str(Path(sys.executable).with_name("mbe-gateway"))
TELEGRAM = "8123456789:AAH-wizard-token-value-abc"
SLACK_BOT = "xoxb-1111-2222-wizard"
SLACK_APP = "xapp-1-A111-wizard"
ANTHROPIC = "sk-ant-wizard-key-0001"

# The user's own file: a comment, a key the wizard never asks about, the opt-in secrets file.
MINE = """\
# my assistant, my rules
[assistant]
persona = "Be brief."   # keep it short

[secrets]
backend = "file"
"""


@pytest.fixture
def env(tmp_path: Path, home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "COLUMNS": "200",
    }


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return tmp_path / "config.toml"  # MBE_GATEWAY_CONFIG (the home fixture)


def init(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, "init", *args], input=stdin, env=env, capture_output=True, text=True, timeout=120
    )


def stored(home: Path) -> Secrets:
    return Secrets(SecretsSettings(backend="file"), home)


def test_init_yes_on_a_bare_machine_writes_the_commented_default_and_says_how_to_make_tokens(
    env: dict[str, str], config: Path
) -> None:
    done = init(env, "--yes", "--skip-doctor")
    assert done.returncode == 0, done.stderr
    assert config.read_text() == default_config_text()
    # No keyring here: the tokens cannot be stored, and it says what to do instead.
    assert "MBE_GATEWAY_SECRET_CONTROL_ADMIN_TOKEN" in done.stdout and 'backend = "file"' in done.stdout
    assert "mbe-gateway service install" in done.stdout  # the next steps


def test_the_interactive_wizard_stores_tokens_unechoed_and_edits_the_users_file(
    env: dict[str, str], config: Path, home: Path
) -> None:
    config.write_text(MINE)
    answers = [
        "",  # language: keep en
        "telegram, slack",
        TELEGRAM,
        "xapp-1-oops",  # an app token where the bot token belongs...
        SLACK_BOT,  # ...so it is asked again
        SLACK_APP,
        "allowlist",
        "123456789, 987654321",  # telegram ids
        "U0123",  # slack ids
        "anthropic,local",
        "",  # anthropic model: the default
        ANTHROPIC,
        "~/models/small.gguf",
    ]
    done = init(env, "--skip-doctor", stdin="\n".join(answers) + "\n")
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    for secret in (TELEGRAM, SLACK_BOT, SLACK_APP, ANTHROPIC):
        assert secret not in out and secret not in config.read_text()
    assert "https://t.me/BotFather" in out and "https://api.slack.com/apps" in out
    assert "That does not look like slack_bot_token (expected xoxb-…)" in out

    text = config.read_text()
    assert text.startswith("# my assistant, my rules\n")
    assert 'persona = "Be brief."   # keep it short' in text
    written = load_config(config)
    telegram, slack = written.channels.telegram, written.channels.slack
    assert telegram.enabled and str(telegram.token) == "secret:telegram_token"
    assert telegram.dm_policy == "allowlist" and telegram.allow_from == ("123456789", "987654321")
    assert slack.enabled and slack.allow_from == ("U0123",) and not written.channels.discord.enabled
    assert [(p.kind, p.model, p.path) for p in written.llm.providers] == [
        ("anthropic", "claude-sonnet-4-5", None),
        ("local", "", str(Path("~/models/small.gguf").expanduser())),
    ]
    assert str(written.llm.providers[0].api_key) == "secret:anthropic_api_key"
    assert config.with_name("config.toml.bak").read_text() == MINE

    secrets = stored(home)
    assert secrets.get("telegram_token") == TELEGRAM and secrets.get("slack_bot_token") == SLACK_BOT
    assert secrets.get("slack_app_token") == SLACK_APP and secrets.get("anthropic_api_key") == ANTHROPIC
    assert len(secrets.get("control_admin_token")) >= 32 and len(secrets.get("control_read_token")) >= 32
    assert "Made the control plane's tokens" in out


def test_on_a_machine_without_a_keyring_the_wizard_offers_the_private_file_in_chinese(
    env: dict[str, str], config: Path, home: Path
) -> None:
    # No keyring here (the env fixture): before any token is typed, where to keep them is asked.
    done = init(env, "--skip-doctor", stdin=f"zh\n\ntelegram\n{TELEGRAM}\n\nnone\n")
    assert done.returncode == 0, done.stderr
    assert (
        "没有安全的密钥环" in done.stdout
        and "在哪些聊天应用上回复" in done.stdout
        and "接下来" in done.stdout
    )
    written = load_config(config)
    assert written.gateway.language == "zh" and written.secrets.backend == "file"  # Enter: the default
    assert stored(home).get("telegram_token") == TELEGRAM and TELEGRAM not in done.stdout + done.stderr
    assert len(stored(home).get("control_admin_token")) >= 32


def test_with_secrets_in_the_environment_no_token_is_asked_and_the_variable_is_named(
    env: dict[str, str], config: Path, home: Path
) -> None:
    done = init(env, "--skip-doctor", "--secrets-backend=env", stdin="en\ndiscord\n\nnone\n")
    assert done.returncode == 0, done.stderr
    assert "discord_token: set the environment variable MBE_GATEWAY_SECRET_DISCORD_TOKEN" in done.stdout
    written = load_config(config)
    assert written.secrets.backend == "env" and written.channels.discord.enabled
    assert not (home / "secrets.json").exists()


def test_running_init_again_edits_only_what_the_flags_change(
    env: dict[str, str], config: Path, home: Path, tmp_path: Path
) -> None:
    config.write_text(MINE)
    token_file = tmp_path / "token.txt"
    token_file.write_text(TELEGRAM + "\n")
    first = init(
        env,
        "--yes",
        "--skip-doctor",
        "--channels=telegram",
        "--dm-policy=open",
        "--providers=openai",
        "--openai-base-url=http://127.0.0.1:11434/v1",
        "--openai-model=qwen2.5:7b",
        f"--secret-file=telegram_token={token_file}",
    )
    assert first.returncode == 0, first.stderr
    assert stored(home).get("telegram_token") == TELEGRAM
    with config.open("a") as f:  # the user adds a key of their own to the provider
        f.write("timeout = 30.0   # slow box\n")
    tokens = (stored(home).get("control_admin_token"), stored(home).get("control_read_token"))

    again = init(env, "--yes", "--skip-doctor", "--openai-model=llama3.2", "--language=zh")
    assert again.returncode == 0, again.stderr
    written = load_config(config)
    assert written.gateway.language == "zh" and written.assistant.persona == "Be brief."
    assert written.channels.telegram.enabled and written.channels.telegram.dm_policy == "open"
    (provider,) = written.llm.providers
    assert (provider.model, provider.base_url, provider.timeout) == (
        "llama3.2",
        "http://127.0.0.1:11434/v1",
        30.0,
    )
    assert "timeout = 30.0   # slow box" in config.read_text()
    assert (stored(home).get("control_admin_token"), stored(home).get("control_read_token")) == tokens

    before = config.read_text()
    same = init(env, "--yes", "--skip-doctor")
    assert same.returncode == 0 and "没有变化" in same.stdout  # (in Chinese now) "is unchanged"
    assert config.read_text() == before

    off = init(env, "--yes", "--skip-doctor", "--channels=none", "--providers=none")
    assert off.returncode == 0, off.stderr
    document = tomllib.loads(config.read_text())
    assert document["channels"]["telegram"] == {
        "enabled": False,
        "token": "secret:telegram_token",
        "dm_policy": "open",
    }
    assert "llm" not in document


@pytest.mark.parametrize(
    ("args", "stdin", "says"),
    [
        (["--yes", "--dm-policy=everyone", "--channels=telegram"], "", "--dm-policy: expected pairing"),
        (["--yes", "--channels=telegram,irc"], "", "--channels: expected a comma-separated list"),
        (["--yes", "--channels=telegram", "--dm-policy=allowlist"], "", "needs user ids"),
        (["--yes", "--secret-file=telegram_tokn=/dev/null"], "", "is empty"),
        (["--yes", "--providers=openai", "--openai-base-url=ftp://x"], "", "base_url: expected an http://"),
        ([], "en\ntelegram\n", 'No answer to "telegram_token (hidden)"'),
    ],
)
def test_a_wrong_or_missing_answer_is_one_clear_error_and_changes_nothing(
    env: dict[str, str], config: Path, home: Path, args: list[str], stdin: str, says: str
) -> None:
    config.write_text(MINE)
    done = init(env, "--skip-doctor", *args, stdin=stdin)
    assert done.returncode == 1
    assert says in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert config.read_text() == MINE and not config.with_name("config.toml.bak").exists()
    assert not (home / "secrets.json").exists()


def test_a_secret_file_for_no_question_is_refused(env: dict[str, str], config: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token.txt"
    token_file.write_text(TELEGRAM)
    done = init(env, "--yes", "--skip-doctor", f"--secret-file=telegram_tokn={token_file}")
    assert done.returncode == 1 and "no question asks for that secret" in done.stderr
    assert not config.exists()


def test_init_runs_doctor_and_then_prints_the_next_steps(env: dict[str, str], config: Path) -> None:
    done = init(env, "--yes", "--providers=openai", "--openai-base-url=http://127.0.0.1:9/v1")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "`mbe-gateway doctor`" in out and "✓ config" in out and "✓ mbe server" in out
    assert out.index("✓ config") < out.index("Next:")
