"""The engine's own MCP stdio transport: newline-delimited JSON-RPC on fd 0/1, without threads.

Why not the SDK's `stdio_server()`: it reads stdin and writes stdout through worker threads
(anyio.wrap_file), three thread hand-offs per tool call, which cost more CPU than most of
the tools themselves (bench/mcp_roundtrip.py measures both). Here the event loop watches
the pipes: a request line is parsed in the task that receives it, and a response is
written by the task that produced it, in one `write()` that usually goes straight to the
pipe. It mirrors the client's transport (mbe/stdio.py) and yields what `stdio_server()`
yields: a read stream of `SessionMessage | Exception` and a write stream of `SessionMessage`
for `Server.run`.

asyncio only: the pipes are asyncio's `connect_read_pipe` / `connect_write_pipe`, which
anyio does not wrap. The engine runs under anyio's default asyncio backend (server.serve);
under trio, entering `stdio_streams` fails at once (no running asyncio loop). POSIX only.

What it keeps of the SDK's transport and the MCP stdio spec:
- one JSON-RPC message per line, UTF-8. A line that is not JSON-RPC goes to the server as
  an exception value, as `stdio_server()` does: it costs that message, not the connection.
  Bytes that are not UTF-8 are read as U+FFFD, as `stdio_server()` reads them; blank
  lines are skipped; a last line without its newline still counts.
- end of stdin ends the read stream: an MCP client closes our stdin to stop us.
- while serving, fd 0 reads /dev/null and fd 1 writes to stderr, so a stray print (ours
  or a library's) cannot corrupt the wire; the wire is served from private duplicates
  and both descriptors are put back on exit.

What it adds, so a misbehaving client costs bounded memory and ends cleanly:
- a line longer than MAX_LINE_BYTES is dropped as it streams in (the server gets an
  exception value for it), and reading pauses while READ_PAUSE_BYTES wait unparsed;
- when the client stops reading our output, each writer waits once the pipe and
  WRITE_BUFFER_BYTES are full, and no further request is read until the output drains:
  a stalled client stalls us rather than growing our buffers;
- a client that closes our stdout (it exited, or the pipe broke) ends the read stream
  too: no one is left to answer, so the server stops as on end of stdin, exit status 0.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import selectors
import stat
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import Final, Self

import anyio
import anyio.lowlevel
import mcp_types
from mcp.shared.message import SessionMessage

from mbe_gateway.errors import GatewayError

log = logging.getLogger("mbe_gateway.engine")

MAX_LINE_BYTES: Final = 16 * 1024 * 1024
"""The longest message line accepted (a legal request is well under 1 MiB: inputs are at
most 32,000 characters, a memory at most 64,000)."""
READ_PAUSE_BYTES: Final = 1024 * 1024
"""Reading from stdin pauses while this much waits unparsed (the server is behind)."""
WRITE_BUFFER_BYTES: Final = 64 * 1024
"""Output queued beyond what the pipe took, before writers wait for the client to read."""
FLUSH_GRACE: Final = 2.0
"""On exit, how long queued output may take to reach a client that is slow to read it."""


@asynccontextmanager
async def stdio_streams() -> AsyncIterator[tuple[LineReader, LineWriter]]:
    """Serve MCP on this process's stdin and stdout: `(read_stream, write_stream)` for `Server.run`.

    Raises GatewayError at once when stdin or stdout cannot be watched by the event loop
    (a regular file, /dev/null): the engine is meant to be started by an MCP client.
    On exit, output still queued gets FLUSH_GRACE seconds to reach the client.
    """
    loop = asyncio.get_running_loop()
    with _claimed_stdio() as (wire_in, wire_out):
        writer = LineWriter()
        reader = LineReader(writer)
        stdin, stdout = os.fdopen(wire_in, "rb", buffering=0), os.fdopen(wire_out, "wb", buffering=0)
        await loop.connect_write_pipe(lambda: writer, stdout)
        try:
            in_transport, _ = await loop.connect_read_pipe(lambda: reader, stdin)
            try:
                yield reader, writer
            finally:
                in_transport.close()
        finally:
            with anyio.CancelScope(shield=True):
                await writer.flush_and_close(FLUSH_GRACE)
                await anyio.lowlevel.checkpoint()  # let the transports' close callbacks run (closing the fds)


@contextmanager
def _claimed_stdio() -> Iterator[tuple[int, int]]:
    """Private duplicates of fd 0 and fd 1 for the wire; meanwhile fd 0 reads /dev/null and
    fd 1 writes to stderr. The duplicates are the caller's to close (the pipe transports
    do); fd 0 and 1 are put back on exit, in blocking mode: O_NONBLOCK, which the event
    loop sets, belongs to the open file, which a terminal shares with the shell."""
    saved_in = _wire(0, "stdin", selectors.EVENT_READ)
    try:
        saved_out = _wire(1, "stdout", selectors.EVENT_WRITE)
    except GatewayError:
        os.close(saved_in)
        raise
    try:
        sys.stdout.flush()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(2, 1)
        try:
            yield _private_dup(saved_in), _private_dup(saved_out)
        finally:
            for fd, saved in ((0, saved_in), (1, saved_out)):
                os.set_blocking(saved, True)
                os.dup2(saved, fd)
    finally:
        os.close(saved_in)
        os.close(saved_out)


def _private_dup(fd: int) -> int:
    """A close-on-exec duplicate of `fd` above the standard range (so no dup2 can hit it)."""
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)


def _wire(fd: int, name: str, events: int) -> int:
    """A private duplicate of stdin or stdout, refused with a message when the event loop
    cannot wait on it: asyncio's pipe transports take only pipes, sockets and character
    devices, and epoll refuses some of those (/dev/null), which would otherwise leave the
    engine waiting forever."""
    problem = f"this MCP server talks over pipes, but its {name} is"
    hint = "start it from an MCP client (the gateway, Claude Desktop), which connects both"
    try:
        duplicate = _private_dup(fd)
    except OSError:
        raise GatewayError(f"{problem} closed: {hint}") from None
    mode = os.fstat(duplicate).st_mode
    pollable = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)
    if pollable:
        with selectors.DefaultSelector() as selector:
            try:
                selector.register(duplicate, events)
            except OSError:
                pollable = False
    if not pollable:
        os.close(duplicate)
        raise GatewayError(f"{problem} not a pipe, socket or terminal: {hint}")
    return duplicate


class LineReader(asyncio.Protocol):
    """The read half: stdin's lines as `SessionMessage`s, or an exception value for a bad line.

    The asyncio protocol of the stdin pipe and the server's read stream in one: bytes are
    buffered by `data_received` and cut into messages by `receive`, in the receiving task.
    """

    def __init__(self, output: LineWriter) -> None:
        self._output = output
        output.on_change = self._wake
        self._buffer = bytearray()
        self._scanned = 0  # bytes at the front of the buffer known to hold no newline
        self._dropping = 0  # > 0 while skipping an overlong line: how many bytes so far
        self._eof = False
        self._closed = False
        self._changed = asyncio.Event()
        self._transport: asyncio.ReadTransport | None = None
        self._paused = False

    # --- asyncio.Protocol: called by the event loop -----------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= READ_PAUSE_BYTES and not self._paused and self._transport is not None:
            self._transport.pause_reading()
            self._paused = True
        self._changed.set()

    def eof_received(self) -> None:
        self._eof = True
        self._changed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self._closed:
            log.warning("reading stdin failed (%s); stopping", exc)
        self._eof = True
        self._changed.set()

    def _wake(self) -> None:
        self._changed.set()

    # --- the read stream: called by the server ----------------------------------------------

    async def receive(self) -> SessionMessage | Exception:
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._output.lost:
                raise anyio.EndOfStream  # no one is reading our answers: stop as at end of input
            if self._output.paused:  # the client is not reading: take no more work until it does
                await self._wait()
                continue
            end = self._buffer.find(b"\n", self._scanned)
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                self._scanned = 0
                if self._paused and len(self._buffer) < READ_PAUSE_BYTES:
                    self._resume()
                if self._dropping:
                    return self._dropped(self._dropping + len(line))
                if line.strip():
                    return _decode(line)
                continue
            if self._eof:
                return self._last_line()
            if self._dropping or len(self._buffer) > MAX_LINE_BYTES:
                self._dropping += len(self._buffer)
                self._buffer.clear()
                self._scanned = 0
            else:
                self._scanned = len(self._buffer)
            self._resume()  # no whole line is waiting: more input is needed whatever is buffered
            await self._wait()

    def _last_line(self) -> SessionMessage | Exception:
        """At end of input: what is left without a final newline, else EndOfStream."""
        line = bytes(self._buffer)
        self._buffer.clear()
        self._scanned = 0
        if self._dropping:
            return self._dropped(self._dropping + len(line))
        if line.strip():
            return _decode(line)
        raise anyio.EndOfStream

    def _dropped(self, size: int) -> Exception:
        self._dropping = 0
        log.warning("skipped a message line of %d bytes (the limit is %d)", size, MAX_LINE_BYTES)
        return ValueError(f"a message line of {size} bytes is longer than the limit of {MAX_LINE_BYTES}")

    def _resume(self) -> None:
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()

    async def _wait(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Stop reading stdin (the server is done with it)."""
        self._closed = True
        if self._transport is not None:
            self._transport.close()
        self._changed.set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _decode(line: bytes) -> SessionMessage | Exception:
    """One line as a JSON-RPC message, or the exception saying why it is not one."""
    try:
        return SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:
        problem: Exception = exc
    try:
        line.decode()
    except UnicodeDecodeError:  # read it as stdio_server() does: bad bytes become U+FFFD
        text = line.decode(errors="replace")
        try:
            return SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(text, by_name=False))
        except ValueError as exc:
            problem = exc
    log.warning("a line on stdin (%d bytes) is not a JSON-RPC message; skipped", len(line))
    return problem


class LineWriter(asyncio.Protocol):
    """The write half: each message serialised and written by the sending task itself.

    No lock: `write()` queues a whole frame at once, so concurrent senders cannot interleave
    their bytes. A sender waits only while the client is not keeping up (flow control).
    """

    def __init__(self) -> None:
        self.on_change: Callable[[], None] = lambda: None
        """Called when the output resumes or is lost (the reader waits for both)."""
        self.lost = False
        self._transport: asyncio.WriteTransport | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._gone = asyncio.Event()
        self._closed = False

    @property
    def paused(self) -> bool:
        return not self._writable.is_set()

    # --- asyncio.Protocol: called by the event loop -----------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER_BYTES)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()
        self.on_change()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed:
            log.info("the client closed our stdout (%s); stopping", exc or "end of pipe")
        self.lost = True
        self._writable.set()
        self._gone.set()
        self.on_change()

    # --- the write stream: called by the server ---------------------------------------------

    async def send(self, item: SessionMessage, /) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self.lost or self._transport is None:
            raise anyio.BrokenResourceError
        frame = item.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"
        self._transport.write(frame)
        if not self._writable.is_set():
            await self._writable.wait()
        if self.lost:  # the client went away before reading it
            raise anyio.BrokenResourceError

    async def aclose(self) -> None:
        """Refuse further sends; what is queued is still written (`flush_and_close`)."""
        self._closed = True

    async def flush_and_close(self, grace: float) -> None:
        """Close stdout once what is queued has been written, waiting at most `grace` seconds."""
        self._closed = True
        if self._transport is None or self.lost:
            return
        self._transport.close()
        with anyio.move_on_after(grace):
            await self._gone.wait()
        if not self._gone.is_set():  # the client is not reading: drop what it never took
            self._transport.abort()
            await self._gone.wait()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
