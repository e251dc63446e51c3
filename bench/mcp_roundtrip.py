"""How long one MBE tool call takes over stdio, and where that time goes.

    python bench/mcp_roundtrip.py [--calls N] [--profile]

In one run, against the embedded engine (or, where it is not installed, the well-behaved
test server, and the output says so):

  * the floor: a newline-delimited JSON line echoed by a child over a pipe;
  * every MBE tool through the SDK's own stdio transport (`mcp.client.stdio.stdio_client`,
    "before") and through MBEClient with its own transport ("after"), calls interleaved in
    blocks so both see the same machine load, on two engines with their own databases;
  * for each, CPU time per call in this process (the client) and in the child (the
    server, from /proc/PID/schedstat), the rest being time neither was running: pipe
    wake-ups and scheduling.

`--profile` then runs the same calls once more under cProfile on both sides (this process,
and the engine as `python -m cProfile ... -m mbe_gateway.engine`) and prints each side's
hottest functions. cProfile sees only the engine's main thread: the SDK server reads and
writes its stdio in worker threads, whose cost shows up there as waiting.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import logging
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import mcp_types
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from mbe_gateway import contract
from mbe_gateway.mbe import MBEClient, StdioServer, embedded_engine
from mbe_gateway.mbe.stdio import child_environment

HERE = Path(__file__).resolve().parent
WELL_BEHAVED = HERE.parent / "tests" / "mbe_servers" / "well_behaved.py"
BLOCK = 10  # calls per block; blocks of "before" and "after" alternate
SENTENCES = [
    "I love cooking pasta with garlic and olive oil",
    "how do I fix a segfault in my C program?",
    "my knees hurt after running ten kilometres",
    "what is a good book about the history of Rome?",
    "I feel anxious before my exam tomorrow",
    "can you recommend a vegetarian curry recipe?",
    "why does my Python script use so much memory?",
    "I started learning the piano last week",
]


def server_cpu(pid: int | None) -> float | None:
    """Seconds the process has spent on a CPU (Linux), or None where that cannot be read."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Series:
    """One kind of call: its round-trip times and the CPU it cost on each side."""

    wall: list[float] = field(default_factory=list)
    client_cpu: float = 0.0
    server_cpu: float | None = 0.0

    def p(self, q: float) -> float:
        ordered = sorted(self.wall)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3

    def per_call(self, seconds: float | None) -> float | None:
        return None if seconds is None or not self.wall else seconds / len(self.wall) * 1e3


async def measure(series: Series, pid: int | None, calls: int, call: Callable[[int], Awaitable[Any]]) -> None:
    """Run one block of `calls`, adding its times and both sides' CPU to `series`."""
    server_before = server_cpu(pid)
    client_before = time.process_time()
    for i in range(calls):
        started = time.perf_counter()
        await call(i)
        series.wall.append(time.perf_counter() - started)
    series.client_cpu += time.process_time() - client_before
    server_after = server_cpu(pid)
    if series.server_cpu is not None and server_before is not None and server_after is not None:
        series.server_cpu += server_after - server_before
    else:
        series.server_cpu = None


async def floor(calls: int) -> Series:
    """A JSON-RPC-sized line echoed by a child: the least any stdio round trip can cost."""
    echo = "import sys\nfor line in sys.stdin:\n    sys.stdout.write(line)\n    sys.stdout.flush()\n"
    line = (
        b'{"jsonrpc":"2.0","id":1,"result":{"content":[],"structuredContent":'
        b'{"surprise_score":0.5,"is_novel":true,"learning_mode":"explore"},"isError":false}}\n'
    )
    series = Series()
    async with await anyio.open_process([sys.executable, "-c", echo]) as process:
        assert process.stdin is not None and process.stdout is not None
        stdin, stdout = process.stdin, process.stdout

        async def round_trip(_: int) -> None:
            await stdin.send(line)
            received = b""
            while not received.endswith(b"\n"):
                received += await stdout.receive()

        await measure(Series(), process.pid, 50, round_trip)  # warm up
        await measure(series, process.pid, calls, round_trip)
        await stdin.aclose()
    return series


def tool_calls(mbe: MBEClient) -> dict[str, Callable[[int], Awaitable[Any]]]:
    """The five tools through MBEClient's typed methods (the "after" side)."""

    def text(i: int) -> str:
        return f"{SENTENCES[i % len(SENTENCES)]} ({i})"

    return {
        contract.SURPRISE: lambda i: mbe.surprise(text(i), user_id="bench", channel="bench"),
        contract.ROUTE: lambda i: mbe.route(text(i), user_profile=PROFILE),
        contract.MEMORY_WRITE: lambda i: mbe.memory_write("bench", "episodic", {"text": text(i)}, 0.5),
        contract.MEMORY_READ: lambda i: mbe.memory_read("bench", SENTENCES[i % len(SENTENCES)].split()[-1]),
        contract.ANALYZE_LEARNING: lambda _: mbe.analyze_learning("bench"),
    }


PROFILE = {"user_id": "bench", "surprise_score": 0.5}
PARSERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    contract.SURPRISE: contract.parse_surprise,
    contract.ROUTE: contract.parse_routing,
    contract.MEMORY_WRITE: contract.parse_memory_id,
    contract.MEMORY_READ: contract.parse_memory_page,
    contract.ANALYZE_LEARNING: contract.parse_learning,
}


def sdk_calls(client: Client) -> dict[str, Callable[[int], Awaitable[Any]]]:
    """The same five calls, same arguments, through the SDK's stdio transport ("before")."""

    def arguments(tool: str, i: int) -> dict[str, Any]:
        text = f"{SENTENCES[i % len(SENTENCES)]} ({i})"
        table: dict[str, dict[str, Any]] = {
            contract.SURPRISE: {"input": text, "context": {"user_id": "bench", "channel": "bench"}},
            contract.ROUTE: {"input": text, "task_type": "chat", "user_profile": PROFILE},
            contract.MEMORY_WRITE: {
                "user_id": "bench",
                "memory_type": "episodic",
                "content": {"text": text},
                "importance": 0.5,
            },
            contract.MEMORY_READ: {
                "user_id": "bench",
                "query": SENTENCES[i % len(SENTENCES)].split()[-1],
                "top_k": 5,
            },
            contract.ANALYZE_LEARNING: {"user_id": "bench", "window_days": 30},
        }
        return table[tool]

    def caller(tool: str) -> Callable[[int], Awaitable[Any]]:
        async def call(i: int) -> Any:
            request = mcp_types.CallToolRequest(
                params=mcp_types.CallToolRequestParams(name=tool, arguments=arguments(tool, i))
            )
            result = await client.session.send_request(
                request, mcp_types.CallToolResult, request_read_timeout_seconds=10
            )
            texts = [b.text for b in result.content if isinstance(b, mcp_types.TextContent)]
            return PARSERS[tool](contract.payload_of(tool, result.structured_content, texts))

        return call

    return {tool: caller(tool) for tool in PARSERS}


def sdk_pid() -> int | None:
    """The SDK keeps its process private; find it as our only child so far (Linux)."""
    me = str(os.getpid())
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        return int(entry)
            except (OSError, IndexError):
                continue
    return None


def from_call(call: Callable[[int], Awaitable[Any]], first: int) -> Callable[[int], Awaitable[Any]]:
    """`call`, numbered from `first`, so each block continues where the last one stopped."""
    return lambda i: call(first + i)


def row(label: str, series: Series, base: float) -> str:
    client = series.per_call(series.client_cpu)
    server = series.per_call(series.server_cpu)
    mean = statistics.fmean(series.wall) * 1e3
    rest = f"{mean - client - server:7.3f}" if client is not None and server is not None else "      -"
    return (
        f"  {label:<34}{series.p(0.5):8.3f}{series.p(0.99):9.3f}{series.p(0.5) / base:9.1f}x"
        f"{mean:9.3f}{client or 0:9.3f}{server if server is not None else float('nan'):9.3f}{rest}"
    )


def top(source: cProfile.Profile | Path, title: str, lines: int = 14) -> None:
    out = io.StringIO()
    stats = pstats.Stats(source if isinstance(source, cProfile.Profile) else str(source), stream=out)
    stats.sort_stats("tottime").print_stats(lines)
    print(f"\n{title}")
    body = out.getvalue().splitlines()
    start = next((i for i, text in enumerate(body) if "ncalls" in text), 0)
    print("\n".join(body[start : start + lines + 1]))


def add(total: Series, part: Series) -> None:
    total.wall += part.wall
    total.client_cpu += part.client_cpu
    if total.server_cpu is None or part.server_cpu is None:
        total.server_cpu = None
    else:
        total.server_cpu += part.server_cpu


async def compare(calls: int, base: Series, server_for: Callable[[str], StdioServer], work: Path) -> None:
    """Before (SDK stdio_client) and after (MBEClient) on twin servers, calls interleaved."""
    sdk_server = server_for("before")
    params = StdioServerParameters(
        command=sdk_server.command[0],
        args=list(sdk_server.command[1:]),
        env=child_environment(sdk_server, home=work),
    )
    before: dict[str, Series] = {tool: Series() for tool in PARSERS}
    after: dict[str, Series] = {tool: Series() for tool in PARSERS}
    with open(work / "sdk-stderr.log", "w") as errlog:
        async with (
            Client(stdio_client(params, errlog=errlog), mode=sdk_server.protocol, cache=None) as sdk,
            MBEClient(server_for("after"), home=work) as mbe,
        ):
            await mbe.wait_ready(60)
            ours, theirs, their_pid = tool_calls(mbe), sdk_calls(sdk), sdk_pid()
            for tool in PARSERS:  # warm up both sides
                await measure(Series(), None, 20, ours[tool])
                await measure(Series(), None, 20, theirs[tool])
            for start in range(0, calls, BLOCK):
                n = min(BLOCK, calls - start)
                for tool in PARSERS:
                    await measure(before[tool], their_pid, n, from_call(theirs[tool], start))
                    await measure(after[tool], mbe.pid, n, from_call(ours[tool], start))

    floor_p50 = base.p(0.5)
    print()
    header = f"{'p50 ms':>8}{'p99 ms':>9}{'/floor':>10}{'mean':>9}{'client':>9}{'server':>9}{'rest':>7}"
    print(f"  {'':<34}{header}")
    print(row("floor: raw JSON line echo on a pipe", base, floor_p50))
    total_before, total_after = Series(), Series()
    for tool in PARSERS:
        print(f"  {tool}")
        print(row("  before: SDK stdio_client", before[tool], floor_p50))
        print(row("  after:  MBEClient, own transport", after[tool], floor_p50))
        add(total_before, before[tool])
        add(total_after, after[tool])
    print("  all five tools")
    print(row("  before: SDK stdio_client", total_before, floor_p50))
    print(row("  after:  MBEClient, own transport", total_after, floor_p50))
    print()
    print("  mean, client and server: ms per call, and CPU ms per call in this process and in the child;")
    print("  rest = mean - client - server: time neither side ran (pipe wake-ups, scheduling, other load).")
    cut = total_before.per_call(total_before.client_cpu), total_after.per_call(total_after.client_cpu)
    if cut[0] and cut[1]:
        less = (1 - cut[1] / cut[0]) * 100
        print(
            f"  client CPU per call {cut[0]:.3f} -> {cut[1]:.3f} ms ({less:.0f}% less); "
            f"p50 {total_before.p(0.5):.3f} -> {total_after.p(0.5):.3f} ms; "
            f"p99 {total_before.p(0.99):.3f} -> {total_after.p(0.99):.3f} ms"
        )


async def profile_both_sides(calls: int, server: StdioServer, work: Path) -> None:
    server_stats = work / "server.pstats"
    if server.command[1:3] == ("-m", "mbe_gateway.engine"):
        profiled = (server.command[0], "-m", "cProfile", "-o", str(server_stats), *server.command[1:])
        server = StdioServer(profiled, protocol=server.protocol)
    profiler = cProfile.Profile()
    async with MBEClient(server, home=work) as mbe:
        await mbe.wait_ready(60)
        calls_by_tool = tool_calls(mbe)
        profiler.enable()
        for i in range(calls):
            for call in calls_by_tool.values():
                await call(i)
        profiler.disable()
    top(profiler, f"client side, {calls * 5} calls, by own time:")
    if server_stats.exists():
        top(server_stats, "server side, the engine's main thread (start-up included):")


async def main(calls: int, profile: bool) -> None:
    logging.getLogger("mbe_gateway").setLevel(logging.ERROR)  # the header says what the server is
    engine = importlib.util.find_spec("mbe_gateway.engine.__main__") is not None
    work = Path(tempfile.mkdtemp(prefix="mbe-bench-"))
    cpus, python = os.cpu_count(), sys.version.split()[0]
    print(f"MCP round trips over stdio: {calls} calls per tool and side, {cpus} CPUs, Python {python}")
    if engine:
        print("server: the embedded engine (python -m mbe_gateway.engine), one SQLite file per side")
    else:
        print("server: the embedded engine is NOT installed; measuring tests/mbe_servers/well_behaved.py")

    def server_for(side: str) -> StdioServer:
        if engine:
            return embedded_engine(work / f"{side}.sqlite3")
        return StdioServer((sys.executable, str(WELL_BEHAVED), "--without", "mbe_generate"))

    base = await floor(calls * 2)
    await compare(calls, base, server_for, work)
    if profile:
        await profile_both_sides(max(calls // 3, 50), server_for("profiled"), work)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=300, help="calls per tool and side (default 300)")
    parser.add_argument("--profile", action="store_true", help="also profile the client side (own transport)")
    options = parser.parse_args()
    anyio.run(main, options.calls, options.profile)
