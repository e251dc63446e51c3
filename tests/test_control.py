"""The control plane as its clients meet it: a real server on 127.0.0.1, the real aiohttp
WebSocket client, a real gateway (real engine child, real SQLite, the OpenAI-compatible fake
over HTTP), and a loopback channel standing in for a chat platform.

One daemon is shared by the module (starting the engine costs about a second); each test
opens its own connections.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from fake_llm_servers import FakeLLM, serve_fake_llm
from mbe_gateway import access
from mbe_gateway.assistant import open_assistant
from mbe_gateway.channels.base import Capabilities, Deliver, Inbound, Outbound
from mbe_gateway.config import ControlSettings, load_config
from mbe_gateway.control import protocol
from mbe_gateway.control.auth import ADMIN_TOKEN, READ_TOKEN, Tokens
from mbe_gateway.control.events import Events
from mbe_gateway.control.server import ControlServer, serve
from mbe_gateway.errors import ChannelAuthFailed
from mbe_gateway.gateway import Gateway
from mbe_gateway.logs import fields_of
from mbe_gateway.mbe import Backoff
from mbe_gateway.secrets import Secrets
from mbe_gateway.store import outbox
from test_control_metrics import parse


class LoopChannel:
    """A chat platform in the test's hands: `write` is a person sending a message, `sent`
    is what the gateway sent back."""

    capabilities = Capabilities(max_length=4096, markup="plain", typing=False)

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[Outbound] = []
        self.fail = anyio.Event()  # set: the platform refuses our token from now on
        self._deliver: Deliver | None = None
        self._count = 0

    async def run(self, deliver: Deliver) -> None:
        self._deliver = deliver
        await self.fail.wait()
        raise ChannelAuthFailed(f"{self.name}: the platform refused the token")

    async def send(self, message: Outbound) -> list[str]:
        self.sent.append(message)
        return [str(len(self.sent))]

    async def typing(self, chat_id: str) -> None:
        """Nothing to show."""

    async def check(self) -> str:
        return self.name

    async def write(self, text: str, *, sender: str = "ada") -> None:
        assert self._deliver is not None, "the channel is not running"
        self._count += 1
        await self._deliver(
            Inbound(
                channel=self.name,
                platform_message_id=f"{sender}-{self._count}-{time.time()}",
                chat_id=sender,
                sender_id=sender,
                sender_name=sender.title(),
                text=text,
                sent_at=time.time(),
            )
        )

    async def wait_sent(self, count: int, *, timeout: float = 10) -> list[Outbound]:
        with anyio.fail_after(timeout):
            while len(self.sent) < count:
                await anyio.sleep(0.01)
        return self.sent


class Captured(logging.Handler):
    """Every log record of the process, formatted with its fields and traceback, unredacted:
    a token must not reach a log call at all, not merely be masked on the way out."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        self.lines.append(f"{record.name} {record.getMessage()} {fields_of(record)} {exc}")

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class Plane:
    gateway: Gateway
    server: ControlServer
    tokens: Tokens
    loop: LoopChannel
    doomed: LoopChannel
    llm: FakeLLM
    log: Captured
    home: Path

    @property
    def http(self) -> str:
        assert self.server.address is not None
        host, port = self.server.address
        return f"http://{host}:{port}"

    @property
    def ws(self) -> str:
        return self.http.replace("http://", "ws://") + "/ws"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def plane(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Plane]:
    home = tmp_path_factory.mktemp("control-home")
    captured = Captured()
    watched = [logging.getLogger(name) for name in ("mbe_gateway", "aiohttp")]
    levels = [logger.level for logger in watched]
    logging.getLogger().addHandler(captured)
    for logger in watched:
        logger.setLevel(logging.DEBUG)
    try:
        async with serve_fake_llm() as llm:
            config_file = home / "config.toml"
            config_file.write_text(
                '[secrets]\nbackend = "file"\n[[llm.providers]]\nkind = "openai"\nname = "fake"\n'
                f'base_url = "{llm.openai_url}"\nmodel = "m"\n'
            )
            with pytest.MonkeyPatch.context() as env:
                env.setenv("MBE_GATEWAY_HOME", str(home))
                env.setenv("MBE_GATEWAY_CONFIG", str(config_file))
                config = load_config(config_file)
                async with open_assistant(config) as assistant:
                    await assistant.wait_for_engine(30)
                    loop, doomed = LoopChannel("loop"), LoopChannel("doomed")
                    gateway = Gateway(
                        assistant,
                        {"loop": loop, "doomed": doomed},
                        {"loop": access.Policy("pairing", ("ada",)), "doomed": access.Policy()},
                        backoff=Backoff(base=0.05, jitter=0),
                    )
                    secrets = Secrets(config.secrets, home)
                    async with anyio.create_task_group() as tg:
                        await tg.start(gateway.run)
                        server = await tg.start(serve, gateway, ControlSettings(port=0), secrets)
                        assert isinstance(server, ControlServer)
                        with anyio.fail_after(10):
                            while server.address is None:
                                await anyio.sleep(0.01)
                        tokens = Tokens(admin=secrets.get(ADMIN_TOKEN), read=secrets.get(READ_TOKEN))
                        yield Plane(gateway, server, tokens, loop, doomed, llm, captured, home)
                        tg.cancel_scope.cancel()
    finally:
        logging.getLogger().removeHandler(captured)
        for logger, level in zip(watched, levels, strict=True):
            logger.setLevel(level)


class Client:
    """A raw protocol client: frames as dicts, events kept as they arrive."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._ids = 0

    async def request(self, method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Send a request; its response frame (events that arrive meanwhile are kept)."""
        self._ids += 1
        request_id = f"r{self._ids}"
        await self.ws.send_str(
            json.dumps({"type": "req", "id": request_id, "method": method, "params": params or {}})
        )
        while True:
            frame = await self.frame()
            if frame["type"] == "res" and frame["id"] == request_id:
                return frame

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The payload of a request that must succeed."""
        frame = await self.request(method, params)
        assert frame["ok"], frame
        return frame["payload"]  # type: ignore[no-any-return]

    async def frame(self, timeout: float = 15) -> dict[str, Any]:
        message = await self.ws.receive(timeout=timeout)
        assert message.type is aiohttp.WSMsgType.TEXT, (message.type, message.data, message.extra)
        frame: dict[str, Any] = json.loads(message.data)
        if frame["type"] == "event":
            self.events.append(frame)
        return frame

    async def event(self, wanted: Callable[[dict[str, Any]], bool], *, timeout: float = 10) -> dict[str, Any]:
        """The first event (kept or still to come) for which `wanted` holds."""
        with anyio.fail_after(timeout):
            seen = 0
            while True:
                for event in self.events[seen:]:
                    if wanted(event):
                        return event
                seen = len(self.events)
                await self.frame()

    async def closed(self) -> int | None:
        """Wait for the server to close the socket; its close code."""
        message = await self.ws.receive(timeout=5)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), message
        return self.ws.close_code


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@pytest.fixture
def open_client(plane: Plane, session: aiohttp.ClientSession) -> Callable[..., Any]:
    async def open_(token: str | None = None, **headers: str) -> Client:
        """A WebSocket to the plane; connected with `token` when one is given."""
        client = Client(await session.ws_connect(plane.ws, headers=headers))
        if token is not None:
            hello = await client.request("connect", {"token": token})
            assert hello["ok"], hello
        return client

    return open_


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_client_without_a_token_is_refused_and_disconnected(open_client: Callable[..., Any]) -> None:
    client = await open_client()
    refused = await client.request("connect", {})
    assert refused["ok"] is False and refused["error"]["code"] == protocol.UNAUTHORIZED
    assert await client.closed() == aiohttp.WSCloseCode.POLICY_VIOLATION


@pytest.mark.anyio
async def test_a_wrong_token_is_refused_even_when_it_differs_in_one_character(
    plane: Plane, open_client: Callable[..., Any]
) -> None:
    near_miss = plane.tokens.admin[:-1] + ("A" if plane.tokens.admin[-1] != "A" else "B")
    for wrong in (near_miss, plane.tokens.admin + "x", "", 42, "ünïcödé"):
        client = await open_client()
        refused = await client.request("connect", {"token": wrong})
        assert refused["error"]["code"] == protocol.UNAUTHORIZED, wrong
        assert await client.closed() == aiohttp.WSCloseCode.POLICY_VIOLATION


@pytest.mark.anyio
async def test_anything_but_connect_as_the_first_frame_closes_the_socket(
    plane: Plane, open_client: Callable[..., Any]
) -> None:
    client = await open_client()
    refused = await client.request("status")
    assert refused["error"]["code"] == protocol.UNAUTHORIZED
    assert await client.closed() == aiohttp.WSCloseCode.POLICY_VIOLATION

    for junk in ("not json", "[1, 2]", json.dumps({"type": "event", "id": 1, "method": "connect"})):
        client = await open_client()
        await client.ws.send_str(junk)
        frame = await client.frame()
        assert frame["ok"] is False and frame["error"]["code"] == protocol.UNAUTHORIZED
        assert await client.closed() == aiohttp.WSCloseCode.POLICY_VIOLATION

    client = await open_client()
    await client.ws.send_bytes(json.dumps({"type": "req", "id": 1, "method": "connect"}).encode())
    assert (await client.frame())["error"]["code"] == protocol.UNAUTHORIZED
    assert await client.closed() == aiohttp.WSCloseCode.POLICY_VIOLATION


@pytest.mark.anyio
async def test_a_token_in_the_query_string_is_refused_even_when_it_is_right(
    plane: Plane, session: aiohttp.ClientSession
) -> None:
    for name in ("token", "access_token"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{plane.ws}?{name}={plane.tokens.admin}")
        assert refused.value.status == 400
    async with session.get(f"{plane.http}/metrics?token={plane.tokens.admin}") as response:
        assert response.status == 400
        assert "never accepted in a URL" in await response.text()
    headers = {"Authorization": f"Bearer {plane.tokens.admin}"}
    async with session.get(f"{plane.http}/metrics?x=1", headers=headers) as response:
        assert response.status == 400


@pytest.mark.anyio
async def test_an_oversized_frame_before_authentication_closes_the_socket(
    plane: Plane, open_client: Callable[..., Any]
) -> None:
    client = await open_client()
    padding = "x" * protocol.MAX_FRAME
    frame = {
        "type": "req",
        "id": 1,
        "method": "connect",
        "params": {"token": plane.tokens.admin, "pad": padding},
    }
    await client.ws.send_str(json.dumps(frame))
    assert await client.closed() == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


@pytest.mark.anyio
async def test_a_client_that_never_authenticates_is_disconnected(
    plane: Plane, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mbe_gateway.control.server.AUTH_WITHIN", 0.3)
    client = Client(await session.ws_connect(plane.ws))
    started = time.monotonic()
    assert (await client.frame())["error"]["code"] == protocol.UNAUTHORIZED
    assert await client.closed() == aiohttp.WSCloseCode.POLICY_VIOLATION
    assert time.monotonic() - started < 3


@pytest.mark.anyio
async def test_the_read_only_token_reads_but_cannot_call_an_admin_method(
    plane: Plane, open_client: Callable[..., Any]
) -> None:
    client = await open_client()
    hello = await client.request("connect", {"token": plane.tokens.read})
    assert hello["payload"]["scope"] == "read"
    assert "chat.send" not in hello["payload"]["methods"] and "status" in hello["payload"]["methods"]
    assert (await client.call("health"))["ok"] is True
    outbox_before = await outbox.due(plane.gateway.db, now=time.time() + 3600)
    sent_before, asked_before = len(plane.loop.sent), len(plane.llm.requests)

    for method, params in (
        ("chat.send", {"text": "hello"}),
        ("send", {"channel": "loop", "chat_id": "ada", "text": "hi from the read token"}),
        ("pairing.approve", {"code": "ABCD2345"}),
        ("pairing.deny", {"code": "ABCD2345"}),
    ):
        refused = await client.request(method, params)
        assert refused["ok"] is False and refused["error"]["code"] == protocol.FORBIDDEN, method

    assert (await client.call("health"))["ok"] is True  # refused, not disconnected
    assert await outbox.due(plane.gateway.db, now=time.time() + 3600) == outbox_before
    assert len(plane.loop.sent) == sent_before
    assert len(plane.llm.requests) == asked_before


@pytest.mark.anyio
async def test_forwarded_headers_grant_no_trust(plane: Plane, session: aiohttp.ClientSession) -> None:
    trusting = {
        "X-Forwarded-For": "127.0.0.1",
        "X-Real-IP": "127.0.0.1",
        "Forwarded": "for=127.0.0.1;proto=https",
        "X-Forwarded-User": "owner",
    }
    async with session.get(f"{plane.http}/metrics", headers=trusting) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    client = Client(await session.ws_connect(plane.ws, headers=trusting))
    assert (await client.request("connect", {}))["error"]["code"] == protocol.UNAUTHORIZED
    assert await client.closed() == aiohttp.WSCloseCode.POLICY_VIOLATION


@pytest.mark.anyio
async def test_a_page_from_another_site_cannot_open_the_socket(
    plane: Plane, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(plane.ws, headers={"Origin": "http://evil.example"})
    assert refused.value.status == 403
    same_site = Client(await session.ws_connect(plane.ws, headers={"Origin": plane.http}))
    assert (await same_site.request("connect", {"token": plane.tokens.read}))["ok"] is True


# --- the methods, with the right token ---------------------------------------------------------


@pytest.mark.anyio
async def test_status_shows_the_components_the_engine_the_models_and_the_queues(
    plane: Plane, open_client: Callable[..., Any]
) -> None:
    client = await open_client(plane.tokens.read)
    status = await client.call("status")
    assert status["engine"]["state"] == "ready"
    assert status["engine"]["pid"] > 0
    assert status["components"]["engine"] == "ready"
    assert status["channels"]["loop"] == "running"
    assert status["model"] == "openai m"
    assert [p["name"] for p in status["providers"]] == ["fake"]
    assert set(status["queues"]) >= {"inbox", "outbox", "memory_writes", "pairing_requests", "lanes"}
    assert status["control"]["clients"] >= 1
    health = await client.call("health")
    assert health["ok"] is True and health["uptime_s"] >= 0


@pytest.mark.anyio
async def test_chat_send_streams_the_answer_and_ends_with_the_reply(
    plane: Plane, open_client: Callable[..., Any]
) -> None:
    client = await open_client(plane.tokens.admin)
    reply = await client.call("chat.send", {"text": "What should I cook tonight?", "chat_id": "kitchen"})
    deltas = [e["payload"] for e in client.events if e["event"] == "chat.delta"]
    assert deltas and all(d["id"] == "r2" for d in deltas)  # r1 was connect
    assert "".join(d["text"] for d in deltas).strip() == reply["body"] == "Hello from the fake model."
    assert reply["degraded"] == []
    assert reply["timings"]["total"] > 0

    sessions = (await client.call("sessions.list", {"channel": "control"}))["sessions"]
    kitchen = next(s for s in sessions if s["chat_id"] == "kitchen")
    history = await client.call("sessions.history", {"session_id": kitchen["id"]})
    assert [(m["role"], m["text"]) for m in history["messages"]] == [
        ("user", "What should I cook tonight?"),
        ("assistant", "Hello from the fake model."),
    ]


@pytest.mark.anyio
async def test_a_message_on_a_channel_is_announced_and_so_is_its_answer(
    plane: Plane, open_client: Callable[..., Any]
) -> None:
    client = await open_client(plane.tokens.read)
    await plane.loop.write("Is it going to rain tomorrow?")
    came = await client.event(lambda e: e["event"] == "message" and e["payload"]["direction"] == "in")
    assert came["payload"]["channel"] == "loop" and came["payload"]["text"] == "Is it going to rain tomorrow?"
    went = await client.event(lambda e: e["event"] == "message" and e["payload"]["direction"] == "out")
    assert went["payload"]["chat_id"] == "ada" and went["payload"]["text"].startswith(
        "Hello from the fake model."
    )
    assert (await plane.loop.wait_sent(1))[-1].chat_id == "ada"


@pytest.mark.anyio
async def test_send_delivers_a_message_to_a_user_on_their_channel(
    plane: Plane, open_client: Callable[..., Any]
) -> None:
    client = await open_client(plane.tokens.admin)
    before = len(plane.loop.sent)
    queued = await client.call("send", {"channel": "loop", "chat_id": "bo", "text": "Dinner is at eight."})
    assert queued["outbox_id"] > 0
    sent = await plane.loop.wait_sent(before + 1)
    assert (sent[-1].chat_id, sent[-1].text) == ("bo", "Dinner is at eight.")

    nowhere = await client.request("send", {"channel": "carrier-pigeon", "chat_id": "bo", "text": "hi"})
    assert nowhere["error"]["code"] == protocol.UNAVAILABLE
    assert "loop" in nowhere["error"]["message"]
    empty = await client.request("send", {"channel": "loop", "chat_id": "bo", "text": "   "})
    assert empty["error"]["code"] == protocol.INVALID_PARAMS


@pytest.mark.anyio
async def test_the_owner_approves_one_stranger_and_denies_another(
    plane: Plane, open_client: Callable[..., Any]
) -> None:
    before = len(plane.loop.sent)
    await plane.loop.write("hello?", sender="cleo")
    await plane.loop.write("let me in", sender="dan")
    await plane.loop.wait_sent(before + 2)  # each got a pairing code

    reader = await open_client(plane.tokens.read)
    pending = {p["sender_id"]: p for p in (await reader.call("pairing.list"))["pending"]}
    assert set(pending) >= {"cleo", "dan"}

    admin = await open_client(plane.tokens.admin)
    approved = await admin.call("pairing.approve", {"code": pending["cleo"]["code"].lower()})
    assert approved == {"channel": "loop", "sender_id": "cleo", "sender_name": "Cleo"}
    denied = await admin.call("pairing.deny", {"code": pending["dan"]["code"]})
    assert denied["sender_id"] == "dan"
    notice = (await plane.loop.wait_sent(before + 3))[-1]
    assert notice.chat_id == "cleo"

    after = await reader.call("pairing.list")
    assert {a["sender_id"] for a in after["approved"]} >= {"cleo"}
    assert not {p["sender_id"] for p in after["pending"]} & {"cleo", "dan"}
    unknown = await admin.request("pairing.approve", {"code": pending["dan"]["code"]})
    assert unknown["error"]["code"] == protocol.NOT_FOUND


@pytest.mark.anyio
async def test_a_component_that_stops_is_announced(plane: Plane, open_client: Callable[..., Any]) -> None:
    client = await open_client(plane.tokens.read)
    plane.doomed.fail.set()
    stopped = await client.event(lambda e: e["event"] == "state" and e["payload"]["component"] == "doomed")
    assert stopped["payload"]["state"].startswith("stopped:")
    assert (await client.call("status"))["channels"]["doomed"].startswith("stopped:")


@pytest.mark.anyio
async def test_mistakes_after_connecting_get_clear_errors_and_keep_the_connection(
    plane: Plane, open_client: Callable[..., Any]
) -> None:
    client = await open_client(plane.tokens.admin)
    assert (await client.request("reboot"))["error"]["code"] == protocol.UNKNOWN_METHOD
    missing = await client.request("sessions.history", {})
    assert missing["error"]["code"] == protocol.INVALID_PARAMS and "session_id" in missing["error"]["message"]
    wrong_type = await client.request("sessions.list", {"limit": "ten"})
    assert wrong_type["error"]["code"] == protocol.INVALID_PARAMS
    assert (await client.request("sessions.history", {"session_id": 999_999}))["error"][
        "code"
    ] == protocol.NOT_FOUND
    assert (await client.request("connect", {"token": plane.tokens.admin}))["error"][
        "code"
    ] == protocol.BAD_REQUEST
    await client.ws.send_str("{not json")
    malformed = await client.frame()
    assert malformed["id"] is None and malformed["error"]["code"] == protocol.BAD_REQUEST
    assert (await client.call("health"))["ok"] is True


# --- HTTP ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_healthz_says_ok_to_anyone_and_nothing_more(
    plane: Plane, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{plane.http}/healthz") as response:
        assert response.status == 200
        assert await response.text() == "ok\n"


@pytest.mark.anyio
async def test_metrics_want_a_token(plane: Plane, session: aiohttp.ClientSession) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": plane.tokens.read}):
        async with session.get(f"{plane.http}/metrics", headers=headers) as response:
            assert response.status == 401, headers
    async with session.get(
        f"{plane.http}/metrics", headers={"Authorization": f"bearer {plane.tokens.read}"}
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")


@pytest.mark.anyio
async def test_metrics_parse_as_prometheus_text_and_count_what_happened(
    plane: Plane, session: aiohttp.ClientSession
) -> None:
    before = len(plane.loop.sent)
    await plane.loop.write("How far is the moon?")
    await plane.loop.wait_sent(before + 1)
    headers = {"Authorization": f"Bearer {plane.tokens.read}"}
    async with session.get(f"{plane.http}/metrics", headers=headers) as response:
        families = parse(await response.text())

    assert families["mbe_gateway_messages_in_total"].value(channel="loop") >= 1
    assert families["mbe_gateway_messages_out_total"].value(channel="loop") >= 1
    stages = families["mbe_gateway_stage_seconds"]
    assert stages.value("mbe_gateway_stage_seconds_count", stage="total") >= 1
    assert stages.value("mbe_gateway_stage_seconds_count", stage="generate") >= 1
    calls = families["mbe_gateway_mbe_call_seconds"]
    for tool in ("mbe_surprise", "mbe_route", "mbe_memory_read"):
        assert calls.value("mbe_gateway_mbe_call_seconds_count", tool=tool) >= 1
    assert families["mbe_gateway_llm_answers_total"].value(provider="fake") >= 1
    assert families["mbe_gateway_up"].value(component="engine") == 1
    assert families["mbe_gateway_up"].value(component="loop") == 1
    depth = families["mbe_gateway_queue_depth"]
    assert {labels["queue"] for _, labels, _ in depth.samples} >= {"inbox", "outbox", "memory_writes"}
    assert families["mbe_gateway_delivery_total"].value(outcome="sent") >= 1
    assert families["mbe_gateway_llm_provider_cooldown_seconds"].value(provider="fake") == 0


# --- secrets stay secret -------------------------------------------------------------------


@pytest.mark.anyio
async def test_no_token_ever_reaches_the_logs(
    plane: Plane, open_client: Callable[..., Any], session: aiohttp.ClientSession
) -> None:
    near_miss = plane.tokens.read[:-2] + "zz"
    client = await open_client(plane.tokens.admin)
    await client.call("status")
    await client.request("reboot")
    rejected = await open_client()
    await rejected.request("connect", {"token": near_miss})
    await rejected.closed()
    for url in (f"{plane.ws}?token={plane.tokens.admin}", f"{plane.http}/metrics?token={plane.tokens.read}"):
        async with session.get(url) as response:
            assert response.status == 400
    async with session.get(
        f"{plane.http}/metrics", headers={"Authorization": f"Bearer {near_miss}"}
    ) as response:
        assert response.status == 401
    await anyio.sleep(0.1)

    logged = plane.log.text
    assert "control plane listening" in logged and "refused a client" in logged  # the log is live
    for secret in (plane.tokens.admin, plane.tokens.read, near_miss):
        assert secret not in logged
    secrets_file = json.loads((plane.home / "secrets.json").read_text())
    assert set(secrets_file["secrets"]) == {ADMIN_TOKEN, READ_TOKEN}


@pytest.mark.anyio
async def test_a_client_that_falls_behind_on_events_is_let_go_without_slowing_anyone() -> None:
    hub = Events(buffer=2)
    with hub.subscribe() as slow, hub.subscribe() as keeping_up:
        for n in range(2):
            hub.publish("message", {"n": n})
            assert (await keeping_up.receive()).payload == {"n": n}
        hub.publish("message", {"n": 2})  # `slow` has two waiting already: it is dropped
        assert (await keeping_up.receive()).payload == {"n": 2}
        assert [(await slow.receive()).payload["n"] for _ in range(2)] == [0, 1]
        with pytest.raises(anyio.EndOfStream):
            await slow.receive()
        hub.publish("message", {"n": 3})
        assert (await keeping_up.receive()).payload == {"n": 3}
