"""The config file as a user writes it: defaults, typed values, and errors that say what to fix."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from mbe_gateway.config import (
    Config,
    ProviderSettings,
    SecretRef,
    default_config_text,
    load_config,
)
from mbe_gateway.errors import ConfigError


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "config.toml"


def _load(path: Path, text: str) -> Config:
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def _error(path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _load(path, text)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    return message.removeprefix(f"{path}: ")


def test_no_config_file_means_the_embedded_engine_and_no_providers(tmp_path: Path) -> None:
    config = load_config()
    assert config.path == tmp_path / "config.toml"  # MBE_GATEWAY_CONFIG, set by conftest
    assert not config.exists
    assert config.mbe.command is None and config.mbe.url is None
    assert config.llm.providers == ()
    assert config.channels.telegram.enabled is False
    assert (config.control.host, config.control.port) == ("127.0.0.1", 18789)
    assert config.secrets.backend == "auto"


def test_the_default_file_means_exactly_the_defaults(config_file: Path) -> None:
    config = _load(config_file, default_config_text())
    assert config.exists
    assert replace(config, exists=False) == Config(path=config_file, exists=False)


def test_every_example_in_the_default_file_is_valid_when_uncommented(config_file: Path) -> None:
    text = re.sub(r"(?m)^# (\[.*\]|[A-Za-z_]+ = .*)$", r"\1", default_config_text())
    config = _load(config_file, text)
    assert config.mbe.command == ("mbe", "serve", "--stdio")
    assert [p.kind for p in config.llm.providers] == ["openai", "anthropic", "local"]
    assert config.mbe.env["MBE_LICENSE"] == "secret:mbe_license"
    assert config.channels.slack.app_token == SecretRef("slack_app_token")


def test_a_full_config_is_read_into_typed_values(config_file: Path) -> None:
    config = _load(
        config_file,
        """
[gateway]
language = "zh"
log_level = "DEBUG"

[mbe]
url = "http://gpu-box:8001/mcp"
api_key = "secret:MBE_API_KEY"
call_timeout = 2
pass_env = ["HF_HOME"]

[mbe.env]
MBE_TOKEN = "secret:mbe_token"
MBE_MODE = "fast"

[[llm.providers]]
kind = "openai"
base_url = "http://127.0.0.1:11434/v1/"
model = "qwen2.5:7b"
api_key = "secret:openai_api_key"
temperature = 0

[[llm.providers]]
kind = "local"

[channels.telegram]
enabled = true
token = "secret:telegram_token"
dm_policy = "allowlist"
allow_from = [12345, "67890"]

[channels.slack]
enabled = true
bot_token = "secret:slack_bot_token"
app_token = "secret:slack_app_token"
api_base = "http://127.0.0.1:9000/api"

[control]
port = 18800

[secrets]
backend = "file"
""",
    )
    assert config.gateway.language == "zh" and config.gateway.log_level == "debug"
    assert config.mbe.url == "http://gpu-box:8001/mcp" and config.mbe.command is None
    assert config.mbe.api_key == SecretRef("mbe_api_key")
    assert config.mbe.call_timeout == 2.0 and config.mbe.connect_timeout == 30.0
    assert dict(config.mbe.env) == {"MBE_TOKEN": "secret:mbe_token", "MBE_MODE": "fast"}
    openai, local = config.llm.providers
    assert openai == ProviderSettings(
        kind="openai",
        name="openai:qwen2.5:7b",
        model="qwen2.5:7b",
        base_url="http://127.0.0.1:11434/v1",
        api_key=SecretRef("openai_api_key"),
        temperature=0.0,
    )
    assert local.name == "local:bundled" and local.path is None and local.context_window == 4096
    assert config.channels.telegram.allow_from == ("12345", "67890")
    assert config.channels.slack.api_base == "http://127.0.0.1:9000/api/"  # slack-sdk needs the slash
    assert config.channels.discord.enabled is False
    assert config.control.port == 18800 and config.secrets.backend == "file"


def test_a_command_written_as_one_string_is_split_like_a_shell(config_file: Path) -> None:
    config = _load(config_file, "[mbe]\ncommand = \"mbe serve --model '/opt/my models/x'\"\n")
    assert config.mbe.command == ("mbe", "serve", "--model", "/opt/my models/x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[mbe]\ncall_timeout = "abc"', '[mbe] call_timeout: expected a number of seconds > 0, got "abc"'),
        ("[mbe]\ncall_timeout = true", "[mbe] call_timeout: expected a number of seconds > 0, got true"),
        ("[mbe]\nconnect_timeout = -1", "[mbe] connect_timeout: expected a number of seconds > 0, got -1"),
        ("[mbe]\ncal_timeout = 3", "[mbe] cal_timeout: unknown key; did you mean call_timeout?"),
        ("[gatway]", "[gatway]: unknown section; did you mean [gateway]?"),
        ("mbe = 3", "mbe: expected a table [mbe], got 3"),
        ('[gateway]\nlanguage = "fr"', '[gateway] language: expected "en" | "zh", got "fr"'),
        ('[gateway]\nlog_level = "loud"', "[gateway] log_level: expected"),
        ("[control]\nport = 70000", "[control] port: expected a whole number from 1 to 65535, got 70000"),
        ("[control]\nport = 0", "[control] port: expected a whole number from 1 to 65535, got 0"),
        ('[secrets]\nbackend = "vault"', '[secrets] backend: expected "auto" | "keyring" | "file" | "env"'),
        (
            '[mbe]\ncommand = ["mbe"]\nurl = "http://x/mcp"',
            "[mbe] url: command and url are exclusive",
        ),
        ("[mbe]\ncommand = []", "[mbe] command: expected a command"),
        ('[mbe]\npass_env = ["HOME", "not a name"]', "[mbe] pass_env: expected a list of environment"),
        ('[mbe.env]\n"BAD-NAME" = "x"', "[mbe.env] BAD-NAME: expected an environment variable name"),
        ('[mbe.env]\nX = "secret:no-dashes"', '[mbe.env] X: expected "secret:NAME"'),
        ('[mbe]\nurl = "ftp://host/mcp"', "[mbe] url: expected an http:// or https:// URL with a host"),
        ('[mbe]\nurl = "http:///mcp"', "[mbe] url: expected an http:// or https:// URL"),
        ('[[llm.providers]]\nmodel = "x"', '[[llm.providers]] #1 kind: required: one of "openai"'),
        (
            '[[llm.providers]]\nkind = "openai"\nmodel = "m"',
            '[[llm.providers]] #1 base_url: required for kind = "openai"',
        ),
        (
            '[[llm.providers]]\nkind = "anthropic"',
            '[[llm.providers]] #1 model: required for kind = "anthropic"',
        ),
        (
            '[[llm.providers]]\nkind = "local"\n[[llm.providers]]\nkind = "mbe"\npath = "/m.gguf"',
            '[[llm.providers]] #2 path: only used by kind = "local"',
        ),
        (
            '[[llm.providers]]\nkind = "local"\n[[llm.providers]]\nkind = "local"',
            '[[llm.providers]] #2 name: "local:bundled" is used twice',
        ),
        (
            '[[llm.providers]]\nkind = "local"\ntemprature = 1',
            "[[llm.providers]] #1 temprature: unknown key; did you mean temperature?",
        ),
        (
            '[[llm.providers]]\nkind = "local"\ntemperature = 3',
            "[[llm.providers]] #1 temperature: expected a number from 0 to 2",
        ),
        ("[llm.providers]\nkind = 'local'", "[llm] providers: expected [[llm.providers]] blocks"),
        ("[channels.telgram]", "[channels] telgram: unknown channel; did you mean telegram?"),
        ("[channels.telegram]\nenabled = true", "[channels.telegram] token: required when enabled = true"),
        (
            '[channels.slack]\nenabled = true\nbot_token = "secret:b"',
            "[channels.slack] app_token: required when enabled = true; run `mbe-gateway secrets set "
            'slack_app_token` and write app_token = "secret:slack_app_token"',
        ),
        (
            '[channels.discord]\nenabled = "yes"',
            '[channels.discord] enabled: expected true or false, got "yes"',
        ),
        (
            '[channels.discord]\ndm_policy = "allowlist"',
            '[channels.discord] allow_from: dm_policy = "allowlist" needs at least one user id',
        ),
        (
            '[channels.telegram]\napi_base = "api.telegram.org"',
            "[channels.telegram] api_base: expected an http",
        ),
    ],
)
def test_a_wrong_value_names_the_file_key_and_what_was_expected(
    config_file: Path, text: str, expected: str
) -> None:
    assert _error(config_file, text + "\n").startswith(expected)


def test_invalid_toml_is_reported_with_line_and_column(config_file: Path) -> None:
    message = _error(config_file, "[mbe]\ncall_timeout = \n")
    assert message.startswith("line 2, column 16: ") and "not valid TOML" in message


def test_a_config_that_is_not_utf8_or_not_a_file_is_reported(config_file: Path) -> None:
    config_file.write_bytes(b'[gateway]\nlanguage = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(config_file)
    config_file.unlink()
    config_file.mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(config_file)


@pytest.mark.parametrize(
    ("section", "key", "suggested"),
    [
        ("channels.telegram", "token", "telegram_token"),
        ("channels.discord", "token", "discord_token"),
        ("channels.slack", "bot_token", "slack_bot_token"),
        ("channels.slack", "app_token", "slack_app_token"),
        ("mbe", "api_key", "mbe_api_key"),
    ],
)
def test_a_token_pasted_into_the_file_is_refused_without_being_echoed(
    config_file: Path, section: str, key: str, suggested: str
) -> None:
    token = "123456789:AAHk-pasted-secret-value_xyz"
    message = _error(config_file, f'[{section}]\n{key} = "{token}"\n')
    assert token not in message and "AAHk" not in message
    assert f"mbe-gateway secrets set {suggested}" in message
    assert f'{key} = "secret:{suggested}"' in message


def test_a_provider_key_pasted_into_the_file_is_refused_without_being_echoed(config_file: Path) -> None:
    text = '[[llm.providers]]\nkind = "anthropic"\nmodel = "m"\napi_key = "sk-ant-pasted-9f8e7d"\n'
    message = _error(config_file, text)
    assert "sk-ant" not in message and "secrets set anthropic_api_key" in message
    numeric = _error(config_file, "[channels.telegram]\ntoken = 8123456789\n")
    assert "8123456789" not in numeric and 'expected a reference "secret:NAME"' in numeric


def test_secret_names_are_case_insensitive(config_file: Path) -> None:
    config = _load(config_file, '[channels.telegram]\ntoken = "secret:Telegram_TOKEN"\n')
    assert config.channels.telegram.token == SecretRef("telegram_token")
    assert str(SecretRef("ABC")) == "secret:abc"
