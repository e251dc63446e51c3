"""`lock.holder`: who holds the data dir, asked by `mbe-gateway mcp` before each call, without
ever keeping a daemon from starting."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mbe_gateway import lock

HOLD = """
import sys, time
from pathlib import Path
from mbe_gateway import lock
with lock.hold(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextmanager
def daemon_holding(data: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the data dir's lock, as a daemon does, until the block ends."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(data)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdin is not None
    assert process.stdout.readline() == "held\n"
    try:
        yield process
    finally:
        process.stdin.close()
        process.wait(timeout=30)


def test_no_lock_file_means_no_daemon(home: Path) -> None:
    assert lock.holder(home) is None


def test_a_running_daemon_is_named_by_its_pid_and_a_stopped_one_is_gone(home: Path) -> None:
    with daemon_holding(home) as daemon:
        assert lock.holder(home) == daemon.pid
    assert lock.holder(home) is None  # its pid is still in the file; the lock is not


def test_a_pid_reused_by_another_process_is_not_taken_for_a_daemon(home: Path) -> None:
    (home / lock.LOCK_FILE).write_text(f"{os.getpid()}\n")  # alive, holds nothing
    assert lock.holder(home) is None


ASK = """
import sys, threading
from pathlib import Path
from mbe_gateway import lock
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
asked = 0
while not done.is_set():
    lock.holder(Path(sys.argv[1]))
    asked += 1
print(asked)
"""


def test_asking_all_the_time_never_stops_a_daemon_from_starting(home: Path) -> None:
    """An MCP server asking in a tight loop while daemons start and stop, one after another:
    every start gets the lock (a question that took it, even for a moment, could refuse one)."""
    asker = subprocess.Popen(
        [sys.executable, "-c", ASK, str(home)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert asker.stdin is not None and asker.stdout is not None
    try:
        for _ in range(15):
            with daemon_holding(home) as daemon:
                assert lock.holder(home) == daemon.pid
    finally:
        asker.stdin.close()
    assert int(asker.stdout.read()) > 100
    assert asker.wait(timeout=30) == 0
