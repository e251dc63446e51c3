"""A fake Discord on 127.0.0.1: the REST API (v10) and the Gateway, for tests and benchmarks.

It speaks the wire protocol closely enough that an unchanged client library (hikari) works
against it with only its REST URL pointed here. REST: `GET /gateway/bot`, `GET /users/@me`,
`POST /users/@me/channels`, `POST /channels/{id}/messages`, `POST /channels/{id}/typing`,
with bot-token auth, Discord's validation (2000 characters, empty messages, unknown
channels, replies to unknown messages, nonce uniqueness with `enforce_nonce`) and its error
bodies. Gateway: a WebSocket with zlib-stream transport compression (or plain text frames),
HELLO, IDENTIFY → READY, heartbeats and their ACKs, RESUME → replay of the missed events →
RESUMED, INVALID_SESSION, RECONNECT, close codes (4004 for a wrong token), and intents (no
MESSAGE_CONTENT: guild messages not addressed to the bot arrive without their text).

The platform side is driven from the test: people and channels are added, people write
(`dm`, `post`), and everything the bot did is recorded (`sent`, `typing`, `requests`,
`identifies`, `resumes`, `acked_seq`). Failures are scripted per REST route, used in order
(`script(rate_limited(2.0), server_error(), route="create_message")`), and the gateway can be
made to drop, close with a code, ask for a reconnect or invalidate the session.

    async with serve_fake_discord() as discord:
        alice = discord.add_user("alice")
        channel = DiscordChannel(discord.token, rest_url=discord.rest_url)
        ...
        await discord.dm(alice, "hello")
        await discord.wait_sent(1)

Discord has no acknowledgement of received events beyond the gateway's own bookkeeping: a
heartbeat carries the last sequence number the client saw (`acked_seq`), and a RESUME says
where to replay from. What a client does not fetch while disconnected for good is lost.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count
from typing import Any, Literal
from uuid import uuid4

import anyio
from aiohttp import WSMsgType, web

API_VERSION = 10
DISCORD_EPOCH_MS = 1_420_070_400_000
MAX_CONTENT = 2000
MAX_NONCE = 25

GUILD_MESSAGES = 1 << 9
DIRECT_MESSAGES = 1 << 12
MESSAGE_CONTENT = 1 << 15

# Gateway opcodes.
DISPATCH, HEARTBEAT, IDENTIFY, RESUME, RECONNECT = 0, 1, 2, 6, 7
INVALID_SESSION, HELLO, HEARTBEAT_ACK = 9, 10, 11
_ZLIB_SUFFIX = b"\x00\x00\xff\xff"

Route = Literal["create_message", "typing", "my_user", "gateway_bot", "create_dm"]


def make_token(user_id: int | str, secret: str = "fake-secret") -> str:
    """A bot token shaped like Discord's: the first segment is the bot's id in base64."""
    head = base64.b64encode(str(user_id).encode()).decode().rstrip("=")
    return f"{head}.GfAkE0.{secret.ljust(27, 'x')}"


# -- what the bot did -------------------------------------------------------------------------


@dataclass(frozen=True)
class SentMessage:
    """One message the bot created, as Discord stored it (and what it asked for)."""

    id: str
    channel_id: str
    content: str
    reply_to: str | None
    allowed_mentions: Mapping[str, Any] | None
    nonce: str | None
    flags: int


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    body: Any
    authorized: bool


# -- scripted failures ------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """An HTTP error answer in Discord's shape, given instead of the real one."""

    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LoseResponse:
    """The request takes effect (a message is created), then the connection drops unanswered."""


@dataclass(frozen=True)
class Proceed:
    """Answer normally: a placeholder to script a failure for a later request, not the next."""


Behaviour = Reply | LoseResponse | Proceed


def rate_limited(
    retry_after: float,
    *,
    scope: Literal["user", "shared", "global"] = "user",
    bucket: str = "fake-bucket",
    limit: int = 1,
) -> Reply:
    """429 as Discord sends it: the body's retry_after, Retry-After and the X-RateLimit-* headers.

    `limit` is the bucket's size: hikari treats a bucket as a sliding window and waits
    `retry_after / limit` for the next free slot, so the default of 1 makes it wait it all.
    """
    now = datetime.now(UTC).timestamp()
    headers = {
        "Retry-After": str(max(1, round(retry_after))),
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": f"{now + retry_after:.3f}",
        "X-RateLimit-Reset-After": f"{retry_after:.3f}",
        "X-RateLimit-Bucket": bucket,
        "X-RateLimit-Scope": scope,
    }
    if scope == "global":
        headers["X-RateLimit-Global"] = "true"
    body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": scope == "global"}
    return Reply(429, body, headers)


def server_error(status: int = 500) -> Reply:
    return Reply(status, {"message": f"{status}: Internal Server Error", "code": 0})


def invalid_form_body(detail: str = "Invalid Form Body") -> Reply:
    """400 / 50035, what Discord answers to content it will not take."""
    error = {"_errors": [{"code": "BASE_TYPE_INVALID", "message": detail}]}
    return Reply(400, {"message": "Invalid Form Body", "code": 50035, "errors": {"content": error}})


def cannot_message_user() -> Reply:
    """403 / 50007: the person blocked the bot or does not accept DMs from it."""
    return Reply(403, {"message": "Cannot send messages to this user", "code": 50007})


def unknown_channel() -> Reply:
    return Reply(404, {"message": "Unknown Channel", "code": 10003})


# -- the platform's side ----------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    id: str
    name: str
    bot: bool = False
    nick: str | None = None  # the name shown in the guild

    def payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.name,
            "discriminator": "0",
            "global_name": self.name.title(),
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }


@dataclass
class _Channel:
    id: str
    guild_id: str | None  # None for a DM
    recipient: User | None = None


class _Connection:
    """One gateway WebSocket: frames leave in the order they were handed over, compressed as
    one zlib stream when the client asked for `compress=zlib-stream`."""

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None, zlib_stream: bool):
        self.ws = ws
        self.transport = transport
        self.session: _Session | None = None
        self._deflate = zlib.compressobj() if zlib_stream else None
        self._lock = asyncio.Lock()

    async def send(self, frame: Mapping[str, Any]) -> None:
        data = json.dumps(frame, separators=(",", ":")).encode()
        async with self._lock:
            if self.ws.closed:
                return
            try:
                if self._deflate is None:
                    await self.ws.send_str(data.decode())
                else:
                    chunk = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
                    assert chunk.endswith(_ZLIB_SUFFIX)
                    await self.ws.send_bytes(chunk)
            except ConnectionError:
                return  # gone: what it missed stays in the session log for a RESUME


@dataclass
class _Session:
    id: str
    intents: int
    seq: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)  # dispatches not yet acknowledged
    connection: _Connection | None = None  # None while the client is away
    alive: bool = True  # False once invalidated: RESUME is refused


class FakeDiscord:
    """The fake's state and its test API (see the module docstring)."""

    def __init__(self, base_url: str, *, heartbeat_interval: float = 41.25) -> None:
        self.base_url = base_url
        self.heartbeat_interval = heartbeat_interval
        self._ids = count()
        self.bot = User(self._snowflake(), "mbe-bot", bot=True)
        self.token = make_token(self.bot.id)
        self.guild_id = self._snowflake()
        self.channel_id = self._snowflake()  # the guild's #general
        self._channels: dict[str, _Channel] = {self.channel_id: _Channel(self.channel_id, self.guild_id)}
        self._messages: dict[str, dict[str, Any]] = {}
        self._nonces: dict[tuple[str, str], str] = {}
        self._sessions: dict[str, _Session] = {}
        self._scripts: dict[Route, deque[Behaviour]] = {}
        self._changed = anyio.Event()
        # what the bot did
        self.sent: list[SentMessage] = []
        self.typing: list[str] = []
        self.requests: list[RecordedRequest] = []
        self.identifies = 0
        self.resumes = 0
        self.connections = 0  # gateway connection attempts, refused ones included
        self.acked_seq: int | None = None
        self.close_codes: list[int | None] = []  # how each gateway connection ended
        # gateway behaviour
        self.refuse_identify: int | None = None  # a close code to answer IDENTIFY with (4004, 4014)
        self.gateway_down = False  # the gateway answers 503 to every connection attempt

    # -- addresses ----------------------------------------------------------------------------

    @property
    def rest_url(self) -> str:
        return f"{self.base_url}/api/v{API_VERSION}"

    @property
    def gateway_url(self) -> str:
        return self.base_url.replace("http://", "ws://", 1) + "/gateway"

    # -- scripting ----------------------------------------------------------------------------

    def script(self, *behaviours: Behaviour, route: Route = "create_message") -> None:
        """Answer the next requests on `route` with these, in order, then normally again."""
        self._scripts.setdefault(route, deque()).extend(behaviours)

    # -- people and places --------------------------------------------------------------------

    def add_user(self, name: str, *, bot: bool = False, nick: str | None = None) -> User:
        user = User(self._snowflake(), name, bot=bot, nick=nick)
        channel = _Channel(self._snowflake(), None, recipient=user)
        self._channels[channel.id] = channel
        return user

    def dm_channel(self, user: User) -> str:
        return next(c.id for c in self._channels.values() if c.recipient == user)

    def add_channel(self) -> str:
        """Another text channel in the guild."""
        channel = _Channel(self._snowflake(), self.guild_id)
        self._channels[channel.id] = channel
        return channel.id

    def message(self, message_id: str) -> dict[str, Any]:
        return self._messages[message_id]

    async def dm(self, user: User, text: str, *, reply_to: str | None = None) -> str:
        """`user` writes `text` to the bot in their DM; the new message's id."""
        return await self._create(self.dm_channel(user), user, text, reply_to=reply_to)

    async def post(
        self,
        user: User,
        text: str,
        *,
        channel: str | None = None,
        mention: bool = False,
        nick_mention: bool = False,
        reply_to: str | None = None,
    ) -> str:
        """`user` writes in a guild channel, mentioning the bot first if asked (`<@id>`, or the
        older `<@!id>` nickname form)."""
        if mention or nick_mention:
            text = f"<@{'!' if nick_mention else ''}{self.bot.id}> {text}"
        return await self._create(channel or self.channel_id, user, text, reply_to=reply_to)

    # -- gateway control ----------------------------------------------------------------------

    async def disconnect(self, code: int | None = None) -> None:
        """Drop every gateway connection: abruptly (no close frame), or with a close `code`."""
        for session in self._sessions.values():
            connection = session.connection
            if connection is None:
                continue
            session.connection = None
            if code is None:
                if connection.transport is not None:
                    connection.transport.abort()
            else:
                await connection.ws.close(code=code, message=b"fake: closed by the test")

    async def request_reconnect(self) -> None:
        """Send RECONNECT (op 7): the client should reconnect and resume."""
        for connection in self._live_connections():
            await connection.send({"op": RECONNECT, "d": None, "s": None, "t": None})

    async def invalidate_session(self, *, resumable: bool = False) -> None:
        """Send INVALID_SESSION (op 9); unless `resumable`, the session is gone for good."""
        for session in self._sessions.values():
            connection = session.connection
            if connection is None:
                continue
            if not resumable:
                session.alive = False
            await connection.send({"op": INVALID_SESSION, "d": resumable, "s": None, "t": None})

    # -- waiting ------------------------------------------------------------------------------

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        with anyio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()

    async def wait_ready(self, timeout: float = 5.0) -> None:
        """Until some session has a connected client that finished its handshake."""
        await self.wait_until(lambda: bool(self._live_connections()), timeout)

    async def wait_sent(self, count: int, timeout: float = 5.0) -> list[SentMessage]:
        await self.wait_until(lambda: len(self.sent) >= count, timeout)
        return self.sent

    # -- internals: the platform ---------------------------------------------------------------

    def _snowflake(self) -> str:
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        return str(((now_ms - DISCORD_EPOCH_MS) << 22) | (next(self._ids) % 4096))

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _live_connections(self) -> list[_Connection]:
        return [s.connection for s in self._sessions.values() if s.connection is not None and s.alive]

    async def _create(
        self,
        channel_id: str,
        author: User,
        content: str,
        *,
        reply_to: str | None = None,
        nonce: str | None = None,
        flags: int = 0,
    ) -> str:
        channel = self._channels[channel_id]
        message_id = self._snowflake()
        payload: dict[str, Any] = {
            "id": message_id,
            "channel_id": channel_id,
            "author": author.payload(),
            "content": content,
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [self.bot.payload()] if _mentions(content, self.bot.id) else [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": flags,
        }
        if nonce is not None:
            payload["nonce"] = nonce
        if channel.guild_id is not None:
            payload["guild_id"] = channel.guild_id
            payload["member"] = {
                "roles": [],
                "joined_at": "2024-01-01T00:00:00+00:00",
                "nick": author.nick,
                "deaf": False,
                "mute": False,
                "flags": 0,
            }
        if reply_to is not None:
            payload["type"] = 19
            payload["message_reference"] = {"type": 0, "message_id": reply_to, "channel_id": channel_id}
            if channel.guild_id is not None:
                payload["message_reference"]["guild_id"] = channel.guild_id
            payload["referenced_message"] = self._messages[reply_to]
        self._messages[message_id] = payload
        for session in list(self._sessions.values()):
            if session.alive and _wants(session, payload):
                await self._dispatch(session, "MESSAGE_CREATE", _as_seen_by(session, payload, self.bot.id))
        self._notify()
        return message_id

    # -- internals: the gateway ---------------------------------------------------------------

    async def _dispatch(self, session: _Session, name: str, data: Mapping[str, Any]) -> None:
        session.seq += 1
        frame = {"op": DISPATCH, "t": name, "s": session.seq, "d": data}
        session.log.append(frame)
        if session.connection is not None:
            await session.connection.send(frame)

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        self.connections += 1
        self._notify()
        if self.gateway_down:
            return web.Response(status=503, text="fake: the gateway is down")
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        compress = request.query.get("compress")
        if request.query.get("encoding", "json") != "json" or compress not in (None, "zlib-stream"):
            await ws.close(code=4002, message=b"fake: json encoding and zlib-stream compression only")
            return ws
        connection = _Connection(ws, request.transport, zlib_stream=compress == "zlib-stream")
        await connection.send({"op": HELLO, "d": {"heartbeat_interval": self.heartbeat_interval * 1000}})
        try:
            async for message in ws:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self._on_frame(connection, json.loads(message.data))
        finally:
            self._on_closed(connection, ws.close_code)
        return ws

    async def _on_frame(self, connection: _Connection, frame: Mapping[str, Any]) -> None:
        op, data = frame.get("op"), frame.get("d")
        if op == HEARTBEAT:
            if isinstance(data, int):
                self._acknowledge(connection, data)
            await connection.send({"op": HEARTBEAT_ACK, "d": None, "s": None, "t": None})
        elif op == IDENTIFY:
            await self._identify(connection, data)
        elif op == RESUME:
            await self._resume(connection, data)
        # presence updates, member requests and the rest are accepted and ignored

    def _acknowledge(self, connection: _Connection, seq: int) -> None:
        self.acked_seq = seq
        session = connection.session
        if session is not None:
            session.log = [f for f in session.log if f["s"] > seq]
        self._notify()

    async def _identify(self, connection: _Connection, data: Mapping[str, Any]) -> None:
        if data.get("token") != self.token or self.refuse_identify is not None:
            code = self.refuse_identify or 4004
            await connection.ws.close(code=code, message=b"Authentication failed." if code == 4004 else b"")
            return
        session = _Session(uuid4().hex, int(data.get("intents", 0)))
        self._sessions[session.id] = session
        self.identifies += 1
        connection.session = session
        session.connection = connection
        own = self.bot.payload() | {"mfa_enabled": False, "flags": 0, "verified": True}
        ready = {
            "v": API_VERSION,
            "user": own,
            "guilds": [{"id": self.guild_id, "unavailable": True}],
            "session_id": session.id,
            "resume_gateway_url": self.gateway_url + "/resume",
            "shard": [0, 1],
            "application": {"id": self.bot.id, "flags": 0},
        }
        await self._dispatch(session, "READY", ready)
        self._notify()

    async def _resume(self, connection: _Connection, data: Mapping[str, Any]) -> None:
        if data.get("token") != self.token:
            await connection.ws.close(code=4004, message=b"Authentication failed.")
            return
        session = self._sessions.get(str(data.get("session_id")))
        if session is None or not session.alive:
            await connection.send({"op": INVALID_SESSION, "d": False, "s": None, "t": None})
            return
        last = int(data.get("seq") or 0)
        if last > session.seq:
            await connection.ws.close(code=4007, message=b"Invalid seq.")
            return
        self.resumes += 1
        connection.session = session
        # Replay what the client missed; anything dispatched meanwhile joins the log and is
        # picked up here, and only then does the connection take live dispatches.
        while missed := [f for f in session.log if f["s"] > last]:
            await connection.send(missed[0])
            last = missed[0]["s"]
        session.connection = connection
        await self._dispatch(session, "RESUMED", {})
        self._notify()

    def _on_closed(self, connection: _Connection, code: int | None) -> None:
        self.close_codes.append(code)
        session = connection.session
        if session is not None and session.connection is connection:
            session.connection = None
            if code in (1000, 1001):
                session.alive = False  # a normal closure ends the session, as on Discord
        self._notify()

    # -- internals: REST ----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record_and_authorize])
        api = f"/api/v{API_VERSION}"
        app.router.add_get(f"{api}/gateway", self._get_gateway)
        app.router.add_get(f"{api}/gateway/bot", self._scripted("gateway_bot", self._get_gateway_bot))
        app.router.add_get(f"{api}/users/@me", self._scripted("my_user", self._get_me))
        app.router.add_post(f"{api}/users/@me/channels", self._scripted("create_dm", self._create_dm))
        app.router.add_post(
            f"{api}/channels/{{channel_id}}/messages", self._scripted("create_message", self._create_message)
        )
        app.router.add_post(f"{api}/channels/{{channel_id}}/typing", self._scripted("typing", self._typing))
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/gateway/resume", self._gateway)
        return app

    @web.middleware
    async def _record_and_authorize(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/gateway"):
            return await handler(request)
        body = await request.json() if request.can_read_body else None
        authorized = request.headers.get("Authorization") == f"Bot {self.token}"
        self.requests.append(RecordedRequest(request.method, request.path, body, authorized))
        if not authorized and request.path != f"/api/v{API_VERSION}/gateway":
            return _error(Reply(401, {"message": "401: Unauthorized", "code": 0}))
        return await handler(request)

    def _scripted(
        self, route: Route, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def answer(request: web.Request) -> web.StreamResponse:
            queue = self._scripts.get(route)
            behaviour = queue.popleft() if queue else None
            if isinstance(behaviour, Reply):
                return _error(behaviour)
            response = await handler(request)
            if isinstance(behaviour, LoseResponse):
                if request.transport is not None:
                    request.transport.abort()
                raise ConnectionResetError("fake: the answer was lost on the way")
            return response

        return answer

    async def _get_gateway(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.StreamResponse:
        limit = {"total": 1000, "remaining": 999, "reset_after": 86_400_000, "max_concurrency": 1}
        return web.json_response({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    async def _get_me(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.bot.payload() | {"mfa_enabled": False, "flags": 0, "verified": True})

    async def _create_dm(self, request: web.Request) -> web.StreamResponse:
        recipient = str((await request.json()).get("recipient_id"))
        for channel in self._channels.values():
            if channel.recipient is not None and channel.recipient.id == recipient:
                recipients = [channel.recipient.payload()]
                return web.json_response(
                    {"id": channel.id, "type": 1, "last_message_id": None, "recipients": recipients}
                )
        return _error(Reply(400, {"message": "Invalid Recipient(s)", "code": 50033}))

    async def _typing(self, request: web.Request) -> web.StreamResponse:
        channel_id = request.match_info["channel_id"]
        if channel_id not in self._channels:
            return _error(unknown_channel())
        self.typing.append(channel_id)
        self._notify()
        return web.Response(status=204)

    async def _create_message(self, request: web.Request) -> web.StreamResponse:
        channel_id = request.match_info["channel_id"]
        if channel_id not in self._channels:
            return _error(unknown_channel())
        body = await request.json()
        content = body.get("content") or ""
        nonce = body.get("nonce")
        if nonce is not None and len(str(nonce)) > MAX_NONCE:
            return _error(invalid_form_body(f"nonce: Must be {MAX_NONCE} or fewer in length."))
        if nonce is not None and body.get("enforce_nonce") and (channel_id, str(nonce)) in self._nonces:
            return web.json_response(self._messages[self._nonces[channel_id, str(nonce)]])
        if not content.strip() and not body.get("embeds"):
            return _error(Reply(400, {"message": "Cannot send an empty message", "code": 50006}))
        if len(content) > MAX_CONTENT:
            return _error(invalid_form_body(f"Must be {MAX_CONTENT} or fewer in length."))
        reply_to = (body.get("message_reference") or {}).get("message_id")
        if reply_to is not None and self._messages.get(str(reply_to), {}).get("channel_id") != channel_id:
            if body["message_reference"].get("fail_if_not_exists", True):
                return _error(invalid_form_body("message_reference: Unknown message"))
            reply_to = None
        message_id = await self._create(
            channel_id,
            self.bot,
            content,
            reply_to=None if reply_to is None else str(reply_to),
            nonce=None if nonce is None else str(nonce),
            flags=int(body.get("flags") or 0),
        )
        if nonce is not None:
            self._nonces[channel_id, str(nonce)] = message_id
        self.sent.append(
            SentMessage(
                message_id,
                channel_id,
                content,
                None if reply_to is None else str(reply_to),
                body.get("allowed_mentions"),
                None if nonce is None else str(nonce),
                int(body.get("flags") or 0),
            )
        )
        self._notify()
        return web.json_response(self._messages[message_id])


def _mentions(content: str, user_id: str) -> bool:
    return f"<@{user_id}>" in content or f"<@!{user_id}>" in content


def _wants(session: _Session, message: Mapping[str, Any]) -> bool:
    """Whether the session's intents subscribe it to this message at all."""
    needed = GUILD_MESSAGES if "guild_id" in message else DIRECT_MESSAGES
    return bool(session.intents & needed)


def _as_seen_by(session: _Session, message: dict[str, Any], bot_id: str) -> dict[str, Any]:
    """Without MESSAGE_CONTENT, a guild message reaches the bot without its text unless it was
    written by the bot, mentions it, or replies to it (Discord's privileged-intent rule)."""
    if session.intents & MESSAGE_CONTENT or "guild_id" not in message:
        return message
    addressed = (
        message["author"]["id"] == bot_id
        or any(u["id"] == bot_id for u in message["mentions"])
        or (message.get("referenced_message") or {}).get("author", {}).get("id") == bot_id
    )
    return message if addressed else message | {"content": "", "embeds": [], "attachments": []}


def _error(reply: Reply) -> web.Response:
    return web.json_response(dict(reply.body), status=reply.status, headers=dict(reply.headers))


@asynccontextmanager
async def serve_fake_discord(
    port: int = 0, *, heartbeat_interval: float = 41.25
) -> AsyncIterator[FakeDiscord]:
    """Run a fake Discord on 127.0.0.1 (`port` 0: an ephemeral one) until the block ends."""
    # proto=IPPROTO_TCP, so every accepted connection gets TCP_NODELAY (no 40 ms delayed-ACK stall).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    fake = FakeDiscord(f"http://127.0.0.1:{sock.getsockname()[1]}", heartbeat_interval=heartbeat_interval)
    runner = web.AppRunner(fake.app(), handle_signals=False, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        yield fake
    finally:
        with anyio.CancelScope(shield=True):
            await fake.disconnect(code=1001)
            await runner.cleanup()
        sock.close()
