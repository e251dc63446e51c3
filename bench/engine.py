"""What one message costs the embedded engine as a user's history grows.

    python bench/engine.py [--sizes 0,500,1000] [--users 20] [--calls 1000] [--profile]

The engine's tools are called in this process (engine.server.Engine, the code the stdio
child runs, without the transport), on a fresh database per size: N earlier messages per
user (on average: each message goes to a user drawn at random, as whoever is answered
first writes next in bench/gateway.py) are first put through the engine as the gateway
does (mbe_surprise, mbe_route, mbe_memory_read, then mbe_memory_write of the exchange;
bench/workload.py's sentences numbered like bench/gateway.py's), then `--calls` more
messages are timed, tool by tool. The figures are CPU time of this process per call
(time.process_time), so a busy machine stretches them less than wall time.

`--profile` runs the largest size's timed calls under cProfile (its figures are then
inflated by the profiler) and prints the hottest functions.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mbe_gateway import contract
from mbe_gateway.engine.catalog import load_catalog
from mbe_gateway.engine.server import Engine
from mbe_gateway.engine.store import open_db
from workload import SENTENCES

REPLY = "Here is a short answer from the instant model."
STEPS = (contract.SURPRISE, contract.ROUTE, contract.MEMORY_READ, contract.MEMORY_WRITE)


def text(i: int) -> str:
    return f"{SENTENCES[i % len(SENTENCES)]} (message {i})"


def message(engine: Engine, user_id: str, i: int, timings: dict[str, list[float]] | None) -> None:
    """One message as the gateway's pipeline sends it to MBE."""
    said = text(i)
    calls: list[tuple[str, dict[str, Any]]] = [
        (contract.SURPRISE, {"input": said, "context": {"user_id": user_id, "channel": "telegram"}}),
        (contract.ROUTE, {"input": said, "user_profile": {"user_id": user_id, "surprise_score": 0.4}}),
        (contract.MEMORY_READ, {"user_id": user_id, "query": said, "top_k": 5}),
        (
            contract.MEMORY_WRITE,
            {
                "user_id": user_id,
                "memory_type": "conversation",
                "content": {
                    "user_message": said,
                    "assistant_reply": REPLY,
                    "surprise_score": round(0.1 + (i % 7) / 10, 4),
                    "expert_id": "general",
                    "channel": "telegram",
                    "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
                },
                "importance": 0.6,
            },
        ),
    ]
    for tool, arguments in calls:
        started = time.process_time()
        problem = engine.problem(tool, arguments)
        assert problem is None, problem
        engine.call(tool, arguments)
        if timings is not None:
            timings[tool].append(time.process_time() - started)


def measure(size: int, users: int, calls: int, profile: bool) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        conn = open_db(Path(tmp) / "engine.db")
        engine = Engine(conn, load_catalog(None))
        # Whoever is answered first writes next (bench/gateway.py): users and sentences mix.
        who = random.Random(size)
        for i in range(size * users):
            message(engine, f"user{who.randrange(users)}", i, None)
        timings: dict[str, list[float]] = {tool: [] for tool in STEPS}
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        for i in range(size * users, size * users + calls):
            message(engine, f"user{who.randrange(users)}", i, timings)
        if profiler is not None:
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(18)
        conn.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="0,500,1000", help="earlier messages per user, comma-separated")
    parser.add_argument("--users", type=int, default=20, help="users sharing the database")
    parser.add_argument("--calls", type=int, default=1000, help="timed messages per size")
    parser.add_argument("--profile", action="store_true", help="cProfile the largest size's timed messages")
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]
    print(f"CPU ms per call (median / p90), {options.users} user(s), {options.calls} timed messages")
    print(f"{'history':>8}  " + "  ".join(f"{tool:>22}" for tool in STEPS) + f"  {'message':>9}")
    for size in sizes:
        timings = measure(size, options.users, options.calls, options.profile and size == max(sizes))
        cells = [
            f"{statistics.median(v) * 1000:>10.3f} / {statistics.quantiles(v, n=10)[-1] * 1000:>9.3f}"
            for v in timings.values()
        ]
        total = sum(statistics.fmean(v) for v in timings.values()) * 1000
        print(f"{size:>8}  " + "  ".join(cells) + f"  {total:>9.3f}")


if __name__ == "__main__":
    main()
