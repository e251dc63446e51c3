"""`mbe-gateway mcp` beside a running daemon: Claude and the chat channels share one engine.

Real processes throughout: the MCP server (`mbe-gateway mcp`, spoken to by the mcp SDK's client
over stdio), the daemon (`python -m mbe_gateway run`) answering on the Telegram fake with the
OpenAI-compatible fake as its model. The story, in file order on one module-scoped world:
Claude writes a memory before the daemon runs (the MCP server's own engine), the daemon starts
(the MCP server stops its engine and forwards from then on), Alice talks to the bot, and at the
end the daemon stops and the MCP server serves on its own again.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from mcp import Client, StdioServerParameters

from fake_llm_servers import serve_fake_llm
from fakes.telegram import ALICE, FakeTelegram, serve_fake_telegram
from mbe_gateway import contract
from mbe_gateway.config import ControlSettings
from mbe_gateway.control.client import connect
from mbe_gateway.errors import ControlError

pytestmark = pytest.mark.anyio

SCRIPT = str(Path(sys.executable).with_name("mbe-gateway"))


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class World:
    home: Path
    telegram: FakeTelegram
    daemon: anyio.abc.Process
    mcp: Client
    early_memory: str  # written through MCP before the daemon started
    early_engine_pid: int  # the MCP server's own engine, then
    port: int  # the daemon's control plane
    tokens: dict[str, str]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def refusal(client: Client, tool: str, arguments: dict[str, Any]) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    return " ".join(block.text for block in result.content if block.type == "text")


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


async def gone(pid: int, within: float = 10) -> bool:
    with anyio.move_on_after(within):
        while alive(pid):
            await anyio.sleep(0.05)
    return not alive(pid)


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    home = tmp_path_factory.mktemp("mcp-daemon") / "home"
    home.mkdir()
    config = home.parent / "config.toml"
    port = free_port()
    tokens = {"admin": secrets.token_urlsafe(32), "read": secrets.token_urlsafe(32)}
    async with serve_fake_telegram() as telegram, serve_fake_llm() as llm:
        config.write_text(
            f"[control]\nport = {port}\n"
            "[[llm.providers]]\n"
            f'kind = "openai"\nbase_url = "{llm.openai_url}"\nmodel = "m"\n'
            "[channels.telegram]\n"
            f'enabled = true\ntoken = "secret:telegram_token"\napi_base = "{telegram.api_base}"\n'
            'dm_policy = "open"\n'
        )
        ours = {
            "MBE_GATEWAY_HOME": str(home),
            "MBE_GATEWAY_CONFIG": str(config),
            "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
            "MBE_GATEWAY_SECRET_CONTROL_ADMIN_TOKEN": tokens["admin"],
            "MBE_GATEWAY_SECRET_CONTROL_READ_TOKEN": tokens["read"],
        }
        params = StdioServerParameters(command=SCRIPT, args=["mcp"], env=ours)
        async with Client(params, read_timeout_seconds=90) as mcp:
            written = await call(
                mcp,
                contract.MEMORY_WRITE,
                {
                    "user_id": "telegram:1001",
                    "memory_type": "semantic",
                    "content": {"fact": "Alice's cat is Mochi"},
                },
            )
            before = await call(mcp, "gateway_status", {})
            engine_pid = before["mcp_server"]["engine"]["pid"]
            assert before["daemon"]["running"] is False and alive(engine_pid)

            env = {**os.environ, **ours, "MBE_GATEWAY_SECRET_TELEGRAM_TOKEN": telegram.token}
            command = [sys.executable, "-m", "mbe_gateway", "run"]
            async with await anyio.open_process(command, env=env) as daemon:
                try:
                    await telegram.wait_polling(timeout=60)
                    yield World(home, telegram, daemon, mcp, written["memory_id"], engine_pid, port, tokens)
                finally:
                    if daemon.returncode is None:
                        daemon.send_signal(signal.SIGTERM)
                        with anyio.fail_after(30):
                            await daemon.wait()


async def alice_says(world: World, text: str) -> str:
    """Alice writes to the bot; the bot's answer, as she sees it."""
    count = len(world.telegram.sent)
    world.telegram.dm(text, user=ALICE)
    sent = await world.telegram.wait_sent(count + 1, timeout=60)
    return sent[count].text


async def test_once_the_daemon_runs_the_mcp_servers_own_engine_stops_and_calls_go_to_the_daemon(
    world: World,
) -> None:
    # Stopped by the MCP server's own watch, before any call: no engine idles beside the daemon's.
    assert await gone(world.early_engine_pid), "two engines on one engine database"
    status = await call(world.mcp, "gateway_status", {})
    daemon = status["daemon"]
    assert daemon["running"] is True and daemon["pid"] == world.daemon.pid
    assert daemon["status"]["channels"] == {"telegram": "running"}
    assert daemon["status"]["engine"]["pid"] != world.early_engine_pid
    assert status["mcp_server"]["mbe_served_by"] == "the daemon's engine"


async def test_a_memory_claude_wrote_is_what_the_daemon_remembers_when_alice_asks(world: World) -> None:
    early = await alice_says(world, "/memories Mochi")
    assert "Mochi" in early  # written by the MCP server's own engine, before the daemon ran

    await call(
        world.mcp,
        contract.MEMORY_WRITE,
        {
            "user_id": "telegram:1001",
            "memory_type": "preference",
            "content": {"tea": "Alice drinks 龙井 tea"},
        },
    )
    later = await alice_says(world, "/memories 龙井")
    assert "龙井" in later  # written through the daemon's engine, while it runs

    read = await call(world.mcp, contract.MEMORY_READ, {"user_id": "telegram:1001", "query": "Mochi"})
    assert world.early_memory in [m["id"] for m in read["memories"]]


async def test_send_reaches_the_person_on_telegram_through_the_daemon(world: World) -> None:
    await alice_says(world, "Hello! I love hiking in 山里 on weekends.")
    count = len(world.telegram.sent)
    queued = await call(
        world.mcp,
        "gateway_send_message",
        {"channel": "telegram", "chat_id": str(ALICE.id), "text": "Dinner at 7 tonight?"},
    )
    assert queued["state"] == "pending" and isinstance(queued["outbox_id"], int)
    sent = await world.telegram.wait_sent(count + 1, timeout=30)
    assert sent[count].chat_id == ALICE.id and sent[count].text == "Dinner at 7 tonight?"

    refused = await refusal(
        world.mcp, "gateway_send_message", {"channel": "discord", "chat_id": "1", "text": "hi"}
    )
    assert "discord channel is not running" in refused and "telegram" in refused


async def test_conversations_and_history_come_from_the_daemon(world: World) -> None:
    listed = (await call(world.mcp, "gateway_list_conversations", {"channel": "telegram"}))["sessions"]
    assert [(s["channel"], s["chat_id"]) for s in listed] == [("telegram", str(ALICE.id))]
    found = (await call(world.mcp, "gateway_search_history", {"query": "山里 weekends"}))["messages"]
    assert [m["text"] for m in found] == ["Hello! I love hiking in 山里 on weekends."]
    assert found[0]["sender_id"] == str(ALICE.id)


async def test_the_control_protocol_methods_behind_it_check_what_they_are_given(world: World) -> None:
    control = ControlSettings(port=world.port)
    async with connect(control, world.tokens["admin"]) as admin:
        read = {"user_id": "telegram:1001", "query": "Mochi"}
        answer = await admin.call("mbe.call", {"tool": contract.MEMORY_READ, "arguments": read})
        assert answer["tool"] == contract.MEMORY_READ and answer["result"]["total_count"] >= 2
        with pytest.raises(ControlError) as unknown:
            await admin.call("mbe.call", {"tool": "drop_everything", "arguments": {}})
        assert unknown.value.code == "invalid_params"
        with pytest.raises(ControlError) as refused:
            await admin.call("mbe.call", {"tool": contract.MEMORY_WRITE, "arguments": {"user_id": "x"}})
        assert refused.value.code == "failed" and "memory_type" in str(refused.value)
        with pytest.raises(ControlError) as blank:
            await admin.call("history.search", {"query": "  "})
        assert blank.value.code == "invalid_params"
    async with connect(control, world.tokens["read"]) as reader:
        found = await reader.call("history.search", {"query": "山里", "limit": 1})
        assert len(found["messages"]) == 1
        with pytest.raises(ControlError) as forbidden:
            await reader.call("mbe.call", {"tool": contract.MEMORY_READ, "arguments": {}})
        assert forbidden.value.code == "forbidden"


async def test_when_the_daemon_stops_the_mcp_server_serves_on_its_own_again(world: World) -> None:
    world.daemon.send_signal(signal.SIGTERM)
    with anyio.fail_after(30):
        assert await world.daemon.wait() == 0

    read = await call(world.mcp, contract.MEMORY_READ, {"user_id": "telegram:1001", "query": "龙井"})
    assert any("龙井" in json.dumps(m["content"], ensure_ascii=False) for m in read["memories"])
    status = await call(world.mcp, "gateway_status", {})
    assert status["daemon"]["running"] is False
    assert status["mcp_server"]["mbe_served_by"] == "its own engine"
    refused = await refusal(
        world.mcp, "gateway_send_message", {"channel": "telegram", "chat_id": "1001", "text": "hi"}
    )
    assert "needs the daemon" in refused
