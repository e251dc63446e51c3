"""Read-only looks across the tables, for the control plane: the sessions, how much waits, and
a text search over the history.

Kept apart from the table modules because nothing on the answering path needs them; each is
one cheap query (the queue counts use the partial indexes on open inbox rows and on pending
and sending outbox rows), since the one connection is shared with the messages being answered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from mbe_gateway.store import sessions
from mbe_gateway.store.db import Database
from mbe_gateway.store.sessions import Session

SEARCH_SCAN: Final = 200_000  # a history search looks at most at this many of the newest messages
MAX_SEARCH_WORDS: Final = 8


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


@dataclass(frozen=True)
class FoundMessage:
    id: int
    session_id: int
    channel: str
    chat_id: str
    role: str  # user | assistant
    sender_id: str | None
    text: str  # at most `max_chars` of it
    clipped: bool  # the message is longer than `text`
    created_at: float


async def search_messages(
    db: Database, query: str, *, limit: int, channel: str | None = None, max_chars: int = 2000
) -> list[FoundMessage]:
    """Up to `limit` messages holding every word of `query`, newest first, on one channel or all.

    A word matches anywhere in a message (SQL LIKE, case-insensitive for ASCII), so Chinese is
    found inside a sentence (花生 in 我对花生过敏) as English is inside a word; `%`, `_` and the
    backslash are matched literally. All of history is searched, also before a session's /reset. Words
    past the first MAX_SEARCH_WORDS are ignored. The scan is bounded (the newest SEARCH_SCAN
    messages, and it stops at `limit` matches) because it holds the connection the daemon
    answers with: no full-text index to keep in step, at the price of not ranking by relevance.
    """
    words = [_like_pattern(word) for word in query.split()[:MAX_SEARCH_WORDS]]
    if not words:
        return []
    matches = " AND ".join(["m.text LIKE ? ESCAPE '\\'"] * len(words))
    rows = await db.fetch(
        "SELECT m.id, m.session_id, s.channel, s.chat_id, m.role, m.sender_id,"  # noqa: S608 ("?" only)
        " substr(m.text, 1, ?) AS text, length(m.text) > ? AS clipped, m.created_at"
        " FROM messages m JOIN sessions s ON s.id = m.session_id"
        " WHERE m.id > (SELECT coalesce(max(id), 0) FROM messages) - ?"
        f" AND (? IS NULL OR s.channel = ?) AND {matches}"
        " ORDER BY m.id DESC LIMIT ?",
        (max_chars, max_chars, SEARCH_SCAN, channel, channel, *words, limit),
    )
    return [
        FoundMessage(
            id=row["id"],
            session_id=row["session_id"],
            channel=row["channel"],
            chat_id=row["chat_id"],
            role=row["role"],
            sender_id=row["sender_id"],
            text=row["text"],
            clipped=bool(row["clipped"]),
            created_at=row["created_at"],
        )
        for row in rows
    ]


def _like_pattern(word: str) -> str:
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
