"""The MCP client for MBE: spawn over stdio or reach over streamable HTTP, typed calls, respawn."""

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
