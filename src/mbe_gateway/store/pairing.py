"""Who may talk to the assistant: pending pairing requests and the senders the owner approved.

A stranger who writes to the bot (under dm_policy = "pairing") gets a short code and nothing
else; the owner approves it with `mbe-gateway pairing approve CODE`. Codes are 8 characters
from an alphabet without look-alikes (no 0/O, 1/I/L), expire after an hour, and at most three
wait per channel at a time, so a flood of strangers cannot bury the owner in codes.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass, replace
from typing import Final

from mbe_gateway.errors import PairingError
from mbe_gateway.store.db import Database

ALPHABET: Final = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH: Final = 8
EXPIRES_AFTER: Final = 3600.0
MAX_PENDING_PER_CHANNEL: Final = 3


@dataclass(frozen=True)
class PairingRequest:
    channel: str
    sender_id: str
    sender_name: str | None
    chat_id: str
    code: str
    created_at: float
    expires_at: float
    is_new: bool = False  # made by this call to `request` (not one the sender already had)


@dataclass(frozen=True)
class AllowedSender:
    channel: str
    sender_id: str
    sender_name: str | None
    approved_at: float


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def normalize(code: str) -> str:
    """What the owner typed, forgiving case, spaces and dashes ("abcd-2345" works)."""
    return "".join(code.split()).replace("-", "").upper()


async def request(
    db: Database,
    *,
    channel: str,
    sender_id: str,
    chat_id: str,
    sender_name: str | None = None,
    now: float | None = None,
) -> PairingRequest | None:
    """The sender's live request (`is_new` False if they already had one), a new one, or None
    when the channel already has its maximum of pending requests."""
    now = time.time() if now is None else now

    def find_or_make(conn: sqlite3.Connection) -> PairingRequest | None:
        conn.execute("DELETE FROM pairing_requests WHERE expires_at <= ?", (now,))
        rows = conn.execute(
            "SELECT * FROM pairing_requests WHERE channel = ? AND sender_id = ?", (channel, sender_id)
        ).fetchall()
        if rows:
            return _request(rows[0])
        pending = conn.execute(
            "SELECT count(*) FROM pairing_requests WHERE channel = ?", (channel,)
        ).fetchall()
        if pending[0][0] >= MAX_PENDING_PER_CHANNEL:
            return None
        for _ in range(8):  # a clash among 31^8 codes is rare; retry rather than fail
            try:
                rows = conn.execute(
                    "INSERT INTO pairing_requests (channel, sender_id, sender_name, chat_id, code,"
                    " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *",
                    (channel, sender_id, sender_name, chat_id, new_code(), now, now + EXPIRES_AFTER),
                ).fetchall()
            except sqlite3.IntegrityError:
                continue
            return replace(_request(rows[0]), is_new=True)
        raise PairingError("could not draw an unused pairing code; try again")

    return await db.run(find_or_make)


async def pending(db: Database, *, now: float | None = None) -> list[PairingRequest]:
    now = time.time() if now is None else now
    rows = await db.fetch("SELECT * FROM pairing_requests WHERE expires_at > ? ORDER BY created_at", (now,))
    return [_request(row) for row in rows]


async def approve(db: Database, code: str, *, now: float | None = None) -> PairingRequest:
    """Allow the sender behind `code`; PairingError when no live request has it."""
    now = time.time() if now is None else now

    def allow(conn: sqlite3.Connection) -> PairingRequest:
        found = _take(conn, code, now)
        conn.execute(
            "INSERT INTO allowed_senders (channel, sender_id, sender_name, approved_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (channel, sender_id) DO UPDATE SET sender_name = excluded.sender_name",
            (found.channel, found.sender_id, found.sender_name, now),
        )
        return found

    return await db.run(allow)


async def deny(db: Database, code: str, *, now: float | None = None) -> PairingRequest:
    """Drop the request behind `code` (the sender may ask again later)."""
    now = time.time() if now is None else now
    return await db.run(lambda conn: _take(conn, code, now))


async def is_allowed(db: Database, channel: str, sender_id: str) -> bool:
    rows = await db.fetch(
        "SELECT 1 FROM allowed_senders WHERE channel = ? AND sender_id = ?", (channel, sender_id)
    )
    return bool(rows)


async def allowed(db: Database) -> list[AllowedSender]:
    rows = await db.fetch("SELECT * FROM allowed_senders ORDER BY approved_at")
    return [
        AllowedSender(row["channel"], row["sender_id"], row["sender_name"], row["approved_at"])
        for row in rows
    ]


async def revoke(db: Database, channel: str, sender_id: str) -> bool:
    """Take back an approval; False when the sender was not approved."""
    return await db.run(
        lambda conn: (
            conn.execute(
                "DELETE FROM allowed_senders WHERE channel = ? AND sender_id = ?", (channel, sender_id)
            ).rowcount
            > 0
        )
    )


def _take(conn: sqlite3.Connection, code: str, now: float) -> PairingRequest:
    wanted = normalize(code)
    if len(wanted) != CODE_LENGTH or any(c not in ALPHABET for c in wanted):
        raise PairingError(f"{code!r} is not a pairing code: codes are {CODE_LENGTH} letters and digits")
    rows = conn.execute("DELETE FROM pairing_requests WHERE code = ? RETURNING *", (wanted,)).fetchall()
    if not rows:
        raise PairingError(f"no pending request has the code {wanted}; `mbe-gateway pairing list` shows them")
    found = _request(rows[0])
    if found.expires_at <= now:
        raise PairingError(f"the code {wanted} expired; the sender gets a new one by writing again")
    return found


def _request(row: sqlite3.Row) -> PairingRequest:
    return PairingRequest(
        channel=row["channel"],
        sender_id=row["sender_id"],
        sender_name=row["sender_name"],
        chat_id=row["chat_id"],
        code=row["code"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )
