"""The daemon's heart: chat platforms in, the assistant's replies out, in one task group.

    channel ─► deliver: access ─► inbox (durable) ─► lanes ─► pipeline ─► record + outbox
                                                                              │
    channel ◄──────────────────────────── delivery (retries, in order) ◄──────┘

`deliver` returns only once a message is on disk, and the channel acknowledges the platform
only after it returns, so nothing acknowledged is ever lost. The reply is queued in the same
transaction that marks the message answered, so a message is answered once, across crashes.
At start, messages that were never answered go back into their lanes; those that waited
longer than `late_after` are marked late and each sender's backlog is answered once.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.abc

from mbe_gateway import access, commands
from mbe_gateway.assistant import Assistant
from mbe_gateway.channels.base import Channel, Inbound
from mbe_gateway.config import Config
from mbe_gateway.control import events
from mbe_gateway.control.metrics import Metrics
from mbe_gateway.conversations import Conversations, Turn
from mbe_gateway.delivery import Delivery
from mbe_gateway.errors import ChannelAuthFailed, GatewayError
from mbe_gateway.mbe.backoff import Backoff
from mbe_gateway.pipeline import Request
from mbe_gateway.secrets import Secrets
from mbe_gateway.store import exchanges, inbox, outbox
from mbe_gateway.store.inbox import InboxMessage

log = logging.getLogger(__name__)

PLATFORMS = ("telegram", "discord", "slack")
TYPING_EVERY = 4.5  # seconds: platforms show "typing…" for about five


class Gateway:
    """Owns the lanes, the delivery worker and one supervisor per channel."""

    def __init__(
        self,
        assistant: Assistant,
        channels: Mapping[str, Channel],
        policies: Mapping[str, access.Policy],
        *,
        backoff: Backoff | None = None,
    ) -> None:
        self.assistant = assistant
        self.channels = channels
        self.policies = policies
        self.db = assistant.db
        self.late_after = assistant.config.gateway.late_after_minutes * 60.0
        self.conversations = Conversations(self._answer, debounce=assistant.config.assistant.debounce)
        self.delivery = Delivery(self.db, channels)
        self.states: dict[str, str] = {name: "starting" for name in channels}
        self.metrics = Metrics(providers=[p.name for p in assistant.chain.providers])  # for /metrics
        self.events = events.Events()  # fanned out to control-plane clients
        self._backoff = backoff if backoff is not None else Backoff(base=1.0, cap=60.0)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; `await tg.start(gateway.run)` returns once every part runs."""
        async with anyio.create_task_group() as tg:
            await tg.start(self.delivery.run)
            await tg.start(self.conversations.run)
            resumed = await self._resume()
            if resumed:
                log.info("answering messages that arrived before a restart", extra={"messages": resumed})
            for name, channel in self.channels.items():
                tg.start_soon(self._supervise, name, channel, name=f"channel {name}")
            task_status.started()

    # --- in ---------------------------------------------------------------------------------

    async def deliver(self, message: Inbound) -> None:
        """Take one message from a channel; returns once it is stored (or deliberately not)."""
        verdict = await access.decide(
            self.db, self.policies.get(message.channel, access.Policy()), message, self.assistant.language
        )
        if not verdict.allowed:
            log.debug(
                "message not let in",
                extra={"channel": message.channel, "sender_id": message.sender_id, "reason": verdict.reason},
            )
            if verdict.reply is not None:
                await self._refuse(message, verdict.reason, verdict.reply)
            return
        put = await inbox.put(
            self.db,
            channel=message.channel,
            platform_message_id=message.platform_message_id,
            chat_id=message.chat_id,
            sender_id=message.sender_id,
            sender_name=message.sender_name,
            text=message.text,
            is_group=message.is_group,
            meta={
                "reply_to": message.reply_to,
                "sent_at": message.sent_at,
                "channel_meta": dict(message.meta),
            },
        )
        if put.is_new:
            self.metrics.received(message.channel)
            self.events.publish("message", events.inbound(put.message))
            self.conversations.submit(self._request(put.message))

    async def _refuse(self, message: Inbound, reason: str, reply: str) -> None:
        """Answer a sender who is not let in, once, keeping none of what they wrote."""
        put = await inbox.put(
            self.db,
            channel=message.channel,
            platform_message_id=message.platform_message_id,
            chat_id=message.chat_id,
            sender_id=message.sender_id,
            text="",
            meta={"refused": reason},
        )
        if not put.is_new:
            return
        await exchanges.record(
            self.db,
            None,
            outbox.Outgoing(
                inbox_ids=[put.message.id],
                channel=message.channel,
                chat_id=message.chat_id,
                text=reply,
                reply_to=message.reply_to,
                meta=message.meta,
            ),
        )
        self.delivery.nudge()

    def _request(self, row: InboxMessage) -> Request:
        sent_at = row.meta.get("sent_at") or row.received_at
        return Request(
            channel=row.channel,
            chat_id=row.chat_id,
            sender_id=row.sender_id,
            texts=(row.text,),
            sender_name=row.sender_name,
            is_group=row.is_group,
            inbox_ids=(row.id,),
            reply_to=row.meta.get("reply_to"),
            meta=row.meta.get("channel_meta") or {},
            late=time.time() - float(sent_at) > self.late_after,
        )

    async def _resume(self) -> int:
        """Put every message that was never answered back in its lane, oldest first."""
        await inbox.requeue_interrupted(self.db)
        waiting = await inbox.pending(self.db, limit=1_000_000)
        for row in waiting:
            self.conversations.submit(self._request(row))
        return len(waiting)

    # --- through ----------------------------------------------------------------------------

    async def _answer(self, request: Request, turn: Turn) -> None:
        pipeline = self.assistant.pipeline
        channel = self.channels.get(request.channel)
        try:
            async with anyio.create_task_group() as tg:
                if channel is not None and channel.capabilities.typing:
                    tg.start_soon(_keep_typing, channel, request.chat_id)
                reply = await pipeline.prepare(request)
                tg.cancel_scope.cancel()
            turn.commit()
            reply = await pipeline.commit(request, reply, send=True)
        except Exception as e:
            # A bug, not a platform or MBE failure (those degrade inside the pipeline). Mark the
            # messages failed so they are visible and not retried forever, and let the lane log it.
            with anyio.CancelScope(shield=True):
                for inbox_id in request.inbox_ids:
                    if inbox_id is not None:
                        await inbox.mark_failed(self.db, inbox_id, f"{type(e).__name__}: {e}")
            raise
        self.delivery.nudge()
        self.metrics.answered(request.channel, reply)
        self.events.publish("message", events.answer(request, reply))

    # --- the channels -----------------------------------------------------------------------

    async def _supervise(self, name: str, channel: Channel) -> None:
        """Run a channel, restarting it with backoff; a refused token stops it for good."""
        attempt = 0
        while True:
            self.states[name] = "running"
            started = anyio.current_time()
            try:
                await channel.run(self.deliver)
                error: Exception = RuntimeError("the channel stopped by itself")
            except ChannelAuthFailed as e:
                self.states[name] = f"stopped: {e}"
                log.error(
                    "channel stopped: the platform refused our credentials",
                    extra={"channel": name, "error": str(e)},
                )
                return
            except Exception as e:
                error = e
            if anyio.current_time() - started > self._backoff.healthy_after:
                attempt = 0
            delay = self._backoff.delay(attempt)
            attempt += 1
            self.states[name] = f"reconnecting: {error}"
            log.warning(
                "channel failed; restarting it",
                extra={"channel": name, "error": str(error), "retry_in": round(delay, 2)},
                exc_info=not isinstance(error, OSError),
            )
            await anyio.sleep(delay)


async def _keep_typing(channel: Channel, chat_id: str) -> None:
    while True:
        await channel.typing(chat_id)
        await anyio.sleep(TYPING_EVERY)


def enabled_platforms(config: Config) -> list[str]:
    return [name for name in PLATFORMS if getattr(config.channels, name).enabled]


def policy_of(config: Config, name: str) -> access.Policy:
    settings = getattr(config.channels, name)
    return access.Policy(settings.dm_policy, settings.allow_from, settings.allow_groups)


async def open_channel(name: str, config: Config, secrets: Secrets, stack: AsyncExitStack) -> Channel:
    """One enabled channel (its client library imported only now), entered on `stack`.

    Raises a GatewayError (a missing secret, a malformed token) that concerns this channel only.
    """
    module: Any = importlib.import_module(f"mbe_gateway.channels.{name}")
    extra = {"commands": commands.MENU[config.gateway.language]} if name == "telegram" else {}
    channel: Channel = module.from_settings(getattr(config.channels, name), secrets, **extra)
    if hasattr(channel, "__aenter__"):
        channel = await stack.enter_async_context(channel)  # type: ignore[arg-type]
    return channel


async def serve(
    config: Config, *, task_status: anyio.abc.TaskStatus[Gateway] = anyio.TASK_STATUS_IGNORED
) -> None:
    """`mbe-gateway run`: the assistant and every enabled channel, until SIGTERM or SIGINT."""
    from mbe_gateway import paths
    from mbe_gateway.assistant import open_assistant
    from mbe_gateway.control.server import serve as serve_control

    secrets = Secrets(config.secrets, paths.data_dir())
    async with AsyncExitStack() as stack:
        assistant = await stack.enter_async_context(open_assistant(config))
        channels: dict[str, Channel] = {}
        for name in enabled_platforms(config):
            try:
                channels[name] = await open_channel(name, config, secrets, stack)
            except GatewayError as e:  # this channel only: the others still run
                log.error("channel not started", extra={"channel": name, "error": str(e)})
        if not enabled_platforms(config):
            log.warning("no channel is enabled: add one to the config ([channels.telegram] enabled = true)")
        policies = {name: policy_of(config, name) for name in channels}
        gateway = Gateway(assistant, channels, policies)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signals, tg.cancel_scope, name="signals")
            await tg.start(gateway.run)
            tg.start_soon(serve_control, gateway, config.control, secrets, name="control plane")
            log.info("mbe-gateway is running", extra={"channels": sorted(channels), "model": assistant.model})
            task_status.started(gateway)


async def _stop_on_signals(scope: anyio.CancelScope) -> None:
    import signal

    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for received in signals:
            log.info("stopping", extra={"signal": signal.Signals(received).name})
            scope.cancel()
            return
