"""mbe-gateway: a personal AI assistant on your own machine, with MBE's memory over MCP."""

__version__ = "0.1.0"
