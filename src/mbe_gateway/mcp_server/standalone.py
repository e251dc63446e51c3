"""No daemon: the MCP server serves the MBE tools from an engine of its own and reads the store.

The engine is the one `[mbe]` configures (the embedded engine by default), started on the
first MBE call rather than at start-up: Claude Desktop starts its MCP servers with itself,
and most sessions never touch memory. One task owns it (`_own_engine`, in the server's task
group); that task also stops it

- as soon as a daemon holds the data dir (looked at every WATCH_EVERY seconds), so the
  daemon's engine never shares the engine database with ours for longer than that (the
  server also looks before every call and never calls ours while a daemon runs);
- after IDLE_STOP seconds without a call, so an idle Claude Desktop keeps no engine around.

The gateway's database is opened per call, read and closed: a daemon may start at any time
and SQLite (WAL) lets the two processes share the file, but nothing here should hold it
longer than a call. Sending needs the daemon's channels and outbox worker: it is refused
with a clear message, never queued for a daemon that may not come.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc

from mbe_gateway.errors import ControlError

if TYPE_CHECKING:
    from mbe_gateway.config import Config
    from mbe_gateway.mbe import MBEClient, Server
    from mbe_gateway.secrets import Secrets

log = logging.getLogger(__name__)

WATCH_EVERY: Final = 1.0  # seconds between looks for a daemon (and at idleness) while our engine runs
IDLE_STOP: Final = 600.0  # seconds without an MBE call after which our engine is stopped
MAX_FOUND_CHARS: Final = 2000  # as the control protocol's history.search


class Standalone:
    """The MCP server's own engine and the store, for when no daemon runs."""

    def __init__(
        self,
        config: Config,
        secrets: Secrets,
        data_dir: Path,
        tg: anyio.abc.TaskGroup,
        *,
        daemon_running: Callable[[], bool],
        idle_stop: float = IDLE_STOP,
    ) -> None:
        self._config = config
        self._idle_stop = idle_stop
        self._secrets = secrets
        self._data = data_dir
        self._tg = tg
        self._daemon_running = daemon_running
        self._server: Server | None = None
        self._engine: MBEClient | None = None
        self._stop: anyio.Event | None = None
        self._stopped: anyio.Event | None = None
        self._last_used = 0.0
        self._lock = anyio.Lock()  # one start or stop at a time

    @property
    def engine_pid(self) -> int | None:
        return self._engine.pid if self._engine is not None else None

    async def mbe(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        engine = await self._running_engine()
        self._last_used = anyio.current_time()
        return await engine.call(tool, arguments)

    async def stop_engine(self) -> None:
        """Stop our engine (if it runs) and return once it has stopped."""
        async with self._lock:
            if self._stop is not None and self._stopped is not None:
                self._stop.set()
                await self._stopped.wait()

    async def send(self, channel: str, chat_id: str, text: str) -> dict[str, Any]:
        from mbe_gateway.control.protocol import UNAVAILABLE

        raise ControlError(
            "sending needs the daemon, which is not running: start it (`mbe-gateway run`, or the "
            "service), then call again; nothing was sent or queued",
            code=UNAVAILABLE,
        )

    async def conversations(self, limit: int, channel: str | None) -> dict[str, Any]:
        from mbe_gateway.store import open_database, overview

        async with await open_database(self._data / "gateway.sqlite3") as db:
            found = await overview.recent_sessions(db, limit=limit, channel=channel)
        return {"sessions": [asdict(s) for s in found]}

    async def search(self, query: str, limit: int, channel: str | None) -> dict[str, Any]:
        from mbe_gateway.store import open_database, overview

        async with await open_database(self._data / "gateway.sqlite3") as db:
            found = await overview.search_messages(
                db, query, limit=limit, channel=channel, max_chars=MAX_FOUND_CHARS
            )
        return {"messages": [asdict(m) for m in found]}

    async def status(self) -> dict[str, Any]:
        from mbe_gateway.store import open_database, overview

        async with await open_database(self._data / "gateway.sqlite3") as db:
            queues = await overview.queue_depths(db)
        engine = self._engine
        return {
            "data_dir": str(self._data),
            "engine": {
                "server": self._server_of_config().name,
                "state": engine.state if engine is not None else "stopped (starts on the first MBE call)",
                "pid": engine.pid if engine is not None else None,
            },
            "queues": asdict(queues),
        }

    # --- the engine's owner ---------------------------------------------------------------------

    async def _running_engine(self) -> MBEClient:
        async with self._lock:
            if self._engine is None:
                await self._tg.start(self._own_engine, name="mcp: own engine")
            assert self._engine is not None
            engine = self._engine
        await engine.wait_ready(self._config.mbe.connect_timeout)
        return engine

    async def _own_engine(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        from mbe_gateway.mbe import MBEClient

        server = self._server_of_config()
        self._stop, self._stopped = anyio.Event(), anyio.Event()
        self._last_used = anyio.current_time()
        try:
            client = MBEClient(
                server,
                call_timeout=self._config.mbe.call_timeout,
                connect_timeout=self._config.mbe.connect_timeout,
                home=self._data,
            )
            async with client:
                self._engine = client
                log.info("no daemon runs: starting our own engine", extra={"server": server.name})
                task_status.started()
                why = await self._watch(self._stop)
                self._engine = None
                log.info("stopping our own engine", extra={"why": why, "pid": client.pid})
        finally:
            self._engine = None
            self._stopped.set()
            self._stop = self._stopped = None

    async def _watch(self, stop: anyio.Event) -> str:
        """Wait until the engine must stop; why, in words."""
        while True:
            with anyio.move_on_after(WATCH_EVERY):
                await stop.wait()
                return "asked to"
            if self._daemon_running():
                return "a daemon started; it has its own engine"
            if anyio.current_time() - self._last_used > self._idle_stop:
                return f"no MBE call for {self._idle_stop:g} s"

    def _server_of_config(self) -> Server:
        """The MBE server `[mbe]` names (secrets resolved once, when first needed)."""
        if self._server is None:
            from mbe_gateway.mbe import from_settings

            self._server = from_settings(self._config.mbe, self._secrets, self._data)
        return self._server
