"""Telegram, through aiogram's Bot API client, with a polling loop of our own.

aiogram's Dispatcher is not used: it confirms updates on its own schedule and leaves a polling
task behind when cancelled from an anyio scope. Here `run` calls getUpdates itself, hands each
message to `deliver`, and moves the offset past an update only once `deliver` returned; Telegram
counts an update as received when a later getUpdates asks for a higher offset, so anything not
yet stored comes back after a crash or a failed `deliver`. Cancelling `run` is a plain cancel.
A batch (up to 100 updates) is delivered chat by chat at once, in order within each chat, so
the gateway's store writes the batch in one commit instead of one fsync per message.

The token is part of every Bot API URL (`/bot<token>/<method>`), and aiohttp errors may quote
the URL: every message that leaves this module goes through `_clean`, and errors are raised
`from None` so that no library exception (with its URL) rides along in a traceback.
"""

from __future__ import annotations

import logging
import random
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import anyio
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    AiogramError,
    ClientDecodeError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramConflictError,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import GetMe, GetUpdates, Response, SendChatAction, SendMessage, SetMyCommands
from aiogram.types import BotCommand, Message, MessageEntity, ReplyParameters, Update, User
from aiogram.utils.token import TokenValidationError

from mbe_gateway.channels.base import Capabilities, Deliver, Inbound, Outbound
from mbe_gateway.channels.telegram_markup import MAX_LENGTH, Part, telegram_parts
from mbe_gateway.errors import ChannelAuthFailed, ChannelError, ConfigError, SendFailed
from mbe_gateway.logs import redact

if TYPE_CHECKING:
    from mbe_gateway.config import TelegramSettings
    from mbe_gateway.secrets import Secrets

log = logging.getLogger(__name__)

DEFAULT_API_BASE: Final = "https://api.telegram.org"
_GROUPS: Final = frozenset({"group", "supergroup"})
_COMMAND: Final = re.compile(r"[a-z0-9_]{1,32}")
_MARKUP_ERRORS: Final = ("can't parse", "entit", "url")  # 400s that a plain-text resend avoids
_UNFINISHED_KEPT: Final = 256
# aiogram reads every answer as `Response[<the method's result type>]`, a pydantic generic that
# pydantic keeps only in a weak cache: each garbage collection frees it and the next call builds
# it again, 1-4 ms each time. Holding the ones we use builds each of them once (bench/gateway.py:
# the daemon's CPU per message 11.4-12.1 → 7.9-8.2 ms, update → reply p99 30-34 → 23 ms).
_RESPONSE_TYPES: Final = tuple(
    Response.__class_getitem__(method.__returning__)
    for method in (GetMe, GetUpdates, SendMessage, SendChatAction, SetMyCommands)
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try before giving up, and how long to wait between tries (full jitter)."""

    send_attempts: int = 4  # tries per message part through 5xx and network errors
    max_flood_wait: float = 10.0  # a 429 asking for longer is raised to the caller (retryable)
    flood_waits: int = 3  # 429s waited out per part before raising
    base: float = 0.25  # seconds: the bound of the first wait
    cap: float = 30.0  # seconds: no wait is longer than this (polling reconnects)
    send_cap: float = 2.0  # seconds: retries of one send stay quick

    def delay(self, attempt: int, *, cap: float | None = None) -> float:
        bound = min(self.cap if cap is None else cap, self.base * 2.0 ** min(attempt, 32))
        return bound * random.random()


class TelegramChannel:
    """A Telegram bot: long-polls for messages, sends replies as HTML, split under 4096 units.

    `commands` are (name, description) pairs registered with setMyCommands when `run` starts,
    so Telegram offers them in its "/" menu. `secret_name` is only used in error messages, to
    say which secret to fix. The HTTP session is opened on first use; close it with `aclose`
    (or use the channel as an async context manager) once `run` and the last `send` are done.
    """

    def __init__(
        self,
        token: str,
        *,
        api_base: str = DEFAULT_API_BASE,
        commands: Sequence[tuple[str, str]] = (),
        secret_name: str = "telegram_token",  # noqa: S107 (a secret's name, not its value)
        name: str = "telegram",
        poll_timeout: int = 25,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self.name = name
        self.capabilities = Capabilities(max_length=MAX_LENGTH, markup="telegram_html", typing=True)
        self._token = token
        self._api_base = api_base.rstrip("/")
        self._secret_name = secret_name
        self._commands = [BotCommand(command=c, description=d) for c, d in _valid_commands(commands)]
        self._poll_timeout = poll_timeout
        self._retry = retry
        self._unfinished: OrderedDict[tuple[str, str | None, str], list[str]] = OrderedDict()
        self.receiving = anyio.Event()
        session = AiohttpSession(api=TelegramAPIServer.from_base(self._api_base), timeout=30)
        try:
            self._bot = Bot(token, session=session)
        except TokenValidationError:
            raise ChannelAuthFailed(
                f"the value of secret {secret_name} is not a Telegram bot token (it looks like"
                f" 123456789:AA…); copy it again from @BotFather and store it with"
                f" `mbe-gateway secrets set {secret_name}`"
            ) from None

    def __repr__(self) -> str:
        return f"<TelegramChannel {self.name} api_base={self._api_base}>"

    async def __aenter__(self) -> TelegramChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session (a later call opens a new one)."""
        with anyio.CancelScope(shield=True):
            await self._bot.session.close()

    # -- the Channel interface ---------------------------------------------------------------

    async def check(self) -> str:
        try:
            me = await self._bot(GetMe(), request_timeout=15)
        except (TelegramUnauthorizedError, TelegramNotFound):
            raise self._auth_failed() from None
        except AiogramError as e:
            raise ChannelError(
                f"cannot reach the Telegram Bot API at {self._api_base}: {self._clean(e)}"
            ) from None
        return f"@{me.username}"

    async def run(self, deliver: Deliver) -> None:
        """Poll until cancelled; ChannelAuthFailed if the token is refused, ChannelError if a
        webhook is set for this bot (polling cannot work then)."""
        me = await self._connect()
        await self._register_commands()
        self.receiving.set()
        offset: int | None = None
        failures = refusals = 0  # polls failed in a row; deliveries refused in a row
        while True:
            try:
                updates = await self._bot(
                    GetUpdates(offset=offset, timeout=self._poll_timeout, allowed_updates=["message"]),
                    request_timeout=self._poll_timeout + 15,
                )
            except TelegramRetryAfter as e:
                await anyio.sleep(e.retry_after)
                continue
            except AiogramError as e:
                await self._polling_failed(e, failures)
                failures += 1
                continue
            failures = 0
            if not updates:
                continue
            stuck = await self._deliver_batch(updates, me, deliver)
            if stuck is None:
                refusals = 0
                offset = updates[-1].update_id + 1
                continue
            update_id, error = stuck
            offset = update_id  # it and everything after it comes again; what was stored is a duplicate
            delay = self._retry.delay(refusals)
            refusals += 1
            log.warning(
                "delivering a message failed; it stays unacknowledged and comes again",
                extra={"update_id": update_id, "error": self._clean(error), "retry_in": delay},
            )
            await anyio.sleep(delay)

    async def _deliver_batch(
        self, updates: Sequence[Update], me: User, deliver: Deliver
    ) -> tuple[int, Exception] | None:
        """Hand one getUpdates batch to `deliver`: each chat's messages in order, the chats at
        once (so the gateway stores them together, in one commit). Returns None when all were
        taken, else the first update not taken and why: the offset must not pass it. A chat
        stops at its first refusal, so its later messages cannot be stored ahead of it."""
        chats: dict[str, list[tuple[int, Inbound]]] = {}
        for update in updates:
            inbound = self._inbound(update, me)
            if inbound is not None:
                log.debug(
                    "message received",
                    extra={
                        "chat_id": inbound.chat_id,
                        "sender_id": inbound.sender_id,
                        "addressed": inbound.addressed,
                    },
                )
                chats.setdefault(inbound.chat_id, []).append((update.update_id, inbound))
        refused: list[tuple[int, Exception]] = []

        async def one_chat(messages: list[tuple[int, Inbound]]) -> None:
            for update_id, inbound in messages:
                try:
                    await deliver(inbound)
                except Exception as e:  # the gateway could not keep it: Telegram sends it again
                    refused.append((update_id, e))
                    return

        if len(chats) == 1:  # the common case when quiet: no task group needed
            await one_chat(next(iter(chats.values())))
        else:
            async with anyio.create_task_group() as tg:
                for messages in chats.values():
                    tg.start_soon(one_chat, messages)
        return min(refused, key=lambda item: item[0]) if refused else None

    async def send(self, message: Outbound) -> list[str]:
        """Send the reply in parts, in order; the first part answers `reply_to`. A blank text
        sends nothing and returns [].

        If a part fails after earlier parts went out, the ids sent so far are remembered, and
        sending the same message again continues after them, so a retry does not repeat them.
        """
        try:
            chat_id: int | str = _chat_id(message.chat_id)
        except ValueError:
            raise SendFailed(f"{message.chat_id!r} is not a Telegram chat id", retryable=False) from None
        key = (message.chat_id, message.reply_to, message.text)
        sent = self._unfinished.pop(key, [])
        thread = message.meta.get("thread_id")
        parts = telegram_parts(message.text)
        for index in range(len(sent), len(parts)):
            reply_to = _message_id(message.reply_to) if index == 0 else None
            try:
                result = await self._send_part(chat_id, parts[index], reply_to, thread)
            except SendFailed:
                if sent:
                    self._unfinished[key] = sent
                    while len(self._unfinished) > _UNFINISHED_KEPT:
                        self._unfinished.popitem(last=False)
                raise
            chat_id = result.chat.id
            sent.append(f"{result.chat.id}:{result.message_id}")
        return sent

    async def typing(self, chat_id: str) -> None:
        try:
            await self._bot(SendChatAction(chat_id=_chat_id(chat_id), action="typing"), request_timeout=5)
        except (AiogramError, ValueError) as e:
            log.debug("typing indicator failed", extra={"chat_id": chat_id, "error": self._clean(e)})

    # -- receiving -----------------------------------------------------------------------------

    async def _connect(self) -> User:
        """getMe, retried through network trouble: the bot's id and username tell us when it is addressed."""
        attempt = 0
        while True:
            try:
                me = await self._bot(GetMe(), request_timeout=15)
            except (TelegramUnauthorizedError, TelegramNotFound):
                raise self._auth_failed() from None
            except TelegramRetryAfter as e:
                await anyio.sleep(e.retry_after)
                continue
            except AiogramError as e:
                delay = self._retry.delay(attempt)
                attempt += 1
                log.warning(
                    "cannot reach the Telegram Bot API; retrying",
                    extra={"api_base": self._api_base, "error": self._clean(e), "retry_in": delay},
                )
                await anyio.sleep(delay)
                continue
            log.info("connected to Telegram", extra={"bot": f"@{me.username}", "api_base": self._api_base})
            return me

    async def _register_commands(self) -> None:
        if not self._commands:
            return
        try:
            await self._bot(SetMyCommands(commands=self._commands), request_timeout=15)
        except TelegramUnauthorizedError:
            raise self._auth_failed() from None
        except AiogramError as e:  # the menu is a convenience: the bot works without it
            log.warning("registering the bot's commands failed", extra={"error": self._clean(e)})

    async def _polling_failed(self, error: AiogramError, attempt: int) -> None:
        if isinstance(error, TelegramUnauthorizedError | TelegramNotFound):
            raise self._auth_failed() from None
        if isinstance(error, TelegramConflictError) and "webhook" in error.message.lower():
            raise ChannelError(
                "a webhook is set for this Telegram bot, so it cannot poll for messages: remove it"
                " (open https://api.telegram.org/bot<token>/deleteWebhook with the bot's token) or stop"
                " the service that set it"
            ) from None
        delay = self._retry.delay(attempt)
        if isinstance(error, TelegramConflictError):
            log.warning(
                "another program is polling this bot's messages (only one may): stop the other"
                " instance; retrying",
                extra={"retry_in": delay},
            )
        else:
            log.warning(
                "polling Telegram failed; reconnecting",
                extra={"error": self._clean(error), "retry_in": delay},
            )
        await anyio.sleep(delay)

    def _inbound(self, update: Update, me: User) -> Inbound | None:
        """The update as an Inbound, or None for what we do not answer (bots, non-text, channels)."""
        message = update.message
        if message is None or message.from_user is None or message.from_user.is_bot:
            return None
        text = message.text if message.text is not None else message.caption
        entities = message.entities if message.text is not None else message.caption_entities
        if text is None or message.chat.type not in _GROUPS | {"private"}:
            return None
        is_group = message.chat.type in _GROUPS
        text, called = _address(text, entities or [], me)
        addressed = not is_group or called or _replies_to(message, me)
        user = message.from_user
        meta: dict[str, Any] = {"chat_type": message.chat.type}
        if user.username:
            meta["username"] = user.username
        if message.chat.title:
            meta["chat_title"] = message.chat.title
        if message.is_topic_message and message.message_thread_id is not None:
            meta["thread_id"] = message.message_thread_id
        return Inbound(
            channel=self.name,
            platform_message_id=f"{message.chat.id}:{message.message_id}",
            chat_id=str(message.chat.id),
            sender_id=str(user.id),
            text=text,
            sent_at=message.date.timestamp(),
            sender_name=user.full_name,
            is_group=is_group,
            addressed=addressed,
            reply_to=str(message.message_id),
            meta=MappingProxyType(meta),
        )

    # -- sending -------------------------------------------------------------------------------

    async def _send_part(self, chat_id: int | str, part: Part, reply_to: int | None, thread: Any) -> Message:
        as_html = True
        failures = floods = 0
        while True:
            method = SendMessage(
                chat_id=chat_id,
                text=part.html if as_html else part.plain,
                parse_mode="HTML" if as_html else None,
                message_thread_id=thread if isinstance(thread, int) else None,
                reply_parameters=(
                    ReplyParameters(message_id=reply_to, allow_sending_without_reply=True)
                    if reply_to is not None
                    else None
                ),
            )
            try:
                return await self._bot(method)
            except TelegramRetryAfter as e:
                if e.retry_after > self._retry.max_flood_wait or floods >= self._retry.flood_waits:
                    raise SendFailed(
                        f"Telegram asks to wait {e.retry_after} s before sending to this chat again",
                        retryable=True,
                        retry_after=float(e.retry_after),
                    ) from None
                floods += 1
                log.info("Telegram flood control: waiting", extra={"chat_id": chat_id, "wait": e.retry_after})
                await anyio.sleep(e.retry_after)
            except TelegramMigrateToChat as e:
                log.info("the group became a supergroup", extra={"old": chat_id, "new": e.migrate_to_chat_id})
                chat_id = e.migrate_to_chat_id
            except TelegramUnauthorizedError:
                raise self._auth_failed() from None
            except TelegramEntityTooLarge as e:
                raise SendFailed(f"Telegram refused the message: {self._clean(e)}", retryable=False) from None
            except TelegramBadRequest as e:
                if as_html and any(mark in e.message.lower() for mark in _MARKUP_ERRORS):
                    log.warning(
                        "Telegram refused the formatting; sending as plain text",
                        extra={"chat_id": chat_id, "error": self._clean(e)},
                    )
                    as_html = False
                    continue
                raise SendFailed(f"Telegram refused the message: {self._clean(e)}", retryable=False) from None
            except (TelegramForbiddenError, TelegramNotFound) as e:
                raise SendFailed(
                    f"cannot send to chat {chat_id} (the bot was blocked, removed, or the chat is gone):"
                    f" {self._clean(e)}",
                    retryable=False,
                ) from None
            except (TelegramServerError, TelegramNetworkError, ClientDecodeError) as e:
                failures += 1
                if failures >= self._retry.send_attempts:
                    raise SendFailed(
                        f"Telegram did not take the message after {failures} tries: {self._clean(e)}",
                        retryable=True,
                    ) from None
                await anyio.sleep(self._retry.delay(failures - 1, cap=self._retry.send_cap))
            except TelegramAPIError as e:
                raise SendFailed(f"Telegram refused the message: {self._clean(e)}", retryable=False) from None

    # -- messages that never carry the token --------------------------------------------------

    def _clean(self, error: BaseException | str) -> str:
        text = str(error) if not isinstance(error, ClientDecodeError) else error.message
        return redact(text.replace(self._token, "[token]")).split("\n(background on this error", 1)[0]

    def _auth_failed(self) -> ChannelAuthFailed:
        return ChannelAuthFailed(
            f"Telegram rejected the bot token in secret {self._secret_name}: get the token from @BotFather"
            f" (/mybots → API Token) and store it with `mbe-gateway secrets set {self._secret_name}`"
            f" (API server: {self._api_base})"
        )


def from_settings(
    settings: TelegramSettings, secrets: Secrets, *, commands: Sequence[tuple[str, str]] = ()
) -> TelegramChannel:
    """The channel for the `[channels.telegram]` section, its token read from the secrets."""
    if settings.token is None:
        raise ConfigError(
            '[channels.telegram]: token is not set; add token = "secret:telegram_token" and store the'
            " token with `mbe-gateway secrets set telegram_token`"
        )
    return TelegramChannel(
        secrets.get(settings.token),
        api_base=settings.api_base,
        commands=commands,
        secret_name=settings.token.name,
    )


def _valid_commands(commands: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    for command, description in commands:
        if not _COMMAND.fullmatch(command) or not 1 <= len(description) <= 256:
            raise ValueError(
                f"Telegram command {command!r}: names are 1-32 of a-z, 0-9 and _;"
                " descriptions 1-256 characters"
            )
    return list(commands)


def _address(text: str, entities: list[MessageEntity], me: User) -> tuple[str, bool]:
    """The text without the bot's own @mention (and `/cmd@bot` as `/cmd`), and whether the
    bot was called by name or by a command meant for it."""
    username = (me.username or "").lower()
    called = False
    cuts: list[tuple[int, int, str]] = []  # (start, end, replacement) as indexes into `text`
    for entity in entities:
        piece = entity.extract_from(text)
        start = _index(text, entity.offset)  # entity offsets count UTF-16 units
        end = start + len(piece)
        by_name = entity.type == "mention" and piece[1:].lower() == username
        if by_name or (entity.type == "text_mention" and entity.user is not None and entity.user.id == me.id):
            called = True
            cuts.append((start, end, ""))
        elif entity.type == "bot_command":
            command, _, target = piece.partition("@")
            if target and target.lower() != username:
                continue  # /cmd@other_bot: for someone else
            called = called or entity.offset == 0
            if target:
                cuts.append((start, end, command))
    for start, end, replacement in sorted(cuts, reverse=True):
        before, after = text[:start], text[end:]
        if not replacement:  # "@bot, hi" → "hi"; "hi @bot there" → "hi there"
            if not before.strip():
                after = after.lstrip(" ,:")
            elif before.endswith(" ") and after[:1] in ("", " ", ",", ".", "!", "?"):
                before = before[:-1]
        text = before + replacement + after
    return (text.strip() if cuts else text), called


def _index(text: str, utf16_offset: int) -> int:
    """The index into `text` of a position given in UTF-16 code units."""
    units = 0
    for index, char in enumerate(text):
        if units >= utf16_offset:
            return index
        units += 2 if ord(char) > 0xFFFF else 1
    return len(text)


def _replies_to(message: Message, me: User) -> bool:
    replied = message.reply_to_message
    if replied is None or replied.from_user is None or replied.forum_topic_created is not None:
        return False  # in forum topics, every message "replies" to the topic's first one
    return replied.from_user.id == me.id


def _chat_id(chat_id: str) -> int | str:
    """Telegram chat ids are integers; "@channelname" also addresses a public chat."""
    return chat_id if chat_id.startswith("@") else int(chat_id)


def _message_id(reply_to: str | None) -> int | None:
    """A message id from "42" or from a platform id "chat:42"; None if it is neither."""
    if reply_to is None:
        return None
    tail = reply_to.rpartition(":")[2]
    return int(tail) if tail.lstrip("-").isdigit() else None
