"""How long one MBE tool call takes over stdio, and where that time goes.

    python bench/mcp_roundtrip.py [--calls N] [--before REV] [--profile]

In one run, against three twin embedded engines (each on its own database):

  * the floor: a newline-delimited JSON line echoed by a child over a pipe;
  * every MBE tool three ways, calls interleaved in blocks so all see the same machine load:
      - the SDK on both sides: `mcp.client.stdio.stdio_client`, and the engine served by
        the SDK's `stdio_server()` (bench/engine_on_sdk_stdio.py);
      - "before": MBEClient (the gateway's own client transport), same SDK-served engine;
      - "after": MBEClient and the engine as shipped (`python -m mbe_gateway.engine`, its
        own thread-free transport, engine/stdio.py).
    The first two differ only in the client, the last two only in the server's transport.
    With `--before REV`, the first two run the engine as it was at git revision REV
    (`python -m mbe_gateway.engine` from `git archive REV src`), so the comparison covers
    everything that changed in the engine since then, its tools included.
  * for each, CPU time per call in this process (the client) and in the child (the
    server: all its threads, from /proc/PID/task/*/schedstat), the rest being time
    neither was running: pipe and thread wake-ups, scheduling.

`--profile` then runs the same calls once more under cProfile on both sides (this process,
and the engine as `python -m cProfile ... -m mbe_gateway.engine`, which has one thread)
and prints each side's hottest functions.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import pstats
import statistics
import subprocess
import sys
import tarfile
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
from mbe_gateway.mbe.child import child_environment
from workload import SENTENCES

HERE = Path(__file__).resolve().parent
SDK_SERVED_ENGINE = HERE / "engine_on_sdk_stdio.py"
BLOCK = 10  # calls per block; blocks of the three ways alternate


def server_cpu(pid: int | None) -> float | None:
    """Seconds all of the process's live threads have spent on a CPU (Linux), or None where
    that cannot be read. (/proc/PID/schedstat alone is the main thread: it would miss the
    SDK transport's worker threads, which stay alive between calls.)"""
    if pid is None:
        return None
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


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
    """The five tools through MBEClient's typed methods."""

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
    """The same five calls, same arguments, through the SDK's own client transport."""

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


def child_pid(besides: set[int]) -> int | None:
    """The SDK keeps its process private: find it as our child that is none of `besides` (Linux)."""
    me = str(os.getpid())
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit() and int(entry) not in besides:
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
        f"  {label:<38}{series.p(0.5):8.3f}{series.p(0.99):9.3f}{series.p(0.5) / base:9.1f}x"
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


@dataclass
class Way:
    """One way of calling: a label, the five tools' calls, the server's pid, and its results."""

    label: str
    calls: dict[str, Callable[[int], Awaitable[Any]]]
    pid: int | None
    series: dict[str, Series] = field(default_factory=lambda: {tool: Series() for tool in PARSERS})

    def total(self) -> Series:
        whole = Series()
        for part in self.series.values():
            add(whole, part)
        return whole


def sdk_served(db: Path) -> StdioServer:
    """The engine on `db` served by the SDK's stdio_server() (the transport it had before)."""
    return StdioServer((sys.executable, str(SDK_SERVED_ENGINE), "--db", str(db)), protocol="legacy")


def engine_at(rev: str, work: Path) -> Callable[[Path], StdioServer]:
    """The engine as it was at git revision `rev`: its src/ unpacked under `work` and put
    first on the child's PYTHONPATH (ahead of this checkout's editable install)."""
    archive = subprocess.run(
        ["git", "-C", str(HERE.parent), "archive", rev, "src"], capture_output=True, check=True
    ).stdout
    tree = work / f"src-{rev}"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    env = {"PYTHONPATH": str(tree / "src")}

    def server(db: Path) -> StdioServer:
        return StdioServer(
            (sys.executable, "-m", "mbe_gateway.engine", "--db", str(db)), env=env, protocol="legacy"
        )

    return server


def change(label: str, before: float | None, after: float | None) -> str:
    if not before or after is None:
        return f"{label} -"
    return f"{label} {before:.3f} -> {after:.3f} ms ({(1 - after / before) * 100:.0f}% less)"


async def compare(calls: int, base: Series, work: Path, old_engine: Callable[[Path], StdioServer]) -> None:
    """The three ways on three twin engines, calls interleaved block by block."""
    sdk_server = old_engine(work / "sdk.sqlite3")
    params = StdioServerParameters(
        command=sdk_server.command[0],
        args=list(sdk_server.command[1:]),
        env=child_environment(sdk_server, home=work),
    )
    with open(work / "sdk-stderr.log", "w") as errlog:
        async with (
            MBEClient(old_engine(work / "before.sqlite3"), home=work) as before,
            MBEClient(embedded_engine(work / "after.sqlite3"), home=work) as after,
        ):
            await before.wait_ready(60)
            await after.wait_ready(60)
            theirs = {pid for pid in (before.pid, after.pid) if pid is not None}
            transport = stdio_client(params, errlog=errlog)
            async with Client(transport, mode=sdk_server.protocol, cache=None) as sdk:
                ways = [
                    Way("SDK client,  server before", sdk_calls(sdk), child_pid(theirs)),
                    Way("MBEClient,   server before", tool_calls(before), before.pid),
                    Way("MBEClient,   server after", tool_calls(after), after.pid),
                ]
                for tool in PARSERS:  # warm up every side
                    for way in ways:
                        await measure(Series(), None, 20, way.calls[tool])
                for start in range(0, calls, BLOCK):
                    n = min(BLOCK, calls - start)
                    for tool in PARSERS:
                        for way in ways:
                            await measure(way.series[tool], way.pid, n, from_call(way.calls[tool], start))

    floor_p50 = base.p(0.5)
    print()
    header = f"{'p50 ms':>8}{'p99 ms':>9}{'/floor':>10}{'mean':>9}{'client':>9}{'server':>9}{'rest':>7}"
    print(f"  {'':<38}{header}")
    print(row("floor: raw JSON line echo on a pipe", base, floor_p50))
    kinds: list[str | None] = [*PARSERS, None]  # None: all five tools together
    for kind in kinds:
        print(f"  {kind or 'all five tools'}")
        for way in ways:
            print(row(f"  {way.label}", way.series[kind] if kind else way.total(), floor_p50))
    print()
    print("  mean, client and server: ms per call, and CPU ms per call in this process and in the child;")
    print("  rest = mean - client - server: time neither side ran (pipe and thread wake-ups, scheduling).")
    print("  the server, before -> after:")
    for kind in kinds:
        old, new = (way.series[kind] if kind else way.total() for way in ways[1:])
        cpu = change("server CPU/call", old.per_call(old.server_cpu), new.per_call(new.server_cpu))
        print(
            f"    {kind or 'all five tools':<22}{cpu}; p50 {old.p(0.5):.3f} -> {new.p(0.5):.3f} ms; "
            f"p99 {old.p(0.99):.3f} -> {new.p(0.99):.3f} ms"
        )
    sdk_only, ours = ways[0].total(), ways[1].total()
    cpu = change("client CPU/call", sdk_only.per_call(sdk_only.client_cpu), ours.per_call(ours.client_cpu))
    print(f"  the client's transport, SDK -> MBEClient: {cpu}")


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
        top(server_stats, "server side, the engine (start-up included):")


async def main(calls: int, before: str | None, profile: bool) -> None:
    logging.getLogger("mbe_gateway").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="mbe-bench-"))
    cpus, python = os.cpu_count(), sys.version.split()[0]
    print(f"MCP round trips over stdio: {calls} calls per tool and way, {cpus} CPUs, Python {python}")
    old_engine: Callable[[Path], StdioServer]
    if before is None:
        print("server before: this engine served by the SDK's stdio_server(); after: as shipped")
        old_engine = sdk_served
    else:
        print(f"server before: the engine at {before} (python -m mbe_gateway.engine); after: this checkout")
        old_engine = engine_at(before, work)
    base = await floor(calls * 2)
    await compare(calls, base, work, old_engine)
    if profile:
        await profile_both_sides(max(calls // 3, 50), embedded_engine(work / "profiled.sqlite3"), work)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=300, help="calls per tool and way (default 300)")
    parser.add_argument(
        "--before",
        metavar="REV",
        help="the engine of this git revision is 'before' (default: SDK transport)",
    )
    parser.add_argument("--profile", action="store_true", help="also profile both sides (own transports)")
    options = parser.parse_args()
    anyio.run(main, options.calls, options.before, options.profile)
