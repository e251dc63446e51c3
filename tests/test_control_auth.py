"""The control plane's tokens as the owner meets them: made once, kept, checked, and refused
when they could not protect anything; and a listener that stays on loopback unless told."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mbe_gateway.config import ControlSettings, SecretsSettings, is_loopback, load_config
from mbe_gateway.control.auth import ADMIN_TOKEN, READ_TOKEN, Tokens, allows, client_token, ensure_tokens
from mbe_gateway.control.server import ControlServer
from mbe_gateway.errors import ConfigError, SecretError
from mbe_gateway.secrets import Secrets


def _file_secrets(home: Path) -> Secrets:
    return Secrets(SecretsSettings(backend="file"), home)


def test_tokens_are_made_once_random_and_kept(home: Path) -> None:
    tokens, made = ensure_tokens(_file_secrets(home))
    assert made == (ADMIN_TOKEN, READ_TOKEN)
    assert len(tokens.admin) == len(tokens.read) == 43  # 32 random bytes, URL-safe base64
    assert tokens.admin != tokens.read

    again, made_again = ensure_tokens(_file_secrets(home))
    assert made_again == ()
    assert again == tokens
    stored = json.loads((home / "secrets.json").read_text())["secrets"]
    assert stored == {ADMIN_TOKEN: tokens.admin, READ_TOKEN: tokens.read}
    assert tokens.admin not in repr(tokens) and tokens.read not in repr(tokens)


def test_each_token_grants_its_own_scope_and_nothing_else_does(home: Path) -> None:
    tokens, _ = ensure_tokens(_file_secrets(home))
    assert tokens.scope_of(tokens.admin) == "admin"
    assert tokens.scope_of(tokens.read) == "read"
    for wrong in (None, "", 7, tokens.admin[:-1], tokens.admin + " ", tokens.read.upper(), "\udcff"):
        assert tokens.scope_of(wrong) is None, wrong
    assert allows("admin", "admin") and allows("admin", "read") and allows("read", "read")
    assert not allows("read", "admin")


def test_a_client_uses_the_read_token_for_reads_and_the_admin_token_for_changes(home: Path) -> None:
    secrets = _file_secrets(home)
    with pytest.raises(SecretError, match="mbe-gateway init"):
        client_token(secrets, "read")
    tokens, _ = ensure_tokens(secrets)
    assert client_token(secrets, "read") == tokens.read
    assert client_token(secrets, "admin") == tokens.admin


def test_tokens_set_by_hand_must_be_long_and_different(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBE_GATEWAY_SECRET_CONTROL_ADMIN_TOKEN", "hunter2")
    monkeypatch.setenv("MBE_GATEWAY_SECRET_CONTROL_READ_TOKEN", "r" * 40)
    with pytest.raises(SecretError, match="too short") as short:
        ensure_tokens(_file_secrets(home))
    assert "hunter2" not in str(short.value)

    monkeypatch.setenv("MBE_GATEWAY_SECRET_CONTROL_ADMIN_TOKEN", "r" * 40)
    with pytest.raises(SecretError, match="must differ"):
        ensure_tokens(_file_secrets(home))


def test_without_a_place_to_keep_tokens_the_error_says_how_to_set_them(home: Path) -> None:
    env_only = Secrets(SecretsSettings(backend="env"), home)
    with pytest.raises(SecretError) as missing:
        ensure_tokens(env_only)
    assert "MBE_GATEWAY_SECRET_CONTROL_ADMIN_TOKEN" in str(missing.value)


def test_the_control_plane_stays_on_loopback_unless_told(tmp_path: Path) -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST."))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.20", "gateway.lan", "example.com"))

    config = tmp_path / "config.toml"
    config.write_text('[control]\nhost = "0.0.0.0"\n')
    with pytest.raises(ConfigError, match="allow_remote") as refused:
        load_config(config)
    assert "[control] host" in str(refused.value)

    config.write_text('[control]\nhost = "0.0.0.0"\nallow_remote = true\nport = 9000\n')
    assert load_config(config).control == ControlSettings(host="0.0.0.0", port=9000, allow_remote=True)
    assert load_config(tmp_path / "absent.toml").control == ControlSettings("127.0.0.1", 18789, False)


@pytest.mark.anyio
async def test_a_server_given_a_remote_address_without_permission_does_not_listen() -> None:
    tokens = Tokens(admin="a" * 43, read="r" * 43)
    server = ControlServer(None, ControlSettings(host="0.0.0.0", port=0), tokens)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="allow_remote"):
        await server.run()
    assert server.address is None
