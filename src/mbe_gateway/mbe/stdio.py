"""Our own MCP stdio transport: the server as our child, newline-delimited JSON-RPC on its pipes.

Why not the SDK's `stdio_client`: we need the process handle (to notice a child that dies
while idle, which the SDK's Client never reports, and to say which pid died), a child
environment we choose, and stderr in our log file. Owning the pipes also lets messages go
straight from the caller's task to the pipe and from the pipe to the session's reader,
without the two relay tasks and memory streams the SDK puts in between
(bench/mcp_roundtrip.py measures the difference).

Shutdown follows the MCP spec and the SDK: close the child's stdin, give it time to exit,
then SIGTERM its process group, then SIGKILL; the child runs in its own session so the
whole group (anything it spawned) goes with it and nothing is orphaned.
"""

from __future__ import annotations

import logging
import os
import signal
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import anyio
import anyio.abc
import mcp_types
from mcp.shared.message import SessionMessage

from mbe_gateway.errors import MBEUnavailable
from mbe_gateway.mbe.servers import StdioServer
from mbe_gateway.paths import ENV_HOME

log = logging.getLogger(__name__)

# What every program needs (the SDK's own list), plus locale, temp dir and time zone, plus
# what lets a Python server find its packages when it is run from a checkout or a venv.
ESSENTIAL_ENV: Final = (
    "HOME",
    "LOGNAME",
    "PATH",
    "SHELL",
    "TERM",
    "USER",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "TZ",
    "PYTHONPATH",
    "PYTHONHOME",
    "VIRTUAL_ENV",
)

STDIN_CLOSE_GRACE: Final = 2.0  # the server's time to exit on its own once its stdin closes
SIGTERM_GRACE: Final = 2.0  # then SIGTERM to the group, and this long before SIGKILL
_POLL: Final = 0.01
ERRLOG_ROTATE_BYTES: Final = 1_000_000


def child_environment(server: StdioServer, *, home: Path) -> dict[str, str]:
    """The child's whole environment: essentials, MBE_GATEWAY_HOME, `pass_env`, then `env`."""
    env: dict[str, str] = {}
    for name in (*ESSENTIAL_ENV, *server.pass_env):
        value = os.environ.get(name)
        if value is not None and not value.startswith("()"):  # skip exported shell functions
            env[name] = value
    env[ENV_HOME] = str(home)
    env.update(server.env)
    return env


def _open_errlog(path: Path, server: StdioServer) -> int:
    """Open the child's stderr file for appending, rotating it once it grows past ~1 MB.

    A marker line per start lets a reader tell one run's traceback from the next one's.
    Returns a raw descriptor: the child inherits its own copy, ours is closed right after.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with suppress(FileNotFoundError):
        if path.stat().st_size > ERRLOG_ROTATE_BYTES:
            path.replace(path.with_name(path.name + ".1"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    os.write(fd, f"--- {stamp} starting {server.name} ---\n".encode())
    return fd


class ChildTransport:
    """An MCP `Transport` (async context manager giving a read and a write stream) over a child.

    After entering, `process` is the running child and `ended` is set as soon as its stdout
    reaches end-of-file, which is how a dead child shows itself first.
    """

    def __init__(self, server: StdioServer, *, errlog: Path, home: Path) -> None:
        self.server = server
        self.errlog = errlog
        self.home = home
        self.ended = anyio.Event()
        self._process: anyio.abc.Process | None = None

    @property
    def process(self) -> anyio.abc.Process:
        if self._process is None:
            raise RuntimeError("the MBE child is not running: enter the transport first")
        return self._process

    async def __aenter__(self) -> tuple[_LineReader, _LineWriter]:
        env = child_environment(self.server, home=self.home)
        fd = _open_errlog(self.errlog, self.server)
        try:
            self._process = await anyio.open_process(
                list(self.server.command), env=env, stderr=fd, cwd=self.server.cwd, start_new_session=True
            )
        except OSError as exc:
            raise MBEUnavailable(
                f"cannot start the MBE server {self.server.command[0]!r}: {exc.strerror or exc}; "
                "check [mbe] command in the config (is MBE installed?)"
            ) from exc
        finally:
            os.close(fd)
        log.debug(
            "MBE server spawned",
            extra={"server": self.server.name, "pid": self._process.pid, "env_names": sorted(env)},
        )
        assert self._process.stdout is not None and self._process.stdin is not None
        return _LineReader(self._process.stdout, self.ended), _LineWriter(self._process.stdin)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.ended.set()
        if self._process is not None:
            await stop(self._process)


async def stop(process: anyio.abc.Process) -> None:
    """Stop a child and its process group: close stdin, wait, SIGTERM, wait, SIGKILL.

    Anything left in the group once the child itself has exited is signalled at once: it
    would otherwise outlive us as an orphan. Shielded and bounded, so a cancelled caller
    can neither skip this nor hang in it.
    """
    with anyio.CancelScope(shield=True):
        if process.stdin is not None:
            with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await process.stdin.aclose()
        with anyio.move_on_after(STDIN_CLOSE_GRACE):
            await process.wait()
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if process.returncode is not None and not _group_alive(process.pid):
                break
            log.info(
                "stopping the MBE server with %s",
                signal.Signals(signum).name,
                extra={"pid": process.pid, "exited": process.returncode is not None},
            )
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signum)
            await _wait_gone(process, SIGTERM_GRACE)
        with anyio.move_on_after(SIGTERM_GRACE):  # only a process stuck in the kernel outlives SIGKILL
            await process.aclose()


async def _wait_gone(process: anyio.abc.Process, grace: float) -> None:
    """Wait up to `grace` s until the child has exited and nothing is left in its process group."""
    with anyio.move_on_after(grace):
        await process.wait()
        while _group_alive(process.pid):  # noqa: ASYNC110 (no event tells when a process group empties)
            await anyio.sleep(_POLL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _LineReader:
    """The read half: one JSON-RPC message per line of the child's stdout, parsed in place.

    Receiving happens in the session's own reader task, so there is no relay task; at
    end-of-file `ended` is set and iteration stops, which the session takes as "closed".
    A line that is not JSON-RPC is handed on as an exception value, as the SDK does, so
    one bad line costs one message, not the connection.
    """

    def __init__(self, stdout: anyio.abc.ByteReceiveStream, ended: anyio.Event) -> None:
        self._stdout = stdout
        self._ended = ended
        self._buffer = bytearray()
        self._scanned = 0

    async def receive(self) -> SessionMessage | Exception:
        while True:
            end = self._buffer.find(b"\n", self._scanned)
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                self._scanned = 0
                if line.strip():
                    return _decode(line)
                continue
            self._scanned = len(self._buffer)
            try:
                self._buffer += await self._stdout.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                self._ended.set()
                raise anyio.EndOfStream from None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Nothing to release: the pipe belongs to the transport, which closes it in `stop`."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _decode(line: bytes) -> SessionMessage | Exception:
    try:
        return SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:
        log.warning(
            "the MBE server wrote a line that is not JSON-RPC; skipped",
            extra={"bytes": len(line)},
        )
        return exc


class _LineWriter:
    """The write half: each message is serialised and written by the caller's own task.

    No lock: asyncio's pipe `write()` queues a whole frame at once, so concurrent calls
    cannot interleave their bytes, and `drain()` accepts many waiters.
    """

    def __init__(self, stdin: anyio.abc.ByteSendStream) -> None:
        self._stdin = stdin
        self._closed = False

    async def send(self, item: SessionMessage, /) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        frame = item.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"
        try:
            await self._stdin.send(frame)
        except OSError as exc:  # the child is gone: the session reports CONNECTION_CLOSED
            raise anyio.BrokenResourceError from exc

    async def aclose(self) -> None:
        """Refuse further sends; the child's stdin itself is closed by `stop`, in order."""
        self._closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
