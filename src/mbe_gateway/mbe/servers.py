"""Where MBE is: the two kinds of server the client can be pointed at, as plain values.

The client never reads config files; config.py turns `[mbe]` into one of these and the
client runs what it is given. Both are validated here, once, so the code that spawns or
connects can trust them.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

from mbe_gateway.errors import ConfigError

if TYPE_CHECKING:
    from mbe_gateway.config import MBESettings, SecretRef


@dataclass(frozen=True, slots=True)
class StdioServer:
    """An MCP server we start as our child and talk to over its stdin/stdout.

    The child gets a small environment, not ours: the few variables any program needs
    (see `child.ESSENTIAL_ENV`), MBE_GATEWAY_HOME, the names listed in `pass_env` copied
    from our environment, and then `env` on top. Values are never logged, only names.

    `protocol` is how the MCP session opens: "auto" (the SDK's default: ask for the 2026
    protocol, fall back to the classic handshake) suits any server; "legacy" opens with
    the classic `initialize` handshake, which every server on SDK 1.x or 2.x accepts and
    which costs less per call (2026-protocol requests carry the client's info and
    capabilities in each request's _meta; bench/mcp_roundtrip.py saw ~0.15 ms of ~1.7 ms).
    """

    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    pass_env: tuple[str, ...] = ()
    cwd: Path | None = None
    protocol: Literal["auto", "legacy"] = "auto"

    def __post_init__(self) -> None:
        if not self.command or not self.command[0]:
            raise ConfigError("[mbe] command is empty: give the MBE server's command, e.g. ['mbe', 'serve']")

    @property
    def name(self) -> str:
        """A short name for logs: the program without directory or arguments, or for a Python
        interpreter the script or `-m` module it runs."""
        program, *args = self.command
        if Path(program).name.startswith("python") and args:
            if args[0] == "-m" and len(args) > 1:
                return args[1]
            if not args[0].startswith("-"):
                return Path(args[0]).name
        return Path(program).name


@dataclass(frozen=True, slots=True)
class HttpServer:
    """A remote MBE reached over streamable HTTP; `api_key` goes out as `Authorization: Bearer`."""

    url: str
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"[mbe] url must be an http:// or https:// URL, got {self.name!r}")

    @property
    def name(self) -> str:
        """The URL without credentials or query, safe for logs and error messages."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))


Server = StdioServer | HttpServer


def embedded_engine(db: Path) -> StdioServer:
    """The gateway's own engine on `db`, run by this very interpreter so it sees our packages.

    It is built on the same SDK as this client, so the cheaper classic handshake is safe.
    """
    return StdioServer(
        command=(sys.executable, "-m", "mbe_gateway.engine", "--db", str(db)), protocol="legacy"
    )


class SecretSource(Protocol):
    """What `from_settings` needs of mbe_gateway.secrets.Secrets."""

    def get(self, ref: SecretRef) -> str: ...

    def resolve_env(self, mapping: Mapping[str, str]) -> dict[str, str]: ...


def from_settings(settings: MBESettings, secrets: SecretSource, data_dir: Path) -> Server:
    """The server `[mbe]` names: a remote URL, a command, or (by default) the embedded engine.

    Secrets are resolved here, at the edge, so the client only ever holds values it needs.
    """
    if settings.url is not None:
        key = secrets.get(settings.api_key) if settings.api_key is not None else None
        return HttpServer(settings.url, api_key=key)
    env = secrets.resolve_env(settings.env)
    if settings.command is None:
        engine = embedded_engine(data_dir / "engine.sqlite3")
        return StdioServer(engine.command, env=env, pass_env=settings.pass_env, protocol=engine.protocol)
    return StdioServer(settings.command, env=env, pass_env=settings.pass_env)
