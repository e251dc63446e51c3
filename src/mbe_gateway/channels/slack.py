"""Slack, over Socket Mode (slack-sdk): no public URL needed, the bot dials out.

Receiving: `apps.connections.open` (with the app-level token) gives a single-use WebSocket
URL; Slack sends each event in an envelope and expects `{"envelope_id": ...}` within 3 s, else
it sends the event again. Each envelope goes to `deliver` (a durable inbox write, ~1 ms) and is
acknowledged only after it returned; when `deliver` raises, the envelope is left
unacknowledged and Slack's retry brings it back. The message's `channel:ts` is its
`platform_message_id`, the same on every retry and for both events Slack sends for a mention
in a channel the bot is in (`message` and `app_mention`): the second is acknowledged without
being delivered again.

The SDK's Socket Mode client runs its own asyncio tasks; here it is one connection's worth of
machinery, closed when that connection ends. Its automatic reconnection is off: `run` watches
the connection and reconnects itself, with backoff and jitter, so that a token revoked while
we were away surfaces as ChannelAuthFailed instead of an endless retry loop inside the SDK.
Slack's own `disconnect` refresh is still followed by the SDK within the connection.

Sending: `chat.postMessage` with mrkdwn (see slack_markup), split under 3,900 characters
(Slack asks for under 4,000 in `text` and truncates past 40,000), threaded under the message
it answers. The Web API client retries what is worth retrying (slack_web); what remains
becomes SendFailed, retryable or not, for the outbox.

Slack has no typing indicator for bots outside its AI-assistant threads: `typing` does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from mbe_gateway.channels.base import Capabilities, Deliver, Inbound, Outbound
from mbe_gateway.channels.slack_markup import from_slack, length_bound, to_mrkdwn, to_plain
from mbe_gateway.channels.slack_web import (
    AUTH_ERRORS,
    GONE_ERRORS,
    MARKUP_REFUSED,
    TRANSIENT_ERRORS,
    describe,
    error_code,
    retry_after,
    sdk_log,
    web_client,
    what_failed,
)
from mbe_gateway.channels.split import split_markdown
from mbe_gateway.errors import ChannelAuthFailed, ChannelError, ConfigError, SendFailed

if TYPE_CHECKING:
    from mbe_gateway.config import SlackSettings
    from mbe_gateway.secrets import Secrets

log = logging.getLogger("mbe_gateway.channels.slack")

API_BASE: Final = "https://slack.com/api/"
MAX_LENGTH: Final = 3900

_USER_SUBTYPES: Final = frozenset({None, "file_share", "thread_broadcast", "me_message"})

_RECONNECT_BASE: Final = 0.5  # seconds; the delay before reconnect n is uniform(0, base * 2**n)
_RECONNECT_CAP: Final = 30.0
_HEALTHY_AFTER: Final = 60.0  # a connection that lived this long resets the backoff
_WATCH_EVERY: Final = 0.5  # how often the connection's health is looked at
_DOWN_GRACE: Final = 2.0  # a connection down this long (not refreshing) is reconnected by us
_REMEMBERED: Final = 2048  # delivered message ids kept to recognise app_mention + message pairs


@dataclass(frozen=True)
class _Identity:
    """Who we are on this workspace, from auth.test."""

    user_id: str  # the bot user, as in <@U...> mentions and the `user` of its own posts
    user: str
    team: str


class SlackChannel:
    """One Slack workspace over Socket Mode. `bot_token` is the xoxb- token, `app_token` the
    xapp- app-level token (connections:write); the *_name arguments are the secrets' names,
    used in error messages so that they say which secret to fix."""

    def __init__(
        self,
        *,
        bot_token: str,
        app_token: str,
        api_base: str = API_BASE,
        name: str = "slack",
        bot_token_name: str = "slack_bot_token",  # noqa: S107 (a secret's name, not its value)
        app_token_name: str = "slack_app_token",  # noqa: S107
        timeout: float = 30.0,
        max_rate_limit_wait: float = 10.0,
        connect_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.capabilities = Capabilities(max_length=MAX_LENGTH, markup="slack_mrkdwn", typing=False)
        self._app_token = app_token
        self._bot_token_name = bot_token_name
        self._app_token_name = app_token_name
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._web = web_client(bot_token, api_base, timeout=timeout, max_rate_limit_wait=max_rate_limit_wait)
        self._identity: _Identity | None = None
        self._delivered: dict[str, None] = {}  # insertion-ordered: the oldest is dropped first
        self.receiving = anyio.Event()

    def __repr__(self) -> str:
        return f"<SlackChannel {self.name}>"

    # -- the Channel interface ------------------------------------------------------------

    async def check(self) -> str:
        identity = await self._whoami(refresh=True)
        return f"@{identity.user} on {identity.team}"

    async def typing(self, chat_id: str) -> None:
        """Slack offers bots no typing indicator over Socket Mode (capabilities.typing is False)."""

    async def send(self, message: Outbound) -> list[str]:
        parts = split_markdown(message.text, MAX_LENGTH, length_bound)
        return [await self._send_part(message.chat_id, part, message.reply_to) for part in parts]

    async def run(self, deliver: Deliver) -> None:
        """Receive until cancelled, reconnecting after failures; ChannelAuthFailed when a token
        is refused. The HTTP session it opens is shared by `send` while it runs."""
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        self._web.session = session
        attempt = 0
        try:
            while True:
                started = anyio.current_time()
                try:
                    await self._connection(deliver)
                except ChannelAuthFailed:
                    raise
                except (ChannelError, SlackApiError, aiohttp.ClientError, OSError, TimeoutError) as e:
                    log.warning("slack connection failed", extra={"channel": self.name, "error": describe(e)})
                if anyio.current_time() - started > _HEALTHY_AFTER:
                    attempt = 0
                delay = random.uniform(0, min(_RECONNECT_CAP, _RECONNECT_BASE * 2**attempt))
                attempt += 1
                log.info(
                    "slack reconnecting",
                    extra={"channel": self.name, "attempt": attempt, "delay": round(delay, 2)},
                )
                await anyio.sleep(delay)
        finally:
            self._web.session = None
            with anyio.CancelScope(shield=True):
                await session.close()

    # -- receiving ------------------------------------------------------------------------

    async def _connection(self, deliver: Deliver) -> None:
        """One Socket Mode connection, from opening it to losing it (returns) or a refused
        token (raises)."""
        identity = await self._whoami()
        url = await self._socket_url()
        lost = anyio.Event()
        requests_in, requests = anyio.create_memory_object_stream[SocketModeRequest](64)

        async def on_lost(_: aiohttp.WSMessage) -> None:
            lost.set()

        async def on_request(_: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
            # If this connection is over, the envelope stays unacknowledged and comes again.
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await requests_in.send(request)

        client = SocketModeClient(
            app_token=self._app_token,
            web_client=self._web,
            logger=sdk_log,
            auto_reconnect_enabled=False,
            on_close_listeners=[on_lost],
            on_error_listeners=[on_lost],
        )
        client.socket_mode_request_listeners.append(on_request)
        client.wss_uri = url
        try:
            try:
                with anyio.fail_after(self._connect_timeout):  # connect() itself retries forever
                    await client.connect()  # type: ignore[no-untyped-call]
            except TimeoutError:
                message = f"the Socket Mode connection did not open in {self._connect_timeout:g} s"
                raise ChannelError(message) from None
            log.info("slack connected", extra={"channel": self.name, "bot_user": identity.user_id})
            self.receiving.set()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._receive, client, requests, deliver, identity)
                await self._watch(client, lost)
                tg.cancel_scope.cancel()
        finally:
            requests_in.close()
            requests.close()
            with anyio.CancelScope(shield=True):
                await client.close()  # type: ignore[no-untyped-call]

    async def _watch(self, client: SocketModeClient, lost: anyio.Event) -> None:
        """Return when the connection is gone: Slack closed it or the link broke (the SDK's
        listeners say so at once), or it stayed down longer than a `disconnect` refresh takes."""
        down_for = 0.0
        while down_for < _DOWN_GRACE:
            with anyio.move_on_after(_WATCH_EVERY):
                await lost.wait()
            if lost.is_set():
                break
            down_for = 0.0 if await client.is_connected() else down_for + _WATCH_EVERY
        log.warning("slack connection lost", extra={"channel": self.name})

    async def _receive(
        self,
        client: SocketModeClient,
        requests: MemoryObjectReceiveStream[SocketModeRequest],
        deliver: Deliver,
        identity: _Identity,
    ) -> None:
        async with requests:
            async for request in requests:
                await self._handle(client, request, deliver, identity)

    async def _handle(
        self, client: SocketModeClient, request: SocketModeRequest, deliver: Deliver, identity: _Identity
    ) -> None:
        fields = {"channel": self.name, "envelope_id": request.envelope_id}
        try:
            inbound = _inbound(self.name, identity, request) if request.type == "events_api" else None
        except (ValueError, TypeError, AttributeError) as e:
            # Acknowledged and skipped: unacknowledged, it would come back again and again.
            log.warning("slack event not understood", extra={**fields, "error": describe(e)})
            inbound = None
        if inbound is not None and inbound.platform_message_id not in self._delivered:
            fields["message_id"] = inbound.platform_message_id
            try:
                await deliver(inbound)
            except Exception as e:
                log.warning(
                    "slack deliver failed; not acknowledged, Slack will send it again",
                    extra={**fields, "error": describe(e)},
                )
                return
            self._delivered[inbound.platform_message_id] = None
            if len(self._delivered) > _REMEMBERED:
                del self._delivered[next(iter(self._delivered))]
        try:
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))
        except (OSError, aiohttp.ClientError, AttributeError) as e:
            # AttributeError: the SDK had no session at all. Either way Slack sends it again.
            log.warning("slack ack failed", extra={**fields, "error": describe(e)})

    async def _whoami(self, *, refresh: bool = False) -> _Identity:
        if self._identity is not None and not refresh:
            return self._identity
        try:
            response = await self._web.auth_test()
        except SlackApiError as e:
            raise self._refused(e, self._bot_token_name, "xoxb-") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise ChannelError(f"Slack could not be reached ({describe(e)}); check the network") from None
        self._identity = _Identity(
            user_id=str(response.get("user_id") or ""),
            user=str(response.get("user") or ""),
            team=str(response.get("team") or ""),
        )
        return self._identity

    async def _socket_url(self) -> str:
        try:
            response = await self._web.apps_connections_open(app_token=self._app_token)
        except SlackApiError as e:
            raise self._refused(e, self._app_token_name, "xapp-") from None
        return str(response["url"])

    def _refused(self, error: SlackApiError, secret: str, shape: str) -> ChannelError:
        """ChannelAuthFailed naming the secret when Slack refused the token, else ChannelError."""
        code = error_code(error)
        if code in AUTH_ERRORS:
            return ChannelAuthFailed(
                f"Slack refused the token in secret {secret} ({code}); it should be a {shape}... token"
                f" of this app. Store the right one with `mbe-gateway secrets set {secret}`"
            )
        return ChannelError(f"Slack answered {what_failed(error)}; will retry")

    # -- sending --------------------------------------------------------------------------

    async def _send_part(self, chat_id: str, part: str, thread_ts: str | None) -> str:
        try:
            return await self._post(chat_id, to_mrkdwn(part), thread_ts, mrkdwn=True)
        except SlackApiError as e:
            if error_code(e) not in MARKUP_REFUSED:
                raise self._send_failed(e, chat_id) from None
            log.warning(
                "slack refused the formatting; sending as plain text",
                extra={"channel": self.name, "chat_id": chat_id, "error": error_code(e)},
            )
        try:
            return await self._post(chat_id, to_plain(part), thread_ts, mrkdwn=False)
        except SlackApiError as e:
            raise self._send_failed(e, chat_id) from None

    async def _post(self, chat_id: str, text: str, thread_ts: str | None, *, mrkdwn: bool) -> str:
        try:
            response = await self._web.chat_postMessage(
                channel=chat_id, text=text, thread_ts=thread_ts, mrkdwn=mrkdwn, link_names=False, parse="none"
            )
        except (aiohttp.ClientError, OSError, TimeoutError, RuntimeError) as e:
            # RuntimeError: the shared session was closed under us as `run` stopped.
            raise SendFailed(f"Slack could not be reached ({describe(e)})", retryable=True) from None
        return str(response.get("ts") or "")

    def _send_failed(self, error: SlackApiError, chat_id: str) -> ChannelError:
        status = error.response.status_code
        code = error_code(error)
        if status == 429:
            wait = retry_after(error.response.headers)
            return SendFailed(
                f"Slack is rate limiting this bot; try again in {wait:g} s", retryable=True, retry_after=wait
            )
        if status >= 500 or code in TRANSIENT_ERRORS:
            return SendFailed(f"Slack answered {what_failed(error)}; try again later", retryable=True)
        if code in AUTH_ERRORS:
            return self._refused(error, self._bot_token_name, "xoxb-")
        if code in GONE_ERRORS:
            return SendFailed(f"Slack conversation {chat_id} cannot be written to ({code})", retryable=False)
        return SendFailed(f"Slack refused the message ({what_failed(error)})", retryable=False)


def from_settings(settings: SlackSettings, secrets: Secrets) -> SlackChannel:
    """The channel the config describes, with its tokens read from the secrets store."""
    if settings.bot_token is None or settings.app_token is None:
        raise ConfigError(
            "[channels.slack] needs bot_token and app_token: run `mbe-gateway secrets set slack_bot_token`"
            ' and `mbe-gateway secrets set slack_app_token`, and reference them as "secret:NAME"'
        )
    return SlackChannel(
        bot_token=secrets.get(settings.bot_token),
        app_token=secrets.get(settings.app_token),
        api_base=settings.api_base,
        bot_token_name=settings.bot_token.name,
        app_token_name=settings.app_token.name,
    )


# -- events to messages ---------------------------------------------------------------------


def _inbound(channel_name: str, me: _Identity, request: SocketModeRequest) -> Inbound | None:
    """A person's message from an events_api envelope, or None for anything else (edits,
    joins, the bot's own posts, other bots)."""
    payload = request.payload
    event: dict[str, Any] = payload.get("event") or {}
    kind = event.get("type")
    if kind not in ("message", "app_mention") or event.get("subtype") not in _USER_SUBTYPES:
        return None
    user, channel, ts = event.get("user"), event.get("channel"), event.get("ts")
    if event.get("bot_id") or not user or user == me.user_id or not channel or not ts:
        return None
    channel_type = event.get("channel_type") or _channel_type(channel)
    is_dm = channel_type == "im"
    raw = str(event.get("text") or "")
    thread_ts = event.get("thread_ts")
    mentioned = kind == "app_mention" or bool(me.user_id and f"<@{me.user_id}" in raw)
    replied_to_us = bool(thread_ts and thread_ts != ts and event.get("parent_user_id") == me.user_id)
    profile = event.get("user_profile") or {}
    return Inbound(
        channel=channel_name,
        platform_message_id=f"{channel}:{ts}",
        chat_id=str(channel),
        sender_id=str(user),
        text=from_slack(raw, me.user_id),
        sent_at=float(ts),
        sender_name=profile.get("display_name") or profile.get("real_name") or None,
        is_group=not is_dm,
        addressed=is_dm or mentioned or replied_to_us,
        # In a channel the answer goes in a thread under the message; in a DM only inside a thread.
        reply_to=thread_ts or (None if is_dm else ts),
        meta={
            "ts": ts,
            "thread_ts": thread_ts,
            "channel_type": channel_type,
            "team": payload.get("team_id"),
            "event_id": payload.get("event_id"),
            "retry_attempt": request.retry_attempt or 0,
        },
    )


def _channel_type(channel: str) -> str:
    """app_mention events carry no channel_type; a conversation id's first letter tells."""
    return {"D": "im", "G": "group", "C": "channel"}.get(channel[:1], "channel")
