"""The embedded MBE engine: an MCP server (stdio) implementing the MBE tool contract on its
own SQLite file, for when no MBE is installed. Run it as `python -m mbe_gateway.engine`
or `mbe-gateway engine`; it imports nothing of the gateway but contract, errors and paths.
"""

from mbe_gateway.engine.server import serve

__all__ = ["serve"]
