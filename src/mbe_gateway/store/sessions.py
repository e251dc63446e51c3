"""Sessions: one conversation per (channel, chat), a DM's chat or a group.

A reset (the user's /reset) starts a new `generation`: older history stays on disk for the
record but is no longer recalled into prompts (see history.recent).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from mbe_gateway.errors import StoreError
from mbe_gateway.store.db import Database


@dataclass(frozen=True)
class Session:
    id: int
    channel: str
    chat_id: str
    is_group: bool
    created_at: float
    last_active_at: float
    turns: int  # exchanges since the last reset
    generation: int  # bumped by each reset
    reset_at: float | None


async def get_or_create(
    db: Database, channel: str, chat_id: str, *, is_group: bool = False, now: float | None = None
) -> Session:
    """The chat's session, made on its first message. Looked up on the read connection first:
    a chat's every message needs it, and a read does not wait for others' writes to commit."""
    now = time.time() if now is None else now

    def find(conn: sqlite3.Connection) -> sqlite3.Row | None:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM sessions WHERE channel = ? AND chat_id = ?", (channel, chat_id)
        ).fetchone()
        return row

    def find_or_insert(conn: sqlite3.Connection) -> sqlite3.Row:
        rows = conn.execute(
            "INSERT INTO sessions (channel, chat_id, is_group, created_at, last_active_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (channel, chat_id) DO NOTHING RETURNING *",
            (channel, chat_id, int(is_group), now, now),
        ).fetchall()
        row: sqlite3.Row | None = rows[0] if rows else find(conn)
        assert row is not None  # inserted, or there already
        return row

    found = await db.run(find, write=False)
    return from_row(found if found is not None else await db.run(find_or_insert))


async def touch(db: Database, session_id: int, *, now: float | None = None) -> Session:
    """Count one more exchange and mark the session active now."""
    return await _update(
        db,
        session_id,
        "UPDATE sessions SET turns = turns + 1, last_active_at = ? WHERE id = ? RETURNING *",
        time.time() if now is None else now,
    )


async def reset(db: Database, session_id: int, *, now: float | None = None) -> Session:
    """Forget the conversation so far (for prompts): a new generation with no turns."""
    return await _update(
        db,
        session_id,
        "UPDATE sessions SET generation = generation + 1, turns = 0, reset_at = ?1, last_active_at = ?1"
        " WHERE id = ?2 RETURNING *",
        time.time() if now is None else now,
    )


async def _update(db: Database, session_id: int, sql: str, now: float) -> Session:
    rows = await db.fetch(sql, (now, session_id), write=True)
    if not rows:
        raise StoreError(f"{db.path}: no session {session_id}")
    return from_row(rows[0])


def from_row(row: sqlite3.Row) -> Session:
    """A `sessions` row as a Session (for the store's other modules that read sessions)."""
    return Session(
        id=row["id"],
        channel=row["channel"],
        chat_id=row["chat_id"],
        is_group=bool(row["is_group"]),
        created_at=row["created_at"],
        last_active_at=row["last_active_at"],
        turns=row["turns"],
        generation=row["generation"],
        reset_at=row["reset_at"],
    )
