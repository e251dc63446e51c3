"""Opening the gateway database: migrations, restarts, and refusing files it must not touch."""

from __future__ import annotations

import inspect
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiosqlite
import anyio
import pytest

from mbe_gateway import paths
from mbe_gateway.errors import SchemaTooNew, StoreCorrupt, StoreError
from mbe_gateway.store import db as store_db
from mbe_gateway.store import inbox, open_database
from mbe_gateway.store.schema import APPLICATION_ID, SCHEMA_VERSION

pytestmark = pytest.mark.anyio

TABLES = {"inbox", "outbox", "sessions", "messages", "memory_queue"}


def _pragma(path: Path, name: str) -> object:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


def _side_files(path: Path) -> list[Path]:
    return [p for p in (Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")) if p.exists()]


async def test_first_start_creates_a_private_wal_database_with_every_table(home: Path) -> None:
    async with await open_database() as db:
        assert db.path == paths.gateway_db()
    path = paths.gateway_db()
    assert path.stat().st_mode & 0o777 == 0o600
    assert _pragma(path, "journal_mode") == "wal"
    assert _pragma(path, "user_version") == SCHEMA_VERSION
    assert _pragma(path, "application_id") == APPLICATION_ID
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    assert tables >= TABLES


async def test_data_survives_a_restart_and_migrations_do_not_run_twice(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    async with await open_database(path) as db:
        await inbox.put(
            db, channel="telegram", platform_message_id="1", chat_id="c", sender_id="u", text="hi"
        )
    async with await open_database(path) as db:
        again = await inbox.put(
            db, channel="telegram", platform_message_id="1", chat_id="c", sender_id="u", text="hi"
        )
        assert not again.is_new
        assert [m.text for m in await inbox.pending(db)] == ["hi"]


async def test_a_message_put_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    script = f"""
import anyio, os, signal
from pathlib import Path
from mbe_gateway.store import inbox, open_database
async def main():
    db = await open_database(Path({str(path)!r}))
    await inbox.put(db, channel="slack", platform_message_id="E1", chat_id="D1", sender_id="U1", text="kept")
    os.kill(os.getpid(), signal.SIGKILL)
anyio.run(main)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    async with await open_database(path) as db:
        assert [m.text for m in await inbox.pending(db)] == ["kept"]


async def test_a_database_from_a_newer_gateway_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    async with await open_database(path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = path.read_bytes()
    with pytest.raises(SchemaTooNew, match="newer mbe-gateway"):
        await open_database(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "content",
    [os.urandom(8192), b"SQLite format 3\x00" + os.urandom(50)],
    ids=["random-bytes", "header-only"],
)
async def test_a_file_that_is_not_a_database_is_refused_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "g.sqlite3"
    path.write_bytes(content)
    with pytest.raises(StoreCorrupt, match="left untouched") as caught:
        await open_database(path)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == content
    assert _side_files(path) == []


async def test_a_truncated_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    async with await open_database(path) as db:
        for i in range(300):
            await inbox.put(
                db, channel="t", platform_message_id=str(i), chat_id="c", sender_id="u", text="x" * 200
            )
    with sqlite3.connect(path) as conn:  # fold the WAL into the file, as a clean shutdown would
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for side in _side_files(path):
        side.unlink()
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(StoreCorrupt, match="truncated"):
        await open_database(path)
    assert path.read_bytes() == whole[: len(whole) // 2]


async def test_a_database_with_a_damaged_page_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    async with await open_database(path) as db:
        await inbox.put(db, channel="t", platform_message_id="1", chat_id="c", sender_id="u", text="x")
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damaged = bytearray(path.read_bytes())
    damaged[100:4096] = os.urandom(3996)  # the schema page, after a valid header
    path.write_bytes(bytes(damaged))
    with pytest.raises(StoreCorrupt, match="malformed"):
        await open_database(path)
    assert path.read_bytes() == bytes(damaged)


async def test_a_directory_in_place_of_the_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    path.mkdir()
    with pytest.raises(StoreError, match="is a directory"):
        await open_database(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read and write any file")
async def test_a_database_without_permission_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    async with await open_database(path):
        pass
    path.chmod(0o400)
    with pytest.raises(StoreError, match="writable"):
        await open_database(path)


async def test_another_applications_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('mine')")
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not the gateway's"):
        await open_database(path)
    assert path.read_bytes() == before


async def test_an_empty_file_becomes_a_new_database(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    path.touch()
    async with await open_database(path):
        pass
    assert _pragma(path, "user_version") == SCHEMA_VERSION


async def test_a_failing_migration_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "g.sqlite3"
    async with await open_database(path):
        pass
    broken = (("CREATE TABLE jobs (id INTEGER PRIMARY KEY)", "INSERT INTO no_such_table VALUES (1)"),)
    monkeypatch.setattr(store_db, "MIGRATIONS", store_db.MIGRATIONS + broken)
    monkeypatch.setattr(store_db, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="no_such_table"):
        await open_database(path)
    assert _pragma(path, "user_version") == SCHEMA_VERSION
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_schema WHERE name = 'jobs'").fetchone()[0] == 0


async def test_a_closed_database_says_so(tmp_path: Path) -> None:
    db = await open_database(tmp_path / "g.sqlite3")
    await db.close()
    await db.close()
    with pytest.raises(StoreError, match="closed"):
        await inbox.pending(db)


async def test_only_promised_writes_pay_for_an_fsync(tmp_path: Path) -> None:
    async with await open_database(tmp_path / "g.sqlite3") as db:
        async with db.transaction(durable=True) as conn:
            during = next(iter(await conn.execute_fetchall("PRAGMA synchronous")))[0]
        async with db.connection() as conn:
            after = next(iter(await conn.execute_fetchall("PRAGMA synchronous")))[0]
    assert (during, after) == (2, 1)  # FULL for the durable commit, NORMAL otherwise


def test_the_aiosqlite_internals_run_relies_on_are_still_there() -> None:
    """Database.run uses aiosqlite's private Connection._execute and ._conn; an aiosqlite
    release that moves them must fail here, loudly, not deep inside the daemon."""
    execute = getattr(aiosqlite.Connection, "_execute", None)
    assert inspect.iscoroutinefunction(execute), "aiosqlite.Connection._execute(fn, *args) is gone"
    assert list(inspect.signature(execute).parameters)[:2] == ["self", "fn"]
    assert isinstance(inspect.getattr_static(aiosqlite.Connection, "_conn"), property), (
        "Connection._conn is gone"
    )


async def test_a_store_call_runs_whole_in_the_connection_thread_and_commits_once(tmp_path: Path) -> None:
    seen: list[tuple[int, bool, int]] = []

    def put_two(conn: sqlite3.Connection) -> int:
        seen.append(
            (threading.get_ident(), conn.in_transaction, conn.execute("PRAGMA synchronous").fetchone()[0])
        )
        for n in ("1", "2"):
            conn.execute(
                "INSERT INTO inbox (channel, platform_message_id, chat_id, is_group, sender_id, text, meta,"
                " received_at) VALUES ('t', ?, 'c', 0, 's', 'hi', '{}', 0)",
                (n,),
            )
        return int(conn.execute("SELECT count(*) FROM inbox").fetchone()[0])

    async with await open_database(tmp_path / "g.sqlite3") as db:
        assert await db.run(put_two, durable=True) == 2
        assert (await db.fetch("PRAGMA synchronous"))[0][0] == 1  # back to NORMAL
        assert not await db.run(lambda conn: conn.in_transaction, write=False)
    assert seen == [(seen[0][0], True, 2)] and seen[0][0] != threading.get_ident()  # FULL: fsynced
    with sqlite3.connect(tmp_path / "g.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM inbox").fetchone()[0] == 2


async def test_a_store_call_that_fails_halfway_writes_nothing_and_names_the_file(tmp_path: Path) -> None:
    def put_then_break(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO inbox (channel, platform_message_id, chat_id, is_group, sender_id, text, meta,"
            " received_at) VALUES ('t', '1', 'c', 0, 's', 'hi', '{}', 0)"
        )
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    async with await open_database(tmp_path / "g.sqlite3") as db:
        with pytest.raises(StoreError, match=r"g\.sqlite3: no such table"):
            await db.run(put_then_break)
        assert await inbox.pending(db) == []
        assert not await db.run(lambda conn: conn.in_transaction, write=False)


async def test_a_store_call_cancelled_while_running_still_completes(tmp_path: Path) -> None:
    def slow_put(conn: sqlite3.Connection) -> None:
        time.sleep(0.1)
        conn.execute(
            "INSERT INTO inbox (channel, platform_message_id, chat_id, is_group, sender_id, text, meta,"
            " received_at) VALUES ('t', '1', 'c', 0, 's', 'hi', '{}', 0)"
        )

    async with await open_database(tmp_path / "g.sqlite3") as db:
        with anyio.move_on_after(0.02) as scope:
            await db.run(slow_put)
        assert not scope.cancelled_caught  # shielded: the caller waited for the write to finish
        assert len(await inbox.pending(db)) == 1


def _insert(conn: sqlite3.Connection, pmid: str) -> None:
    conn.execute(
        "INSERT INTO inbox (channel, platform_message_id, chat_id, is_group, sender_id, text, meta,"
        " received_at) VALUES ('t', ?, 'c', 0, 's', 'hi', '{}', 0)",
        (pmid,),
    )


async def _while_busy(db: store_db.Database, calls: list[tuple[str, object]]) -> dict[str, object]:
    """Run `calls` (name, fn or (fn, durable)) concurrently while a slow call holds the
    connection, so that they wait in line together; each one's result or exception by name."""
    outcomes: dict[str, object] = {}

    def slow(conn: sqlite3.Connection) -> None:
        time.sleep(0.2)
        _insert(conn, "slow")

    async def call(name: str, fn: object, durable: bool) -> None:
        try:
            outcomes[name] = await db.run(fn, durable=durable)  # type: ignore[arg-type]
        except Exception as e:
            outcomes[name] = e

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, "slow", slow, False)
        await anyio.sleep(0.05)  # the slow call is running in the connection's thread
        for name, spec in calls:
            fn, durable = spec if isinstance(spec, tuple) else (spec, False)
            tg.start_soon(call, name, fn, durable)
    return outcomes


async def test_calls_made_while_the_store_is_busy_share_one_hop_one_commit_and_one_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[tuple[int, int]] = []  # (calls, synchronous during the commit)
    apply = store_db._apply

    def counted(conn: sqlite3.Connection, batch: list[object]) -> None:
        seen: list[int] = []
        conn.set_trace_callback(
            lambda sql: (
                seen.append(conn.execute("PRAGMA synchronous").fetchone()[0]) if sql == "COMMIT" else None
            )
        )
        try:
            apply(conn, batch)  # type: ignore[arg-type]
        finally:
            conn.set_trace_callback(None)
        batches.append((len(batch), seen[0] if seen else -1))

    async with await open_database(tmp_path / "g.sqlite3") as db:
        monkeypatch.setattr(store_db, "_apply", counted)
        calls: list[tuple[str, object]] = [
            (f"m{n}", (lambda conn, n=n: _insert(conn, f"m{n}"), n == 3)) for n in range(10)
        ]
        outcomes = await _while_busy(db, calls)
        assert outcomes == {"slow": None, **{f"m{n}": None for n in range(10)}}
        rows = [m.platform_message_id for m in await inbox.pending(db)]
    # The slow call alone, then the ten waiting in one commit, fsynced because one is durable.
    assert batches[:2] == [(1, 1), (10, 2)]
    assert rows == ["slow", *(f"m{n}" for n in range(10))]  # in the order they were made


async def test_a_call_that_fails_inside_a_shared_commit_undoes_only_its_own_writes(tmp_path: Path) -> None:
    def breaks(conn: sqlite3.Connection) -> None:
        _insert(conn, "broken")
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    def refuses(conn: sqlite3.Connection) -> None:
        _insert(conn, "refused")
        raise ValueError("not this one")

    async with await open_database(tmp_path / "g.sqlite3") as db:
        outcomes = await _while_busy(
            db,
            [
                ("before", lambda conn: _insert(conn, "before")),
                ("broken", breaks),
                ("refused", refuses),
                ("after", lambda conn: _insert(conn, "after")),
                ("read", lambda conn: conn.execute("SELECT count(*) FROM inbox").fetchone()[0]),
            ],
        )
        rows = [m.platform_message_id for m in await inbox.pending(db)]
        assert not await db.run(lambda conn: conn.in_transaction, write=False)
    assert isinstance(outcomes["broken"], StoreError) and "no such table" in str(outcomes["broken"])
    assert isinstance(outcomes["refused"], ValueError)
    assert outcomes["read"] == 3  # it saw the writes made before it in its batch, not the undone ones
    assert rows == ["slow", "before", "after"]


async def test_calls_waiting_on_a_closed_database_are_each_told_so(tmp_path: Path) -> None:
    db = await open_database(tmp_path / "g.sqlite3")

    async def close_soon() -> None:  # in line behind the slow call, ahead of the others
        await anyio.sleep(0.02)
        await db.close()

    async with anyio.create_task_group() as tg:
        tg.start_soon(close_soon)
        outcomes = await _while_busy(
            db, [(f"m{n}", lambda conn, n=n: _insert(conn, f"m{n}")) for n in range(3)]
        )
    assert outcomes["slow"] is None
    assert all(isinstance(outcomes[f"m{n}"], StoreError) for n in range(3))


async def test_a_read_does_not_wait_for_a_write_in_progress(tmp_path: Path) -> None:
    writing, release = threading.Event(), threading.Event()
    released: list[bool] = []

    def held_write(conn: sqlite3.Connection) -> None:
        _insert(conn, "new")
        writing.set()
        released.append(release.wait(10))  # False: only the timeout let it go (the read waited)

    async with await open_database(tmp_path / "g.sqlite3") as db:
        await db.run(lambda conn: _insert(conn, "old"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(db.run, held_write)
            await anyio.to_thread.run_sync(writing.wait)
            seen = [m.platform_message_id for m in await inbox.pending(db)]
            release.set()
        assert seen == ["old"]  # the committed state, read while the write was under way
        assert released == [True]
        assert [m.platform_message_id for m in await inbox.pending(db)] == ["old", "new"]


async def test_a_read_that_tries_to_write_is_refused(tmp_path: Path) -> None:
    async with await open_database(tmp_path / "g.sqlite3") as db:
        with pytest.raises(StoreError, match="readonly"):
            await db.run(lambda conn: _insert(conn, "sneaky"), write=False)
        assert await inbox.pending(db) == []


@pytest.mark.anyio
async def test_a_database_locked_by_another_program_is_reported_and_nothing_is_half_written(
    tmp_path: Path,
) -> None:
    """Say a backup tool or a stray sqlite3 shell holds the write lock: the put fails after the
    busy timeout naming the file and the likely cause, and succeeds once the lock is let go."""
    path = tmp_path / "g.sqlite3"
    async with await open_database(path) as db:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("PRAGMA busy_timeout = 0")
        other.execute("BEGIN IMMEDIATE")
        message = {"channel": "t", "platform_message_id": "1", "chat_id": "c", "sender_id": "s", "text": "hi"}
        try:
            started = time.monotonic()
            with pytest.raises(StoreError, match=r"g\.sqlite3: database is locked; is another mbe-gateway"):
                await inbox.put(db, **message)
            assert time.monotonic() - started >= store_db.BUSY_TIMEOUT_MS / 1000 * 0.9  # it waited first
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert (await inbox.put(db, **message)).is_new
        assert [row.text for row in await inbox.pending(db)] == ["hi"]
