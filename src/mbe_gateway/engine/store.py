"""The engine's SQLite file: its schema, and how it is opened.

One connection, used synchronously from the event loop. Every query the tools run is a
few indexed lookups (well under a millisecond), and running them without awaiting makes
each tool call atomic with respect to the others: no locks, no threads, no interleaving.
WAL lets a second reader (another engine process pointed at the same file, e.g. Claude
Desktop's) work beside this one; `busy_timeout` makes a second writer wait its turn.

Rows are only ever inserted, never updated or deleted; the search indexes beside the
observations and memories (index.py) are written in the same transaction as their rows.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mbe_gateway.engine import index
from mbe_gateway.errors import SchemaTooNew, StoreCorrupt, StoreError

SCHEMA_VERSION = 1
APPLICATION_ID = 0x4D424545
"""\"MBEE\": marks the file as the engine's (the gateway's own database is \"MBEG\")."""

_SCHEMA = """
CREATE TABLE observations (
    id          INTEGER PRIMARY KEY,
    user_id     TEXT NOT NULL,
    created_at  REAL NOT NULL,            -- Unix seconds
    text        TEXT NOT NULL,            -- normalised (text.normalize)
    text_hash   TEXT NOT NULL,            -- sha256 of text: finds exact repeats
    terms       TEXT NOT NULL,            -- text.terms, joined by spaces
    surprise    REAL NOT NULL,
    is_novel    INTEGER NOT NULL,
    username    TEXT,
    channel     TEXT,
    domain      TEXT
);
CREATE INDEX observations_by_user ON observations (user_id, created_at);
CREATE INDEX observations_by_text ON observations (user_id, text_hash);

CREATE TABLE memories (
    id          INTEGER PRIMARY KEY,
    memory_id   TEXT NOT NULL UNIQUE,
    user_id     TEXT NOT NULL,
    memory_type TEXT NOT NULL,
    content     TEXT NOT NULL,            -- a JSON object
    importance  REAL NOT NULL,
    created_at  REAL NOT NULL,
    terms       TEXT NOT NULL             -- text.terms of its text values, joined by spaces
);
CREATE INDEX memories_by_time ON memories (user_id, created_at);
CREATE INDEX memories_by_importance ON memories (user_id, importance);
CREATE INDEX memories_by_type ON memories (user_id, memory_type, created_at);

CREATE TABLE routes (
    id          INTEGER PRIMARY KEY,
    user_id     TEXT NOT NULL,
    created_at  REAL NOT NULL,
    expert_id   TEXT NOT NULL,
    expert_name TEXT NOT NULL,
    confidence  REAL NOT NULL
);
CREATE INDEX routes_by_user ON routes (user_id, created_at);
"""


def open_db(path: Path) -> sqlite3.Connection:
    """Open (creating it, private, with its directory) the engine's database at `path`.

    Everything that could refuse the file is read before anything is written to it:
    StoreCorrupt for a file that is not a database, StoreError for another application's
    database (the gateway's own included), SchemaTooNew for a newer engine's. A refused
    file is left exactly as it was.
    """
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not the engine database; point --db at a file")
    _create_private(path)
    try:
        # A larger statement cache than the default 128: lookups with IN (?, ?, …) are one
        # statement per number of terms, and re-preparing one costs ~15 µs.
        conn = sqlite3.connect(path, isolation_level=None, cached_statements=512)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the engine database {path}: {exc}; check its permissions") from exc
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        owner = conn.execute("PRAGMA application_id").fetchone()[0]
        has_tables = conn.execute("SELECT count(*) FROM sqlite_schema WHERE type = 'table'").fetchone()[0]
        if owner not in (0, APPLICATION_ID) or (owner == 0 and has_tables):
            raise StoreError(
                f"{path} is an SQLite database, but not the engine's (the gateway's, or another "
                "application's?); it was left untouched: point --db elsewhere"
            )
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the engine database {path} was written by a newer mbe-gateway (schema {version}, "
                f"this one knows {SCHEMA_VERSION}); it was left untouched: upgrade mbe-gateway"
            )
        journal = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if journal != "wal":
            raise StoreError(f"{path}: cannot use WAL mode (got {journal}); is it on a network filesystem?")
        conn.execute("PRAGMA synchronous = NORMAL")
        if version < SCHEMA_VERSION:
            with transaction(conn):  # re-read under the write lock: another engine may have won
                if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                    _create(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreCorrupt(
            f"{path} is not a usable engine database ({exc}); it was left as it is: move it aside "
            "or point --db elsewhere"
        ) from exc
    except StoreError:
        conn.close()
        raise
    return conn


def _create_private(path: Path) -> None:
    """Create an absent database file 0600 (and its directory 0700) ourselves: it holds what
    people said and asked to be remembered, and SQLite gives its -wal and -shm files the
    database file's permissions."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create the engine database {path}: {exc.strerror}") from None


def _create(conn: sqlite3.Connection) -> None:
    for statement in [*_SCHEMA.split(";"), *index.SCHEMA]:
        if statement.strip():
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK if the block raises: all of a call's writes or none."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def insert(conn: sqlite3.Connection, sql: str, args: tuple[object, ...]) -> int:
    """Run one INSERT; the new row's id."""
    rowid = conn.execute(sql, args).lastrowid
    if rowid is None:
        raise StoreError(f"the engine database did not report the id of a new row ({sql.split('(')[0]})")
    return rowid
