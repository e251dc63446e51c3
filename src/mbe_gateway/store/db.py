"""Opening the gateway's SQLite file: checks, pragmas, migrations, and serialised access.

Durability: WAL with `synchronous = NORMAL`, and FULL for the commits that carry a promise.
With NORMAL every commit survives a `kill -9` (the WAL is in the OS cache) but the last ones
may roll back on a power cut or kernel crash; with FULL the commit fsyncs the WAL, which
also makes every earlier commit durable (the WAL is replayed as a prefix). Measured here:
NORMAL 0.007 ms, FULL 0.25 ms when the disk is quiet and ~4 ms p50 / 12 ms p99 when other
processes are writing. So only two writes pay for an fsync (`durable=True`):
the inbox put (the platform forgets a message once we acknowledge it) and the outbox claim
(a reply must be marked "sending" on disk before it can reach the platform, or a power cut
could make us send it twice). Everything else is redone safely if lost.

A file that is not a healthy gateway database (random bytes, truncated, a directory, no
permission, another application's database, a newer schema) is refused with StoreError and
left exactly as it was: nothing is recreated or modified before these checks pass.

One `Database` holds two connections, one that writes and one that only reads (WAL lets a
read run while a write commits, so reads never wait for an fsync). An anyio lock per
connection serialises its users (a transaction on a shared connection must not interleave
with another task's statements), and each operation is shielded from cancellation so a
write either completes or never started.

The table modules go through `Database.run`: their SQL is a plain function run whole in
aiosqlite's worker thread, transaction and all, so a store call costs one thread hop instead
of one per statement (a message took ~27 hops, and the hops, not SQLite, were the daemon's
bottleneck: aiosqlite ~37% of its CPU, event-loop wake-ups another ~37%).

Group commit: calls that arrive while another is running wait in line, and the next one to
get the connection runs everything waiting in one hop and one transaction, each call inside
its own savepoint (one that raises undoes only its own writes), with one commit, fsynced if
any of them is durable. Under load that turns twenty inbox puts and their twenty fsyncs into
one; a call alone pays what it paid before. Calls keep the order they were made in.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Generic, TypeVar, cast

import aiosqlite
import anyio

from mbe_gateway import paths
from mbe_gateway.errors import SchemaTooNew, StoreCorrupt, StoreError
from mbe_gateway.store.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION

BUSY_TIMEOUT_MS: Final = 5000
_HEADER: Final = b"SQLite format 3\x00"
_MIN_SQLITE: Final = (3, 35, 0)  # UPDATE ... RETURNING

T = TypeVar("T")


class Database:
    """The open gateway database; use the table modules (inbox, outbox, ...), not SQL."""

    def __init__(self, path: Path, conn: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self.path = path
        self._writer = _Line(conn)
        self._reader = _Line(reader)

    def __repr__(self) -> str:
        return f"<Database {self.path}>"

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()

    async def run(
        self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = False, write: bool = True
    ) -> T:
        """`fn(connection)` in a connection's thread, in one hop: inside BEGIN IMMEDIATE ...
        COMMIT (rolled back if it raises) when `write`; else `fn` only reads, and runs on the
        read connection (in autocommit), so it never waits behind a write's fsync.

        fn is plain synchronous sqlite3 code and must not touch the event loop; it runs while
        the loop is free to serve others. durable: fsync the commit (see the module docstring).
        Calls made while their connection is busy run together (see group commit, above).

        aiosqlite has no public call for "run this function in your thread", so this uses its
        private `Connection._execute(fn)` and `Connection._conn`; pyproject pins aiosqlite to
        the range where they were read and tested (tests/test_store_db.py checks they exist).
        """
        call = _Call(fn, durable, write or durable)
        line = self._writer if call.write else self._reader
        with _translated(self.path):
            await line.run(call, self.path)
            return call.outcome()

    async def fetch(
        self, sql: str, parameters: Sequence[Any] = (), *, durable: bool = False, write: bool = False
    ) -> list[sqlite3.Row]:
        """One statement's rows, through `run` (a read unless `write`)."""
        return await self.run(
            lambda conn: conn.execute(sql, parameters).fetchall(), durable=durable, write=write
        )

    @asynccontextmanager
    async def connection(self, *, durable: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, alone, for reads or single-statement writes (autocommit); one thread
        hop per statement, so the table modules use `run` and this serves tests and inspection.

        durable: fsync each commit, so it survives a power cut, not only a crash.
        """
        async with self._writer.lock:
            with anyio.CancelScope(shield=True), _translated(self.path):
                conn = self._writer.open(self.path)
                if durable:
                    await conn.execute("PRAGMA synchronous = FULL")
                try:
                    yield conn
                finally:
                    if durable:
                        await conn.execute("PRAGMA synchronous = NORMAL")

    @asynccontextmanager
    async def transaction(self, *, durable: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """The connection inside BEGIN IMMEDIATE ... COMMIT (rolled back on any error)."""
        async with self.connection(durable=durable) as conn:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                await conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                raise


class _Line:
    """One connection and the calls waiting for it: the writer's or the reader's."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn: aiosqlite.Connection | None = conn
        self.lock = anyio.Lock(fast_acquire=True)  # no event-loop round trip when free
        self.waiting: list[_Call[Any]] = []  # calls made, not yet run: the next batch

    def open(self, path: Path) -> aiosqlite.Connection:
        if self.conn is None:
            raise StoreError(f"{path}: the database is closed")
        return self.conn

    async def run(self, call: _Call[Any], path: Path) -> None:
        """Settle `call`, with every call waiting beside it; shielded: a write either completes
        or never started."""
        self.waiting.append(call)
        # The lock is FIFO and taken without a pause when free, so the order of `waiting` is
        # the order in which callers get the lock: whoever gets it runs every call waiting
        # (its own included, unless an earlier holder already ran it in its batch).
        with anyio.CancelScope(shield=True):
            async with self.lock:
                if call.done:
                    return
                batch, self.waiting = self.waiting, []
                try:
                    conn = self.open(path)
                    in_thread = cast(Callable[..., Awaitable[None]], conn._execute)
                    await in_thread(_apply, conn._conn, batch)
                except BaseException as e:  # not one call's failure: the batch as a whole
                    for waiting in batch:
                        waiting.fail(e)
                    if not isinstance(e, Exception):
                        raise

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            async with self.lock:
                if self.conn is not None:
                    conn, self.conn = self.conn, None
                    await conn.close()


class _Call(Generic[T]):
    """One `Database.run` call: what to run, and (once run) its result or its exception."""

    __slots__ = ("done", "durable", "error", "fn", "result", "write")

    def __init__(self, fn: Callable[[sqlite3.Connection], T], durable: bool, write: bool) -> None:
        self.fn, self.durable, self.write = fn, durable, write
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = None

    def settle(self, conn: sqlite3.Connection) -> None:
        try:
            self.result = self.fn(conn)
        except Exception as e:
            self.error = e
        self.done = True

    def fail(self, error: BaseException) -> None:
        self.result, self.error, self.done = None, error, True

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return cast(T, self.result)


def _apply(conn: sqlite3.Connection, batch: Sequence[_Call[Any]]) -> None:
    """`Database.run`'s body for a batch of calls, in the connection's thread: every call is
    settled (its result or its own exception) unless this raises, which fails them all."""
    durable = any(call.durable for call in batch)
    if durable:
        conn.execute("PRAGMA synchronous = FULL")
    try:
        if not any(call.write for call in batch):
            for call in batch:
                call.settle(conn)
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            if len(batch) == 1:
                batch[0].settle(conn)
                if batch[0].error is not None:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    return
            else:
                for call in batch:
                    _settle_alone(conn, call)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        if durable:
            conn.execute("PRAGMA synchronous = NORMAL")


def _settle_alone(conn: sqlite3.Connection, call: _Call[Any]) -> None:
    """One call of a batch inside its own savepoint: if it raises, its writes are undone and
    the others' are kept."""
    if not call.write:
        call.settle(conn)
        return
    conn.execute("SAVEPOINT call")
    call.settle(conn)
    if call.error is not None:
        if not conn.in_transaction:  # SQLite gave up the whole transaction (disk full, I/O error)
            raise call.error
        conn.execute("ROLLBACK TO call")
    conn.execute("RELEASE call")


@contextmanager
def _translated(path: Path) -> Iterator[None]:
    """Turns sqlite3 errors into StoreError/StoreCorrupt naming the file and what to do."""
    try:
        yield
    except sqlite3.Error as e:
        raise _store_error(path, e) from e


def _store_error(path: Path, error: sqlite3.Error) -> StoreError:
    message = str(error)
    if isinstance(error, sqlite3.DatabaseError) and (
        "malformed" in message or "not a database" in message or "corrupt" in message
    ):
        return StoreCorrupt(f"{path}: {message}. {_leave_it(path)}")
    if "locked" in message or "busy" in message:
        return StoreError(f"{path}: {message}; is another mbe-gateway using it?")
    return StoreError(f"{path}: {message}")


def _leave_it(path: Path) -> str:
    return (
        f"It was left untouched: restore a backup, or move it aside (mv {path} {path}.broken) "
        "and start again with an empty database"
    )


async def open_database(path: Path | None = None) -> Database:
    """Open (creating if absent) and migrate the gateway database; refuse anything unhealthy.

    Shielded: a cancel in the middle of `aiosqlite.connect` would leave its thread running
    with no handle to close it, and that thread fails loudly once the event loop is gone
    (a client that hangs up on `mbe-gateway mcp` during a call did this). Opening is quick.
    """
    path = path if path is not None else paths.gateway_db()
    if sqlite3.sqlite_version_info < _MIN_SQLITE:
        raise StoreError(f"SQLite {sqlite3.sqlite_version} is too old; mbe-gateway needs 3.35 or newer")
    _check_file(path)
    _create_private(path)
    with anyio.CancelScope(shield=True):
        try:
            conn = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as e:
            raise _store_error(path, e) from e
        try:
            conn.row_factory = sqlite3.Row
            await _prepare(path, conn)
            reader = await _open_reader(path)
        except BaseException:
            await conn.close()
            raise
    return Database(path, conn, reader)


async def _open_reader(path: Path) -> aiosqlite.Connection:
    """The second connection, for reads: WAL lets it read while the writer commits, so a read
    (recent history, the outbox's due replies) never waits for a write's fsync."""
    try:
        reader = await aiosqlite.connect(path, isolation_level=None)
    except sqlite3.Error as e:
        raise _store_error(path, e) from e
    try:
        reader.row_factory = sqlite3.Row
        await reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await reader.execute("PRAGMA synchronous = NORMAL")
        await reader.execute("PRAGMA query_only = ON")  # a "read" that writes is a bug: refuse it
    except BaseException as e:
        with anyio.CancelScope(shield=True):
            await reader.close()
        if isinstance(e, sqlite3.Error):
            raise _store_error(path, e) from e
        raise
    return reader


def _check_file(path: Path) -> None:
    """Refuse, before SQLite touches it, a path that is not a readable, writable, whole SQLite
    file (an empty or absent file is a new database)."""
    if path.is_dir():
        raise StoreError(f"{path}: is a directory, not the gateway database; move it away")
    try:
        with path.open("rb") as f:
            header = f.read(100)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        _check_writable_dir(path)
        return
    except PermissionError:
        raise StoreError(f"{path}: permission denied; it must be readable and writable by you") from None
    except OSError as e:
        raise StoreError(f"{path}: cannot be read ({e.strerror})") from None
    if not os.access(path, os.W_OK):
        raise StoreError(f"{path}: read-only; it must be writable by you (chmod u+w {path})")
    _check_writable_dir(path)
    if size == 0:
        return
    if not header.startswith(_HEADER):
        raise StoreCorrupt(f"{path}: not an SQLite database. {_leave_it(path)}")
    if len(header) < 100:
        raise StoreCorrupt(f"{path}: truncated ({size} bytes). {_leave_it(path)}")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    change_counter, pages = header[24:28], int.from_bytes(header[28:32], "big")
    if header[92:96] == change_counter and pages and size < pages * page_size:
        raise StoreCorrupt(
            f"{path}: truncated ({size} bytes; its header says {pages * page_size}). {_leave_it(path)}"
        )


def _create_private(path: Path) -> None:
    """Create an absent database file 0600 ourselves: it holds people's conversations, and
    SQLite gives its -wal and -shm files the database file's permissions."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return
    except OSError as e:
        raise StoreError(f"{path}: cannot be created ({e.strerror})") from None


def _check_writable_dir(path: Path) -> None:
    """SQLite needs to create the -wal and -shm files beside the database."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(f"{parent}: permission denied; the data directory must be writable by you")


async def _pragma(conn: aiosqlite.Connection, name: str) -> Any:
    rows = list(await conn.execute_fetchall(f"PRAGMA {name}"))
    return rows[0][0] if rows else None


async def _prepare(path: Path, conn: aiosqlite.Connection) -> None:
    """Pragmas and migrations; reads everything that could refuse the file before writing."""
    try:
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        version = await _pragma(conn, "user_version")
        application_id = await _pragma(conn, "application_id")
        tables = await conn.execute_fetchall("SELECT name FROM sqlite_schema WHERE type = 'table'")
        _check_ownership(path, version, application_id, has_tables=bool(list(tables)))
        journal = await _pragma(conn, "journal_mode = WAL")
        if journal != "wal":
            raise StoreError(f"{path}: cannot use WAL mode (got {journal}); is it on a network filesystem?")
        await conn.execute("PRAGMA synchronous = NORMAL")
        await conn.execute("PRAGMA foreign_keys = ON")
        await _migrate(path, conn)
    except sqlite3.Error as e:
        raise _store_error(path, e) from e


def _check_ownership(path: Path, version: int, application_id: int, *, has_tables: bool) -> None:
    if application_id not in (0, APPLICATION_ID) or (application_id == 0 and has_tables):
        raise StoreError(
            f"{path}: an SQLite database, but not the gateway's (another application's?); "
            "it was left untouched. Point MBE_GATEWAY_HOME elsewhere or move the file"
        )
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{path}: written by a newer mbe-gateway (schema v{version}; this one knows up to "
            f"v{SCHEMA_VERSION}). Upgrade mbe-gateway; the file was left untouched"
        )


async def _migrate(path: Path, conn: aiosqlite.Connection) -> None:
    """Run every pending migration in one transaction (all or nothing), durably."""
    with anyio.CancelScope(shield=True):
        await conn.execute("PRAGMA synchronous = FULL")
        await conn.execute("BEGIN IMMEDIATE")
        try:
            version = await _pragma(conn, "user_version")  # again: another process may have migrated
            if version > SCHEMA_VERSION:
                _check_ownership(path, version, APPLICATION_ID, has_tables=True)
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    await conn.execute(statement)
            if version < SCHEMA_VERSION:
                await conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                await conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            await conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            raise
        finally:
            await conn.execute("PRAGMA synchronous = NORMAL")
