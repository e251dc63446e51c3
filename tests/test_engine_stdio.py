"""The engine's own stdio transport, against real child processes and real pipes.

Most tests talk raw newline-delimited JSON-RPC to one engine child shared by the module
(spawning costs about a second), each with its own request ids. The ones that end or
starve their child spawn their own. Plain SDK clients (`mcp.Client`, both protocol
modes) show that any MCP client, Claude Desktop included, still works with it.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any, Literal

import pytest
from mcp import Client, StdioServerParameters

from mbe_gateway import contract
from mbe_gateway.engine.stdio import MAX_LINE_BYTES

ENGINE = [sys.executable, "-m", "mbe_gateway.engine"]
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw-test", "version": "1"},
    },
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def frame(message: dict[str, Any], *, ascii_only: bool = False) -> bytes:
    return json.dumps(message, ensure_ascii=ascii_only).encode() + b"\n"


def surprise_call(request_id: int, text: str, user: str = "stdio") -> dict[str, Any]:
    arguments = {"input": text, "context": {"user_id": user}}
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": contract.SURPRISE, "arguments": arguments},
    }


class RawEngine:
    """An engine child spoken to in raw bytes; its stderr goes to a file the test can read."""

    def __init__(self, db: Path, *, stdin: Any = subprocess.PIPE, stdout: Any = subprocess.PIPE) -> None:
        self.stderr_path = db.with_suffix(".stderr")
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [*ENGINE, "--db", str(db)], stdin=stdin, stdout=stdout, stderr=stderr
            )
        self._buffer = b""

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def receive(self, within: float = 15.0) -> dict[str, Any]:
        """The next message the engine writes (failing the test if none comes in time)."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + within
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            assert left > 0, f"no message from the engine within {within} s; stderr: {self.stderr}"
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 1 << 20)
                assert chunk, f"the engine closed its stdout; stderr: {self.stderr}"
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    def answer_to(self, request_id: int) -> dict[str, Any]:
        """The response with this id, skipping any other message before it."""
        while (message := self.receive()).get("id") != request_id:
            pass
        return message

    def handshake(self) -> None:
        self.send(frame(INITIALIZE))
        assert "result" in self.answer_to(0)
        self.send(frame(INITIALIZED))

    def wait(self, within: float = 15.0) -> int:
        return self.process.wait(timeout=within)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


def structured(response: dict[str, Any]) -> dict[str, Any]:
    result = response["result"]
    assert result["isError"] is False, result
    payload: dict[str, Any] = result["structuredContent"]
    return payload


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RawEngine]:
    child = RawEngine(tmp_path_factory.mktemp("stdio") / "engine.sqlite3")
    child.handshake()
    yield child
    child.stop()


ids = count(1000)


# --- the wire format --------------------------------------------------------------------------


def test_a_line_that_is_not_json_rpc_costs_only_that_line(engine: RawEngine) -> None:
    engine.send(b"this is not json\n")
    engine.send(b'{"jsonrpc": "2.0", "id": "no method"}\n')
    request_id = next(ids)
    engine.send(frame(surprise_call(request_id, "still listening?")))
    assert structured(engine.receive())["is_novel"] is True  # the first thing answered is this
    assert "is not a JSON-RPC message" in engine.stderr


def test_a_message_split_across_writes_is_read_whole(engine: RawEngine) -> None:
    request_id = next(ids)
    data = frame(surprise_call(request_id, "sent in three pieces"))
    engine.send(b"\n\n" + data[:7])  # blank lines are skipped
    time.sleep(0.05)
    engine.send(data[7:40])
    time.sleep(0.05)
    engine.send(data[40:])
    assert structured(engine.answer_to(request_id))["is_novel"] is True


def test_several_messages_in_one_write_are_each_answered(engine: RawEngine) -> None:
    first, second, third = next(ids), next(ids), next(ids)
    texts = ("one write", "two messages", "three answers")
    engine.send(
        b"".join(frame(surprise_call(i, t)) for i, t in zip((first, second, third), texts, strict=True))
    )
    answered = {engine.receive()["id"] for _ in range(3)}
    assert answered == {first, second, third}


@pytest.mark.parametrize("ascii_only", [False, True], ids=["utf8", "escaped"])
def test_a_32000_character_chinese_message_is_answered(engine: RawEngine, ascii_only: bool) -> None:
    text = ("今天晚上想吃红烧肉，怎么做比较好吃？" * 2000)[: contract.MAX_INPUT_CHARS]
    request_id = next(ids)
    data = frame(surprise_call(request_id, text, user=f"long-{ascii_only}"), ascii_only=ascii_only)
    assert len(data) > (190_000 if ascii_only else 95_000)
    engine.send(data)
    assert structured(engine.answer_to(request_id))["is_novel"] is True


def test_bytes_that_are_not_utf8_are_read_as_replacement_characters(engine: RawEngine) -> None:
    request_id = next(ids)
    data = frame(surprise_call(request_id, "café au lait")).replace("é".encode(), b"\xe9")
    engine.send(data)
    assert structured(engine.answer_to(request_id))["is_novel"] is True


def test_a_line_over_the_limit_is_skipped_and_the_next_is_answered(engine: RawEngine) -> None:
    engine.send(b"x" * (MAX_LINE_BYTES + 1_000_000) + b"\n")
    request_id = next(ids)
    engine.send(frame(surprise_call(request_id, "after the flood")))
    assert structured(engine.receive())["is_novel"] is True
    assert "skipped a message line" in engine.stderr


# --- how it ends ------------------------------------------------------------------------------


def test_closing_stdin_stops_the_engine_cleanly_after_answering(tmp_path: Path) -> None:
    child = RawEngine(tmp_path / "engine.sqlite3")
    try:
        child.handshake()
        child.send(frame(surprise_call(1, "one last thing")))
        assert structured(child.answer_to(1))["is_novel"] is True
        assert child.process.stdin is not None
        child.process.stdin.close()
        assert child.wait() == 0
        assert child.process.stdout is not None
        assert child.process.stdout.read() == b""  # nothing more, nothing half-written
        assert "Traceback" not in child.stderr
    finally:
        child.stop()


def test_a_client_that_closes_our_stdout_stops_the_engine_cleanly(tmp_path: Path) -> None:
    child = RawEngine(tmp_path / "engine.sqlite3")
    try:
        child.handshake()
        assert child.process.stdout is not None
        child.process.stdout.close()  # the client is gone; our stdin stays open
        child.send(frame(surprise_call(1, "is anyone there?")))
        assert child.wait() == 0
        assert "Traceback" not in child.stderr
        assert "closed our stdout" in child.stderr
    finally:
        child.stop()


def test_a_client_that_stops_reading_stalls_the_engine_instead_of_filling_its_memory(tmp_path: Path) -> None:
    child = RawEngine(tmp_path / "engine.sqlite3")
    try:
        child.handshake()
        assert child.process.stdin is not None
        stdin = child.process.stdin.fileno()
        os.set_blocking(stdin, False)
        # Each request is padded with JSON whitespace to 16 KiB; each answer (the tool list) is ~7 KiB.
        padding = b" " * 16_000
        complete, pending, accepted, stalled_since = 0, b"", 0, None
        while stalled_since is None or time.monotonic() - stalled_since < 1.0:
            if not pending:
                assert complete < 2_000, "the engine kept reading requests it cannot answer"
                pending = (
                    b'{"jsonrpc": "2.0",' + padding + b'"id": %d, "method": "tools/list"}\n' % (complete + 1)
                )
            try:
                written = os.write(stdin, pending)
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                time.sleep(0.05)
                continue
            accepted, pending, stalled_since = accepted + written, pending[written:], None
            complete += not pending
        cpu = _cpu_seconds(child.process.pid)
        time.sleep(0.5)
        assert _cpu_seconds(child.process.pid) - cpu < 0.1  # waiting, not spinning
        assert accepted < 4 * 1024 * 1024  # bounded: what our pipe, its buffer and the engine's hold
        answered = {child.receive()["id"] for _ in range(complete)}  # now read: everything is answered
        if pending:  # the request a full pipe cut in two
            os.set_blocking(stdin, True)
            child.send(pending)
            complete += 1
            answered.add(child.receive()["id"])
        assert answered == set(range(1, complete + 1))
    finally:
        child.stop()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("which", ["stdin", "stdout"])
def test_an_engine_started_without_pipes_says_so_and_stops(tmp_path: Path, which: str) -> None:
    regular_file = tmp_path / "requests.jsonl"
    regular_file.write_bytes(frame(INITIALIZE))
    with open(regular_file, "rb") as file_in, open(os.devnull, "wb") as null_out:
        streams = {"stdin": file_in} if which == "stdin" else {"stdin": subprocess.PIPE, "stdout": null_out}
        done = subprocess.run(
            [*ENGINE, "--db", str(tmp_path / "engine.sqlite3")],
            **streams,
            stderr=subprocess.PIPE,
            timeout=30,
            check=False,
        )
    assert done.returncode == 2
    assert f"its {which} is not a pipe" in done.stderr.decode()


def test_stray_prints_go_to_stderr_while_serving_and_stdout_is_restored_after() -> None:
    code = (
        "import anyio, os\n"
        "from mcp.shared.message import SessionMessage\n"
        "from mcp_types import JSONRPCNotification\n"
        "from mbe_gateway.engine.stdio import stdio_streams\n"
        "async def main():\n"
        "    async with stdio_streams() as (_, write):\n"
        "        print('stray print', flush=True)\n"
        "        os.write(1, b'stray write\\n')\n"
        "        note = JSONRPCNotification(jsonrpc='2.0', method='notifications/hello')\n"
        "        await write.send(SessionMessage(note))\n"
        "    print('after', flush=True)\n"
        "anyio.run(main)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=b"", capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b'{"jsonrpc":"2.0","method":"notifications/hello"}\nafter\n'
    assert b"stray print\nstray write\n" in done.stderr


# --- any MCP client -----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_plain_sdk_client_lists_and_calls_the_tools(
    tmp_path: Path, mode: Literal["auto", "legacy"]
) -> None:
    params = StdioServerParameters(command=ENGINE[0], args=[*ENGINE[1:], "--db", str(tmp_path / "e.sqlite3")])
    async with Client(params, mode=mode, read_timeout_seconds=20) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert tools == set(contract.REQUIRED_TOOLS)
        text = "今天晚上想吃红烧肉" * 3000
        result = await client.call_tool(
            contract.SURPRISE, {"input": text[:32_000], "context": {"user_id": mode}}
        )
        assert not result.is_error
        assert result.structured_content is not None
        assert result.structured_content["is_novel"] is True
        refused = await client.call_tool(contract.ROUTE, {"input": ""})
        assert refused.is_error
        closing = time.monotonic()
    # The SDK closes our stdin, then waits 2 s before it resorts to SIGTERM: we left before that.
    assert time.monotonic() - closing < 1.5
