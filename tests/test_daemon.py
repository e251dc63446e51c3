"""`mbe-gateway run` as a user runs it: a real process, answering on Telegram, stopped by a signal."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from mcp import Client, StdioServerParameters

from fake_llm_servers import serve_fake_llm
from fakes.telegram import serve_fake_telegram
from mbe_gateway import contract


@pytest.mark.anyio
async def test_the_daemon_answers_a_dm_and_stops_cleanly_on_sigterm(tmp_path: Path, home: Path) -> None:
    async with serve_fake_telegram() as telegram, serve_fake_llm() as llm:
        config = tmp_path / "config.toml"
        config.write_text(
            "[[llm.providers]]\n"
            f'kind = "openai"\nbase_url = "{llm.openai_url}"\nmodel = "m"\n'
            "[channels.telegram]\n"
            f'enabled = true\ntoken = "secret:telegram_token"\napi_base = "{telegram.api_base}"\n'
            'dm_policy = "open"\n'
        )
        env = {**os.environ, "MBE_GATEWAY_SECRET_TELEGRAM_TOKEN": telegram.token}
        command = [sys.executable, "-m", "mbe_gateway", "--config", str(config), "run"]
        async with await anyio.open_process(command, env=env) as daemon:
            await telegram.wait_polling(timeout=30)
            telegram.dm("Good morning! What should I cook tonight?")
            (reply,) = await telegram.wait_sent(1, timeout=30)
            assert reply.text.startswith("Hello from the fake model.")
            daemon.send_signal(signal.SIGTERM)
            with anyio.fail_after(20):
                code = await daemon.wait()
            stderr = ""
            if daemon.stderr is not None:
                async for chunk in daemon.stderr:
                    stderr += chunk.decode(errors="replace")
    assert code == 0, stderr
    assert telegram.token not in stderr
    log = (home / "logs" / "gateway.log").read_text()
    assert '"msg": "mbe-gateway is running"' in log
    assert telegram.token not in log


@pytest.mark.anyio
async def test_the_control_plane_answers_while_the_assistant_starts_then_says_it_is_ready(
    tmp_path: Path, home: Path
) -> None:
    """A Telegram that never answers holds the assistant's start for RECEIVING_WAIT (5 s): the
    control plane is up meanwhile, says "starting", and refuses a chat until the assistant runs."""
    admin = "a" * 43
    with socket.socket() as silent, socket.socket() as probe:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connections are taken by the kernel and never answered
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
        probe.close()
        async with serve_fake_llm() as llm:
            config = tmp_path / "config.toml"
            config.write_text(
                f'[control]\nport = {port}\n[[llm.providers]]\nkind = "openai"\n'
                f'base_url = "{llm.openai_url}"\nmodel = "m"\n'
                '[channels.telegram]\nenabled = true\ntoken = "secret:telegram_token"\n'
                f'api_base = "http://127.0.0.1:{silent.getsockname()[1]}"\n'
            )
            env = {
                **os.environ,
                "MBE_GATEWAY_SECRET_TELEGRAM_TOKEN": "123456:" + "t" * 35,
                "MBE_GATEWAY_SECRET_CONTROL_ADMIN_TOKEN": admin,
                "MBE_GATEWAY_SECRET_CONTROL_READ_TOKEN": "r" * 43,
            }
            command = [sys.executable, "-m", "mbe_gateway", "--config", str(config), "run"]
            async with (
                await anyio.open_process(command, env=env) as daemon,
                aiohttp.ClientSession() as session,
            ):
                with anyio.fail_after(60):
                    while True:
                        try:
                            ws = await session.ws_connect(f"ws://127.0.0.1:{port}/ws")
                            break
                        except aiohttp.ClientConnectionError:
                            await anyio.sleep(0.05)
                events: list[dict[str, Any]] = []

                async def request(method: str, params: dict[str, Any]) -> dict[str, Any]:
                    await ws.send_str(
                        json.dumps({"type": "req", "id": method, "method": method, "params": params})
                    )
                    while True:
                        frame: dict[str, Any] = json.loads((await ws.receive(timeout=60)).data)
                        if frame["type"] == "event":
                            events.append(frame)
                        elif frame["id"] == method:
                            return frame

                assert (await request("connect", {"token": admin}))["ok"]
                status = (await request("status", {}))["payload"]
                assert status["components"]["assistant"] == "starting"
                early = await request("chat.send", {"text": "are you awake?"})
                assert early["ok"] is False and early["error"]["code"] == "unavailable"
                assert "still starting" in early["error"]["message"]
                # Claude Desktop calls MBE meanwhile: `mbe-gateway mcp` waits for the assistant
                # (it must not start a second engine, nor give up while the daemon starts).
                mcp = Client(
                    StdioServerParameters(
                        command=sys.executable,
                        args=["-m", "mbe_gateway", "--config", str(config), "mcp"],
                        env={**env, "MBE_GATEWAY_HOME": str(home)},
                    ),
                    read_timeout_seconds=60,
                )
                async with mcp:
                    written = await mcp.call_tool(
                        contract.MEMORY_WRITE,
                        {"user_id": "telegram:7", "memory_type": "fact", "content": {"text": "x"}},
                    )
                assert not written.is_error, written.content

                with anyio.fail_after(60):
                    while not any(
                        e["payload"] == {"component": "assistant", "state": "ready"} for e in events
                    ):
                        events.append(json.loads((await ws.receive()).data))
                status = (await request("status", {}))["payload"]
                assert status["components"]["assistant"] == "ready"
                assert status["model"] == "openai m"
                answer = await request("chat.send", {"text": "are you awake now?"})
                assert answer["ok"], answer
                assert answer["payload"]["text"].startswith("Hello from the fake model.")
                await ws.close()
                daemon.send_signal(signal.SIGTERM)
                with anyio.fail_after(30):
                    assert await daemon.wait() == 0
