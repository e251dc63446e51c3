"""Our own MCP stdio transport: the server as our child, newline-delimited JSON-RPC on its pipes.

Why not the SDK's `stdio_client`: we need the process handle (to notice a child that dies
while idle, which the SDK's Client never reports, and to say which pid died), a child
environment we choose, and stderr in our log file. Owning the pipes also lets messages go
straight from the caller's task to the pipe and from the pipe to the session's reader,
without the two relay tasks and memory streams the SDK puts in between
(bench/mcp_roundtrip.py measures the difference).

Starting and stopping the child live in `child`, which needs no MCP import. Shutdown follows
the MCP spec and the SDK: close the child's stdin, give it time to exit, then SIGTERM its
process group, then SIGKILL; the child runs in its own session so the whole group (anything
it spawned) goes with it and nothing is orphaned.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio
import anyio.abc
import mcp_types
from mcp.shared.message import SessionMessage

from mbe_gateway.mbe.child import spawn, stop
from mbe_gateway.mbe.servers import StdioServer

log = logging.getLogger(__name__)


class ChildTransport:
    """An MCP `Transport` (async context manager giving a read and a write stream) over a child.

    After entering, `process` is the running child and `ended` is set as soon as its stdout
    reaches end-of-file, which is how a dead child shows itself first.
    """

    def __init__(
        self, server: StdioServer, *, errlog: Path, home: Path, spawned: anyio.abc.Process | None = None
    ) -> None:
        """`spawned`: the server already started with `child.spawn` (the daemon starts its
        engine before it loads this module), taken over instead of starting another."""
        self.server = server
        self.errlog = errlog
        self.home = home
        self.ended = anyio.Event()
        self._process: anyio.abc.Process | None = spawned

    @property
    def process(self) -> anyio.abc.Process:
        if self._process is None:
            raise RuntimeError("the MBE child is not running: enter the transport first")
        return self._process

    async def __aenter__(self) -> tuple[_LineReader, _LineWriter]:
        if self._process is None:
            self._process = await spawn(self.server, errlog=self.errlog, home=self.home)
        assert self._process.stdout is not None and self._process.stdin is not None
        return _LineReader(self._process.stdout, self.ended), _LineWriter(self._process.stdin)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.ended.set()
        if self._process is not None:
            await stop(self._process)


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
