"""`mbe-gateway mcp` as Claude Desktop meets it: how fast it starts, and what a tool call costs.

    python bench/mcp_server.py [--starts N] [--calls N] [--messages N]

Real processes: `mbe-gateway mcp` spoken to by the mcp SDK's client over stdio, and for the
forwarded figures a daemon (`python -m mbe_gateway run`, no channel, the OpenAI-compatible
fake of tests/ as its model) on the same data dir.

  1. start: spawn → `initialize` answered, `--starts` times, beside `python -c "import
     mcp.server.lowlevel"` (the SDK's import, which any Python MCP server pays).
  2. without a daemon: the first MBE call (it starts the engine), then `--calls` calls of
     mbe_memory_read, gateway_search_history and gateway_list_conversations, p50 / p99.
  3. with a daemon: the same calls, each forwarded over the control protocol (a connection
     per call), p50 / p99.
  4. the history search in-process on `--messages` stored messages: a word in the newest
     English word and a Chinese one found in many messages (the 20 newest are shown), and a
     word found nowhere (the whole bounded scan): the time the daemon's connection is held.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the fakes are the tests' own

from fake_llm_servers import serve_fake_llm  # noqa: E402
from mbe_gateway.store import history, open_database, overview, sessions  # noqa: E402
from workload import SENTENCES  # noqa: E402

SCRIPT = str(Path(sys.executable).with_name("mbe-gateway"))


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def row(label: str, values_ms: Sequence[float]) -> None:
    print(f"  {label:<44} p50 {pct(values_ms, 50):8.2f} ms   p99 {pct(values_ms, 99):8.2f} ms")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def timed_calls(client: Client, tool: str, arguments: dict[str, Any], calls: int) -> list[float]:
    """`calls` calls' times, after 10 untimed ones (the first ones start what they use)."""
    for _ in range(10):
        await client.call_tool(tool, arguments)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        result = await client.call_tool(tool, arguments)
        times.append((time.perf_counter() - started) * 1000)
        assert not result.is_error, result.content
    return times


async def seed(home: Path, messages: int) -> None:
    async with await open_database(home / "gateway.sqlite3") as db:
        chats = [await sessions.get_or_create(db, "telegram", str(1000 + i)) for i in range(20)]

        def insert_all(conn: Any) -> None:
            for i in range(messages):
                session = chats[i % len(chats)]
                said = SENTENCES[i % len(SENTENCES)] if i % 11 else "我对花生过敏，晚饭吃什么好？"
                text = f"{said} #{i}"
                history.insert(conn, session.id, "user" if i % 2 == 0 else "assistant", text, sender_id="s")

        await db.run(insert_all)


async def calls(client: Client, count: int) -> None:
    row(
        "mbe_memory_read",
        await timed_calls(client, "mbe_memory_read", {"user_id": "b", "query": "tea"}, count),
    )
    search = {"query": "cooking", "limit": 20}
    row(
        "gateway_search_history (20 newest matches)",
        await timed_calls(client, "gateway_search_history", search, count),
    )
    row("gateway_list_conversations", await timed_calls(client, "gateway_list_conversations", {}, count))


async def main(options: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-mcp-"))
    home = root / "home"
    home.mkdir()
    config = root / "config.toml"
    env = {
        "MBE_GATEWAY_HOME": str(home),
        "MBE_GATEWAY_CONFIG": str(config),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        "MBE_GATEWAY_SECRET_CONTROL_ADMIN_TOKEN": secrets.token_urlsafe(32),
        "MBE_GATEWAY_SECRET_CONTROL_READ_TOKEN": secrets.token_urlsafe(32),
    }
    print(f"mbe-gateway mcp on {os.cpu_count()} cores; data in {root}")
    await seed(home, options.messages)

    print(f"\n1. start: spawn → initialize answered, {options.starts} times")
    starts, imports = [], []
    for _ in range(options.starts):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import mcp.server.lowlevel"], check=True)
        imports.append(time.perf_counter() - started)
        params = StdioServerParameters(command=SCRIPT, args=["mcp"], env=env)
        started = time.perf_counter()
        async with Client(params, mode="legacy") as client:
            starts.append(time.perf_counter() - started)
            del client
    for label, seconds in (("mbe-gateway mcp", starts), ("import mcp.server.lowlevel", imports)):
        spread = f"min {min(seconds):.2f}, max {max(seconds):.2f}"
        print(f"  {label:<26} median {statistics.median(seconds):.2f} s ({spread})")

    async with serve_fake_llm() as llm:
        config.write_text(
            f'[control]\nport = {free_port()}\n[[llm.providers]]\nkind = "openai"\n'
            f'base_url = "{llm.openai_url}"\nmodel = "instant"\n'
        )
        params = StdioServerParameters(command=SCRIPT, args=["mcp"], env=env)
        async with Client(params, read_timeout_seconds=60) as client:
            print(f"\n2. without a daemon ({options.messages} messages stored)")
            started = time.perf_counter()
            await client.call_tool(
                "mbe_memory_write", {"user_id": "b", "memory_type": "note", "content": {"t": "tea"}}
            )
            print(f"  first MBE call (starts the engine)           {time.perf_counter() - started:8.2f} s")
            await calls(client, options.calls)

            print("\n3. with a daemon: every call forwarded over the control protocol")
            command = [sys.executable, "-m", "mbe_gateway", "run"]
            daemon_env = {k: v for k, v in os.environ.items() if not k.startswith("MBE_GATEWAY_")} | env
            with open(root / "daemon.stderr", "wb") as stderr:
                daemon = await anyio.open_process(
                    command, env=daemon_env, stdout=subprocess.DEVNULL, stderr=stderr
                )
                try:
                    with anyio.fail_after(60):
                        while True:
                            status = await client.call_tool("gateway_status", {})
                            if not status.is_error and (status.structured_content or {})["daemon"]["running"]:
                                break
                            await anyio.sleep(0.2)
                    await calls(client, options.calls)
                finally:
                    daemon.send_signal(signal.SIGTERM)
                    await daemon.wait()

    print(f"\n4. the history search in-process, {options.messages} messages")
    async with await open_database(home / "gateway.sqlite3") as db:
        queries = (
            ("an English word, 20 newest of many", "cooking"),
            ("a Chinese word, 20 newest of many", "花生"),
            ("a word in no message (the whole scan)", "zzzqqq"),
        )
        for label, query in queries:
            times = []
            for _ in range(20):
                started = time.perf_counter()
                await overview.search_messages(db, query, limit=20)
                times.append((time.perf_counter() - started) * 1000)
            row(label, times)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--messages", type=int, default=100_000)
    anyio.run(main, parser.parse_args())
