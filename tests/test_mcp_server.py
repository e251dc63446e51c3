"""`mbe-gateway mcp` without a daemon, as Claude Desktop meets it: the real command as a child
process, the mcp SDK's own client over real stdio, a store seeded through the real store API.

One MCP server (and the engine it starts) serves the module; each test uses its own user ids.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from jsonschema import Draft202012Validator
from mcp import Client, StdioServerParameters

from mbe_gateway import contract, lock
from mbe_gateway.config import load_config
from mbe_gateway.engine.server import tool_list as engine_tools
from mbe_gateway.mcp_server.standalone import Standalone
from mbe_gateway.secrets import Secrets
from mbe_gateway.store import history, open_database, sessions
from mbe_gateway.store.overview import queue_depths
from test_lock_holder import daemon_holding

pytestmark = pytest.mark.anyio

SCRIPT = str(Path(sys.executable).with_name("mbe-gateway"))
T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def mcp_env(home: Path) -> dict[str, str]:
    return {
        "MBE_GATEWAY_HOME": str(home),
        "MBE_GATEWAY_CONFIG": str(home.parent / "config.toml"),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
    }


def mcp_client(home: Path, **extra: str) -> Client:
    params = StdioServerParameters(command=SCRIPT, args=["mcp"], env={**mcp_env(home), **extra})
    return Client(params, read_timeout_seconds=60)


@pytest.fixture(scope="module")
async def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose gateway database holds a few conversations, written by the store's own API."""
    home = tmp_path_factory.mktemp("mcp") / "home"
    home.mkdir()
    async with await open_database(home / "gateway.sqlite3") as db:
        alice = await sessions.get_or_create(db, "telegram", "1001", now=T0)
        bob = await sessions.get_or_create(db, "discord", "2002", now=T0 + 1)
        said = [
            (alice, "user", "1001", "I'm allergic to peanuts, remember that"),
            (alice, "assistant", None, "Noted: no PEANUTS for you."),
            (bob, "user", "2002", "我对花生过敏，晚饭吃什么好？"),
            (bob, "assistant", None, "可以试试番茄炒蛋。"),
            (alice, "user", "1001", "Is 100% of peanut butter made of peanuts?"),
            (alice, "user", "1001", "snake_case or camelCase for Python?"),
            (bob, "user", "2002", "x" * 5000 + " peanut"),
        ]
        for i, (session, role, sender, text) in enumerate(said):
            await history.append(db, session.id, role, text, sender_id=sender, now=T0 + 10 + i)
        await sessions.get_or_create(db, "slack", "C42", now=T0 + 100)
    return home


@pytest.fixture(scope="module")
async def mcp(seeded: Path) -> AsyncIterator[Client]:
    async with mcp_client(seeded) as client:
        yield client


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    payload = result.structured_content
    assert isinstance(payload, dict)
    texts = [block.text for block in result.content if block.type == "text"]
    assert [json.loads(text) for text in texts] == [payload]  # the same object for text-only clients
    return payload


async def refusal(client: Client, tool: str, arguments: dict[str, Any]) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    return " ".join(block.text for block in result.content if block.type == "text")


async def test_a_client_sees_the_mbe_tools_as_the_contract_declares_them_and_the_gateways_own(
    mcp: Client,
) -> None:
    listed = {tool.name: tool for tool in (await mcp.list_tools()).tools}
    for engine_tool in engine_tools():
        ours = listed[engine_tool.name]
        assert ours.input_schema == contract.INPUT_SCHEMAS[engine_tool.name]
        assert ours.output_schema == contract.OUTPUT_SCHEMAS[engine_tool.name]
        assert ours.description == engine_tool.description
    gateway = {name for name in listed if name.startswith("gateway_")}
    assert gateway == {
        "gateway_send_message",
        "gateway_list_conversations",
        "gateway_search_history",
        "gateway_status",
    }
    send = listed["gateway_send_message"]
    assert send.description is not None and send.description.startswith("ACTS IN THE REAL WORLD")
    assert send.annotations is not None and send.annotations.read_only_hint is False
    assert send.annotations.open_world_hint is True
    for name in gateway - {"gateway_send_message"}:
        annotations = listed[name].annotations
        assert annotations is not None and annotations.read_only_hint is True
    assert mcp.instructions is not None and "telegram:1001" in mcp.instructions


async def test_without_a_daemon_a_memory_written_is_read_back_from_its_own_engine(
    mcp: Client, seeded: Path
) -> None:
    written = await call(
        mcp,
        contract.MEMORY_WRITE,
        {"user_id": "claude:ada", "memory_type": "preference", "content": {"fact": "我对花生过敏"}},
    )
    found = await call(mcp, contract.MEMORY_READ, {"user_id": "claude:ada", "query": "花生能吃吗"})
    assert [m["id"] for m in found["memories"]] == [written["memory_id"]]
    errors = list(Draft202012Validator(contract.OUTPUT_SCHEMAS[contract.MEMORY_READ]).iter_errors(found))
    assert errors == []
    assert (seeded / "engine.sqlite3").exists()  # the configured engine, on the data dir's database

    status = await call(mcp, "gateway_status", {})
    assert status["daemon"]["running"] is False
    assert "mbe-gateway run" in status["daemon"]["hint"]
    here = status["mcp_server"]
    assert here["mbe_served_by"] == "its own engine"
    assert here["engine"]["state"] == "ready" and isinstance(here["engine"]["pid"], int)
    assert here["queues"]["outbox"] == 0


async def test_history_search_finds_words_inside_english_and_chinese_newest_first(mcp: Client) -> None:
    found = (await call(mcp, "gateway_search_history", {"query": "花生"}))["messages"]
    assert [m["text"] for m in found] == ["我对花生过敏，晚饭吃什么好？"]
    assert found[0]["channel"] == "discord" and found[0]["chat_id"] == "2002"
    assert found[0]["sender_id"] == "2002" and found[0]["role"] == "user"

    peanut = (await call(mcp, "gateway_search_history", {"query": "PEANUT"}))["messages"]
    assert [m["created_at"] for m in peanut] == sorted((m["created_at"] for m in peanut), reverse=True)
    assert len(peanut) == 4  # any case, inside longer words ("peanuts"), newest first
    assert peanut[0]["clipped"] is True and len(peanut[0]["text"]) == 2000

    two = (await call(mcp, "gateway_search_history", {"query": "peanut", "limit": 2}))["messages"]
    assert [m["id"] for m in two] == [m["id"] for m in peanut[:2]]
    every_word = (await call(mcp, "gateway_search_history", {"query": "peanut butter"}))["messages"]
    assert [m["text"] for m in every_word] == ["Is 100% of peanut butter made of peanuts?"]
    on_telegram = await call(mcp, "gateway_search_history", {"query": "peanut", "channel": "telegram"})
    assert {m["channel"] for m in on_telegram["messages"]} == {"telegram"}


async def test_percent_and_underscore_in_a_search_are_plain_characters(mcp: Client) -> None:
    percent = (await call(mcp, "gateway_search_history", {"query": "100%"}))["messages"]
    assert [m["text"] for m in percent] == ["Is 100% of peanut butter made of peanuts?"]
    underscore = (await call(mcp, "gateway_search_history", {"query": "_case"}))["messages"]
    assert [m["text"] for m in underscore] == ["snake_case or camelCase for Python?"]
    assert (await call(mcp, "gateway_search_history", {"query": "%%"}))["messages"] == []


async def test_recent_conversations_come_most_recently_active_first(mcp: Client) -> None:
    listed = (await call(mcp, "gateway_list_conversations", {}))["sessions"]
    assert [(s["channel"], s["chat_id"]) for s in listed[:3]] == [
        ("slack", "C42"),
        ("discord", "2002"),
        ("telegram", "1001"),
    ]
    only = (await call(mcp, "gateway_list_conversations", {"channel": "telegram", "limit": 1}))["sessions"]
    assert [s["chat_id"] for s in only] == ["1001"]


async def test_sending_without_a_daemon_is_refused_clearly_and_queues_nothing(
    mcp: Client, seeded: Path
) -> None:
    message = await refusal(
        mcp, "gateway_send_message", {"channel": "telegram", "chat_id": "1001", "text": "Dinner at 7?"}
    )
    assert "needs the daemon" in message and "nothing was sent or queued" in message
    async with await open_database(seeded / "gateway.sqlite3") as db:
        assert (await queue_depths(db)).outbox == 0


async def test_bad_calls_are_tool_errors_naming_the_problem_and_the_server_stays_up(mcp: Client) -> None:
    missing = await refusal(mcp, "gateway_send_message", {"channel": "telegram", "text": "hi"})
    assert "chat_id" in missing and "required" in missing
    wrong = await refusal(mcp, contract.MEMORY_WRITE, {"user_id": "u", "memory_type": "x", "content": "text"})
    assert "content" in wrong and "object" in wrong
    too_many = await refusal(mcp, "gateway_search_history", {"query": "a", "limit": 1000})
    assert "limit" in too_many
    unknown = await refusal(mcp, "gateway_delete_everything", {})
    assert "unknown tool" in unknown and "gateway_status" in unknown
    assert (await call(mcp, "gateway_list_conversations", {"limit": 1}))["sessions"]


def test_stdout_carries_only_protocol_frames_and_closing_stdin_stops_it_and_its_engine(
    tmp_path: Path,
) -> None:
    """A raw client: every line on stdout is JSON-RPC, even while the engine child starts
    (it logs); the server's own log is on stderr; end of stdin ends both processes."""
    home = tmp_path / "raw-home"
    lines = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw"}},
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": contract.SURPRISE, "arguments": {"input": "hi", "context": {"user_id": "r"}}},
        },
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "gateway_status"}},
    ]
    env = {**os.environ, **mcp_env(home)}
    process = subprocess.Popen(
        [SCRIPT, "mcp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert process.stdin is not None and process.stdout is not None
    answers: list[dict[str, Any]] = []
    for line in lines:
        process.stdin.write(json.dumps(line).encode() + b"\n")
        process.stdin.flush()
        if "id" in line:
            answers.append(json.loads(process.stdout.readline()))
    process.stdin.close()
    rest = process.stdout.read()
    stderr = process.stderr.read().decode() if process.stderr is not None else ""
    assert process.wait(timeout=30) == 0, stderr
    assert rest == b""
    assert [a["id"] for a in answers] == [1, 2, 3] and all(a["jsonrpc"] == "2.0" for a in answers)
    assert answers[1]["result"]["structuredContent"]["surprise_score"] == 1.0
    status = answers[2]["result"]["structuredContent"]
    engine_pid = status["mcp_server"]["engine"]["pid"]
    assert "mcp server ready" in stderr
    deadline = time.monotonic() + 10
    while Path(f"/proc/{engine_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{engine_pid}").exists(), "the engine outlived the MCP server"


async def test_a_daemon_that_holds_the_data_dir_but_does_not_answer_gets_no_second_engine(
    tmp_path: Path, home: Path
) -> None:
    """A daemon runs (it holds the lock) but nothing answers on its control plane: calls fail,
    saying so, and no engine is started beside the daemon's; once it is gone, calls work."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    (tmp_path / "config.toml").write_text(f"[control]\nport = {port}\n")
    write = {"user_id": "u", "memory_type": "note", "content": {"n": "hello"}}
    token = {"MBE_GATEWAY_SECRET_CONTROL_ADMIN_TOKEN": "t" * 43}
    async with mcp_client(home, **token) as client:
        with daemon_holding(home) as daemon:
            long_ago = time.time() - 60  # it started a minute ago: no use waiting for it
            os.utime(home / lock.LOCK_FILE, (long_ago, long_ago))
            refused = await refusal(client, contract.MEMORY_WRITE, write)
            assert "a daemon runs on this data dir" in refused and f"127.0.0.1:{port}" in refused
            assert "second engine" in refused
            assert not (home / "engine.sqlite3").exists()
            assert daemon.poll() is None
        assert (await call(client, contract.MEMORY_WRITE, write))["memory_id"]
        assert (home / "engine.sqlite3").exists()


async def test_an_engine_left_idle_is_stopped_and_the_next_call_starts_it_again(home: Path) -> None:
    """In-process: the standalone backend's own engine, stopped after its idle time."""
    config = load_config()
    async with anyio.create_task_group() as tg:
        backend = Standalone(
            config, Secrets(config.secrets, home), home, tg, daemon_running=lambda: False, idle_stop=0.5
        )
        write = {"user_id": "idle", "memory_type": "note", "content": {"n": "one"}}
        await backend.mbe(contract.MEMORY_WRITE, write)
        first = backend.engine_pid
        assert first is not None
        with anyio.fail_after(15):  # stopped, and its process gone
            while backend.engine_pid is not None or Path(f"/proc/{first}").exists():
                await anyio.sleep(0.1)
        found = await backend.mbe(contract.MEMORY_READ, {"user_id": "idle", "query": "one"})
        assert found["total_count"] == 1 and backend.engine_pid not in (None, first)
        await backend.stop_engine()
        assert backend.engine_pid is None


def test_a_client_that_hangs_up_during_a_call_leaves_no_traceback(tmp_path: Path) -> None:
    """Claude Desktop quits with a call in flight: the server stops quietly (a store opened for
    the call used to leave aiosqlite's thread behind, failing once the loop was closed)."""
    lines = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw"}},
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "gateway_status"}},
    ]
    env = {**os.environ, **mcp_env(tmp_path / "hang-up-home")}
    for _ in range(3):  # it was a race; it lost every time here, but be sure
        done = subprocess.run(
            [SCRIPT, "mcp"],
            input=b"".join(json.dumps(line).encode() + b"\n" for line in lines),
            capture_output=True,
            env=env,
            timeout=60,
            check=False,
        )
        stderr = done.stderr.decode()
        assert done.returncode == 0, stderr
        assert "Traceback" not in stderr and "Event loop is closed" not in stderr, stderr


def test_started_with_stdout_in_a_file_it_says_why_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, **mcp_env(tmp_path / "file-home")}
    with (tmp_path / "out.txt").open("wb") as out:
        done = subprocess.run(
            [SCRIPT, "mcp"], stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE, env=env, timeout=60
        )
    stderr = done.stderr.decode()
    assert done.returncode == 1
    assert "its stdout is not a pipe, socket or terminal" in stderr and "Traceback" not in stderr, stderr
