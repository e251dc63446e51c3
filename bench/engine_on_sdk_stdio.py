"""The embedded engine served over the SDK's own `mcp.server.stdio.stdio_server()`: the "before".

    python bench/engine_on_sdk_stdio.py --db PATH

Same tools, same database code, same server object as `python -m mbe_gateway.engine`;
only the transport differs (the SDK's reads and writes stdin/stdout in worker threads).
bench/mcp_roundtrip.py runs it beside the real engine to compare the two in one run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anyio
from mcp.server.stdio import stdio_server

from mbe_gateway.engine.catalog import load_catalog
from mbe_gateway.engine.server import Engine, build_server
from mbe_gateway.engine.store import open_db


async def serve(engine: Engine) -> None:
    server = build_server(engine)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", type=Path, required=True)
    conn = open_db(parser.parse_args().db)
    try:
        anyio.run(serve, Engine(conn, load_catalog()))
    finally:
        conn.close()


if __name__ == "__main__":
    main()
