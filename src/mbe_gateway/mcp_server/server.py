"""`mbe-gateway mcp`: an MCP server over stdio for Claude Desktop, Cursor and other MCP clients.

Built on the SDK's low-level `Server`, as the engine is, so the MBE tools are declared with
the contract's exact schemas (`MCPServer` would generate its own from Python signatures).

Which backend answers is decided again for every call, by asking the data dir's lock who holds
it (`lock.holder`, a few system calls, which never stops a daemon from starting):

- a daemon holds it: the call is forwarded to it over the control protocol (daemon.py), and
  our own engine, if one was running, is stopped first, so there is one engine per engine
  database;
- none does: our own engine and the store answer (standalone.py).

Why this cannot put two engines on one database for more than a moment: a daemon takes its
lock before it starts its engine and lets it go only after its engine stopped, so "no holder"
means no daemon engine; ours is called only right after such a look, and is stopped at the
next call or within a second (standalone.WATCH_EVERY) of a daemon appearing, which is less
than a daemon takes to start its own engine. Even in that moment each engine call is one
SQLite transaction, so the two could only interleave, never corrupt each other.

Nothing but protocol frames reaches stdout: the stdio transport (engine/stdio.py) points
fd 1 at stderr while serving, and logs go to stderr, which MCP clients keep in their own log.
Tool failures are tool results with `isError` and a message saying what to do, not crashes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.abc

from mbe_gateway import __version__, lock, paths
from mbe_gateway.errors import GatewayError
from mbe_gateway.mcp_server import tools
from mbe_gateway.mcp_server.daemon import Daemon
from mbe_gateway.mcp_server.standalone import Standalone

if TYPE_CHECKING:
    import mcp_types
    from mcp.server.lowlevel import Server

    from mbe_gateway.config import Config
    from mbe_gateway.secrets import Secrets

log = logging.getLogger(__name__)


class Backend(Protocol):
    """What answers the tools: the daemon, or this process on its own."""

    async def mbe(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]: ...

    async def send(self, channel: str, chat_id: str, text: str) -> dict[str, Any]: ...

    async def conversations(self, limit: int, channel: str | None) -> dict[str, Any]: ...

    async def search(self, query: str, limit: int, channel: str | None) -> dict[str, Any]: ...

    async def status(self) -> dict[str, Any]: ...


@dataclass
class Router:
    """Sends each tool call to the backend that should answer it now."""

    config: Config
    secrets: Secrets
    data_dir: Path
    tg: anyio.abc.TaskGroup
    daemon: Daemon = field(init=False)
    standalone: Standalone = field(init=False)
    _served_by: int | None = field(init=False, default=-1)  # the daemon's pid, None: ourselves

    def __post_init__(self) -> None:
        self.daemon = Daemon(self.config, self.secrets, self.data_dir, still_running=self._daemon_runs)
        self.standalone = Standalone(
            self.config, self.secrets, self.data_dir, self.tg, daemon_running=self._daemon_runs
        )

    def _daemon_runs(self) -> bool:
        return lock.holder(self.data_dir) is not None

    async def backend(self) -> tuple[Backend, int | None]:
        """The backend for the call about to be made, and the daemon's pid when it is the daemon."""
        pid = lock.holder(self.data_dir)
        if pid is not None:
            await self.standalone.stop_engine()
        if pid != self._served_by:
            self._served_by = pid
            if pid is None:
                log.info("no daemon runs: serving from our own engine and the store")
            else:
                log.info("a daemon runs: forwarding to it", extra={"daemon_pid": pid})
        return (self.daemon if pid is not None else self.standalone), pid

    async def call(self, tool: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The result object of a call whose arguments `tools.problem` accepted."""
        backend, pid = await self.backend()
        args = dict(arguments)
        if tool in tools.MBE_TOOLS:
            return await backend.mbe(tool, args)
        limit = int(args.get("limit", 20))
        channel = args.get("channel")
        if tool == tools.SEND:
            return await backend.send(args["channel"], args["chat_id"], args["text"])
        if tool == tools.CONVERSATIONS:
            return await backend.conversations(limit, channel)
        if tool == tools.SEARCH:
            return await backend.search(args["query"], limit, channel)
        if tool == tools.STATUS:
            return await self._status(backend, pid)
        raise AssertionError(f"{tool} passed tools.problem but has no route")

    async def _status(self, backend: Backend, pid: int | None) -> dict[str, Any]:
        here: dict[str, Any] = {
            "pid": os.getpid(),
            "version": __version__,
            "mbe_served_by": "the daemon's engine" if pid is not None else "its own engine",
        }
        if pid is not None:
            daemon = {"running": True, "pid": pid, "status": await backend.status()}
            return {"daemon": daemon, "mcp_server": here}
        here.update(await backend.status())
        hint = "start it (`mbe-gateway run`) to answer on the chat channels and to send messages"
        return {"daemon": {"running": False, "hint": hint}, "mcp_server": here}


async def answer(router: Router, tool: str, arguments: Mapping[str, Any]) -> mcp_types.CallToolResult:
    """One tool call as an MCP result: the result object (structured and as JSON text), or an
    error result with a message for the person reading it."""
    from mbe_gateway.engine.server import tool_failure, tool_result

    problem = tools.problem(tool, arguments)
    if problem is not None:
        return tool_failure(problem)
    started = time.perf_counter()
    try:
        payload = await router.call(tool, arguments)
    except GatewayError as e:
        log.info("a tool call failed", extra={"tool": tool, "error": str(e)})
        return tool_failure(str(e))
    except Exception as e:
        log.exception("a tool call failed unexpectedly", extra={"tool": tool})
        why = f"{tool} failed inside mbe-gateway ({type(e).__name__}); its log (stderr) has details"
        return tool_failure(why)
    log.debug("tool answered", extra={"tool": tool, "ms": round((time.perf_counter() - started) * 1000, 2)})
    return tool_result(payload)


def build_server(router: Router) -> Server[Any]:
    import mcp_types
    from mcp.server import ServerRequestContext
    from mcp.server.lowlevel import Server

    listed = tools.tool_list()

    async def list_tools(
        ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListToolsResult:
        return mcp_types.ListToolsResult(tools=listed)

    async def call_tool(
        ctx: ServerRequestContext[Any], params: mcp_types.CallToolRequestParams
    ) -> mcp_types.CallToolResult:
        return await answer(router, params.name, params.arguments or {})

    return Server(
        "mbe-gateway",
        version=__version__,
        instructions=tools.INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def _serve(config: Config) -> None:
    from mbe_gateway.engine.stdio import stdio_streams
    from mbe_gateway.secrets import Secrets

    data = paths.data_dir()
    # The wire first: stdin or stdout that is no pipe is one clear error, not a task group's.
    async with stdio_streams() as (read_stream, write_stream), anyio.create_task_group() as tg:
        router = Router(config, Secrets(config.secrets, data), data, tg)
        server = build_server(router)
        log.info("mcp server ready", extra={"data_dir": str(data), "pid": os.getpid()})
        await server.run(read_stream, write_stream, server.create_initialization_options())
        tg.cancel_scope.cancel()  # the client left: stop our engine, if it runs


def serve(config: Config) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin (blocking)."""
    # asyncio, not trio: the stdio transport is built on asyncio's pipe transports.
    anyio.run(_serve, config, backend="asyncio")
