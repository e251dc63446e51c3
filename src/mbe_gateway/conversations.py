"""One lane per conversation: in order within a session, in parallel across sessions.

People send bursts ("hi" / "quick question" / "what's a good ramen place?"). A burst from
one sender is answered once, together, in two ways that add no wait to a lone message:

- while a reply is being prepared, more messages from the same sender cancel that
  preparation and join the batch (the handler marks the point past which it must not be
  interrupted — recording and sending — with `Turn.commit()`); and
- with `debounce` > 0, the lane also waits that long for quiet before starting at all.

A lane's task ends after a while without messages, so a daemon with thousands of chats keeps
only the busy ones in memory. The lanes' tasks belong to `run`'s task group.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import anyio.abc

from mbe_gateway.pipeline import Request

log = logging.getLogger(__name__)

MAX_DEBOUNCE_WAIT = 10.0  # seconds: a sender who never pauses is still answered


class Turn:
    """One attempt at answering a batch, handed to the handler."""

    def __init__(self) -> None:
        self.committed = False

    def commit(self) -> None:
        """From here on the answer is final: newer messages wait for the next turn."""
        self.committed = True


Handler = Callable[[Request, Turn], Awaitable[None]]


@dataclass
class _Lane:
    queue: deque[Request] = field(default_factory=deque)
    wake: anyio.Event = field(default_factory=anyio.Event)
    turn: Turn | None = None
    scope: anyio.CancelScope | None = None
    batch: list[Request] = field(default_factory=list)


class Conversations:
    def __init__(
        self,
        handle: Handler,
        *,
        debounce: float = 0.0,
        max_burst: int = 50,
        idle_after: float = 60.0,
    ) -> None:
        self._handle = handle
        self._debounce = debounce
        self._max_burst = max_burst
        self._idle_after = idle_after
        self._lanes: dict[str, _Lane] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    @property
    def active(self) -> int:
        """How many sessions have a lane now (for status and metrics)."""
        return len(self._lanes)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve lanes until cancelled; `await tg.start(conversations.run)` returns once it serves."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self._tg = None

    def submit(self, request: Request) -> None:
        """Queue one message for its session's lane (starting the lane if it is idle)."""
        if self._tg is None:
            raise RuntimeError("Conversations.run() is not running")
        key = f"{request.channel}\x00{request.chat_id}"
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
            self._tg.start_soon(self._serve, key, lane, name=f"lane {request.channel}:{request.chat_id}")
        lane.queue.append(request)
        lane.wake.set()
        if (
            lane.turn is not None
            and not lane.turn.committed
            and lane.scope is not None
            and lane.batch
            and lane.batch[0].sender_id == request.sender_id
            and len(lane.batch) < self._max_burst
        ):
            lane.scope.cancel()  # more of the same burst: answer it all together

    async def _serve(self, key: str, lane: _Lane) -> None:
        try:
            while await self._wait_for_messages(lane):
                await self._debounced(lane)
                lane.batch = self._take(lane, [])
                while True:
                    lane.turn = Turn()
                    with anyio.CancelScope() as scope:
                        lane.scope = scope
                        try:
                            await self._handle(_merged(lane.batch), lane.turn)
                        except Exception:
                            log.exception(
                                "answering a message failed", extra={"session": key.replace("\x00", ":")}
                            )
                    lane.turn = lane.scope = None
                    if not scope.cancelled_caught:
                        break
                    lane.batch = self._take(lane, lane.batch)
                lane.batch = []
        finally:
            del self._lanes[key]

    async def _wait_for_messages(self, lane: _Lane) -> bool:
        """True when there is something to answer; False when the lane went idle."""
        with anyio.move_on_after(self._idle_after):
            while not lane.queue:
                lane.wake = anyio.Event()
                await lane.wake.wait()
        return bool(lane.queue)

    async def _debounced(self, lane: _Lane) -> None:
        """Wait until `debounce` seconds pass with no new message (bounded in total)."""
        if self._debounce <= 0:
            return
        with anyio.move_on_after(MAX_DEBOUNCE_WAIT):
            while True:
                lane.wake = anyio.Event()
                with anyio.move_on_after(self._debounce) as quiet:
                    await lane.wake.wait()
                if quiet.cancelled_caught:
                    return

    def _take(self, lane: _Lane, batch: list[Request]) -> list[Request]:
        """Move the queued messages that continue this batch's burst (same sender) into it."""
        batch = list(batch)
        while lane.queue and len(batch) < self._max_burst:
            if batch and lane.queue[0].sender_id != batch[0].sender_id:
                break
            batch.append(lane.queue.popleft())
        return batch


def _merged(batch: list[Request]) -> Request:
    """A burst as one request: the texts in order, every inbox id kept."""
    if len(batch) == 1:
        return batch[0]
    first = batch[0]
    return Request(
        channel=first.channel,
        chat_id=first.chat_id,
        sender_id=first.sender_id,
        texts=tuple(text for request in batch for text in request.texts),
        sender_name=first.sender_name,
        is_group=first.is_group,
        inbox_ids=tuple(i for r in batch for i in (r.inbox_ids or (None,) * len(r.texts))),
        reply_to=batch[-1].reply_to,
        meta=batch[-1].meta,
        late=any(r.late for r in batch),
    )
