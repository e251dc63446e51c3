"""The control plane while the daemon is still starting its assistant: it answers from the
first moment, says "starting", and refuses only what needs the assistant.

In-process, against a real gateway that has no assistant yet (real SQLite, a real listener on
127.0.0.1, the real aiohttp client); the daemon's own start, from "starting" to "ready", is in
tests/test_daemon.py.
"""

from __future__ import annotations

import functools
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from mbe_gateway.config import ControlSettings, load_config
from mbe_gateway.control.auth import ADMIN_TOKEN, READ_TOKEN
from mbe_gateway.control.server import ControlServer, serve
from mbe_gateway.gateway import Gateway
from mbe_gateway.mbe import Backoff
from mbe_gateway.secrets import Secrets
from mbe_gateway.store import open_database
from test_control_metrics import parse


@dataclass
class Starting:
    gateway: Gateway
    server: ControlServer
    secrets: Secrets

    @property
    def http(self) -> str:
        assert self.server.address is not None
        host, port = self.server.address
        return f"http://{host}:{port}"


@pytest.fixture
async def starting(home: Path, tmp_path: Path) -> AsyncIterator[Starting]:
    config_file = tmp_path / "config.toml"
    config_file.write_text('[secrets]\nbackend = "file"\n[gateway]\nlanguage = "zh"\n')
    config = load_config(config_file)
    secrets = Secrets(config.secrets, home)
    async with await open_database(tmp_path / "gateway.db") as db:
        gateway = Gateway(None, {}, {}, config=config, db=db)
        async with anyio.create_task_group() as tg:
            await tg.start(gateway.run)
            server = await tg.start(serve, gateway, ControlSettings(port=0), secrets)
            assert isinstance(server, ControlServer)
            with anyio.fail_after(10):
                while server.address is None:
                    await anyio.sleep(0.01)
            yield Starting(gateway, server, secrets)
            tg.cancel_scope.cancel()


async def connect(
    session: aiohttp.ClientSession, plane: Starting, token: str
) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(plane.http.replace("http://", "ws://") + "/ws")
    hello = await request(ws, "connect", {"token": token})
    assert hello["ok"], hello
    return ws


async def request(ws: aiohttp.ClientWebSocketResponse, method: str, params: dict[str, Any]) -> dict[str, Any]:
    await ws.send_str(json.dumps({"type": "req", "id": method, "method": method, "params": params}))
    while True:
        frame: dict[str, Any] = json.loads((await ws.receive(timeout=15)).data)
        if frame["type"] == "res" and frame["id"] == method:
            return frame


@pytest.mark.anyio
async def test_while_the_assistant_starts_status_says_so_and_chat_waits_for_it(starting: Starting) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await connect(session, starting, starting.secrets.get(ADMIN_TOKEN))
        status = (await request(ws, "status", {}))["payload"]
        assert status["components"] == {"assistant": "starting", "engine": "starting"}
        assert status["engine"] == {"state": "starting", "server": None, "pid": None, "last_error": None}
        assert status["model"] is None and status["providers"] == []
        assert set(status["queues"]) >= {"inbox", "outbox", "lanes"}
        assert (await request(ws, "health", {}))["payload"]["ok"] is True

        for method, params in [
            ("chat.send", {"text": "are you there?"}),
            ("mbe.call", {"tool": "mbe_memory_read", "arguments": {"user_id": "u", "query": "q"}}),
        ]:
            refused = await request(ws, method, params)
            assert refused["ok"] is False, refused
            assert refused["error"]["code"] == "unavailable"
            assert "still starting" in refused["error"]["message"]
        # What needs only the store works meanwhile.
        found = await request(ws, "history.search", {"query": "anything"})
        assert found["ok"] and found["payload"]["messages"] == []
        assert (await request(ws, "pairing.list", {}))["ok"]
        await ws.close()
    assert starting.gateway.metrics.messages_in.values == {}  # the refused chat was not counted


@pytest.mark.anyio
async def test_healthz_is_ok_and_metrics_show_the_assistant_down_while_it_starts(starting: Starting) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(starting.http + "/healthz") as health:
            assert (health.status, await health.text()) == (200, "ok\n")
        bearer = {"Authorization": f"Bearer {starting.secrets.get(READ_TOKEN)}"}
        async with session.get(starting.http + "/metrics", headers=bearer) as scraped:
            assert scraped.status == 200
            families = parse(await scraped.text())
    assert families["mbe_gateway_up"].value(component="assistant") == 0
    assert families["mbe_gateway_up"].value(component="engine") == 0
    assert families["mbe_gateway_llm_provider_cooldown_seconds"].samples == []  # no providers yet


@pytest.mark.anyio
async def test_a_taken_port_is_reported_at_once_and_listened_on_when_freed(
    home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text('[secrets]\nbackend = "file"\n')
    config = load_config(config_file)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = int(taken.getsockname()[1])
    caplog.set_level(logging.ERROR, logger="mbe_gateway.control.server")
    async with await open_database(tmp_path / "gateway.db") as db:
        gateway = Gateway(None, {}, {}, config=config, db=db)  # the assistant is not there yet
        async with anyio.create_task_group() as tg:
            secrets = Secrets(config.secrets, home)
            quick = Backoff(base=0.2, jitter=0)
            server = await tg.start(
                functools.partial(serve, gateway, ControlSettings(port=port), secrets, backoff=quick)
            )
            assert isinstance(server, ControlServer)
            with anyio.fail_after(10):
                while not caplog.records:
                    await anyio.sleep(0.01)
            (record,) = caplog.records
            assert record.getMessage() == "control plane cannot listen; trying again"
            assert record.address == f"127.0.0.1:{port}"  # type: ignore[attr-defined]
            assert "in use" in record.error  # type: ignore[attr-defined]
            assert server.address is None
            taken.close()
            with anyio.fail_after(10):
                while server.address is None:
                    await anyio.sleep(0.01)
            assert server.address == ("127.0.0.1", port)
            tg.cancel_scope.cancel()
