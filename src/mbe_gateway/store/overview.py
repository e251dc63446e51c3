"""Read-only looks across the tables, for the control plane: the sessions, and how much waits.

Kept apart from the table modules because nothing on the answering path needs them; each is
one cheap query (the queue counts use the partial indexes on open inbox rows and on pending
and sending outbox rows), since the one connection is shared with the messages being answered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mbe_gateway.store import sessions
from mbe_gateway.store.db import Database
from mbe_gateway.store.sessions import Session


@dataclass(frozen=True)
class QueueDepths:
    inbox: int  # messages received and not yet answered (pending or being answered)
    outbox: int  # replies and messages waiting to be sent (or for their retry)
    sending: int  # handed to a platform, outcome not yet recorded
    memory_writes: int  # exchanges waiting to be written to MBE
    pairing_requests: int  # strangers' codes waiting for the owner


async def queue_depths(db: Database, *, now: float | None = None) -> QueueDepths:
    rows = await db.fetch(
        "SELECT (SELECT count(*) FROM inbox WHERE state IN ('pending', 'processing')),"
        " (SELECT count(*) FROM outbox WHERE state = 'pending'),"
        " (SELECT count(*) FROM outbox WHERE state = 'sending'),"
        " (SELECT count(*) FROM memory_queue),"
        " (SELECT count(*) FROM pairing_requests WHERE expires_at > ?)",
        (time.time() if now is None else now,),
    )
    return QueueDepths(*(int(n) for n in rows[0]))


async def recent_sessions(db: Database, *, limit: int, channel: str | None = None) -> list[Session]:
    """Up to `limit` sessions, the most recently active first, on one channel or all."""
    rows = await db.fetch(
        "SELECT * FROM sessions WHERE ?1 IS NULL OR channel = ?1"
        " ORDER BY last_active_at DESC, id DESC LIMIT ?2",
        (channel, limit),
    )
    return [sessions.from_row(row) for row in rows]


async def session(db: Database, session_id: int) -> Session | None:
    rows = await db.fetch("SELECT * FROM sessions WHERE id = ?", (session_id,))
    return sessions.from_row(rows[0]) if rows else None
