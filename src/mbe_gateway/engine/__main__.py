"""`python -m mbe_gateway.engine [--db PATH] [--experts PATH]`: serve MCP on stdin/stdout.

argparse rather than typer: this process is spawned at every gateway start and respawn,
and its start time is the gateway's.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mbe_gateway.engine.catalog import ENV_EXPERTS
from mbe_gateway.engine.server import serve
from mbe_gateway.errors import GatewayError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mbe_gateway.engine",
        description="The embedded MBE engine: an MCP server on stdin/stdout (it stops when stdin closes).",
    )
    parser.add_argument("--db", type=Path, help="its SQLite file (default: engine.sqlite3 in the data dir)")
    parser.add_argument(
        "--experts", type=Path, help=f"an expert catalog JSON file (default: ${ENV_EXPERTS}, else built in)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        serve(args.db, experts_path=args.experts)
    except GatewayError as exc:
        print(f"mbe-gateway engine: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
