"""Replies leave through the outbox: in order within a chat, chats in parallel, retried with
backoff across restarts, and never sent twice.

Each chat has its own queue, so a chat stuck behind a platform's rate limit holds up no one
else. When a send fails and may succeed later, it and everything queued behind it for the
same chat wait for the retry, so replies keep their order. A reply that cannot ever be sent
(the chat is gone, the bot was blocked) is marked failed and logged.

A crash between handing a reply to the platform and recording that it was sent leaves the
item "in doubt". Resending could say the same thing twice, and no platform but Discord lets a
sender deduplicate, so in-doubt items are not resent: they are marked failed and logged, and
show up in `status`. The window is one network call long.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping

import anyio
import anyio.abc

from mbe_gateway.channels.base import Channel, Outbound
from mbe_gateway.errors import ChannelAuthFailed, ChannelError, SendFailed
from mbe_gateway.mbe.backoff import Backoff
from mbe_gateway.store import Database, outbox
from mbe_gateway.store.outbox import OutboxItem

log = logging.getLogger(__name__)

IN_DOUBT = "in doubt after a restart: it may have been sent, so it is not sent again"


class Delivery:
    """Owns the outbox's sending; run it in the daemon's task group."""

    def __init__(
        self,
        db: Database,
        channels: Mapping[str, Channel],
        *,
        backoff: Backoff | None = None,
        max_attempts: int = 12,
        poll: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`poll`: how often to look for work nobody announced (e.g. `mbe-gateway pairing
        approve`, run in another process, queues a message for the approved sender)."""
        self._db = db
        self._channels = channels
        self._backoff = backoff if backoff is not None else Backoff(base=2.0, cap=300.0, jitter=0.5)
        self._max_attempts = max_attempts
        self._poll = poll
        self._clock = clock
        self._wake = anyio.Event()
        self._chats: dict[tuple[str, str], deque[OutboxItem]] = {}
        self._queued: set[int] = set()  # outbox ids in a chat's queue, not yet claimed
        self.sent = 0
        self.failed = 0

    def nudge(self) -> None:
        """A reply was queued: send it now rather than at the next poll."""
        self._wake.set()

    @property
    def busy_chats(self) -> int:
        return len(self._chats)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self._settle_in_doubt()
        async with anyio.create_task_group() as tg:
            task_status.started()
            while True:
                for item in await outbox.due(self._db, limit=100, now=self._clock()):
                    if item.id in self._queued:
                        continue
                    self._queued.add(item.id)
                    key = (item.channel, item.chat_id)
                    if key in self._chats:
                        self._chats[key].append(item)
                    else:
                        self._chats[key] = deque([item])
                        tg.start_soon(self._drain, key, name=f"delivery {item.channel}:{item.chat_id}")
                await self._sleep()

    async def _sleep(self) -> None:
        due = await outbox.next_due_at(self._db)
        wait = self._poll if due is None else min(self._poll, max(0.0, due - self._clock()))
        if wait > 0:
            with anyio.move_on_after(wait):
                await self._wake.wait()
        self._wake = anyio.Event()

    async def _drain(self, key: tuple[str, str]) -> None:
        """Send one chat's claimed items in order; on a retryable failure, defer the rest too."""
        queue = self._chats[key]
        try:
            while queue:
                pending = queue.popleft()
                self._queued.discard(pending.id)
                item = await outbox.claim(self._db, pending.id)
                if item is None:
                    continue  # no longer pending (sent or given up meanwhile)
                retry_at = await self._send(item)
                if retry_at is not None:
                    for waiting in queue:
                        self._queued.discard(waiting.id)
                        await outbox.mark_failed(
                            self._db, waiting.id, "waiting for an earlier message", retry_at=retry_at
                        )
                    queue.clear()
        finally:
            for waiting in queue:
                self._queued.discard(waiting.id)
            del self._chats[key]

    async def _send(self, item: OutboxItem) -> float | None:
        """Send one item and record the outcome; the retry time if it must wait, else None."""
        channel = self._channels.get(item.channel)
        now = self._clock()
        if channel is None:
            return await self._retry(item, f"the {item.channel} channel is not running", now + 60.0)
        try:
            ids = await channel.send(
                Outbound(chat_id=item.chat_id, text=item.text, reply_to=item.reply_to, meta=item.meta)
            )
        except SendFailed as e:
            if not e.retryable:
                await self._give_up(item, str(e))
                return None
            wait = max(e.retry_after or 0.0, self._backoff.delay(item.attempts))
            return await self._retry(item, str(e), now + wait)
        except ChannelAuthFailed as e:
            return await self._retry(item, str(e), now + self._backoff.cap)
        except ChannelError as e:
            return await self._retry(item, str(e), now + self._backoff.delay(item.attempts))
        await outbox.mark_sent(self._db, item.id, platform_message_id=ids[0] if ids else None, now=now)
        self.sent += 1
        return None

    async def _retry(self, item: OutboxItem, error: str, retry_at: float) -> float | None:
        if item.attempts >= self._max_attempts:
            await self._give_up(item, f"{error} (after {item.attempts} attempts)")
            return None
        await outbox.mark_failed(self._db, item.id, error, retry_at=retry_at)
        log.info(
            "sending a reply failed; will retry",
            extra={
                "outbox_id": item.id,
                "channel": item.channel,
                "error": error,
                "retry_in": retry_at - self._clock(),
            },
        )
        return retry_at

    async def _give_up(self, item: OutboxItem, error: str) -> None:
        await outbox.mark_failed(self._db, item.id, error, retry_at=None)
        self.failed += 1
        log.error(
            "a reply could not be sent and was given up",
            extra={"outbox_id": item.id, "channel": item.channel, "chat_id": item.chat_id, "error": error},
        )

    async def _settle_in_doubt(self) -> None:
        for item in await outbox.in_doubt(self._db):
            await self._give_up(item, IN_DOUBT)
