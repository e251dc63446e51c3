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
                # One hop: what is due, with the first reply of each idle chat claimed already.
                picked = await outbox.pick(
                    self._db, busy=frozenset(self._chats), known=frozenset(self._queued), now=self._clock()
                )
                for item in picked.claimed:
                    key = (item.channel, item.chat_id)
                    self._chats[key] = deque()
                    tg.start_soon(self._drain, key, item, name=f"delivery {item.channel}:{item.chat_id}")
                for item in picked.waiting:
                    key = (item.channel, item.chat_id)
                    if key not in self._chats:  # its chat finished while we looked: claim it next time
                        self._wake.set()
                        continue
                    self._queued.add(item.id)
                    self._chats[key].append(item)
                await self._sleep(picked.next_at)

    async def _sleep(self, due: float | None) -> None:
        wait = self._poll if due is None else min(self._poll, max(0.0, due - self._clock()))
        if wait > 0:
            with anyio.move_on_after(wait):
                await self._wake.wait()
        self._wake = anyio.Event()

    async def _drain(self, key: tuple[str, str], item: OutboxItem | None) -> None:
        """Send one chat's items in order, `item` (claimed) first, each next one claimed in the
        transaction that records the last as sent; on a retryable failure, defer the rest too."""
        queue = self._chats[key]
        try:
            while item is not None:
                started = self._clock()  # a reply's sent_at is when it went out, not when that was recorded
                ids, retry_at = await self._send(item)
                if retry_at is not None:
                    behind = list(queue)
                    queue.clear()
                    for waiting in behind:
                        self._queued.discard(waiting.id)
                        await outbox.mark_failed(
                            self._db, waiting.id, "waiting for an earlier message", retry_at=retry_at
                        )
                    return
                if ids is None:  # given up: on to the next
                    item = await self._claim_next(queue)
                    continue
                following = queue.popleft() if queue else None
                if following is not None:
                    self._queued.discard(following.id)
                item = await outbox.mark_sent(
                    self._db,
                    item.id,
                    platform_message_id=ids[0] if ids else None,
                    now=started,
                    then_claim=following.id if following is not None else None,
                )
                self.sent += 1
                if item is None:  # nothing followed, or it was no longer pending
                    item = await self._claim_next(queue)
        finally:
            for waiting in queue:
                self._queued.discard(waiting.id)
            del self._chats[key]

    async def _claim_next(self, queue: deque[OutboxItem]) -> OutboxItem | None:
        """The chat's next item, claimed; one no longer pending (sent or given up meanwhile) is skipped."""
        while queue:
            following = queue.popleft()
            self._queued.discard(following.id)
            item = await outbox.claim(self._db, following.id)
            if item is not None:
                return item
        return None

    async def _send(self, item: OutboxItem) -> tuple[list[str] | None, float | None]:
        """Send one item: (the platform's ids of its parts, None) once sent, which the caller
        records; else the failure is recorded here: (None, the retry time if it must wait)."""
        channel = self._channels.get(item.channel)
        now = self._clock()
        if channel is None:
            return None, await self._retry(item, f"the {item.channel} channel is not running", now + 60.0)
        try:
            ids = await channel.send(
                Outbound(chat_id=item.chat_id, text=item.text, reply_to=item.reply_to, meta=item.meta)
            )
        except SendFailed as e:
            if not e.retryable:
                await self._give_up(item, str(e))
                return None, None
            wait = max(e.retry_after or 0.0, self._backoff.delay(item.attempts))
            return None, await self._retry(item, str(e), now + wait)
        except ChannelAuthFailed as e:
            return None, await self._retry(item, str(e), now + self._backoff.cap)
        except ChannelError as e:
            return None, await self._retry(item, str(e), now + self._backoff.delay(item.attempts))
        return ids, None

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
