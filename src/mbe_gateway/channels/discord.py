"""Discord, through hikari: the Gateway for messages in, its REST client for replies out.

Discord has no acknowledgement: an event the gateway sent is received, and nothing a bot says
makes Discord send it again. So `run` hands each message to `deliver` as it arrives, and a
`deliver` that raises is retried here, in order, until it succeeds; what is waiting for
`deliver` when `run` is cancelled is what a restart loses (hikari resumes a dropped session,
which replays what was missed while the connection was down, but a stopped bot misses what
was said meanwhile).

hikari reconnects and resumes the gateway session by itself; `run` starts a new session with
a jittered backoff when one ends for good. Replies are sent with one long-lived REST client
of our own (opened on first use, closed by `aclose`): hikari waits out short rate limits
itself (at most `RetryPolicy.max_rate_wait`) and we do the rest — quick jittered retries for
5xx and network errors, with a nonce Discord uses to refuse a duplicate if a retried message
had in fact been created, and a plain-text resend of a part Discord refuses. Nothing the bot
sends pings anyone: allowed_mentions is empty, always.

The token travels in the Authorization header only; errors name the secret, never the value.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import anyio
import hikari
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from hikari.impl import GatewayShardImpl

from mbe_gateway.channels.base import Capabilities, Deliver, Inbound, Outbound
from mbe_gateway.channels.discord_markup import measure, to_discord, to_plain
from mbe_gateway.channels.split import split_markdown
from mbe_gateway.errors import ChannelAuthFailed, ChannelError, ConfigError, SendFailed

if TYPE_CHECKING:
    from mbe_gateway.config import DiscordSettings
    from mbe_gateway.secrets import Secrets

log = logging.getLogger(__name__)

DEFAULT_REST_URL: Final = "https://discord.com/api/v10"
MAX_LENGTH: Final = 2000
INTENTS: Final = hikari.Intents.DM_MESSAGES | hikari.Intents.GUILD_MESSAGES | hikari.Intents.MESSAGE_CONTENT
_ANSWERED_TYPES: Final = frozenset({hikari.MessageType.DEFAULT, hikari.MessageType.REPLY})
_UNFINISHED_KEPT: Final = 256
_AUTH_FAILED_CLOSE: Final = 4004
_DISALLOWED_INTENTS_CLOSE: Final = 4014


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try before giving up, and how long to wait in between (full jitter)."""

    send_attempts: int = 4  # tries per message part through 5xx and network errors
    max_rate_wait: float = 10.0  # a 429 asking for longer is raised to the caller (retryable)
    base: float = 0.25  # seconds: the bound of the first wait
    send_cap: float = 2.0  # seconds: retries of one send stay quick
    cap: float = 60.0  # seconds: the longest wait between gateway sessions or deliveries
    healthy_after: float = 60.0  # seconds connected before a later failure counts as the first

    def delay(self, attempt: int, *, cap: float | None = None) -> float:
        bound = min(self.cap if cap is None else cap, self.base * 2.0 ** min(attempt, 32))
        return bound * random.random()


@dataclass(slots=True)
class _Progress:
    """A send that failed part-way: the nonce it used and the ids of the parts that went out."""

    nonce: str = field(default_factory=lambda: secrets.token_hex(8))
    sent: list[str] = field(default_factory=list)


class DiscordChannel:
    """A Discord bot: DMs and the guild channels it can read, replies in Discord Markdown.

    `rest_url` is the REST API base with its version (the gateway's address comes from it).
    `secret_name` is only used in error messages, to say which secret to fix. The REST client
    for replies opens on first use; close it with `aclose` (or use the channel as an async
    context manager) once `run` and the last `send` are done.
    """

    def __init__(
        self,
        token: str,
        *,
        rest_url: str = DEFAULT_REST_URL,
        secret_name: str = "discord_token",  # noqa: S107 (a secret's name, not its value)
        name: str = "discord",
        retry: RetryPolicy = RetryPolicy(),
        request_timeout: float = 15.0,
    ) -> None:
        self.name = name
        self.capabilities = Capabilities(max_length=MAX_LENGTH, markup="discord_markdown", typing=True)
        self._token = token.strip()
        self._rest_url = rest_url.rstrip("/")
        self._secret_name = secret_name
        self._retry = retry
        self._http = hikari.impl.HTTPSettings(timeouts=hikari.impl.HTTPTimeoutSettings(total=request_timeout))
        try:
            self._me = int(hikari.applications.get_token_id(self._token))  # confirmed by READY
        except ValueError:
            raise ChannelAuthFailed(
                f"the value of secret {secret_name} is not a Discord bot token; copy it again from the"
                f" Developer Portal (your application → Bot → Reset Token) and store it with"
                f" `mbe-gateway secrets set {secret_name}`"
            ) from None
        self._running = False
        self._rest_app: hikari.RESTApp | None = None
        self._rest: hikari.impl.RESTClientImpl | None = None
        self._rest_lock = anyio.Lock()
        self.receiving = anyio.Event()
        self._unfinished: OrderedDict[tuple[str, str | None, str], _Progress] = OrderedDict()

    def __repr__(self) -> str:
        return f"<DiscordChannel {self.name} rest_url={self._rest_url}>"

    async def __aenter__(self) -> DiscordChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the REST client (a later call opens a new one)."""
        with anyio.CancelScope(shield=True):
            async with self._rest_lock:
                rest, app = self._rest, self._rest_app
                self._rest = self._rest_app = None
                if rest is not None:
                    await rest.close()
                if app is not None:
                    await app.close()

    # -- the Channel interface ---------------------------------------------------------------

    async def check(self) -> str:
        rest = await self._client()
        try:
            me = await rest.fetch_my_user()
        except hikari.UnauthorizedError:
            raise self._auth_failed() from None
        except hikari.HTTPError as e:
            raise ChannelError(f"cannot reach Discord at {self._rest_url}: {_describe(e)}") from None
        return f"@{me.username} ({me.id})"

    async def run(self, deliver: Deliver) -> None:
        """Receive until cancelled; ChannelAuthFailed if Discord refuses the token (or the
        Message Content intent is not enabled for the bot)."""
        if self._running:
            raise ChannelError(f"channel {self.name} is already running")
        self._running = True
        inbox, outbox = anyio.create_memory_object_stream[Inbound](math.inf)  # drained as it fills
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._deliver_each, outbox, deliver)
                failure = await self._stay_connected(inbox)
                tg.cancel_scope.cancel()
            raise failure
        finally:
            self._running = False
            inbox.close()
            if waiting := outbox.statistics().current_buffer_used:
                log.warning(
                    "stopped with messages not yet delivered; Discord will not send them again",
                    extra={"messages": waiting},
                )
            outbox.close()

    async def send(self, message: Outbound) -> list[str]:
        """Send the reply in parts, in order; the first part answers `reply_to`.

        If a part fails after earlier parts went out, sending the same message again continues
        after them with the same nonces, so a retry repeats nothing (not even a part whose
        answer was lost on the way: Discord returns the message it already made for a nonce).
        """
        channel_id = _snowflake(message.chat_id, "a Discord channel id")
        reply_to = None if message.reply_to is None else _snowflake(message.reply_to, "a Discord message id")
        key = (message.chat_id, message.reply_to, message.text)
        progress = self._unfinished.pop(key, None) or _Progress()
        parts = split_markdown(message.text, MAX_LENGTH, measure)
        try:
            rest = await self._client()
            for index in range(len(progress.sent), len(parts)):
                nonce = f"{progress.nonce}{index:x}"
                message_id = await self._send_part(
                    rest, channel_id, parts[index], reply_to if index == 0 else None, nonce
                )
                progress.sent.append(message_id)
        except BaseException:
            self._unfinished[key] = progress
            while len(self._unfinished) > _UNFINISHED_KEPT:
                self._unfinished.popitem(last=False)
            raise
        return progress.sent

    async def typing(self, chat_id: str) -> None:
        try:
            rest = await self._client()
            with anyio.move_on_after(5):
                await rest.trigger_typing(_snowflake(chat_id, "a Discord channel id"))
        except (hikari.HikariError, SendFailed) as e:
            log.debug("typing indicator failed", extra={"chat_id": chat_id, "error": _describe(e)})

    # -- receiving -----------------------------------------------------------------------------

    async def _stay_connected(self, inbox: MemoryObjectSendStream[Inbound]) -> ChannelAuthFailed:
        """Gateway sessions one after another, with a backoff in between; returns (rather than
        raises, so that it leaves the task group unwrapped) the auth failure that ends them."""
        attempt = 0
        while True:
            started = anyio.current_time()
            try:
                await self._session(inbox)
                log.warning("the Discord gateway session ended; starting a new one")
            except ChannelAuthFailed as failure:
                return failure
            except Exception as e:  # hikari, aiohttp and OS errors alike: a new session may work
                log.warning(
                    "the Discord gateway connection failed; reconnecting",
                    extra={"rest_url": self._rest_url, "error": _describe(e), "attempt": attempt},
                )
            if anyio.current_time() - started > self._retry.healthy_after:
                attempt = 0
            delay = self._retry.delay(attempt)
            attempt += 1
            await anyio.sleep(delay)

    async def _session(self, inbox: MemoryObjectSendStream[Inbound]) -> None:
        """One gateway session: hikari connects, identifies, resumes through drops, and returns
        or raises when the session cannot go on."""
        bot = hikari.GatewayBot(
            self._token,
            rest_url=self._rest_url,
            intents=INTENTS,
            banner=None,
            logs=None,
            suppress_optimization_warning=True,
            cache_settings=hikari.impl.CacheSettings(components=hikari.api.CacheComponents.NONE),
            auto_chunk_members=False,
            max_retries=0,  # a failed start is retried by our loop, not held up for ~10 s inside it
            http_settings=self._http,
        )

        async def on_ready(event: hikari.ShardReadyEvent) -> None:
            self._me = int(event.my_user.id)
            self.receiving.set()
            log.info(
                "connected to Discord",
                extra={"bot": f"@{event.my_user.username}", "bot_id": self._me, "rest_url": self._rest_url},
            )

        async def on_message(event: hikari.MessageCreateEvent) -> None:
            inbound = self._inbound(event.message)
            if inbound is not None:
                try:
                    inbox.send_nowait(inbound)
                except anyio.ClosedResourceError:  # `run` is over: the message is not ours any more
                    log.info(
                        "a message arrived after the channel stopped",
                        extra={"message_id": inbound.platform_message_id},
                    )

        bot.subscribe(hikari.ShardReadyEvent, on_ready)
        bot.subscribe(hikari.MessageCreateEvent, on_message)
        try:
            await bot.start(check_for_updates=False)
            await bot.join()
        except hikari.UnauthorizedError:
            raise self._auth_failed() from None
        except hikari.GatewayServerClosedConnectionError as e:
            if e.code == _AUTH_FAILED_CLOSE:
                raise self._auth_failed() from None
            if e.code == _DISALLOWED_INTENTS_CLOSE:
                raise ChannelAuthFailed(
                    "Discord refused the Message Content intent for this bot: turn on MESSAGE CONTENT"
                    " INTENT in the Developer Portal (your application → Bot → Privileged Gateway"
                    " Intents), then restart"
                ) from None
            raise
        finally:
            with anyio.CancelScope(shield=True):
                if bot.is_alive:
                    await bot.close()
                _cancel_orphaned_shards(bot)

    def _inbound(self, message: hikari.Message) -> Inbound | None:
        """The message as an Inbound, or None for what we do not answer (bots, ourselves,
        system messages, messages without text); attachments' URLs go in `meta`."""
        author = message.author
        if author.is_bot or author.is_system or int(author.id) == self._me:
            return None
        if message.type not in _ANSWERED_TYPES:
            return None
        is_group = message.guild_id is not None
        text, mentioned = _strip_mention(message.content or "", self._me)
        referenced = message.referenced_message
        replied = (
            referenced is not None
            and isinstance(referenced.author, hikari.User)
            and int(referenced.author.id) == self._me
        )
        if not text:
            return None
        attachments = [a.url for a in message.attachments]
        meta: dict[str, Any] = {"username": author.username}
        if message.guild_id is not None:
            meta["guild_id"] = str(message.guild_id)
        if attachments:
            meta["attachments"] = attachments
        return Inbound(
            channel=self.name,
            platform_message_id=str(message.id),
            chat_id=str(message.channel_id),
            sender_id=str(author.id),
            text=text,
            sent_at=message.timestamp.timestamp(),
            sender_name=_display_name(message),
            is_group=is_group,
            addressed=not is_group or mentioned or replied,
            reply_to=str(message.id),
            meta=MappingProxyType(meta),
        )

    async def _deliver_each(self, outbox: MemoryObjectReceiveStream[Inbound], deliver: Deliver) -> None:
        """Hand messages to `deliver` in arrival order; one it refuses is offered again (Discord
        will not send it twice) until it is taken, and the ones behind it wait their turn."""
        async for inbound in outbox:
            refusals = 0
            while True:
                try:
                    await deliver(inbound)
                    break
                except Exception as e:
                    delay = self._retry.delay(refusals)
                    refusals += 1
                    log.warning(
                        "delivering a message failed; offering it again",
                        extra={
                            "message_id": inbound.platform_message_id,
                            "error": _describe(e),
                            "retry_in": delay,
                        },
                    )
                    await anyio.sleep(delay)

    # -- sending -------------------------------------------------------------------------------

    async def _client(self) -> hikari.impl.RESTClientImpl:
        async with self._rest_lock:
            if self._rest is None:
                app = hikari.RESTApp(
                    http_settings=self._http,
                    max_rate_limit=self._retry.max_rate_wait,
                    max_retries=0,  # ours: quicker, and with a nonce against duplicates
                    url=self._rest_url,
                )
                await app.start()
                rest = app.acquire(self._token, hikari.TokenType.BOT)
                rest.start()
                self._rest_app, self._rest = app, rest
            return self._rest

    async def _send_part(
        self, rest: hikari.impl.RESTClientImpl, channel_id: int, part: str, reply_to: int | None, nonce: str
    ) -> str:
        try:
            return await self._create(rest, channel_id, to_discord(part), reply_to, nonce)
        except hikari.BadRequestError as e:
            log.warning(
                "Discord refused a formatted message; resending it as plain text",
                extra={"chat_id": str(channel_id), "code": e.code, "error": e.message},
            )
        try:
            return await self._create(rest, channel_id, to_plain(part), reply_to, nonce)
        except hikari.BadRequestError as e:
            raise SendFailed(
                f"Discord refused the message for channel {channel_id}: {e.message} ({e.code})",
                retryable=False,
            ) from None

    async def _create(
        self,
        rest: hikari.impl.RESTClientImpl,
        channel_id: int,
        content: str,
        reply_to: int | None,
        nonce: str,
    ) -> str:
        """Create one message: 5xx and network errors retried quickly; BadRequestError raised
        for the caller; everything else as SendFailed or ChannelAuthFailed."""
        attempt = 0
        while True:
            try:
                message = await rest.create_message(
                    channel_id,
                    content,
                    reply=hikari.UNDEFINED if reply_to is None else reply_to,
                    reply_must_exist=False,  # the question was deleted: answer anyway
                    nonce=nonce,
                    mentions_everyone=False,
                    mentions_reply=False,
                    user_mentions=False,
                    role_mentions=False,
                    flags=hikari.MessageFlag.SUPPRESS_EMBEDS,
                )
                return str(message.id)
            except hikari.BadRequestError:
                raise
            except hikari.UnauthorizedError:
                raise self._auth_failed() from None
            except (hikari.ForbiddenError, hikari.NotFoundError) as e:
                raise SendFailed(
                    f"Discord will not take messages for channel {channel_id}: {e.message} ({e.code});"
                    " the bot may have been removed, blocked, or lack the Send Messages permission there",
                    retryable=False,
                ) from None
            except hikari.RateLimitTooLongError as e:
                raise SendFailed(
                    f"Discord rate-limits messages to channel {channel_id} for {e.retry_after:.0f} s",
                    retryable=True,
                    retry_after=e.retry_after,
                ) from None
            except hikari.HTTPResponseError as e:
                if e.status == 429:  # not in Discord's JSON shape (a proxy?): hikari leaves it to us
                    wait = _retry_after(e.headers)
                    if wait > self._retry.max_rate_wait:
                        raise SendFailed(
                            f"rate-limited sending to channel {channel_id} for {wait:.0f} s",
                            retryable=True,
                            retry_after=wait,
                        ) from None
                    await anyio.sleep(wait)
                    continue
                if isinstance(e, hikari.ClientHTTPResponseError):
                    raise SendFailed(
                        f"Discord refused a message for channel {channel_id}: HTTP {e.status} {e.message}",
                        retryable=False,
                    ) from None
                failure = _describe(e)
            except hikari.HTTPError as e:  # the connection failed or timed out
                failure = _describe(e)
            if attempt + 1 >= self._retry.send_attempts:
                raise SendFailed(
                    f"could not send to Discord channel {channel_id} after {attempt + 1} tries: {failure}",
                    retryable=True,
                ) from None
            delay = self._retry.delay(attempt, cap=self._retry.send_cap)
            attempt += 1
            log.info(
                "sending to Discord failed; retrying",
                extra={"chat_id": str(channel_id), "error": failure, "retry_in": delay},
            )
            await anyio.sleep(delay)

    def _auth_failed(self) -> ChannelAuthFailed:
        return ChannelAuthFailed(
            f"Discord refused the bot token in secret {self._secret_name}: reset it in the Developer"
            f" Portal (your application → Bot → Reset Token) and store the new one with"
            f" `mbe-gateway secrets set {self._secret_name}`"
        )


def from_settings(settings: DiscordSettings, secrets: Secrets) -> DiscordChannel:
    """The channel for the `[channels.discord]` section, its token read from the secrets."""
    if settings.token is None:
        raise ConfigError(
            '[channels.discord]: token is not set; add token = "secret:discord_token" and store the'
            " token with `mbe-gateway secrets set discord_token`"
        )
    return DiscordChannel(
        secrets.get(settings.token), rest_url=settings.rest_url, secret_name=settings.token.name
    )


def _display_name(message: hikari.Message) -> str:
    """The name people see: the guild nickname, else the global display name, else the username."""
    if message.member is not None:
        return message.member.display_name
    return message.author.global_name or message.author.username


def _strip_mention(content: str, me: int) -> tuple[str, bool]:
    """The text without the bot's own mentions (`<@id>`, or `<@!id>` from older clients, with a
    comma or colon right after it), and whether there was one."""
    text, found = re.subn(rf"[ \t]*<@!?{me}>[,:]?[ \t]*", " ", content)
    return text.strip(), found > 0


def _snowflake(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise SendFailed(f"{value!r} is not {what}", retryable=False) from None


def _retry_after(headers: Any) -> float:
    try:
        return max(0.0, float(headers.get("Retry-After", 1.0)))
    except (TypeError, ValueError):
        return 1.0


def _describe(error: BaseException) -> str:
    """A short, secret-free account of a library error (hikari puts only the URL and the
    response in its messages; the token is in a header, never in a URL)."""
    if isinstance(error, hikari.HTTPResponseError):
        return f"HTTP {int(error.status)} {error.message or ''}".strip()
    if isinstance(error, hikari.GatewayServerClosedConnectionError):
        return f"gateway closed the connection ({error.code} {error.reason})"
    return f"{type(error).__name__}: {error}"


def _cancel_orphaned_shards(bot: hikari.GatewayBot) -> None:
    """Cancel a shard hikari left running when its start was cancelled.

    hikari 2.7's GatewayShardImpl.start shields the shard's keep-alive task and records it only
    once the shard is ready, so cancelling `bot.start()` while it is still connecting (Discord
    down, our `run` cancelled) leaves that task reconnecting forever, out of `bot.close()`'s
    reach. It is found by its shard, which belongs to this bot's event manager.
    """
    for task in asyncio.all_tasks():
        frame = getattr(task.get_coro(), "cr_frame", None)
        shard = frame.f_locals.get("self") if frame is not None else None
        if (
            isinstance(shard, GatewayShardImpl)
            and getattr(shard, "_event_manager", None) is bot.event_manager
            and task is not asyncio.current_task()
        ):
            task.cancel()
