"""One answered exchange, recorded in one transaction.

The user's message(s), the assistant's reply with its timings, the session's turn count, the
memory write waiting for MBE, and (for a chat platform) the reply queued in the outbox with
its inbox rows marked answered: either all reach the disk or none do. A crash can never leave
a reply on record whose memory was dropped, a message marked answered whose reply is missing,
or a reply queued twice (the outbox keeps one reply per inbox row).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbe_gateway.store import history, memory_queue, outbox
from mbe_gateway.store.db import Database


@dataclass(frozen=True)
class MemoryWrite:
    user_id: str
    memory_type: str
    content: Mapping[str, Any]
    importance: float


@dataclass(frozen=True)
class UserMessage:
    text: str
    inbox_id: int | None = None


@dataclass(frozen=True)
class Exchange:
    session_id: int
    sender_id: str
    said: Sequence[UserMessage]  # one message, or a burst answered together
    reply: str
    surprise: float | None = None
    expert_id: str | None = None
    total_ms: float | None = None
    timings: Mapping[str, float] = field(default_factory=dict)
    memory: MemoryWrite | None = None


async def record(
    db: Database,
    exchange: Exchange | None,
    outgoing: outbox.Outgoing | None = None,
    *,
    now: float | None = None,
) -> int:
    """Write the exchange and queue the reply; the id of the queued memory write (0 if none)."""
    now = time.time() if now is None else now
    return await db.run(lambda conn: _record(conn, exchange, outgoing, now, db.path))


def _record(
    conn: sqlite3.Connection,
    exchange: Exchange | None,
    outgoing: outbox.Outgoing | None,
    now: float,
    where: Path,
) -> int:
    """`record`'s writes, in the connection's thread inside one transaction."""
    if outgoing is not None:
        outbox.insert_reply(conn, outgoing, now=now)
    if exchange is None:
        return 0
    for message in exchange.said:
        history.insert(
            conn,
            exchange.session_id,
            "user",
            message.text,
            sender_id=exchange.sender_id,
            inbox_id=message.inbox_id,
            surprise=exchange.surprise,
            now=now,
            where=where,
        )
    history.insert(
        conn,
        exchange.session_id,
        "assistant",
        exchange.reply,
        inbox_id=exchange.said[-1].inbox_id if exchange.said else None,
        expert_id=exchange.expert_id,
        total_ms=exchange.total_ms,
        timings=exchange.timings,
        now=now,
        where=where,
    )
    conn.execute(
        "UPDATE sessions SET turns = turns + 1, last_active_at = ? WHERE id = ?",
        (now, exchange.session_id),
    )
    if exchange.memory is None:
        return 0
    memory = exchange.memory
    return memory_queue.insert(
        conn, memory.user_id, memory.memory_type, memory.content, memory.importance, now=now
    )
