"""The MCP client for MBE: spawn over stdio or reach over streamable HTTP, typed calls, respawn.

The names are loaded on first use: the MCP SDK that `client` imports costs ~0.7 s and
~27 MiB, and the daemon spawns its engine (`child`, `servers`) and starts its channels
before it needs the client, so a cold start does not wait for that import.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mbe_gateway.mbe.backoff import Backoff
    from mbe_gateway.mbe.client import MBEClient, State
    from mbe_gateway.mbe.servers import HttpServer, Server, StdioServer, embedded_engine, from_settings

__all__ = [
    "Backoff",
    "HttpServer",
    "MBEClient",
    "Server",
    "State",
    "StdioServer",
    "embedded_engine",
    "from_settings",
]

_HOMES = {
    "Backoff": "backoff",
    "MBEClient": "client",
    "State": "client",
    "HttpServer": "servers",
    "Server": "servers",
    "StdioServer": "servers",
    "embedded_engine": "servers",
    "from_settings": "servers",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
