"""The gateway's SQLite store: open it with `open_database`, then use one module per table.

from mbe_gateway.store import inbox, open_database
async with await open_database() as db:
    put = await inbox.put(db, channel="telegram", platform_message_id="42", ...)
"""

from mbe_gateway.store import exchanges, history, inbox, memory_queue, outbox, sessions
from mbe_gateway.store.db import Database, open_database
from mbe_gateway.store.history import HistoryMessage
from mbe_gateway.store.inbox import InboxMessage
from mbe_gateway.store.memory_queue import PendingMemory
from mbe_gateway.store.outbox import OutboxItem
from mbe_gateway.store.sessions import Session

__all__ = [
    "Database",
    "HistoryMessage",
    "InboxMessage",
    "OutboxItem",
    "PendingMemory",
    "Session",
    "exchanges",
    "history",
    "inbox",
    "memory_queue",
    "open_database",
    "outbox",
    "sessions",
]
