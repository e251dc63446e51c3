"""The inbox: every inbound platform message, durable before the platform hears "received".

A channel calls `put` and acknowledges the platform only after it returns; a redelivery of the
same (channel, platform_message_id) is recognised (`is_new` False) and changes nothing. The
pipeline takes work with `claim_next`; after a crash, `requeue_interrupted` puts the rows
that were being processed back in line (the outbox's one-reply-per-message rule keeps a
second pass from answering twice).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from mbe_gateway.store.db import Database

InboxState = Literal["pending", "processing", "answered", "failed"]


@dataclass(frozen=True)
class InboxMessage:
    id: int
    channel: str
    platform_message_id: str
    chat_id: str
    is_group: bool
    sender_id: str
    sender_name: str | None
    text: str
    meta: Mapping[str, Any]  # platform extras (thread, reply-to), as the channel stored them
    received_at: float
    state: InboxState
    attempts: int  # how many times processing started
    last_error: str | None


@dataclass(frozen=True)
class Put:
    message: InboxMessage  # the stored row (the earlier one, for a redelivery)
    is_new: bool


async def put(
    db: Database,
    *,
    channel: str,
    platform_message_id: str,
    chat_id: str,
    sender_id: str,
    text: str,
    sender_name: str | None = None,
    is_group: bool = False,
    meta: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> Put:
    """Store an inbound message, on disk (fsynced) when this returns; a redelivery is not new."""
    values = (
        channel,
        platform_message_id,
        chat_id,
        int(is_group),
        sender_id,
        sender_name,
        text,
        json.dumps(dict(meta or {}), ensure_ascii=False),
        time.time() if now is None else now,
    )

    def store(conn: sqlite3.Connection) -> Put:
        inserted = conn.execute(
            "INSERT INTO inbox (channel, platform_message_id, chat_id, is_group, sender_id, sender_name,"
            " text, meta, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (channel, platform_message_id) DO NOTHING RETURNING *",
            values,
        ).fetchall()
        if inserted:
            return Put(_message(inserted[0]), is_new=True)
        earlier = conn.execute(
            "SELECT * FROM inbox WHERE channel = ? AND platform_message_id = ?",
            (channel, platform_message_id),
        ).fetchall()
        return Put(_message(earlier[0]), is_new=False)

    return await db.run(store, durable=True)


async def claim_next(db: Database, *, now: float | None = None) -> InboxMessage | None:
    """Move the oldest pending message to `processing` and return it (None: nothing to do)."""
    claimed = await db.fetch(
        "UPDATE inbox SET state = 'processing', attempts = attempts + 1, claimed_at = ?"
        " WHERE id = (SELECT id FROM inbox WHERE state = 'pending' ORDER BY id LIMIT 1)"
        " RETURNING *",
        (time.time() if now is None else now,),
        write=True,
    )
    return _message(claimed[0]) if claimed else None


async def mark_answered(db: Database, message_id: int, *, now: float | None = None) -> None:
    await _finish(db, message_id, "answered", None, now)


async def mark_failed(db: Database, message_id: int, error: str, *, now: float | None = None) -> None:
    """Give up on a message; `error` is for the operator (never put a secret in it)."""
    await _finish(db, message_id, "failed", error, now)


async def _finish(
    db: Database, message_id: int, state: InboxState, error: str | None, now: float | None
) -> None:
    await db.fetch(
        "UPDATE inbox SET state = ?, finished_at = ?, last_error = ? WHERE id = ?",
        (state, time.time() if now is None else now, error, message_id),
        write=True,
    )


async def requeue_interrupted(db: Database) -> int:
    """At start: messages left in `processing` by a crash go back to `pending`; returns how many."""
    return await db.run(
        lambda conn: conn.execute("UPDATE inbox SET state = 'pending' WHERE state = 'processing'").rowcount
    )


async def pending(db: Database, *, limit: int = 100) -> list[InboxMessage]:
    """Messages waiting to be processed, oldest first."""
    rows = await db.fetch("SELECT * FROM inbox WHERE state = 'pending' ORDER BY id LIMIT ?", (limit,))
    return [_message(row) for row in rows]


async def get(db: Database, message_id: int) -> InboxMessage | None:
    rows = await db.fetch("SELECT * FROM inbox WHERE id = ?", (message_id,))
    return _message(rows[0]) if rows else None


def _message(row: sqlite3.Row) -> InboxMessage:
    return InboxMessage(
        id=row["id"],
        channel=row["channel"],
        platform_message_id=row["platform_message_id"],
        chat_id=row["chat_id"],
        is_group=bool(row["is_group"]),
        sender_id=row["sender_id"],
        sender_name=row["sender_name"],
        text=row["text"],
        meta=json.loads(row["meta"]),
        received_at=row["received_at"],
        state=cast(InboxState, row["state"]),
        attempts=row["attempts"],
        last_error=row["last_error"],
    )
