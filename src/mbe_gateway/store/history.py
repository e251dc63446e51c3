"""The conversation history: what was said in a session, and what the pipeline learnt.

Each message keeps the session generation it belongs to, so `recent` returns only the
conversation since the last reset, oldest first, ready for a prompt.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, cast

from mbe_gateway.errors import StoreError
from mbe_gateway.store.db import Database

Role = Literal["user", "assistant"]


@dataclass(frozen=True)
class HistoryMessage:
    id: int
    session_id: int
    role: Role
    text: str
    created_at: float
    sender_id: str | None  # who spoke, in a group
    inbox_id: int | None  # the inbound message this is, or answers
    surprise: float | None  # MBE's surprise score, 0..1
    expert_id: str | None  # the expert that answered
    total_ms: float | None  # time from receipt to reply
    timings: Mapping[str, float]  # per pipeline stage, in ms


async def append(
    db: Database,
    session_id: int,
    role: Role,
    text: str,
    *,
    sender_id: str | None = None,
    inbox_id: int | None = None,
    surprise: float | None = None,
    expert_id: str | None = None,
    total_ms: float | None = None,
    timings: Mapping[str, float] | None = None,
    now: float | None = None,
) -> HistoryMessage:
    """Add a message to the session's current generation."""
    return await db.run(
        lambda conn: insert(
            conn,
            session_id,
            role,
            text,
            sender_id=sender_id,
            inbox_id=inbox_id,
            surprise=surprise,
            expert_id=expert_id,
            total_ms=total_ms,
            timings=timings,
            now=now,
            where=db.path,
        )
    )


def insert(
    conn: sqlite3.Connection,
    session_id: int,
    role: Role,
    text: str,
    *,
    sender_id: str | None = None,
    inbox_id: int | None = None,
    surprise: float | None = None,
    expert_id: str | None = None,
    total_ms: float | None = None,
    timings: Mapping[str, float] | None = None,
    now: float | None = None,
    where: object = "the gateway database",
) -> HistoryMessage:
    """`append` inside a `Database.run` function, for writes that must commit together."""
    rows = conn.execute(
        "INSERT INTO messages (session_id, generation, inbox_id, role, sender_id, text, created_at,"
        " surprise, expert_id, total_ms, timings)"
        " SELECT id, generation, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM sessions WHERE id = ? RETURNING *",
        (
            inbox_id,
            role,
            sender_id,
            text,
            time.time() if now is None else now,
            surprise,
            expert_id,
            total_ms,
            json.dumps(dict(timings or {})),
            session_id,
        ),
    ).fetchall()
    if not rows:
        raise StoreError(f"{where}: no session {session_id}")
    return _message(rows[0])


async def recent(db: Database, session_id: int, *, limit: int = 20) -> list[HistoryMessage]:
    """The last `limit` messages since the session's last reset, oldest first."""
    rows = await db.fetch(
        "SELECT * FROM (SELECT m.* FROM messages m JOIN sessions s ON s.id = m.session_id"
        " WHERE m.session_id = ? AND m.generation = s.generation ORDER BY m.id DESC LIMIT ?)"
        " ORDER BY id",
        (session_id, limit),
    )
    return [_message(row) for row in rows]


def _message(row: sqlite3.Row) -> HistoryMessage:
    return HistoryMessage(
        id=row["id"],
        session_id=row["session_id"],
        role=cast(Role, row["role"]),
        text=row["text"],
        created_at=row["created_at"],
        sender_id=row["sender_id"],
        inbox_id=row["inbox_id"],
        surprise=row["surprise"],
        expert_id=row["expert_id"],
        total_ms=row["total_ms"],
        timings=json.loads(row["timings"]),
    )
