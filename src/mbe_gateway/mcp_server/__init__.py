"""`mbe-gateway mcp`: the gateway as an MCP server over stdio (docs/mcp.md).

tools.py       what it offers: the MBE tools as the contract declares them, and the gateway's own
server.py      the MCP server, and the choice of backend for each call
daemon.py      with a daemon running: every call forwarded over the control protocol
standalone.py  without one: an engine of its own, and the store read directly
"""

from mbe_gateway.mcp_server.server import serve

__all__ = ["serve"]
