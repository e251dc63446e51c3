"""MBEClient: the gateway's only way to MBE — typed calls over MCP, kept alive by a supervisor.

The client owns a task group with one supervisor task. The supervisor starts the server
(or connects to it), serves calls through that connection until it ends, and starts it
again after a jittered backoff. Callers never wait on a dead server: a call while MBE is
down fails at once with MBEUnavailable, a call in flight when it dies fails at once with
MBEConnectionLost, and only while MBE is *starting* does a call wait, within its own
timeout. Nothing here knows about channels or config files; it is given a `Server` value.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self

import anyio
import anyio.abc
from mcp import MCPError
from mcp_types import (
    CONNECTION_CLOSED,
    REQUEST_TIMEOUT,
    CallToolRequest,
    CallToolRequestParams,
    CallToolResult,
    TextContent,
)
from pydantic import ValidationError

from mbe_gateway import contract, paths
from mbe_gateway.errors import (
    MBEConnectionLost,
    MBEError,
    MBEProtocolError,
    MBETimeout,
    MBEToolError,
    MBEToolMissing,
    MBEUnavailable,
)
from mbe_gateway.mbe.backoff import Backoff
from mbe_gateway.mbe.child import default_errlog
from mbe_gateway.mbe.connection import Connection, connect
from mbe_gateway.mbe.servers import Server

log = logging.getLogger(__name__)

State = Literal["starting", "ready", "down", "closed"]

# A spawn that fails like this will fail the same way next time: stop instead of looping.
_HOPELESS_SPAWN: Final = (FileNotFoundError, PermissionError, NotADirectoryError)


class MBEClient:
    """One MBE server behind typed async methods; use as `async with MBEClient(server) as mbe:`.

    Entering starts the supervisor and returns at once (state "starting"); `wait_ready`
    waits for the first connection. Leaving stops the server and its process group.
    """

    def __init__(
        self,
        server: Server,
        *,
        call_timeout: float = 10.0,
        connect_timeout: float = 30.0,
        backoff: Backoff | None = None,
        restart_after_timeouts: int = 3,
        home: Path | None = None,
        errlog: Path | None = None,
        spawned: anyio.abc.Process | None = None,
    ) -> None:
        """`home` is the data dir the child is told about (MBE_GATEWAY_HOME); the child's
        stderr is appended to `errlog` (default: logs/mbe-server.log under it). A server
        whose calls time out `restart_after_timeouts` times in a row is taken for wedged
        and restarted. `spawned`: the stdio server, already started with `child.spawn`
        (the daemon starts it early), is the first one used; restarts spawn anew.
        """
        self.server = server
        self.call_timeout = call_timeout
        self.connect_timeout = connect_timeout
        self.home = home if home is not None else paths.data_dir()
        self.errlog = errlog if errlog is not None else default_errlog(self.home)
        self._backoff = backoff if backoff is not None else Backoff()
        self._restart_after_timeouts = restart_after_timeouts
        self._state: State = "down"
        self._conn: Connection | None = None
        self._tools: frozenset[str] = frozenset()
        self._timeouts_in_a_row = 0
        self._fatal: MBEError | None = None
        self._last_error: MBEError | None = None
        self._warned_missing: set[str] = set()
        self._changed: anyio.Event | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._spawned = spawned

    # --- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._tg is not None:
            raise RuntimeError("an MBEClient can be entered only once")
        self._changed = anyio.Event()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._set_state("starting")
        self._tg.start_soon(self._supervise, name=f"mbe supervisor ({self.server.name})")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the supervisor, and with it the server; an exception from the body propagates
        as it is (handing it to the task group would wrap it in an exception group)."""
        if self._tg is None:
            raise RuntimeError("MBEClient was not entered")
        self._set_state("closed")
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)

    @property
    def state(self) -> State:
        return self._state

    @property
    def pid(self) -> int | None:
        """The running child's process id (None over HTTP or while it is not running)."""
        return self._conn.pid if self._conn is not None else None

    @property
    def last_error(self) -> MBEError | None:
        """Why the server last failed to start or stopped for good, for status displays."""
        return self._fatal or self._last_error

    def offers(self, tool: str) -> bool:
        """Whether the server offers `tool`, as of its last successful connect."""
        return tool in self._tools

    async def wait_ready(self, timeout: float) -> None:  # noqa: ASYNC109 (a clearer error than a bare cancel)
        """Wait until MBE is ready, through restarts; MBEUnavailable after `timeout` seconds.

        A server that can never work (not MBE, or a command that cannot run) raises its
        reason at once instead of waiting out the timeout.
        """
        with anyio.move_on_after(timeout):
            while self._live() is None:
                self._raise_if_hopeless()
                await self._state_change()
            return
        self._raise_if_hopeless()
        raise MBEUnavailable(f"MBE ({self.server.name}) is not ready after {timeout:g} s{self._why()}")

    # --- the one place calls go through -------------------------------------------------

    async def call(
        self,
        tool: str,
        arguments: Mapping[str, Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (explained below)
    ) -> dict[str, Any]:
        """Call `tool` and return its result object (structured content, or JSON text).

        `timeout` (default `call_timeout`) is not a cancel scope: on expiry the server is
        told to drop the request and the session stays usable, which is what MBETimeout
        promises, and the wait for a starting server counts against the same budget.

        Raises MBEUnavailable, MBEConnectionLost, MBETimeout, MBEToolError, MBEToolMissing
        or MBEProtocolError; the session stays usable after any of them.
        """
        limit = self.call_timeout if timeout is None else timeout
        deadline = anyio.current_time() + limit
        conn = await self._connection(deadline, limit)
        if tool not in conn.tools:
            raise MBEToolMissing(f"the MBE server {self.server.name} does not offer {tool}")
        request = CallToolRequest(params=CallToolRequestParams(name=tool, arguments=dict(arguments)))
        try:
            remaining = max(deadline - anyio.current_time(), 1e-3)
            result = await conn.session.send_request(
                request, CallToolResult, request_read_timeout_seconds=remaining
            )
        except MCPError as exc:
            raise self._failure(conn, tool, limit, exc) from None
        except ValidationError:
            log.warning("MBE answered a call with something that is not a tool result", extra={"tool": tool})
            raise MBEProtocolError(f"{tool}: the MBE server's answer is not an MCP tool result") from None
        self._timeouts_in_a_row = 0
        texts = [block.text for block in result.content if isinstance(block, TextContent)]
        if result.is_error:
            reason = " ".join(texts).strip()[:500] or "no reason given"
            raise MBEToolError(f"{tool} failed on the MBE server: {reason}")
        return contract.payload_of(tool, result.structured_content, texts)

    # --- typed tools --------------------------------------------------------------------

    async def surprise(
        self,
        text: str,
        *,
        user_id: str,
        username: str | None = None,
        channel: str | None = None,
        domain: str | None = None,
    ) -> contract.Surprise:
        context = {"user_id": user_id, "username": username, "channel": channel, "domain": domain}
        arguments = {"input": _clip(text), "context": {k: v for k, v in context.items() if v is not None}}
        return contract.parse_surprise(await self.call(contract.SURPRISE, arguments))

    async def route(
        self,
        text: str,
        *,
        task_type: str = "chat",
        user_profile: Mapping[str, Any] | None = None,
    ) -> contract.Routing:
        arguments: dict[str, Any] = {"input": _clip(text), "task_type": task_type}
        if user_profile is not None:
            arguments["user_profile"] = dict(user_profile)
        return contract.parse_routing(await self.call(contract.ROUTE, arguments))

    async def memory_write(
        self, user_id: str, memory_type: str, content: Mapping[str, Any], importance: float = 0.5
    ) -> str:
        arguments = {
            "user_id": user_id,
            "memory_type": memory_type,
            "content": dict(content),
            "importance": min(1.0, max(0.0, importance)),
        }
        return contract.parse_memory_id(await self.call(contract.MEMORY_WRITE, arguments))

    async def memory_read(
        self,
        user_id: str,
        query: str,
        *,
        top_k: int = 5,
        memory_type: str | None = None,
    ) -> contract.MemoryPage:
        arguments: dict[str, Any] = {"user_id": user_id, "query": _clip(query), "top_k": top_k}
        if memory_type is not None:
            arguments["memory_type"] = memory_type
        return contract.parse_memory_page(await self.call(contract.MEMORY_READ, arguments))

    async def analyze_learning(self, user_id: str, *, window_days: int = 30) -> contract.Learning:
        arguments = {"user_id": user_id, "window_days": window_days}
        return contract.parse_learning(await self.call(contract.ANALYZE_LEARNING, arguments))

    async def generate(
        self,
        prompt: str,
        *,
        system_prompt: str | None = None,
        temperature: float | None = None,
        messages: Sequence[Mapping[str, str]] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (see `call`)
    ) -> contract.Generation:
        """MBE's own LLM, when the server offers one (`offers(contract.GENERATE)`).

        Generation is slow next to the other tools, so it takes its own `timeout`.
        """
        if self._tools and contract.GENERATE not in self._tools:
            raise MBEToolMissing(
                f"the MBE server {self.server.name} does not offer {contract.GENERATE}; "
                "configure another LLM provider"
            )
        arguments: dict[str, Any] = {"prompt": prompt}
        if system_prompt is not None:
            arguments["system_prompt"] = system_prompt
        if temperature is not None:
            arguments["temperature"] = temperature
        if messages is not None:
            arguments["messages"] = [dict(message) for message in messages]
        return contract.parse_generation(await self.call(contract.GENERATE, arguments, timeout=timeout))

    # --- supervision ---------------------------------------------------------------------

    async def _supervise(self) -> None:
        attempt = 0
        while True:
            self._set_state("starting")
            ready_at: float | None = None
            spawned, self._spawned = self._spawned, None
            try:
                async with connect(
                    self.server,
                    errlog=self.errlog,
                    home=self.home,
                    within=self.connect_timeout,
                    spawned=spawned,
                ) as conn:
                    ready_at = anyio.current_time()
                    self._on_ready(conn)
                    await conn.ended.wait()
                    self._conn = None
                    self._set_state("down")
                    log.warning(
                        "the MBE server went away",
                        extra={
                            "server": self.server.name,
                            "pid": conn.pid,
                            "reason": await conn.why(),
                            "uptime_s": round(anyio.current_time() - ready_at, 1),
                        },
                    )
            except MBEProtocolError as exc:
                self._give_up(exc)
                return
            except MBEUnavailable as exc:
                if isinstance(exc.__cause__, _HOPELESS_SPAWN):
                    self._give_up(exc)
                    return
                self._last_error = exc
                log.warning("MBE did not start", extra={"server": self.server.name, "error": str(exc)})
            except Exception as exc:  # a bug or an SDK surprise must cost a restart, not the daemon
                self._last_error = MBEUnavailable(f"the MBE connection failed: {type(exc).__name__}: {exc}")
                log.exception("the MBE connection failed unexpectedly", extra={"server": self.server.name})
            finally:
                self._conn = None
            self._set_state("down")
            if ready_at is not None and anyio.current_time() - ready_at >= self._backoff.healthy_after:
                attempt = 0
            delay = self._backoff.delay(attempt)
            attempt += 1
            log.info(
                "restarting MBE",
                extra={"server": self.server.name, "attempt": attempt, "delay_s": round(delay, 2)},
            )
            await anyio.sleep(delay)

    def _on_ready(self, conn: Connection) -> None:
        self._conn = conn
        self._tools = conn.tools
        self._timeouts_in_a_row = 0
        self._last_error = None
        for tool in contract.OPTIONAL_TOOLS:
            if tool not in conn.tools and tool not in self._warned_missing:
                self._warned_missing.add(tool)
                log.warning(
                    "the MBE server does not offer an optional tool; its feature is off",
                    extra={"server": self.server.name, "tool": tool},
                )
        self._set_state("ready")
        log.info("MBE ready", extra={"server": self.server.name, "pid": conn.pid, "tools": len(conn.tools)})

    def _give_up(self, exc: MBEError) -> None:
        self._fatal = exc
        self._set_state("down")
        log.error(
            "MBE cannot be used; not retrying",
            extra={"server": self.server.name, "error": str(exc)},
        )

    def _set_state(self, state: State) -> None:
        if self._state == "closed" or self._state == state:
            return
        self._state = state
        if self._changed is not None:
            self._changed.set()
            self._changed = anyio.Event()

    # --- helpers for calls -----------------------------------------------------------------

    async def _connection(self, deadline: float, limit: float) -> Connection:
        """The live connection; waits only while MBE is starting, and never past `deadline`."""
        if self._changed is None:
            raise RuntimeError("use the MBEClient inside `async with` (it is not started)")
        while True:
            conn = self._live()
            if conn is not None:
                return conn
            if self._state == "closed":
                raise MBEUnavailable("the MBE client is closed")
            self._raise_if_hopeless()
            if self._state != "starting":
                raise MBEUnavailable(f"MBE ({self.server.name}) is down and being restarted{self._why()}")
            with anyio.move_on_after(deadline - anyio.current_time()) as waited:
                await self._state_change()
            if waited.cancelled_caught:
                raise MBEUnavailable(f"MBE ({self.server.name}) is still starting after {limit:g} s")

    def _failure(self, conn: Connection, tool: str, limit: float, exc: MCPError) -> MBEError:
        """Turn the SDK's error for one call into ours, and notice a wedged or dead server."""
        if self._state == "closed":
            return MBEUnavailable("the MBE client is closed")
        if exc.code == REQUEST_TIMEOUT:
            self._timeouts_in_a_row += 1
            log.warning("an MBE call timed out", extra={"tool": tool, "timeout_s": limit})
            if self._timeouts_in_a_row >= self._restart_after_timeouts:
                conn.end(f"stopped answering: {self._timeouts_in_a_row} calls in a row timed out")
            return MBETimeout(f"{tool} took longer than {limit:g} s; is MBE ({self.server.name}) overloaded?")
        if exc.code == CONNECTION_CLOSED:
            conn.end("" if conn.process is not None else "the connection failed during a call")
            log.warning("MBE went away during a call", extra={"tool": tool})
            return MBEConnectionLost(f"MBE ({self.server.name}) went away during {tool}; restarting it")
        return MBEToolError(f"{tool} failed on the MBE server: {exc.error.message}")

    async def _state_change(self) -> None:
        if self._changed is None:
            raise RuntimeError("use the MBEClient inside `async with` (it is not started)")
        await self._changed.wait()

    def _live(self) -> Connection | None:
        conn = self._conn
        if self._state == "ready" and conn is not None and not conn.ended.is_set():
            return conn
        return None

    def _raise_if_hopeless(self) -> None:
        if self._fatal is not None:
            raise type(self._fatal)(str(self._fatal)) from self._fatal
        if self._state == "closed":
            raise MBEUnavailable("the MBE client is closed")

    def _why(self) -> str:
        return f" (last error: {self._last_error})" if self._last_error is not None else ""


def _clip(text: str) -> str:
    """The contract caps text at MAX_INPUT_CHARS; longer text is cut rather than refused."""
    return text[: contract.MAX_INPUT_CHARS]
