"""A fake Slack on 127.0.0.1: the Web API methods a Socket Mode bot calls, and the Socket Mode
WebSocket, close enough to the wire that slack-sdk works against it unchanged (only its base
URL pointed here). For tests, end-to-end tests and benchmarks.

    async with serve_fake_slack() as slack:
        channel = SlackChannel(bot_token=slack.bot_token, app_token=slack.app_token,
                               api_base=slack.api_url)
        posted = await slack.dm("hello")           # a person writes to the bot
        await slack.wait_acked(posted)             # the bot acknowledged the envelope
        slack.fail("chat.postMessage", RateLimited(2), ServerError())   # script the next answers
        [reply] = await slack.wait_sent(1)         # what the bot posted, in order

What it speaks:
- `POST /api/auth.test`, `/api/apps.connections.open`, `/api/chat.postMessage`, with Slack's
  token rules (a bot token for the first and last, an app-level token for the second) and
  its answers: `{"ok": false, "error": ...}`, HTTP 429 with Retry-After, 5xx.
- `GET /link/?ticket=...`: the WebSocket. Tickets are single-use. It greets with `hello`,
  sends `events_api` envelopes to the newest connection, records `{"envelope_id": ...}` acks,
  and sends an unacknowledged event again after `redeliver_after` seconds with
  `retry_attempt` + 1 and `retry_reason` "timeout" (a new envelope, the same event_id), as
  Slack does. `refresh()` sends a `disconnect` message; `drop()` closes connections.
- Everything the bot posts comes back to it as a `message` event with its `bot_id`, as it
  does on Slack.

`timeline` lists ("envelope", id) and ("ack", id) in the order they happened; a test's
deliver function may append its own entries to check the order of deliver and ack.

Run it alone for a benchmark: `python tests/fakes/slack.py --port 8098`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from aiohttp import WSMsgType, web
from anyio.abc import TaskGroup

BOT_TOKEN = "xoxb-1111-2222-fakebottoken"  # a fake's credentials
APP_TOKEN = "xapp-1-AFAKE-3333-fakeapptoken"
BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"
TEAM_ID = "TFAKE"
APP_ID = "AFAKE"


# -- scripted answers ---------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimited:
    """HTTP 429 with `Retry-After: retry_after` and `{"ok": false, "error": "ratelimited"}`."""

    retry_after: int = 1


@dataclass(frozen=True)
class ServerError:
    """An HTTP 5xx with an HTML body, as Slack's edge answers when it is in trouble."""

    status: int = 500


@dataclass(frozen=True)
class APIError:
    """HTTP 200 with `{"ok": false, "error": error}` (channel_not_found, invalid_blocks, ...)."""

    error: str


@dataclass(frozen=True)
class Drop:
    """Close the TCP connection without answering: a network failure, as the client sees it."""


Failure = RateLimited | ServerError | APIError | Drop


# -- what happened ------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One chat.postMessage the fake accepted."""

    channel: str
    text: str
    ts: str
    thread_ts: str | None
    mrkdwn: bool  # False when the bot asked for the text to be shown without formatting
    params: dict[str, Any]  # everything the bot sent, as received
    client_port: int  # the same port again means the same (reused) HTTP connection


@dataclass
class Envelope:
    """One events_api envelope sent over the WebSocket."""

    envelope_id: str
    event_id: str
    event: dict[str, Any]
    retry_attempt: int = 0
    acked: bool = False


@dataclass
class Posted:
    """A message a fake person posted: its channel and ts, and the envelopes that carried it."""

    channel: str
    ts: str
    envelopes: list[Envelope] = field(default_factory=list)


@dataclass
class _Connection:
    number: int  # 1 for the first connection the fake accepted
    ws: web.WebSocketResponse
    transport: Any


class FakeSlack:
    """The fake's state and its test API; `serve_fake_slack` runs it."""

    def __init__(self, base: str, task_group: TaskGroup) -> None:
        self.base = base
        self.bot_token = BOT_TOKEN
        self.app_token = APP_TOKEN
        self.bot_user_id = BOT_USER_ID
        self.bot_id = BOT_ID
        self.team_id = TEAM_ID
        self.redeliver_after: float | None = 3.0  # Slack retries an unacknowledged event
        self.max_retries = 3
        self.echo_own_posts = True
        self.sent: list[Sent] = []
        self.calls: list[str] = []  # every Web API method called, in order (failures too)
        self.envelopes: list[Envelope] = []
        self.timeline: list[tuple[str, str]] = []
        self.connections_opened = 0
        self.gone_channels: set[str] = set()  # chat.postMessage answers channel_not_found
        self.refuse_sockets = 0  # how many of the next WebSocket handshakes fail (HTTP 503)
        self._tg = task_group
        self._failures: dict[str, deque[Failure]] = {}
        self._tickets: set[str] = set()
        self._open: list[_Connection] = []
        self._ts = itertools.count(1)
        self._changed = anyio.Event()

    @property
    def api_url(self) -> str:
        """The base URL for AsyncWebClient (it must end in /api/)."""
        return f"{self.base}/api/"

    @property
    def open_connections(self) -> int:
        return len(self._open)

    # -- scripting ------------------------------------------------------------------------

    def fail(self, method: str, *failures: Failure) -> None:
        """Answer the next calls of `method` (e.g. "chat.postMessage") with these, in order."""
        self._failures.setdefault(method, deque()).extend(failures)

    async def dm(self, text: str, *, user: str = "UALICE", thread_ts: str | None = None) -> Posted:
        """A person writes to the bot in their direct-message conversation."""
        channel = "D" + user.removeprefix("U")
        event = self._message(text, channel=channel, user=user, channel_type="im", thread_ts=thread_ts)
        return Posted(channel, event["ts"], [await self.push_event(event)])

    async def say(
        self,
        text: str,
        *,
        channel: str = "CGENERAL",
        user: str = "UALICE",
        mention: bool = False,
        thread_ts: str | None = None,
        parent_user_id: str | None = None,
        app_mention_first: bool = False,
    ) -> Posted:
        """A person writes in a channel the bot is a member of.

        With `mention`, the text starts with the bot's mention and Slack sends two events, as it
        does to an app subscribed to both `message.channels` and `app_mention`: a `message` and
        an `app_mention` (in that order, unless `app_mention_first`).
        """
        if mention:
            text = f"<@{self.bot_user_id}> {text}"
        event = self._message(text, channel=channel, user=user, channel_type="channel", thread_ts=thread_ts)
        if parent_user_id is not None:
            event["parent_user_id"] = parent_user_id
        events = [event]
        if mention:
            app_mention = {k: v for k, v in event.items() if k not in ("channel_type", "client_msg_id")}
            app_mention["type"] = "app_mention"
            events.insert(0 if app_mention_first else 1, app_mention)
        posted = Posted(channel, event["ts"])
        for each in events:
            posted.envelopes.append(await self.push_event(each))
        return posted

    async def push_event(self, event: dict[str, Any]) -> Envelope:
        """Send any Events API event to the bot (in an envelope, on the newest connection)."""
        envelope = Envelope(uuid.uuid4().hex, "Ev" + uuid.uuid4().hex[:10].upper(), event)
        await self._send_envelope(envelope)
        return envelope

    async def redeliver(self, envelope: Envelope, reason: str = "timeout") -> Envelope:
        """Send an event again, as Slack retries it: a new envelope, the same event_id."""
        again = Envelope(uuid.uuid4().hex, envelope.event_id, envelope.event, envelope.retry_attempt + 1)
        await self._send_envelope(again, reason)
        return again

    async def refresh(self, reason: str = "refresh_requested") -> None:
        """Ask the bot to reconnect (a `disconnect` message); the old connection is closed once a
        new one is open, or after 10 s."""
        old = self._newest()
        await old.ws.send_str(
            json.dumps({"type": "disconnect", "reason": reason, "debug_info": {"host": "fake"}})
        )

        async def close_when_replaced() -> None:
            with anyio.move_on_after(10):
                await self._until(lambda: self.connections_opened > old.number)
            await old.ws.close()

        self._tg.start_soon(close_when_replaced)

    async def drop(self, *, abrupt: bool = False) -> None:
        """Close every connection: with a close frame, or (abrupt) by cutting the TCP stream."""
        for connection in list(self._open):
            if abrupt:
                connection.transport.abort()
            else:
                await connection.ws.close(code=1001, message=b"fake: going away")

    # -- waiting --------------------------------------------------------------------------

    async def wait_connected(self, count: int = 1, timeout: float = 10) -> None:
        """Until `count` connections have been accepted in all and one is open."""
        with anyio.fail_after(timeout):
            await self._until(lambda: self.connections_opened >= count and bool(self._open))

    async def wait_sent(self, count: int, timeout: float = 10) -> list[Sent]:
        """Until the bot has posted `count` messages; all it posted, in order."""
        with anyio.fail_after(timeout):
            await self._until(lambda: len(self.sent) >= count)
        return list(self.sent)

    async def wait_acked(self, what: Posted | Envelope, timeout: float = 10) -> None:
        """Until every envelope of `what` was acknowledged."""
        envelopes = what.envelopes if isinstance(what, Posted) else [what]
        with anyio.fail_after(timeout):
            await self._until(lambda: all(e.acked for e in envelopes))

    async def wait_envelopes(self, count: int, timeout: float = 10) -> list[Envelope]:
        """Until `count` envelopes were sent in all (first deliveries and redeliveries)."""
        with anyio.fail_after(timeout):
            await self._until(lambda: len(self.envelopes) >= count)
        return list(self.envelopes)

    async def _until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # -- the Web API ----------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        self.calls.append(method)
        self._notify()
        params = await _params(request)
        queue = self._failures.get(method)
        if queue:
            return await _answer_failure(request, queue.popleft())
        token = request.headers.get("Authorization", "").removeprefix("Bearer ") or params.pop("token", "")
        handler = {
            "auth.test": self._auth_test,
            "apps.connections.open": self._connections_open,
            "chat.postMessage": self._post_message,
        }.get(method)
        if handler is None:
            return _error("unknown_method")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        return await handler(token, params, peer[1] if peer else 0)

    async def _auth_test(self, token: str, params: dict[str, Any], client_port: int) -> web.Response:
        refused = _check_token(token, self.bot_token)
        if refused:
            return refused
        return web.json_response(
            {
                "ok": True,
                "url": "https://fake.slack.test/",
                "team": "Fake Workspace",
                "user": "mbe",
                "team_id": self.team_id,
                "user_id": self.bot_user_id,
                "bot_id": self.bot_id,
                "is_enterprise_install": False,
            }
        )

    async def _connections_open(self, token: str, params: dict[str, Any], client_port: int) -> web.Response:
        if token.startswith("xoxb-"):
            return _error("not_allowed_token_type")
        refused = _check_token(token, self.app_token)
        if refused:
            return refused
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        host = self.base.removeprefix("http://")
        return web.json_response({"ok": True, "url": f"ws://{host}/link/?ticket={ticket}&app_id={APP_ID}"})

    async def _post_message(self, token: str, params: dict[str, Any], client_port: int) -> web.Response:
        refused = _check_token(token, self.bot_token)
        if refused:
            return refused
        channel = str(params.get("channel") or "")
        text = params.get("text")
        if not channel or channel in self.gone_channels:
            return _error("channel_not_found")
        if not text:
            return _error("no_text")
        ts = self._next_ts()
        thread_ts = params.get("thread_ts")
        mrkdwn = params.get("mrkdwn") not in (False, "false", "0", 0)
        self.sent.append(Sent(channel, str(text), ts, thread_ts, mrkdwn, params, client_port))
        self._notify()
        if self.echo_own_posts and self._open:
            echo = {
                "type": "message",
                "channel": channel,
                "user": self.bot_user_id,
                "bot_id": self.bot_id,
                "app_id": APP_ID,
                "text": text,
                "ts": ts,
                "channel_type": "im" if channel.startswith("D") else "channel",
                "bot_profile": {"id": self.bot_id, "name": "mbe", "app_id": APP_ID},
            }
            if thread_ts:
                echo["thread_ts"] = thread_ts
            self._tg.start_soon(self.push_event, echo)
        message = {"type": "message", "user": self.bot_user_id, "bot_id": self.bot_id, "text": text, "ts": ts}
        return web.json_response({"ok": True, "channel": channel, "ts": ts, "message": message})

    # -- Socket Mode ----------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid or used ticket")
        self._tickets.discard(ticket)  # single use
        if self.refuse_sockets > 0:
            self.refuse_sockets -= 1
            return web.Response(status=503, text="fake: the socket server is unavailable")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections_opened += 1
        connection = _Connection(self.connections_opened, ws, request.transport)
        self._open.append(connection)
        hello = {
            "type": "hello",
            "num_connections": len(self._open),
            "debug_info": {"host": "fake", "approximate_connection_time": 18060},
            "connection_info": {"app_id": APP_ID},
        }
        await ws.send_str(json.dumps(hello))
        self._notify()
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._on_ack(json.loads(message.data))
        finally:
            self._open.remove(connection)
            self._notify()
        return ws

    def _on_ack(self, message: dict[str, Any]) -> None:
        envelope_id = message.get("envelope_id")
        for envelope in self.envelopes:
            if envelope.envelope_id == envelope_id:
                envelope.acked = True
                self.timeline.append(("ack", envelope.envelope_id))
                self._notify()

    async def _send_envelope(self, envelope: Envelope, reason: str = "") -> None:
        with anyio.fail_after(10):
            await self._until(lambda: bool(self._open))
        wire = {
            "envelope_id": envelope.envelope_id,
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": envelope.retry_attempt,
            "retry_reason": reason,
            "payload": {
                "token": "fake-verification-token",
                "team_id": self.team_id,
                "api_app_id": APP_ID,
                "event": envelope.event,
                "type": "event_callback",
                "event_id": envelope.event_id,
                "event_time": int(time.time()),
                "authorizations": [{"team_id": self.team_id, "user_id": self.bot_user_id, "is_bot": True}],
                "is_ext_shared_channel": False,
            },
        }
        self.envelopes.append(envelope)
        self.timeline.append(("envelope", envelope.envelope_id))
        await self._newest().ws.send_str(json.dumps(wire))
        self._notify()
        if self.redeliver_after is not None and envelope.retry_attempt < self.max_retries:
            self._tg.start_soon(self._retry_unacked, envelope, self.redeliver_after)

    async def _retry_unacked(self, envelope: Envelope, delay: float) -> None:
        await anyio.sleep(delay)
        if not envelope.acked and not any(e.acked for e in self.envelopes if e.event_id == envelope.event_id):
            await self.redeliver(envelope)

    def _newest(self) -> _Connection:
        if not self._open:
            raise RuntimeError("no bot is connected to the fake Slack")
        return self._open[-1]

    def _message(
        self, text: str, *, channel: str, user: str, channel_type: str, thread_ts: str | None
    ) -> dict[str, Any]:
        ts = self._next_ts()
        event: dict[str, Any] = {
            "type": "message",
            "client_msg_id": str(uuid.uuid4()),
            "channel": channel,
            "user": user,
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "team": self.team_id,
            "channel_type": channel_type,
        }
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
        return event

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"


async def _params(request: web.Request) -> dict[str, Any]:
    """Arguments from the query string and the body (form or JSON), as Slack accepts them."""
    params: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        body = await request.json()
        if isinstance(body, dict):
            params.update(body)
    elif request.can_read_body:
        params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
    return params


def _check_token(token: str, expected: str) -> web.Response | None:
    if not token:
        return _error("not_authed")
    if token != expected:
        return _error("invalid_auth")
    return None


def _error(error: str) -> web.Response:
    return web.json_response({"ok": False, "error": error})


async def _answer_failure(request: web.Request, failure: Failure) -> web.StreamResponse:
    if isinstance(failure, RateLimited):
        return web.json_response(
            {"ok": False, "error": "ratelimited"},
            status=429,
            headers={"Retry-After": str(failure.retry_after)},
        )
    if isinstance(failure, ServerError):
        body = f"<html><body>{failure.status} fake upstream trouble</body></html>"
        return web.Response(status=failure.status, text=body, content_type="text/html")
    if isinstance(failure, APIError):
        return _error(failure.error)
    if request.transport is not None:
        request.transport.abort()
    return web.Response()  # never written: the connection is gone


@asynccontextmanager
async def serve_fake_slack(port: int = 0) -> AsyncGenerator[FakeSlack, None]:
    """Run the fake on 127.0.0.1 (`port` 0: any free port) for the duration of the block."""
    # Created with IPPROTO_TCP so that TCP_NODELAY applies (aiohttp sets it on each connection
    # as well): without it, answers written in two parts wait ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    async with anyio.create_task_group() as tg:
        fake = FakeSlack(f"http://127.0.0.1:{sock.getsockname()[1]}", tg)
        app = web.Application()
        app.router.add_route("*", "/api/{method}", fake._api)
        app.router.add_get("/link/", fake._socket)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        try:
            yield fake
        finally:
            with anyio.CancelScope(shield=True):
                for connection in list(fake._open):
                    connection.transport.abort()
                await runner.cleanup()
            tg.cancel_scope.cancel()


async def _main(port: int) -> None:
    async with serve_fake_slack(port) as fake:
        print(
            f"fake Slack: api_base={fake.api_url} bot_token={fake.bot_token} app_token={fake.app_token}",
            flush=True,
        )
        await anyio.sleep_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, default=8098)
    anyio.run(_main, parser.parse_args().port)
