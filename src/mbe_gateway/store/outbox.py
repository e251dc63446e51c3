"""The outbox: replies waiting to be sent, kept across restarts and retried with backoff.

At most one reply exists per inbox row, so processing a message twice (after a crash)
cannot queue a second answer. `enqueue_reply` stores the reply and marks its inbox row
answered in one transaction: either both happened or neither did.

A sender lists `due` items, `claim`s each one (it becomes `sending`) right before sending it,
then reports `mark_sent` or `mark_failed` with the time of the next attempt (computing the
backoff is the sender's business). Items still `sending` at start (`in_doubt`) may or may not
have reached the platform; the sender decides whether resending is the lesser harm.

A busy sender saves store calls (each one a thread hop, a claim also an fsync): `pick` lists
the due items and claims the first of each idle chat in the same transaction, and
`mark_sent(..., then_claim=)` claims a chat's next item in the one that records the last.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from mbe_gateway.store.db import Database
from mbe_gateway.store.inbox import InboxMessage

OutboxState = Literal["pending", "sending", "sent", "failed"]


@dataclass(frozen=True)
class OutboxItem:
    id: int
    inbox_id: int | None  # None for a message nobody asked for (a reminder, a job's result)
    channel: str
    chat_id: str
    reply_to: str | None  # the platform message id this answers
    text: str
    meta: Mapping[str, Any]
    state: OutboxState
    attempts: int  # sending attempts started
    created_at: float
    next_attempt_at: float
    last_error: str | None
    sent_at: float | None
    platform_message_id: str | None  # the id the platform gave the sent message


@dataclass(frozen=True)
class Enqueued:
    item: OutboxItem  # the stored row (the earlier one, if this inbox row already had a reply)
    is_new: bool


@dataclass(frozen=True)
class Outgoing:
    """A reply leaving through the outbox, answering these inbox rows (a burst answered
    together is one reply, threaded to the last of them)."""

    inbox_ids: Sequence[int]
    channel: str
    chat_id: str
    text: str
    reply_to: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


_INSERT = (
    "INSERT INTO outbox (inbox_id, channel, chat_id, reply_to, text, meta, created_at, next_attempt_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (inbox_id) DO NOTHING RETURNING *"
)
_CLAIM = (
    "UPDATE outbox SET state = 'sending', attempts = attempts + 1"
    " WHERE id = ? AND state = 'pending' RETURNING *"
)


async def enqueue_reply(
    db: Database,
    message: InboxMessage,
    text: str,
    *,
    meta: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> Enqueued:
    """Queue the one reply to an inbox message and mark that message answered, atomically."""
    now = time.time() if now is None else now
    values = (
        message.id,
        message.channel,
        message.chat_id,
        message.platform_message_id,
        text,
        _json(meta),
        now,
        now,
    )

    def store(conn: sqlite3.Connection) -> Enqueued:
        rows = conn.execute(_INSERT, values).fetchall()
        is_new = bool(rows)
        if not is_new:
            rows = conn.execute("SELECT * FROM outbox WHERE inbox_id = ?", (message.id,)).fetchall()
        conn.execute(
            "UPDATE inbox SET state = 'answered', finished_at = ?, last_error = NULL"
            " WHERE id = ? AND state <> 'answered'",
            (now, message.id),
        )
        return Enqueued(_item(rows[0]), is_new=is_new)

    return await db.run(store)


def insert_reply(conn: sqlite3.Connection, reply: Outgoing, *, now: float) -> bool:
    """Queue `reply` and mark its inbox rows answered, inside the caller's `Database.run`
    function; False when the last row already had a reply (a second pass after a crash)."""
    answering = reply.inbox_ids[-1] if reply.inbox_ids else None
    rows = conn.execute(
        _INSERT,
        (answering, reply.channel, reply.chat_id, reply.reply_to, reply.text, _json(reply.meta), now, now),
    ).fetchall()
    conn.executemany(
        "UPDATE inbox SET state = 'answered', finished_at = ?, last_error = NULL"
        " WHERE id = ? AND state <> 'answered'",
        [(now, inbox_id) for inbox_id in reply.inbox_ids],
    )
    return bool(rows)


async def enqueue(
    db: Database,
    *,
    channel: str,
    chat_id: str,
    text: str,
    meta: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> OutboxItem:
    """Queue a message that answers no inbound one (a reminder, a proactive message)."""
    now = time.time() if now is None else now
    rows = await db.fetch(_INSERT, (None, channel, chat_id, None, text, _json(meta), now, now), write=True)
    return _item(rows[0])


async def due(db: Database, *, limit: int = 100, now: float | None = None) -> list[OutboxItem]:
    """Up to `limit` pending items whose time has come, oldest first; nothing is changed."""
    rows = await db.fetch(
        "SELECT * FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?"
        " ORDER BY next_attempt_at, id LIMIT ?",
        (time.time() if now is None else now, limit),
    )
    return [_item(row) for row in rows]


@dataclass(frozen=True)
class Picked:
    """What `pick` found: items claimed to be sent now, items to send after them, and when to
    look again."""

    claimed: list[OutboxItem]  # the first due item of each idle chat, now `sending`
    waiting: list[OutboxItem]  # due items behind those or behind a busy chat's, still pending
    next_at: float | None  # when the next pending item falls due (None: nothing pending)


async def pick(
    db: Database,
    *,
    busy: Set[tuple[str, str]] = frozenset(),
    known: Set[int] = frozenset(),
    limit: int = 100,
    now: float | None = None,
) -> Picked:
    """Up to `limit` due items the caller does not already hold (`known` ids), oldest first, in
    one durable transaction: in each (channel, chat_id) not in `busy`, the first is claimed
    (as `claim` does) and the rest wait; in a busy chat they all wait."""
    now = time.time() if now is None else now

    def find(conn: sqlite3.Connection) -> Picked:
        rows = conn.execute(
            "SELECT * FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at, id LIMIT ?",
            (now, limit + len(known)),
        ).fetchall()
        claimed: list[OutboxItem] = []
        waiting: list[OutboxItem] = []
        taken: set[tuple[str, str]] = set(busy)
        for row in rows:
            if row["id"] in known:
                continue
            key = (row["channel"], row["chat_id"])
            if key in taken:
                waiting.append(_item(row))
                continue
            taken.add(key)
            claimed.append(_item(conn.execute(_CLAIM, (row["id"],)).fetchone()))
        if len(rows) == limit + len(known):
            next_at: float | None = now  # there may be more due than were listed: look again at once
        else:
            later = conn.execute(
                "SELECT min(next_attempt_at) FROM outbox WHERE state = 'pending' AND next_attempt_at > ?",
                (now,),
            ).fetchone()[0]
            next_at = None if later is None else float(later)
        return Picked(claimed, waiting, next_at)

    return await db.run(find, durable=True)


async def claim(db: Database, item_id: int) -> OutboxItem | None:
    """Mark one pending item `sending`, on disk (fsynced), right before it goes out; None if it
    is no longer pending. Claiming one at a time keeps "in doubt" to the items actually sent."""
    rows = await db.fetch(_CLAIM, (item_id,), durable=True, write=True)
    return _item(rows[0]) if rows else None


async def mark_sent(
    db: Database,
    item_id: int,
    *,
    platform_message_id: str | None = None,
    now: float | None = None,
    then_claim: int | None = None,
) -> OutboxItem | None:
    """Record that the item went out; with `then_claim`, claim that item too in the same
    transaction (durably, as `claim` does) and return it (None if it is no longer pending)."""
    values = (time.time() if now is None else now, platform_message_id, item_id)

    def record(conn: sqlite3.Connection) -> OutboxItem | None:
        conn.execute(
            "UPDATE outbox SET state = 'sent', sent_at = ?, platform_message_id = ?, last_error = NULL"
            " WHERE id = ?",
            values,
        )
        if then_claim is None:
            return None
        row = conn.execute(_CLAIM, (then_claim,)).fetchone()
        return None if row is None else _item(row)

    return await db.run(record, durable=then_claim is not None)


async def mark_failed(db: Database, item_id: int, error: str, *, retry_at: float | None) -> None:
    """Record a failed attempt: try again at `retry_at`, or never (None: failed for good)."""
    if retry_at is None:
        await db.fetch(
            "UPDATE outbox SET state = 'failed', last_error = ? WHERE id = ?", (error, item_id), write=True
        )
    else:
        await db.fetch(
            "UPDATE outbox SET state = 'pending', last_error = ?, next_attempt_at = ? WHERE id = ?",
            (error, retry_at, item_id),
            write=True,
        )


async def in_doubt(db: Database) -> list[OutboxItem]:
    """Items left `sending` (by a crash): maybe delivered, maybe not."""
    rows = await db.fetch("SELECT * FROM outbox WHERE state = 'sending' ORDER BY id")
    return [_item(row) for row in rows]


def _json(meta: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(meta or {}), ensure_ascii=False)


def _item(row: sqlite3.Row) -> OutboxItem:
    return OutboxItem(
        id=row["id"],
        inbox_id=row["inbox_id"],
        channel=row["channel"],
        chat_id=row["chat_id"],
        reply_to=row["reply_to"],
        text=row["text"],
        meta=json.loads(row["meta"]),
        state=cast(OutboxState, row["state"]),
        attempts=row["attempts"],
        created_at=row["created_at"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
        sent_at=row["sent_at"],
        platform_message_id=row["platform_message_id"],
    )
