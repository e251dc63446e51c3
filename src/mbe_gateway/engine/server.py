"""The engine as an MCP server over stdio: the five required tools of the MBE contract.

Built on the SDK's low-level `Server` rather than `MCPServer`, because the declared
schemas must be exactly contract.INPUT_SCHEMAS / OUTPUT_SCHEMAS, which generated ones
would not be. The low-level server does not check arguments, so every call is validated
here against the same input schema (a compiled predicate, schema_check.py, and for a call
it refuses jsonschema, already a dependency of mcp, to name the problem) before anything
is read or written: a bad call gets an is_error result naming the field, and changes
nothing. Results go out twice, as structured content and as a JSON text block, for
clients that only read text.

mcp, pydantic and jsonschema are imported when the server starts, not when this module
is imported: the gateway's CLI imports `serve` without paying for them.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbe_gateway import contract, paths
from mbe_gateway.engine import learning, memory, routing, surprise
from mbe_gateway.engine.catalog import Catalog, load_catalog
from mbe_gateway.engine.schema_check import Check, compile_check
from mbe_gateway.engine.store import open_db

if TYPE_CHECKING:
    import mcp_types
    from mcp.server.lowlevel import Server

log = logging.getLogger("mbe_gateway.engine")

TOOLS = contract.REQUIRED_TOOLS
MAX_CONTENT_CHARS = 64_000
"""A memory's content, as JSON, may be at most this long: memories are facts, not files."""
_SHOWN_CHARS = 200

_DESCRIPTIONS: Mapping[str, tuple[str, str]] = {
    contract.SURPRISE: (
        "Surprise",
        "How new a message is to this user: 0 for something they said before, near 1 for something "
        "unlike anything they said; learned from their earlier messages, and this one is remembered.",
    ),
    contract.ROUTE: (
        "Route to experts",
        "Choose the experts (cooking, health, programming, emotional support, …) that fit a message, "
        "with a confidence that is high only when one clearly fits.",
    ),
    contract.MEMORY_WRITE: (
        "Remember",
        "Store a memory for a user: content is a JSON object whose text values are indexed for search.",
    ),
    contract.MEMORY_READ: (
        "Recall",
        "Find a user's memories relevant to a query, in English or Chinese, however it is worded; "
        "an empty query gives the most important and recent. total_count is all of the user's memories.",
    ),
    contract.ANALYZE_LEARNING: (
        "Learning summary",
        "Summarise a user's recent interactions: totals, novelty, average surprise and its trend, "
        "the experts used most, and how many memories they have.",
    ),
}
_READ_ONLY = frozenset({contract.MEMORY_READ, contract.ANALYZE_LEARNING})


def _undecided(arguments: Any) -> bool:
    """The quick check of a schema that could not be compiled: always ask jsonschema."""
    return False


def _shorten(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"


def _as_dict(result: Any) -> dict[str, Any]:
    """A result dataclass as `dataclasses.asdict` gives it, at a third of the cost: no deep
    copy (a result's values, such as a memory's content, were built for this one answer)
    and no field filtering (the contract's result types declare no ClassVar or InitVar
    pseudo-fields; tests/test_engine_hot_paths.py holds the two equal on every tool's result)."""
    return {name: _as_value(getattr(result, name)) for name in result.__dataclass_fields__}


def _as_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple([_as_value(item) for item in value])
    return _as_dict(value) if hasattr(value, "__dataclass_fields__") else value


@dataclass
class Engine:
    """The tools' behaviour on one database and catalog, independent of the transport."""

    conn: sqlite3.Connection
    catalog: Catalog
    clock: Callable[[], float] = time.time
    _handlers: dict[str, Callable[[dict[str, Any], float], dict[str, Any]]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._handlers = {
            contract.SURPRISE: self._surprise,
            contract.ROUTE: self._route,
            contract.MEMORY_WRITE: self._memory_write,
            contract.MEMORY_READ: self._memory_read,
            contract.ANALYZE_LEARNING: self._analyze_learning,
        }

    @cached_property
    def _quick_checks(self) -> dict[str, Check]:
        return {name: compile_check(contract.INPUT_SCHEMAS[name]) or _undecided for name in TOOLS}

    @cached_property
    def _validators(self) -> dict[str, Any]:
        from jsonschema import Draft202012Validator

        return {name: Draft202012Validator(contract.INPUT_SCHEMAS[name]) for name in TOOLS}

    def problem(self, tool: str, arguments: dict[str, Any]) -> str | None:
        """Why these arguments cannot be used for `tool`, or None when they can.

        The schema is checked by its compiled predicate (schema_check.py); jsonschema is
        consulted only when that refuses, to find and word the error.
        """
        if tool not in self._handlers:
            return f"unknown tool {tool!r}; this engine offers {', '.join(TOOLS)}"
        if not self._quick_checks[tool](arguments):
            from jsonschema.exceptions import best_match

            error = best_match(self._validators[tool].iter_errors(arguments))
            if error is not None:
                where = "/".join(str(part) for part in error.absolute_path) or "arguments"
                return f"{tool}: invalid arguments: {where}: {_shorten(error.message)}"
        memory_type = arguments.get("memory_type")
        if isinstance(memory_type, str) and memory_type.endswith("\n"):
            # Python's `$` (jsonschema's pattern) also matches before a final newline.
            return f"{tool}: invalid arguments: memory_type: {memory_type!r} ends with a newline"
        if tool == contract.MEMORY_WRITE:
            size = len(json.dumps(arguments["content"], ensure_ascii=False))
            if size > MAX_CONTENT_CHARS:
                return f"{tool}: content is {size} characters as JSON; the limit is {MAX_CONTENT_CHARS}"
        return None

    def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Run a tool on arguments that `problem` accepted; the result object."""
        return self._handlers[tool](arguments, self.clock())

    def _surprise(self, args: dict[str, Any], now: float) -> dict[str, Any]:
        context = args["context"]
        result = surprise.observe(
            self.conn,
            user_id=context["user_id"],
            text=args["input"],
            now=now,
            username=context.get("username"),
            channel=context.get("channel"),
            domain=context.get("domain"),
        )
        return _as_dict(result)

    def _route(self, args: dict[str, Any], now: float) -> dict[str, Any]:
        profile = args.get("user_profile") or {}
        score = profile.get("surprise_score")
        result = routing.route(
            self.conn,
            self.catalog,
            text=args["input"],
            task_type=args.get("task_type", "chat"),
            user_id=profile.get("user_id"),
            surprise=None if score is None else float(score),
            now=now,
        )
        return _as_dict(result)

    def _memory_write(self, args: dict[str, Any], now: float) -> dict[str, Any]:
        memory_id = memory.write(
            self.conn,
            user_id=args["user_id"],
            memory_type=args["memory_type"],
            content=args["content"],
            importance=float(args.get("importance", 0.5)),
            now=now,
        )
        return {"memory_id": memory_id}

    def _memory_read(self, args: dict[str, Any], now: float) -> dict[str, Any]:
        page = memory.read(
            self.conn,
            user_id=args["user_id"],
            query=args["query"],
            top_k=int(args.get("top_k", 5)),
            memory_type=args.get("memory_type"),
            now=now,
        )
        return _as_dict(page)

    def _analyze_learning(self, args: dict[str, Any], now: float) -> dict[str, Any]:
        summary = learning.analyze(
            self.conn, user_id=args["user_id"], window_days=int(args.get("window_days", 30)), now=now
        )
        return {"user_id": args["user_id"], **_as_dict(summary)}


def tool_list() -> list[mcp_types.Tool]:
    """The five tools, each declaring exactly the contract's input and output schemas."""
    import mcp_types

    return [
        mcp_types.Tool(
            name=name,
            title=_DESCRIPTIONS[name][0],
            description=_DESCRIPTIONS[name][1],
            input_schema=contract.INPUT_SCHEMAS[name],
            output_schema=contract.OUTPUT_SCHEMAS[name],
            annotations=mcp_types.ToolAnnotations(
                read_only_hint=name in _READ_ONLY, destructive_hint=False, open_world_hint=False
            ),
        )
        for name in TOOLS
    ]


def tool_result(payload: dict[str, Any]) -> mcp_types.CallToolResult:
    """A tool's answer both ways the contract allows: structured, and as JSON text for clients
    that read only text (docs/mbe-contract.md)."""
    import mcp_types

    text = json.dumps(payload, ensure_ascii=False)
    return mcp_types.CallToolResult(content=[mcp_types.TextContent(text=text)], structured_content=payload)


def tool_failure(message: str) -> mcp_types.CallToolResult:
    """A refused or failed call, as MCP says: a result the model can read, not a protocol error."""
    import mcp_types

    return mcp_types.CallToolResult(content=[mcp_types.TextContent(text=message)], is_error=True)


def _answer(engine: Engine, tool: str, arguments: dict[str, Any]) -> mcp_types.CallToolResult:
    problem = engine.problem(tool, arguments)
    if problem is not None:
        return tool_failure(problem)
    started = time.perf_counter()
    try:
        payload = engine.call(tool, arguments)
    except Exception as exc:
        log.exception("%s failed", tool)
        return tool_failure(f"{tool} failed inside the engine ({type(exc).__name__}: {_shorten(str(exc))})")
    log.debug("%s answered in %.2f ms", tool, (time.perf_counter() - started) * 1000)
    return tool_result(payload)


def build_server(engine: Engine) -> Server[Any]:
    """An MCP server offering the engine's tools (any transport can run it)."""
    import mcp_types
    from mcp.server import ServerRequestContext
    from mcp.server.lowlevel import Server

    import mbe_gateway

    tools = tool_list()

    async def list_tools(
        ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListToolsResult:
        return mcp_types.ListToolsResult(tools=tools)

    async def call_tool(
        ctx: ServerRequestContext[Any], params: mcp_types.CallToolRequestParams
    ) -> mcp_types.CallToolResult:
        return _answer(engine, params.name, dict(params.arguments or {}))

    return Server(
        "mbe-gateway-engine",
        version=mbe_gateway.__version__,
        instructions=(
            "The embedded MBE engine of mbe-gateway: per-user novelty, expert routing, memory "
            "and learning summaries, in English and Chinese. Every tool takes the user's id."
        ),
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def _serve_stdio(engine: Engine) -> None:
    from mbe_gateway.engine.stdio import stdio_streams

    server = build_server(engine)
    async with stdio_streams() as (read_stream, write_stream):
        log.info("engine ready: %d experts from %s", len(engine.catalog.experts), engine.catalog.source)
        await server.run(read_stream, write_stream, server.create_initialization_options())


def serve(db_path: Path | None = None, *, experts_path: Path | None = None) -> None:
    """Run the engine over stdin/stdout until stdin closes or stdout breaks (blocking).

    db_path defaults to paths.engine_db(); experts_path to $MBE_ENGINE_EXPERTS, then the
    built-in catalog. Raises ConfigError (bad catalog) or StoreError (unusable database)
    before serving anything.
    """
    import anyio

    catalog = load_catalog(experts_path)
    path = db_path or paths.engine_db()
    conn = open_db(path)
    log.info("engine database: %s", path)
    try:
        # asyncio, not trio: the stdio transport is built on asyncio's pipe transports (stdio.py).
        anyio.run(_serve_stdio, Engine(conn, catalog), backend="asyncio")
    finally:
        conn.close()
