"""The daemon's heart: chat platforms in, the assistant's replies out, in one task group.

    channel ─► deliver: access ─► inbox (durable) ─► lanes ─► pipeline ─► record + outbox
                                                                              │
    channel ◄──────────────────────────── delivery (retries, in order) ◄──────┘

`deliver` returns only once a message is on disk, and the channel acknowledges the platform
only after it returns, so nothing acknowledged is ever lost. The reply is queued in the same
transaction that marks the message answered, so a message is answered once, across crashes.
At start, messages that were never answered go back into their lanes; those that waited
longer than `late_after` are marked late and each sender's backlog is answered once.

Stopping (SIGTERM, SIGINT) is ordered in `serve`, and nothing in it is needed for safety, only
for manners: the channels stop taking messages first, the replies being written get
`drain_seconds` to finish and go out, then everything is cancelled and the assistant writes
its queued memory and stops the engine. Whatever a stop (or kill -9) cuts short is on disk
and is finished by the next run, which `lock.hold` keeps to one daemon per data dir.
"""

from __future__ import annotations

import importlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from mbe_gateway import access, commands, intake, lock, paths
from mbe_gateway.assistant import Assistant, model_settings, open_assistant
from mbe_gateway.channels.base import Channel, Inbound
from mbe_gateway.config import Config
from mbe_gateway.control import events
from mbe_gateway.control.measured_mbe import MeasuredMBE
from mbe_gateway.control.metrics import Metrics
from mbe_gateway.conversations import Conversations, Turn
from mbe_gateway.delivery import Delivery
from mbe_gateway.errors import ChannelAuthFailed, GatewayError, MBEUnavailable
from mbe_gateway.mbe import child
from mbe_gateway.mbe.backoff import Backoff
from mbe_gateway.mbe.servers import StdioServer, from_settings
from mbe_gateway.pipeline import Request
from mbe_gateway.secrets import Secrets
from mbe_gateway.store import Database, exchanges, inbox, open_database, outbox
from mbe_gateway.store.inbox import InboxMessage

log = logging.getLogger(__name__)

PLATFORMS = ("telegram", "discord", "slack")
TYPING_EVERY = 4.5  # seconds: platforms show "typing…" for about five
# Seconds before "typing…" is shown at all: a reply quicker than this arrives before anyone
# misses it (Telegram advises the action only for a response that takes noticeable time),
# and under load the request it saves per message is CPU the daemon has better use for.
TYPING_AFTER = 1.0
SEND_GRACE = 2.0  # seconds the outbox gets when stopping, even after a drain that used all its time
_DRAIN_POLL = 0.02  # seconds between looks at the outbox while it drains
RECEIVING_WAIT = 5.0  # seconds loading the assistant waits at most for the channels to connect


class Gateway:
    """Owns the lanes, the delivery worker and one supervisor per channel."""

    def __init__(
        self,
        assistant: Assistant | None,
        channels: Mapping[str, Channel],
        policies: Mapping[str, access.Policy],
        *,
        config: Config | None = None,
        db: Database | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        """`assistant` None: it is still starting (give `config` and `db`, and `attach` it
        once it runs). The channels take messages in meanwhile; they wait in the inbox and in
        their lanes, and are answered once the assistant is attached."""
        if assistant is not None:
            config, db = assistant.config, assistant.db
        if config is None or db is None:
            raise TypeError("a Gateway without its assistant needs the config and the database")
        self._assistant = assistant
        self._ready = anyio.Event()
        self.config = config
        self.db = db
        self.language = assistant.language if assistant is not None else config.gateway.language
        self.channels = channels
        self.policies = policies
        self.late_after = self.config.gateway.late_after_minutes * 60.0
        self.conversations = Conversations(self._answer, debounce=self.config.assistant.debounce)
        self.delivery = Delivery(self.db, channels)
        self.intake = intake.Intake.from_config(config, self.language)  # size, rate
        self.states: dict[str, str] = {name: "starting" for name in channels}
        self.metrics = Metrics()  # for /metrics; the model chain's providers once attached
        self.events = events.Events()  # fanned out to control-plane clients
        self._backoff = backoff if backoff is not None else Backoff(base=1.0, cap=60.0)
        self._intake = anyio.CancelScope()  # the channels' supervisors: cancelled first on stopping
        self._running = anyio.CancelScope()  # all of `run`, for `stop`
        self._stopped = anyio.Event()
        self._stopped.set()  # not running yet
        self._unanswered: set[int] = set()  # inbox ids handed to a lane, not yet answered or failed
        self._answered = anyio.Event()  # set when the last of them is
        if assistant is not None:
            self.attach(assistant)

    @property
    def assistant(self) -> Assistant:
        if self._assistant is None:
            raise RuntimeError("the assistant is still starting")
        return self._assistant

    @property
    def starting(self) -> bool:
        """Whether the assistant is still starting: the control plane serves meanwhile, and
        says so rather than reach for `assistant`."""
        return self._assistant is None

    def attach(self, assistant: Assistant) -> None:
        """The assistant runs: answer what waited for it, and everything after. Its MBE calls
        are timed for /metrics from the first one on."""
        assistant.pipeline.mbe = MeasuredMBE(assistant.pipeline.mbe, self.metrics)
        self._assistant = assistant
        self.metrics.providers = tuple(p.name for p in assistant.chain.providers)
        self._ready.set()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled (or `stop`ped); `await tg.start(gateway.run)` returns once
        every part runs."""
        self._stopped = anyio.Event()
        try:
            with self._running:
                async with anyio.create_task_group() as tg:
                    await tg.start(self.delivery.run)
                    await tg.start(self.conversations.run)
                    resumed = await self._resume()
                    if resumed:
                        log.info(
                            "answering messages that arrived before a restart", extra={"messages": resumed}
                        )
                    tg.start_soon(self._take_in, name="channels")
                    task_status.started()
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        """Cancel `run` and wait until it has returned (at once if it is not running)."""
        self._running.cancel()
        await self._stopped.wait()

    async def drain(self, within: float) -> tuple[int, int]:
        """Stop taking messages, then give the replies in flight up to `within` seconds to be
        written and sent; returns how many messages are left unanswered and replies unsent.

        The outbox gets at least SEND_GRACE seconds, so a reply finished at the last moment
        still goes out. Call it, then cancel `run`: what is left is finished by the next run.
        """
        self._intake.cancel()
        deadline = anyio.current_time() + within
        with anyio.move_on_after(within):
            while self._unanswered:
                self._answered = anyio.Event()
                await self._answered.wait()
        unsent = 0
        with anyio.move_on_after(max(deadline - anyio.current_time(), SEND_GRACE)):
            # Due now, or being sent ("sending": in doubt only if a crash leaves it so).
            while unsent := len(await outbox.due(self.db, limit=1_000)) + len(await outbox.in_doubt(self.db)):
                self.delivery.nudge()  # its own poll is seconds apart
                await anyio.sleep(_DRAIN_POLL)
        return len(self._unanswered), unsent

    async def _take_in(self) -> None:
        with self._intake:
            async with anyio.create_task_group() as tg:
                for name, channel in self.channels.items():
                    tg.start_soon(self._supervise, name, channel, name=f"channel {name}")

    # --- in ---------------------------------------------------------------------------------

    async def deliver(self, message: Inbound) -> None:
        """Take one message from a channel; returns once it is stored (or deliberately not)."""
        message = intake.clean(message)
        verdict = await access.decide(
            self.db, self.policies.get(message.channel, access.Policy()), message, self.language
        )
        if verdict.allowed:
            verdict = self.intake.admit(message)
        if not verdict.allowed:
            self.metrics.refused(message.channel, verdict.reason)
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
            self._submit(put.message)

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

    def _submit(self, row: InboxMessage) -> None:
        self._unanswered.add(row.id)
        self.conversations.submit(self._request(row))

    def _settled(self, request: Request) -> None:
        """The request's messages were answered (or failed for good): `drain` need not wait for them."""
        self._unanswered.difference_update(request.inbox_ids)
        if not self._unanswered:
            self._answered.set()

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
            self._submit(row)
        return len(waiting)

    # --- through ----------------------------------------------------------------------------

    async def _answer(self, request: Request, turn: Turn) -> None:
        channel = self.channels.get(request.channel)
        try:
            async with anyio.create_task_group() as tg:
                if channel is not None and channel.capabilities.typing:
                    tg.start_soon(_keep_typing, channel, request.chat_id)
                await self._ready.wait()  # at once, unless the assistant is still starting
                pipeline = self.assistant.pipeline
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
            self._settled(request)
            raise
        self._settled(request)
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
    await anyio.sleep(TYPING_AFTER)
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
    """`mbe-gateway run`: the assistant and every enabled channel, until SIGTERM or SIGINT.

    The one place that orders the start and the shutdown. The data dir's lock comes first (a
    second daemon is refused before it touches anything) and goes last; the signal receiver
    is opened before anything starts, so a signal during start-up still stops the daemon in
    order. Start-up is ordered for speed: the engine child is spawned first and starts up on
    the other core while the channels' libraries load (aiogram alone takes seconds), the
    channels then take messages in (into the inbox, where they wait) and the control plane is
    served (showing the assistant as starting), and only then are the MCP client and the rest
    of the assistant loaded and attached.
    A setup without a usable model is still refused before anything starts.

    On a signal: `Gateway.drain` (intake, then replies in flight, then the outbox, bounded),
    then the gateway's tasks are cancelled, then the channels close and `open_assistant`
    writes the queued memory (bounded) and stops the engine. AlreadyRunning if the lock is held.
    """
    data = paths.data_dir()
    with lock.hold(data), anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        secrets = Secrets(config.secrets, data)
        model_settings(config)  # ConfigError now if there is no model at all
        async with AsyncExitStack() as stack:
            db = await stack.enter_async_context(await open_database(paths.gateway_db()))
            engine = await _spawn_engine(config, secrets, data, stack)
            channels: dict[str, Channel] = {}
            unopened: dict[str, str] = {}  # enabled but not started: shown in `status`, with why
            for name in enabled_platforms(config):
                try:
                    channels[name] = await open_channel(name, config, secrets, stack)
                except GatewayError as e:  # this channel only: the others still run
                    log.error("channel not started", extra={"channel": name, "error": str(e)})
                    unopened[name] = f"stopped: {e}"
            if not enabled_platforms(config):
                log.warning(
                    "no channel is enabled: add one to the config ([channels.telegram] enabled = true)"
                )
            policies = {name: policy_of(config, name) for name in channels}
            gateway = Gateway(None, channels, policies, config=config, db=db)
            gateway.states.update(unopened)
            control = anyio.CancelScope()  # the control plane's: it stops before the assistant does
            async with anyio.create_task_group() as tg:
                await tg.start(gateway.run)  # messages are taken in now, and wait for the assistant
                tg.start_soon(_serve_control, gateway, config, secrets, control, name="control plane")
                with anyio.move_on_after(RECEIVING_WAIT):  # let them reach their platforms first
                    for channel in channels.values():
                        await channel.receiving.wait()
                    await anyio.wait_all_tasks_blocked()  # their first requests are on the wire
                async with open_assistant(config, db=db, spawned=engine) as assistant:
                    gateway.attach(assistant)
                    log.info(
                        "mbe-gateway is running",
                        extra={"channels": sorted(channels), "model": assistant.model},
                    )
                    task_status.started(gateway)
                    await _drain_on_signal(signals, gateway, config.gateway.drain_seconds)
                    await gateway.stop()  # before the assistant goes: nothing may use it after
                    control.cancel()


async def _serve_control(
    gateway: Gateway, config: Config, secrets: Secrets, scope: anyio.CancelScope
) -> None:
    """The control plane, from the daemon's first moment (it shows the assistant as starting
    until `attach`) until `scope` is cancelled. Imported only now: aiohttp.web and the rest
    of it are not needed to take the first messages in."""
    from mbe_gateway.control.server import serve as serve_control

    with scope:
        await serve_control(gateway, config.control, secrets)


async def _spawn_engine(
    config: Config, secrets: Secrets, data: Path, stack: AsyncExitStack
) -> anyio.abc.Process | None:
    """Start the MBE server now when it is our child (over stdio), so it starts up while we
    do; the MBE client takes it over. None over HTTP, or if it cannot start: the client then
    tries on its own and reports why."""
    server = from_settings(config.mbe, secrets, data)
    if not isinstance(server, StdioServer):
        return None
    try:
        process = await child.spawn(server, errlog=child.default_errlog(data), home=data)
    except MBEUnavailable:
        return None
    stack.push_async_callback(child.stop, process)  # if the client never took it over (a failed start)
    return process


async def _drain_on_signal(signals: AsyncIterator[signal.Signals], gateway: Gateway, within: float) -> None:
    """Wait for the first signal, then drain the gateway; a second signal cuts the drain short."""
    async for received in signals:
        log.info("stopping", extra={"signal": received.name, "drain_seconds": within})
        break
    async with anyio.create_task_group() as tg:
        tg.start_soon(_cut_short, signals, tg.cancel_scope, name="second signal")
        unanswered, unsent = await gateway.drain(within)
        tg.cancel_scope.cancel()
        if unanswered or unsent:
            log.warning(
                "stopping before every reply went out; the next run finishes them",
                extra={"unanswered": unanswered, "unsent": unsent},
            )


async def _cut_short(signals: AsyncIterator[signal.Signals], scope: anyio.CancelScope) -> None:
    async for received in signals:
        log.warning("stopping now; the next run finishes the replies left", extra={"signal": received.name})
        scope.cancel()
        return
