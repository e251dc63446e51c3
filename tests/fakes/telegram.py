"""A fake Telegram Bot API server on 127.0.0.1, for tests and benchmarks.

A real HTTP server (aiohttp.web on a loopback socket) answering `POST /bot<token>/<method>`
the way api.telegram.org does, so the real aiogram client works against it with only its base
URL changed: form or JSON parameters in, `{"ok": true, "result": ...}` out, errors as
`{"ok": false, "error_code": ..., "description": ..., "parameters": {"retry_after": ...}}`.
getUpdates long-polls, confirms updates below `offset`, and answers an overlapped poll with
409 Conflict as Telegram does. sendMessage parses `parse_mode=HTML` with Telegram's rules
(strictly: every `<`, `>` and `&` outside a tag or entity is refused) and counts the visible
text in UTF-16 units against the 4096 limit.

    async with serve_fake_telegram() as fake:
        channel = TelegramChannel(fake.token, api_base=fake.api_base)
        fake.dm("hello")                       # a user writes to the bot
        fake.fail("sendMessage", flood_wait(1), server_error())   # the next two sends fail
        [reply] = await fake.wait_sent(1)      # what the bot sent, with parse mode and threading

Tokens other than `fake.token` get 401 Unauthorized. Times (`at`) are `time.monotonic()`, so a
benchmark can measure update → reply latency. Run it alone to try a bot by hand:
`python tests/fakes/telegram.py --port 8081`, then POST `{"text": "hi"}` to `/_fake/dm` or
`/_fake/group` and GET `/_fake/sent`.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import socket
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, Final

import anyio
from aiohttp import web

MAX_LENGTH: Final = 4096
DEFAULT_TOKEN: Final = "123456789:AAFakeTokenForTestsOnly_0123456789abcdef"


@dataclass(frozen=True)
class User:
    id: int
    first_name: str
    username: str | None = None
    is_bot: bool = False
    last_name: str | None = None

    def to_api(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Chat:
    id: int
    type: str  # "private" | "group" | "supergroup" | "channel"
    title: str | None = None
    first_name: str | None = None
    is_forum: bool = False

    def to_api(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if v is not None}
        if not self.is_forum:
            data.pop("is_forum")
        return data


ALICE: Final = User(1001, "Alice", "alice")
BOB: Final = User(1002, "Bob", "bob")
OTHER_BOT: Final = User(2002, "Other", "other_helper_bot", is_bot=True)
GROUP: Final = Chat(-1001234567890, "supergroup", title="Friends")


@dataclass(frozen=True)
class Injected:
    """A user message put in the update queue."""

    update_id: int
    chat_id: int
    message_id: int
    at: float

    @property
    def platform_message_id(self) -> str:
        return f"{self.chat_id}:{self.message_id}"


@dataclass(frozen=True)
class Sent:
    """A message the bot sent. `text` is what the user sees; `raw` is the text parameter as sent."""

    chat_id: int
    message_id: int
    text: str
    raw: str
    parse_mode: str | None
    entities: list[dict[str, Any]]
    reply_to_message_id: int | None
    allow_sending_without_reply: bool
    message_thread_id: int | None
    at: float

    @property
    def platform_message_id(self) -> str:
        return f"{self.chat_id}:{self.message_id}"


@dataclass(frozen=True)
class Call:
    """One API request, in arrival order (`token_ok` False: it was answered 401)."""

    method: str
    params: dict[str, Any]
    token_ok: bool
    at: float


@dataclass(frozen=True)
class Poll:
    """One getUpdates request: `offset` confirms every update below it."""

    offset: int | None
    timeout: int
    at: float


# -- scripted failures: queued per method with `fake.fail(method, ...)`, one per request ----


@dataclass(frozen=True)
class ApiError:
    """An error answer as Telegram gives it."""

    code: int
    description: str
    retry_after: int | None = None
    migrate_to_chat_id: int | None = None


@dataclass(frozen=True)
class Answer:
    """Answer normally: queued before a failure, it lets earlier requests through."""


@dataclass(frozen=True)
class Disconnect:
    """Close the connection without answering."""


@dataclass(frozen=True)
class Garbage:
    """A non-JSON answer, as from a proxy in front of the API."""

    status: int = 502
    body: str = "<html><body>502 Bad Gateway</body></html>"


Failure = Answer | ApiError | Disconnect | Garbage


def flood_wait(seconds: int) -> ApiError:
    return ApiError(429, f"Too Many Requests: retry after {seconds}", retry_after=seconds)


def server_error(code: int = 500) -> ApiError:
    return ApiError(code, "Internal Server Error" if code == 500 else "Bad Gateway")


CANT_PARSE: Final = ApiError(
    400, 'Bad Request: can\'t parse entities: Unsupported start tag "x" at byte offset 0'
)
BLOCKED: Final = ApiError(403, "Forbidden: bot was blocked by the user")
CHAT_NOT_FOUND: Final = ApiError(400, "Bad Request: chat not found")


class _Refused(Exception):
    def __init__(self, error: ApiError) -> None:
        super().__init__(error.description)
        self.error = error


class FakeTelegram:
    """The server's state: the bot, the update queue, what was sent, what to fail next."""

    def __init__(self, api_base: str, token: str = DEFAULT_TOKEN, username: str = "mbe_test_bot") -> None:
        self.api_base = api_base
        self.token = token
        self.bot = User(int(token.partition(":")[0]), "MBE Test", username, is_bot=True)
        self.calls: list[Call] = []
        self.polls: list[Poll] = []
        self.sent: list[Sent] = []
        self.injected: list[Injected] = []
        self.commands: list[dict[str, str]] = []
        self.webhook_url = ""
        self.blocked: set[int] = set()
        self.chats: dict[int, Chat] = {}  # the chats the bot can write to (a user wrote there)
        self.confirmed = 0  # every update id below this has been confirmed (acknowledged)
        self._updates: list[dict[str, Any]] = []  # not yet confirmed
        self._failures: dict[str, deque[Failure]] = {}
        self._messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._last_message_id: dict[int, int] = {}
        self._next_update_id = 500_000
        self._poll_generation = 0
        self._waiting: dict[int, web.Request] = {}  # by id(): requests are not hashable
        self._changed = anyio.Event()
        self._closing = False

    # -- what users do ---------------------------------------------------------------------

    def dm(
        self,
        text: str,
        *,
        user: User = ALICE,
        entities: list[dict[str, Any]] | None = None,
        date: float | None = None,
    ) -> Injected:
        """`user` writes to the bot in their private chat (at `date`, Unix time: default now)."""
        return self.inject(
            Chat(user.id, "private", first_name=user.first_name), user, text, entities=entities, date=date
        )

    def group(
        self,
        text: str,
        *,
        user: User = ALICE,
        chat: Chat = GROUP,
        reply_to: int | None = None,
        entities: list[dict[str, Any]] | None = None,
    ) -> Injected:
        """`user` writes in a group the bot is in (replying to message `reply_to` if given)."""
        return self.inject(chat, user, text, reply_to=reply_to, entities=entities)

    def inject(
        self,
        chat: Chat,
        user: User,
        text: str,
        *,
        reply_to: int | None = None,
        entities: list[dict[str, Any]] | None = None,
        thread_id: int | None = None,
        date: float | None = None,
    ) -> Injected:
        """Any text message; entities (mentions, /commands) are found as Telegram finds them unless given."""
        self.chats[chat.id] = chat
        message: dict[str, Any] = {
            "message_id": self._new_message_id(chat.id),
            "from": user.to_api(),
            "chat": chat.to_api(),
            "date": int(time.time() if date is None else date),
            "text": text,
        }
        found = auto_entities(text) if entities is None else entities
        if found:
            message["entities"] = found
        if reply_to is not None:
            message["reply_to_message"] = self._messages[(chat.id, reply_to)]
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        self._messages[(chat.id, message["message_id"])] = message
        update_id = self._next_update_id
        self._next_update_id += 1
        self._updates.append({"update_id": update_id, "message": message})
        injected = Injected(update_id, chat.id, message["message_id"], time.monotonic())
        self.injected.append(injected)
        self._notify()
        return injected

    # -- scripting ------------------------------------------------------------------------

    def fail(self, method: str, *failures: Failure) -> None:
        """The next requests to `method` (any case) fail like this, one failure per request."""
        self._failures.setdefault(method.lower(), deque()).extend(failures)

    def disconnect(self) -> int:
        """Drop the connections of the getUpdates requests waiting now; how many there were."""
        waiting = list(self._waiting.values())
        for request in waiting:
            if request.transport is not None:
                request.transport.abort()
        return len(waiting)

    # -- observing ------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Updates not yet confirmed by a getUpdates with a higher offset."""
        return len(self._updates)

    def is_confirmed(self, update_id: int) -> bool:
        return update_id < self.confirmed

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method.lower()]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Until `predicate()` holds (checked after every change); TimeoutError after `timeout` s."""
        with anyio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()

    async def wait_sent(self, count: int, timeout: float = 5.0) -> list[Sent]:
        await self.wait_for(lambda: len(self.sent) >= count, timeout)
        return list(self.sent)

    async def wait_confirmed(self, update_id: int, timeout: float = 5.0) -> None:
        await self.wait_for(lambda: self.is_confirmed(update_id), timeout)

    async def wait_polling(self, timeout: float = 5.0) -> None:
        """Until a getUpdates request is waiting for updates."""
        await self.wait_for(lambda: bool(self._waiting), timeout)

    # -- the HTTP side --------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_post("/_fake/{kind}", self._control)
        app.router.add_get("/_fake/sent", self._control_sent)
        return app

    def close(self) -> None:
        self._closing = True
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _new_message_id(self, chat_id: int) -> int:
        self._last_message_id[chat_id] = self._last_message_id.get(chat_id, 0) + 1
        return self._last_message_id[chat_id]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"].lower()
        params = await _params(request)
        token_ok = request.match_info["token"] == self.token
        self.calls.append(Call(method, params, token_ok, time.monotonic()))
        self._notify()
        if not token_ok:
            return _error(ApiError(401, "Unauthorized"))
        queued = self._failures.get(method)
        failure = queued.popleft() if queued else Answer()
        if not isinstance(failure, Answer):
            if isinstance(failure, Disconnect):
                if request.transport is not None:
                    request.transport.abort()
                return web.Response()
            if isinstance(failure, Garbage):
                return web.Response(status=failure.status, text=failure.body, content_type="text/html")
            return _error(failure)
        handler = _METHODS.get(method)
        if handler is None:
            return _error(ApiError(404, "Not Found: method not found"))
        try:
            result = await handler(self, request, params)
        except _Refused as refused:
            return _error(refused.error)
        except (KeyError, ValueError) as e:
            return _error(ApiError(400, f"Bad Request: {e}"))
        return web.json_response({"ok": True, "result": result})

    async def _get_me(self, request: web.Request, params: dict[str, Any]) -> Any:
        return {**self.bot.to_api(), "can_join_groups": True, "can_read_all_group_messages": False}

    async def _get_updates(self, request: web.Request, params: dict[str, Any]) -> Any:
        if self.webhook_url:
            raise _Refused(
                ApiError(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active;"
                    " use deleteWebhook to delete the webhook first",
                )
            )
        offset = _int(params.get("offset"))
        timeout = min(_int(params.get("timeout")) or 0, 50)
        limit = min(max(_int(params.get("limit")) or 100, 1), 100)
        allowed = _json(params.get("allowed_updates"))
        self.polls.append(Poll(offset, timeout, time.monotonic()))
        if offset is not None and offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            self.confirmed = max(self.confirmed, offset)
        self._poll_generation += 1
        generation = self._poll_generation

        def ready() -> list[dict[str, Any]]:
            return [u for u in self._updates if not allowed or any(kind in u for kind in allowed)][:limit]

        self._waiting[id(request)] = request
        self._notify()
        try:
            with anyio.move_on_after(timeout):
                while not ready() and not self._closing and generation == self._poll_generation:
                    await self._changed.wait()
        finally:
            self._waiting.pop(id(request), None)
        if generation != self._poll_generation:
            raise _Refused(
                ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one"
                    " bot instance is running",
                )
            )
        return ready()

    async def _send_message(self, request: web.Request, params: dict[str, Any]) -> Any:
        chat_id = _int(params["chat_id"])
        if chat_id is None or chat_id not in self.chats:
            raise _Refused(CHAT_NOT_FOUND)
        if chat_id in self.blocked:
            raise _Refused(BLOCKED)
        raw = str(params.get("text", ""))
        parse_mode = params.get("parse_mode") or None
        if parse_mode is not None and str(parse_mode).lower() != "html":
            raise _Refused(ApiError(400, f"Bad Request: unsupported parse_mode {parse_mode!r} in this fake"))
        try:
            text, entities = parse_html(raw) if parse_mode else (raw, [])
        except HTMLError as e:
            raise _Refused(ApiError(400, f"Bad Request: can't parse entities: {e}")) from None
        if not text.strip():
            raise _Refused(ApiError(400, "Bad Request: message text is empty"))
        if utf16_len(text) > MAX_LENGTH:
            raise _Refused(ApiError(400, "Bad Request: message is too long"))
        reply = _json(params.get("reply_parameters")) or {}
        reply_to = _int(reply.get("message_id", params.get("reply_to_message_id")))
        allow_without = bool(reply.get("allow_sending_without_reply", False))
        replied = self._messages.get((chat_id, reply_to)) if reply_to is not None else None
        if reply_to is not None and replied is None and not allow_without:
            raise _Refused(ApiError(400, "Bad Request: message to be replied not found"))
        message: dict[str, Any] = {
            "message_id": self._new_message_id(chat_id),
            "from": self.bot.to_api(),
            "chat": self.chats[chat_id].to_api(),
            "date": int(time.time()),
            "text": text,
        }
        if entities:
            message["entities"] = entities
        if replied is not None:
            message["reply_to_message"] = replied
        thread = _int(params.get("message_thread_id"))
        if thread is not None:
            message["message_thread_id"] = thread
        self._messages[(chat_id, message["message_id"])] = message
        self.sent.append(
            Sent(
                chat_id,
                message["message_id"],
                text,
                raw,
                parse_mode,
                entities,
                reply_to,
                allow_without,
                thread,
                time.monotonic(),
            )
        )
        self._notify()
        return message

    async def _send_chat_action(self, request: web.Request, params: dict[str, Any]) -> Any:
        if _int(params["chat_id"]) not in self.chats:
            raise _Refused(CHAT_NOT_FOUND)
        return True

    async def _set_my_commands(self, request: web.Request, params: dict[str, Any]) -> Any:
        self.commands = list(_json(params["commands"]))
        return True

    async def _get_my_commands(self, request: web.Request, params: dict[str, Any]) -> Any:
        return self.commands

    async def _set_webhook(self, request: web.Request, params: dict[str, Any]) -> Any:
        self.webhook_url = str(params["url"])
        self._poll_generation += 1  # a waiting poll ends with a conflict
        self._notify()
        return True

    async def _delete_webhook(self, request: web.Request, params: dict[str, Any]) -> Any:
        self.webhook_url = ""
        if _json(params.get("drop_pending_updates")):
            self._updates.clear()
        return True

    async def _get_webhook_info(self, request: web.Request, params: dict[str, Any]) -> Any:
        return {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": self.pending,
        }

    async def _control(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        user = User(int(body.get("user_id", ALICE.id)), str(body.get("name", "Alice")), body.get("username"))
        kind = request.match_info["kind"]
        if kind == "dm":
            injected = self.dm(str(body["text"]), user=user)
        elif kind == "group":
            injected = self.group(str(body["text"]), user=user, reply_to=body.get("reply_to"))
        else:
            raise web.HTTPNotFound()
        return web.json_response(asdict(injected))

    async def _control_sent(self, request: web.Request) -> web.StreamResponse:
        return web.json_response([asdict(sent) for sent in self.sent])


_Handler = Callable[[FakeTelegram, web.Request, dict[str, Any]], Any]
_METHODS: Final[Mapping[str, _Handler]] = {
    "getme": FakeTelegram._get_me,
    "getupdates": FakeTelegram._get_updates,
    "sendmessage": FakeTelegram._send_message,
    "sendchataction": FakeTelegram._send_chat_action,
    "setmycommands": FakeTelegram._set_my_commands,
    "getmycommands": FakeTelegram._get_my_commands,
    "setwebhook": FakeTelegram._set_webhook,
    "deletewebhook": FakeTelegram._delete_webhook,
    "getwebhookinfo": FakeTelegram._get_webhook_info,
}


async def _params(request: web.Request) -> dict[str, Any]:
    """Query string, then form fields or a JSON body: every way the Bot API takes parameters."""
    params: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        params.update(await request.json())
    elif request.can_read_body:
        params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
    return params


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    return int(value)


def _json(value: Any) -> Any:
    """A structured parameter: JSON text in a form, already decoded in a JSON body."""
    return json.loads(value) if isinstance(value, str) else value


def _error(error: ApiError) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": error.code, "description": error.description}
    parameters = {
        k: v
        for k, v in (("retry_after", error.retry_after), ("migrate_to_chat_id", error.migrate_to_chat_id))
        if v is not None
    }
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=error.code)


# -- Telegram's text rules ------------------------------------------------------------------


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


_MENTION = re.compile(r"(?<![\w@])@[A-Za-z][A-Za-z0-9_]{3,31}\b")
_COMMAND = re.compile(r"(?<!\S)/[A-Za-z0-9_]{1,32}(?:@[A-Za-z][A-Za-z0-9_]{3,31})?\b")


def auto_entities(text: str) -> list[dict[str, Any]]:
    """The mention and bot_command entities Telegram marks in a user's text (UTF-16 offsets)."""
    found = [("mention", m) for m in _MENTION.finditer(text)] + [
        ("bot_command", m) for m in _COMMAND.finditer(text)
    ]
    return [
        {"type": kind, "offset": utf16_len(text[: m.start()]), "length": utf16_len(m.group())}
        for kind, m in sorted(found, key=lambda item: item[1].start())
    ]


class HTMLError(ValueError):
    """Telegram's "can't parse entities" reasons."""


_TAG_TYPES: Final = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline", "ins": "underline",
    "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough", "tg-spoiler": "spoiler",
    "span": "spoiler", "a": "text_link", "code": "code", "pre": "pre", "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}  # fmt: skip
_TAG = re.compile(
    r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-zA-Z-]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>]+))?)*)\s*>"
)
_ATTR = re.compile(r"([a-zA-Z-]+)(?:\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>]+)))?")
_ENTITY = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|lt|gt|amp|quot);")


def parse_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Telegram HTML → (visible text, entities with UTF-16 offsets); HTMLError as Telegram refuses."""
    out: list[str] = []
    units = 0
    stack: list[tuple[str, dict[str, Any]]] = []
    entities: list[dict[str, Any]] = []
    i = 0
    while i < len(text):
        char = text[i]
        at = len(text[:i].encode())
        if char == "<":
            tag = _TAG.match(text, i)
            if tag is None:
                raise HTMLError(f"Unexpected start tag at byte offset {at}")
            closing, name, attributes = tag.group(1) == "/", tag.group(2).lower(), tag.group(3)
            if closing:
                if not stack:
                    raise HTMLError(f'Unexpected end tag "{name}" at byte offset {at}')
                open_name, entity = stack.pop()
                if open_name != name:
                    raise HTMLError(
                        f'Unmatched end tag at byte offset {at}, expected "</{open_name}>", found "</{name}>"'
                    )
                entity["length"] = units - entity["offset"]
                if entity["length"] > 0 and entity["type"] != "_language":
                    entities.append(entity)
            else:
                stack.append((name, _open_entity(name, dict(_attributes(attributes)), units, stack, at)))
            i = tag.end()
            continue
        if char == "&":
            entity_match = _ENTITY.match(text, i)
            if entity_match is None:
                raise HTMLError(f"Unsupported HTML entity or unescaped & at byte offset {at}")
            decoded = html.unescape(entity_match.group())
            out.append(decoded)
            units += utf16_len(decoded)
            i = entity_match.end()
            continue
        if char == ">":
            raise HTMLError(f"Unescaped > at byte offset {at}")
        out.append(char)
        units += utf16_len(char)
        i += 1
    if stack:
        raise HTMLError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def _attributes(text: str) -> list[tuple[str, str]]:
    return [
        (m.group(1).lower(), html.unescape(next((g for g in m.groups()[1:] if g is not None), "")))
        for m in _ATTR.finditer(text)
    ]


def _open_entity(
    name: str, attributes: dict[str, str], offset: int, stack: list[tuple[str, dict[str, Any]]], at: int
) -> dict[str, Any]:
    if name not in _TAG_TYPES:
        raise HTMLError(f'Unsupported start tag "{name}" at byte offset {at}')
    inside = stack[-1][0] if stack else None
    if inside in ("code", "pre") and not (inside == "pre" and name == "code"):
        raise HTMLError(f'Tag "{name}" can\'t be inside "{inside}" at byte offset {at}')
    if name == "code" and inside == "pre":
        language = attributes.get("class", "")
        if language.startswith("language-"):
            stack[-1][1]["language"] = language.removeprefix("language-")
        return {"type": "_language", "offset": offset}  # part of the pre entity, not one of its own
    if name == "blockquote" and any(open_name == "blockquote" for open_name, _ in stack):
        raise HTMLError(f"Blockquote entities can't be nested (byte offset {at})")
    entity: dict[str, Any] = {"type": _TAG_TYPES[name], "offset": offset}
    if name == "a":
        href = attributes.get("href", "")
        if not re.match(r"(?i)(https?|tg|mailto|ton)://|mailto:", href):
            raise HTMLError(f'Wrong URL "{href}" in a tag at byte offset {at}')
        entity["url"] = href
    if name == "span" and attributes.get("class") != "tg-spoiler":
        raise HTMLError(f'Tag "span" must have class "tg-spoiler" at byte offset {at}')
    if name == "blockquote" and "expandable" in attributes:
        entity["type"] = "expandable_blockquote"
    return entity


@asynccontextmanager
async def serve_fake_telegram(
    port: int = 0, *, token: str = DEFAULT_TOKEN, username: str = "mbe_test_bot"
) -> AsyncGenerator[FakeTelegram, None]:
    """Run the fake on 127.0.0.1 (`port` 0: any free port) for the duration of the block."""
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so, and without it a
    # response written in two parts waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    fake = FakeTelegram(f"http://127.0.0.1:{sock.getsockname()[1]}", token, username)
    runner = web.AppRunner(fake.app(), handle_signals=False, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        yield fake
    finally:
        fake.close()
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
        sock.close()


async def _main(port: int) -> None:
    async with serve_fake_telegram(port) as fake:
        print(f"fake Telegram Bot API at {fake.api_base}, token {fake.token}", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8081)
    anyio.run(_main, parser.parse_args().port)
