"""Secrets as a user meets them: the keyring when it is a real one, env vars, the opt-in file.

The keyring is the real keyring API with keyrings.alt's file-backed backend under tmp (or
keyring's own `fail` backend for a box with no keyring at all).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import keyring
import keyring.core
import pytest

from mbe_gateway.config import SecretRef, SecretsBackend, SecretsSettings
from mbe_gateway.errors import InsecureSecretFile, SecretError
from mbe_gateway.secrets import SecretEntry, Secrets

PLAINTEXT = "keyrings.alt.file.PlaintextKeyring"
NO_KEYRING = "keyring.backends.fail.Keyring"
TOKEN = "8123456789:AAH-the-real-token-value"

UseKeyring = Callable[[str], None]


@pytest.fixture
def use_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[UseKeyring]:
    """Point keyring at a backend (by class name) whose files, if any, live under tmp."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))

    def use(backend: str) -> None:
        monkeypatch.setenv("PYTHON_KEYRING_BACKEND", backend)
        keyring.core.init_backend()

    use(NO_KEYRING)
    yield use
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", NO_KEYRING)
    keyring.core.init_backend()


def _secrets(home: Path, backend: SecretsBackend) -> Secrets:
    return Secrets(SecretsSettings(backend=backend), home)


def test_a_secret_stored_in_the_keyring_comes_back_and_is_listed_by_name(
    home: Path, use_keyring: UseKeyring
) -> None:
    use_keyring(PLAINTEXT)
    secrets = _secrets(home, "keyring")
    where = secrets.set("Telegram_Token", TOKEN)
    assert "keyring" in where
    assert secrets.get(SecretRef("telegram_token")) == TOKEN
    assert secrets.get("secret:TELEGRAM_TOKEN") == TOKEN
    assert keyring.get_password("mbe-gateway", "telegram_token") == TOKEN  # service, username
    assert secrets.entries() == [SecretEntry("telegram_token", ("keyring",))]
    index = (home / "secrets-index.json").read_text()
    assert "telegram_token" in index and TOKEN not in index
    assert "plain text" in secrets.backend_description()


def test_a_deleted_secret_is_reported_missing_by_name_only(home: Path, use_keyring: UseKeyring) -> None:
    use_keyring(PLAINTEXT)
    secrets = _secrets(home, "keyring")
    secrets.set("discord_token", TOKEN)
    secrets.delete("discord_token")
    assert secrets.names() == []
    with pytest.raises(SecretError) as missing:
        secrets.get("discord_token")
    message = str(missing.value)
    assert "discord_token" in message and "mbe-gateway secrets set discord_token" in message
    assert "MBE_GATEWAY_SECRET_DISCORD_TOKEN" in message and TOKEN not in message
    with pytest.raises(SecretError, match="not in the keyring"):
        secrets.delete("discord_token")


def test_the_environment_wins_over_the_keyring(
    home: Path, use_keyring: UseKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_keyring(PLAINTEXT)
    secrets = _secrets(home, "keyring")
    secrets.set("openai_api_key", "sk-from-keyring")
    monkeypatch.setenv("MBE_GATEWAY_SECRET_OPENAI_API_KEY", "sk-from-env")
    assert secrets.get("openai_api_key") == "sk-from-env"
    assert secrets.entries() == [SecretEntry("openai_api_key", ("env", "keyring"))]


def test_auto_will_not_put_secrets_in_a_plain_text_keyring(home: Path, use_keyring: UseKeyring) -> None:
    use_keyring(PLAINTEXT)
    secrets = _secrets(home, "auto")
    with pytest.raises(SecretError) as refused:
        secrets.set("telegram_token", TOKEN)
    message = str(refused.value)
    assert message.startswith("cannot store secret telegram_token: no secure OS keyring")
    assert "MBE_GATEWAY_SECRET_TELEGRAM_TOKEN" in message
    assert '[secrets] backend = "file"' in message and TOKEN not in message
    assert keyring.get_password("mbe-gateway", "telegram_token") is None
    assert secrets.backend_description().startswith("environment variables MBE_GATEWAY_SECRET_<NAME> only")


def test_a_box_with_no_keyring_explains_the_two_honest_alternatives(
    home: Path, use_keyring: UseKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_keyring(NO_KEYRING)
    secrets = _secrets(home, "auto")
    with pytest.raises(SecretError) as missing:
        secrets.get("slack_bot_token")
    message = str(missing.value)
    assert "secret slack_bot_token is not set" in message
    assert "MBE_GATEWAY_SECRET_SLACK_BOT_TOKEN" in message and 'backend = "file"' in message
    assert "fail.Keyring" in message
    monkeypatch.setenv("MBE_GATEWAY_SECRET_SLACK_BOT_TOKEN", "xoxb-env")
    assert secrets.get("slack_bot_token") == "xoxb-env"
    with pytest.raises(SecretError, match="no secure OS keyring"):
        _secrets(home, "keyring").set("x", "y")


def test_the_opt_in_file_is_created_private_whatever_the_umask(
    home: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = _secrets(home, "file")
    old_umask = os.umask(0)
    try:
        secrets.set("anthropic_api_key", "sk-ant-value")
    finally:
        os.umask(old_umask)
    path = home / "secrets.json"
    assert path.stat().st_mode & 0o777 == 0o600
    caplog.clear()
    logger = logging.getLogger("mbe_gateway.secrets")
    monkeypatch.setattr(logger, "handlers", [caplog.handler])  # whatever logs.configure() did
    monkeypatch.setattr(logger, "propagate", False)
    with caplog.at_level(logging.WARNING, logger="mbe_gateway.secrets"):
        assert secrets.get("anthropic_api_key") == "sk-ant-value"
        assert secrets.get("anthropic_api_key") == "sk-ant-value"
    warnings = [r for r in caplog.records if "plain-text file" in r.getMessage()]
    assert len(warnings) == 2  # a warning each time it is used
    assert all("sk-ant-value" not in r.getMessage() for r in caplog.records)
    assert secrets.entries() == [SecretEntry("anthropic_api_key", ("file",))]
    secrets.delete("anthropic_api_key")
    assert secrets.names() == []


def test_a_secrets_file_others_can_read_is_refused_with_the_fix(home: Path) -> None:
    secrets = _secrets(home, "file")
    secrets.set("telegram_token", TOKEN)
    path = home / "secrets.json"
    path.chmod(0o644)
    with pytest.raises(InsecureSecretFile) as refused:
        secrets.get("telegram_token")
    assert f"chmod 600 {path}" in str(refused.value) and TOKEN not in str(refused.value)
    with pytest.raises(InsecureSecretFile):
        secrets.set("other", "value")


def test_env_only_backend_never_stores_anything(home: Path) -> None:
    secrets = _secrets(home, "env")
    with pytest.raises(SecretError, match="MBE_GATEWAY_SECRET_MBE_API_KEY"):
        secrets.set("mbe_api_key", "k")
    with pytest.raises(SecretError, match="set the environment variable MBE_GATEWAY_SECRET_MBE_API_KEY"):
        secrets.get("mbe_api_key")
    assert list(home.iterdir()) == []


def test_a_child_environment_gets_references_resolved_and_plain_values_kept(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MBE_GATEWAY_SECRET_MBE_LICENSE", "lic-123")
    secrets = _secrets(home, "env")
    env = secrets.resolve_env({"MBE_LICENSE": "secret:mbe_license", "MBE_MODE": "fast"})
    assert env == {"MBE_LICENSE": "lic-123", "MBE_MODE": "fast"}


def test_bad_names_and_bad_values_are_refused_without_echo(home: Path) -> None:
    secrets = _secrets(home, "file")
    with pytest.raises(SecretError, match="letters, digits and _"):
        secrets.get("my-token")
    with pytest.raises(SecretError) as padded:
        secrets.set("t", " padded-value\n")
    assert "padded-value" not in str(padded.value)
    assert "value" not in repr(secrets)
