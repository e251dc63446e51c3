"""The gateway database's schema, as a list of migrations (one tuple of statements each).

Migration N (1-based) takes the database from `PRAGMA user_version` N-1 to N; all pending
ones run in one transaction at open. Never edit a released migration: append a new one.
Statements are kept separate (not a script) because sqlite3's executescript() commits
first, which would break the all-or-nothing migration.

Times are Unix seconds (REAL), JSON columns are checked with json_valid().
"""

from __future__ import annotations

from typing import Final

# "MBEG": marks the file as ours, so a stray SQLite file (the engine's, another app's)
# is refused instead of being given our tables.
APPLICATION_ID: Final = 0x4D424547

_V1: Final = (
    # One row per inbound platform message, written before the platform is acknowledged.
    # The UNIQUE pair recognises a redelivery; state moves pending -> processing ->
    # answered | failed, and a row found in `processing` at start was interrupted.
    """
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL CHECK (channel <> ''),
        platform_message_id TEXT NOT NULL CHECK (platform_message_id <> ''),
        chat_id TEXT NOT NULL,
        is_group INTEGER NOT NULL DEFAULT 0 CHECK (is_group IN (0, 1)),
        sender_id TEXT NOT NULL,
        sender_name TEXT,
        text TEXT NOT NULL,
        meta TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta)),
        received_at REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'processing', 'answered', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        claimed_at REAL,
        finished_at REAL,
        last_error TEXT,
        UNIQUE (channel, platform_message_id)
    )
    """,
    "CREATE INDEX inbox_open ON inbox (state, id) WHERE state IN ('pending', 'processing')",
    # Replies (and, later, proactive messages with no inbox row) waiting to be sent. At most
    # one reply per inbox row. `sending` marks an attempt in flight: found at start, it may or
    # may not have reached the platform.
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        inbox_id INTEGER UNIQUE REFERENCES inbox (id) ON DELETE CASCADE,
        channel TEXT NOT NULL CHECK (channel <> ''),
        chat_id TEXT NOT NULL,
        reply_to TEXT,
        text TEXT NOT NULL,
        meta TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta)),
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        next_attempt_at REAL NOT NULL,
        last_error TEXT,
        sent_at REAL,
        platform_message_id TEXT
    )
    """,
    "CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending'",
    "CREATE INDEX outbox_sending ON outbox (id) WHERE state = 'sending'",
    # One conversation per (channel, chat): a DM's chat or a group. A reset bumps
    # `generation`; history rows of older generations are kept but no longer recalled.
    """
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL CHECK (channel <> ''),
        chat_id TEXT NOT NULL,
        is_group INTEGER NOT NULL DEFAULT 0 CHECK (is_group IN (0, 1)),
        created_at REAL NOT NULL,
        last_active_at REAL NOT NULL,
        turns INTEGER NOT NULL DEFAULT 0,
        generation INTEGER NOT NULL DEFAULT 0,
        reset_at REAL,
        UNIQUE (channel, chat_id)
    )
    """,
    # The conversation history, with what the pipeline learnt about each message.
    """
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        generation INTEGER NOT NULL,
        inbox_id INTEGER REFERENCES inbox (id) ON DELETE SET NULL,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        sender_id TEXT,
        text TEXT NOT NULL,
        created_at REAL NOT NULL,
        surprise REAL CHECK (surprise IS NULL OR (surprise >= 0 AND surprise <= 1)),
        expert_id TEXT,
        total_ms REAL CHECK (total_ms IS NULL OR total_ms >= 0),
        timings TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(timings))
    )
    """,
    "CREATE INDEX messages_recent ON messages (session_id, generation, id)",
    "CREATE INDEX messages_inbox ON messages (inbox_id)",
    # Memory writes waiting for MBE: written durably off the critical path, flushed in
    # order when MBE answers again.
    """
    CREATE TABLE memory_queue (
        id INTEGER PRIMARY KEY,
        user_id TEXT NOT NULL CHECK (user_id <> ''),
        memory_type TEXT NOT NULL CHECK (memory_type <> ''),
        content TEXT NOT NULL CHECK (json_valid(content) AND json_type(content) = 'object'),
        importance REAL NOT NULL CHECK (importance >= 0 AND importance <= 1),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at REAL NOT NULL
    )
    """,
)

_V2: Final = (
    # A stranger's request to talk to the assistant (dm_policy = "pairing"): one per sender,
    # with a short code the owner approves (`mbe-gateway pairing approve CODE`).
    """
    CREATE TABLE pairing_requests (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL CHECK (channel <> ''),
        sender_id TEXT NOT NULL CHECK (sender_id <> ''),
        sender_name TEXT,
        chat_id TEXT NOT NULL,
        code TEXT NOT NULL UNIQUE CHECK (length(code) = 8),
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        UNIQUE (channel, sender_id)
    )
    """,
    # Senders the owner approved: they talk to the assistant under every dm_policy.
    """
    CREATE TABLE allowed_senders (
        channel TEXT NOT NULL CHECK (channel <> ''),
        sender_id TEXT NOT NULL CHECK (sender_id <> ''),
        sender_name TEXT,
        approved_at REAL NOT NULL,
        PRIMARY KEY (channel, sender_id)
    )
    """,
)

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (_V1, _V2)
SCHEMA_VERSION: Final = len(MIGRATIONS)
