"""One live MCP session with one MBE server: spawn or connect, handshake, check its tools.

A `Connection` lives exactly as long as one child process (or one HTTP session). The
client's supervisor opens one, serves calls through it until `ended` is set, then opens
the next; nothing here retries. What went wrong on the way up becomes MBEUnavailable
(worth retrying) or MBEProtocolError (this server is not MBE: retrying will not help).
"""

from __future__ import annotations

import math
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import anyio
import anyio.abc
import httpx2
from mcp import Client, MCPError
from mcp.client import ClientSession, Transport
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT, Implementation
from pydantic import ValidationError

from mbe_gateway import __version__, contract
from mbe_gateway.errors import MBEError, MBEProtocolError, MBEUnavailable
from mbe_gateway.mbe.servers import HttpServer, Server, StdioServer
from mbe_gateway.mbe.stdio import ChildTransport

CLIENT_INFO: Final = Implementation(name="mbe-gateway", version=__version__)
_TOOL_PAGES: Final = 100  # a server whose tool list never ends cannot hang the connect
_EXIT_CODE_WAIT: Final = 1.0


@dataclass(eq=False)
class Connection:
    """A ready session: the tools the server offers, and an event set when it is gone."""

    session: ClientSession
    tools: frozenset[str]
    process: anyio.abc.Process | None = None  # the child, over stdio
    ended: anyio.Event = field(default_factory=anyio.Event)
    reason: str = ""

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def end(self, reason: str = "") -> None:
        """Mark the session dead at once (first reason wins); the supervisor replaces it."""
        if not self.ended.is_set():
            self.reason = reason
            self.ended.set()

    async def why(self) -> str:
        """Why it ended: the reason given, else the child's exit status (waited for briefly)."""
        if self.reason or self.process is None:
            return self.reason or "ended"
        with anyio.move_on_after(_EXIT_CODE_WAIT):
            await self.process.wait()
        code = self.process.returncode
        return _exit_words(code) if code is not None else "closed its stdout"


@asynccontextmanager
async def connect(
    server: Server, *, errlog: Path, home: Path, within: float, spawned: anyio.abc.Process | None = None
) -> AsyncIterator[Connection]:
    """Start (or reach) `server`, finish the MCP handshake and list its tools within `within` s.
    `spawned`: a stdio server already started (`child.spawn`), to take over instead.

    Leaving the context closes the session and stops the child (see `child.stop`).
    """
    # The deadline scope encloses the exit stack, so every scope the SDK opens inside is
    # closed before it; it is lifted once the handshake is done. Failures found inside are
    # raised only after the stack has closed the session, which would otherwise wrap them
    # in an exception group.
    deadline = anyio.CancelScope(deadline=anyio.current_time() + within)
    failure: MBEError | None = None
    with deadline:
        async with AsyncExitStack() as stack:
            child: ChildTransport | None = None
            transport: Transport
            mode = "auto"  # ask for the 2026 protocol, fall back to the classic handshake
            if isinstance(server, StdioServer):
                child = transport = ChildTransport(server, errlog=errlog, home=home, spawned=spawned)
                mode = server.protocol
            else:
                http = await stack.enter_async_context(_http_client(server))
                transport = streamable_http_client(server.url, http_client=http)
            try:
                client = await stack.enter_async_context(
                    Client(transport, mode=mode, client_info=CLIENT_INFO, cache=None)
                )
                tools = await _list_tools(client)
            except Exception as exc:  # the HTTP transport wraps its errors in exception groups
                cause = _innermost(exc)
                if isinstance(cause, MBEError):
                    failure = cause
                elif isinstance(cause, MCPError | ValidationError | OSError | httpx2.HTTPError):
                    failure = await _startup_failure(server, child, errlog, cause)
                    failure.__cause__ = cause
                else:
                    raise
            else:
                deadline.deadline = math.inf
                failure = _missing_required(server, tools)
            if failure is None:
                conn = (  # over stdio, the child's end of stdout is the connection's end, with no hop
                    Connection(client.session, tools, process=child.process, ended=child.ended)
                    if child is not None
                    else Connection(client.session, tools)
                )
                async with anyio.create_task_group() as watchers:
                    if child is not None:
                        watchers.start_soon(_watch_exit, child)
                    try:
                        yield conn
                    finally:
                        conn.end("closed by the gateway")
                        watchers.cancel_scope.cancel()
    if failure is not None:
        raise failure
    if deadline.cancelled_caught:
        raise MBEUnavailable(
            f"the MBE server {server.name} did not finish the MCP handshake within {within:g} s"
            + (f"; its stderr is in {errlog}" if isinstance(server, StdioServer) else "")
        )


def _http_client(server: HttpServer) -> httpx2.AsyncClient:
    """An HTTP client carrying the API key as a bearer header (the SDK's default timeouts)."""
    headers = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
    return httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0))


async def _list_tools(client: Client) -> frozenset[str]:
    names: set[str] = set()
    cursor: str | None = None
    for _ in range(_TOOL_PAGES):
        page = await client.list_tools(cursor=cursor)
        names.update(tool.name for tool in page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return frozenset(names)


def _missing_required(server: Server, tools: frozenset[str]) -> MBEProtocolError | None:
    missing = [name for name in contract.REQUIRED_TOOLS if name not in tools]
    if not missing:
        return None
    offered = ", ".join(sorted(tools)) or "no tools at all"
    return MBEProtocolError(
        f"{server.name} does not look like MBE: missing {', '.join(missing)} (it offers {offered}); "
        "check [mbe] command or url in the config"
    )


async def _startup_failure(
    server: Server, child: ChildTransport | None, errlog: Path, exc: BaseException
) -> MBEUnavailable:
    """Say why the server did not come up, in words that point at the fix."""
    if isinstance(exc, MCPError) and exc.code == REQUEST_TIMEOUT:
        return MBEUnavailable(f"the MBE server {server.name} did not answer the MCP handshake in time")
    if child is not None:
        with anyio.move_on_after(_EXIT_CODE_WAIT):
            await child.process.wait()
        if child.process.returncode is not None:
            return MBEUnavailable(
                f"the MBE server {server.name} {_exit_words(child.process.returncode)} during startup; "
                f"its stderr is in {errlog}"
            )
        if isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
            return MBEUnavailable(f"the MBE server {server.name} closed its stdout during the MCP handshake")
    elif isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
        return MBEUnavailable(f"cannot reach MBE at {server.name}: the connection failed or was refused")
    if isinstance(exc, MCPError):
        hint = "; check [mbe] url and api_key" if isinstance(server, HttpServer) else f"; see {errlog}"
        refused = f"the MBE server {server.name} refused the MCP handshake: {exc.error.message}"
        return MBEUnavailable(refused + hint)
    if isinstance(exc, ValidationError):
        return MBEUnavailable(f"the MBE server {server.name} does not answer like an MCP server")
    return MBEUnavailable(f"cannot reach MBE at {server.name}: {type(exc).__name__}")


def _innermost(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _exit_words(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


async def _watch_exit(child: ChildTransport) -> None:
    """Notice a child that dies while idle, which the SDK's Client would not report until a
    call; usually its stdout's end-of-file says so first, but a grandchild can hold it open."""
    await child.process.wait()
    child.ended.set()
