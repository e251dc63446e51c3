"""Memory writes, off the reply's critical path but never dropped.

The pipeline records each exchange's memory in the store's queue in the same transaction as
the reply, and nudges this writer. The writer sends queued writes to MBE oldest first. When
MBE is down it stops, waits for MBE to come back (or for its backoff), and carries on where
it left off; nothing leaves the queue until MBE has accepted it. A write that MBE rejects
as invalid is kept too and retried later (it may be a server bug fixed by an upgrade), but
it does not hold up the writes behind it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import anyio

from mbe_gateway.errors import MBEError, MBEToolError
from mbe_gateway.mbe.backoff import Backoff
from mbe_gateway.store import Database, memory_queue

log = logging.getLogger(__name__)


class MemorySink(Protocol):
    """What the writer needs of mbe_gateway.mbe.MBEClient."""

    async def memory_write(
        self, user_id: str, memory_type: str, content: Mapping[str, Any], importance: float = 0.5
    ) -> str: ...

    async def wait_ready(self, timeout: float) -> None: ...  # noqa: ASYNC109


class MemoryWriter:
    """Owns the loop that drains the memory queue; run it in the daemon's task group."""

    def __init__(self, db: Database, mbe: MemorySink, *, batch: int = 50, backoff: Backoff | None = None):
        self._db = db
        self._mbe = mbe
        self._batch = batch
        self._backoff = backoff if backoff is not None else Backoff(base=1.0, cap=30.0)
        self._wake = anyio.Event()
        self._rejected: set[int] = set()
        self._blocked = False  # MBE was unreachable at the last flush (for one log line per outage)

    def nudge(self) -> None:
        """Something was queued: write it soon."""
        self._wake.set()

    async def run(self) -> None:
        """Drain the queue whenever nudged, and retry with backoff while MBE is down."""
        attempt = 0
        while True:
            blocked = await self.flush()
            if not blocked:
                attempt = 0
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            attempt += 1
            # Back as soon as MBE is ready again, or after the backoff, whichever is first.
            with anyio.move_on_after(self._backoff.delay(attempt)):
                try:
                    await self._mbe.wait_ready(self._backoff.cap)
                except MBEError:
                    await anyio.sleep_forever()  # wait out the backoff instead

    async def flush(self) -> bool:
        """Write what is queued now, oldest first; True if MBE was unreachable and writes remain."""
        skip: set[int] = set()
        while True:
            pending = [
                p
                for p in await memory_queue.peek(self._db, limit=self._batch + len(skip))
                if p.id not in skip
            ]
            if not pending:
                return False
            written: list[int] = []
            try:
                for item in pending:
                    try:
                        await self._mbe.memory_write(
                            item.user_id, item.memory_type, item.content, item.importance
                        )
                    except MBEToolError as e:
                        skip.add(item.id)
                        await memory_queue.note_failure(self._db, [item.id], str(e))
                        if item.id not in self._rejected:
                            self._rejected.add(item.id)
                            log.warning(
                                "MBE rejected a memory write; kept to retry later",
                                extra={"memory_queue_id": item.id, "error": str(e)},
                            )
                        continue
                    written.append(item.id)
            except MBEError as e:
                await memory_queue.delete(self._db, written)
                remaining = [p.id for p in pending if p.id not in written and p.id not in skip]
                await memory_queue.note_failure(self._db, remaining[:1], str(e))
                if not self._blocked:
                    self._blocked = True
                    log.warning(
                        "MBE unreachable; memory writes wait in the queue until it is back",
                        extra={"queued": await memory_queue.count(self._db), "error": str(e)},
                    )
                return True
            await memory_queue.delete(self._db, written)
            if self._blocked:
                self._blocked = False
                log.info("MBE is back; queued memory writes are being written")
