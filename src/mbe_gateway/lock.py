"""One daemon per data dir: an exclusive `flock` on `<data dir>/gateway.lock`.

Two daemons on the same data would each answer every message and race over the outbox, so
`serve` takes this lock before it opens anything. It is a kernel lock on an open file, not a
pid file: the kernel drops it when the holder exits, however it exits (kill -9 included), so
a stale file never stops a restart. The pid written inside is only for the error message.
The descriptor is not inherited (Python opens files close-on-exec), so the engine child,
which may outlive a killed daemon for a moment, never keeps the lock.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mbe_gateway.errors import AlreadyRunning

LOCK_FILE = "gateway.lock"


@contextmanager
def hold(data_dir: Path) -> Iterator[Path]:
    """Hold the data dir's lock for the block; AlreadyRunning (naming the holder) if it is taken."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _pid_in(fd)
            who = f"another mbe-gateway (pid {holder})" if holder else "another mbe-gateway"
            raise AlreadyRunning(f"{who} is running on {data_dir}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock; the file stays, harmless, for the next run


def _pid_in(fd: int) -> int | None:
    """The holder's pid as it wrote it (None while it has not yet written it)."""
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


def holder(data_dir: Path) -> int | None:
    """The pid of the daemon holding `data_dir`, or None when no daemon holds it.

    For processes that must know whether a daemon runs without ever stopping one from
    starting (`mbe-gateway mcp` asks before each call). Testing the lock means taking it for a
    moment, and a daemon starting in that moment would be refused; so the lock is tested only
    when the pid in the file is alive, which is always so while a daemon holds it (it writes
    its pid right after locking). A dead or absent pid means no daemon without touching the
    lock; an alive one (a daemon, or a reused pid) is settled by a shared, non-blocking try.
    """
    path = data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        pid = _pid_in(fd)
        if pid is None or not _alive(pid):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return pid
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
