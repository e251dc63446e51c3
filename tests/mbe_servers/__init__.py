"""MCP servers the MBE client tests run as real child processes: one well-behaved, many broken."""
