"""Memory writes waiting for MBE: durable, so a reply never waits on MBE's memory.

The pipeline pushes each write here and moves on; a flusher peeks a batch, writes it to MBE,
and deletes what MBE accepted (or notes the failure and keeps the rest for later). Order is
preserved: oldest first.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mbe_gateway.store.db import Database


@dataclass(frozen=True)
class PendingMemory:
    id: int
    user_id: str
    memory_type: str
    content: Mapping[str, Any]
    importance: float  # 0..1
    attempts: int  # failed attempts to write it to MBE
    last_error: str | None
    created_at: float


async def push(
    db: Database,
    user_id: str,
    memory_type: str,
    content: Mapping[str, Any],
    importance: float,
    *,
    now: float | None = None,
) -> int:
    """Queue one memory write; returns its id."""
    return await db.run(lambda conn: insert(conn, user_id, memory_type, content, importance, now=now))


def insert(
    conn: sqlite3.Connection,
    user_id: str,
    memory_type: str,
    content: Mapping[str, Any],
    importance: float,
    *,
    now: float | None = None,
) -> int:
    """`push` inside a `Database.run` function, for writes that must commit together."""
    rows = conn.execute(
        "INSERT INTO memory_queue (user_id, memory_type, content, importance, created_at)"
        " VALUES (?, ?, ?, ?, ?) RETURNING id",
        (
            user_id,
            memory_type,
            json.dumps(dict(content), ensure_ascii=False),
            importance,
            time.time() if now is None else now,
        ),
    ).fetchall()
    return int(rows[0][0])


async def peek(db: Database, *, limit: int = 50) -> list[PendingMemory]:
    """The oldest waiting writes, left in the queue until `delete`."""
    rows = await db.fetch("SELECT * FROM memory_queue ORDER BY id LIMIT ?", (limit,))
    return [_memory(row) for row in rows]


async def delete(db: Database, ids: Sequence[int]) -> None:
    """Forget writes MBE has accepted."""
    await db.run(lambda conn: conn.executemany("DELETE FROM memory_queue WHERE id = ?", [(i,) for i in ids]))


async def note_failure(db: Database, ids: Sequence[int], error: str) -> None:
    """Count a failed attempt on these writes; they stay queued."""
    await db.run(
        lambda conn: conn.executemany(
            "UPDATE memory_queue SET attempts = attempts + 1, last_error = ? WHERE id = ?",
            [(error, i) for i in ids],
        )
    )


async def count(db: Database) -> int:
    """How many writes are waiting (for doctor and metrics)."""
    rows = await db.fetch("SELECT count(*) FROM memory_queue")
    return int(rows[0][0])


def _memory(row: sqlite3.Row) -> PendingMemory:
    return PendingMemory(
        id=row["id"],
        user_id=row["user_id"],
        memory_type=row["memory_type"],
        content=json.loads(row["content"]),
        importance=row["importance"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        created_at=row["created_at"],
    )
