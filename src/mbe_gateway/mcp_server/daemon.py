"""The running daemon as the MCP server's backend: every tool forwarded over the control protocol.

The MBE tools go to the daemon's own engine (`mbe.call`), so Claude and the chat channels share
one engine process and one memory; the rest map onto `send`, `sessions.list`,
`history.search` and `status`. Each call opens its own connection (a few milliseconds on
loopback, which a person-paced MCP client does not notice) so a daemon that restarts between
two calls costs nothing. A daemon that holds the data dir but whose control plane does not
answer yet is waited for until REACH_WITHIN seconds after it started (when it wrote its pid
in the lock file); one that never answers is reported, never worked around with a second
engine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio

from mbe_gateway import lock
from mbe_gateway.control.protocol import UNAVAILABLE
from mbe_gateway.errors import ControlError

if TYPE_CHECKING:
    from mbe_gateway.config import Config
    from mbe_gateway.control.auth import Scope
    from mbe_gateway.control.client import ControlClient
    from mbe_gateway.secrets import Secrets

log = logging.getLogger(__name__)

REACH_WITHIN: Final = 15.0  # seconds from a daemon's start its control plane gets to answer
RETRY_EVERY: Final = 0.25
ANSWER_MARGIN: Final = 10.0  # seconds beyond the daemon's own MBE call timeout


class Daemon:
    """The daemon holding the data dir (pid `pid`), reached through its control plane."""

    def __init__(
        self, config: Config, secrets: Secrets, data_dir: Path, *, still_running: Callable[[], bool]
    ) -> None:
        """`still_running` says whether the daemon still holds the data dir: waiting for its
        control plane stops as soon as it does not."""
        self._config = config
        self._secrets = secrets
        self._lock_file = data_dir / lock.LOCK_FILE
        self._still_running = still_running

    async def mbe(self, tool: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        answer = await self._call("mbe.call", {"tool": tool, "arguments": dict(arguments)}, "admin")
        result = answer.get("result")
        return result if isinstance(result, dict) else {}

    async def send(self, channel: str, chat_id: str, text: str) -> dict[str, Any]:
        answer = await self._call("send", {"channel": channel, "chat_id": chat_id, "text": text}, "admin")
        return {**answer, "sent_by": "the daemon's delivery worker"}

    async def conversations(self, limit: int, channel: str | None) -> dict[str, Any]:
        return await self._call("sessions.list", {"limit": limit, "channel": channel}, "read")

    async def search(self, query: str, limit: int, channel: str | None) -> dict[str, Any]:
        params = {"query": query, "limit": limit, "channel": channel}
        return await self._call("history.search", params, "read")

    async def status(self) -> dict[str, Any]:
        return await self._call("status", {}, "read")

    async def _call(self, method: str, params: Mapping[str, Any], scope: Scope) -> dict[str, Any]:
        """`method` on the daemon: waited for while its control plane is not up yet, or while
        its assistant is still starting (its control plane answers before it is ready)."""
        from mbe_gateway.control.auth import client_token
        from mbe_gateway.control.client import connect

        token = client_token(self._secrets, scope)
        deadline = anyio.current_time() + self._starting_for_up_to()
        while True:
            connected, waiting = False, None
            try:
                async with connect(self._config.control, token) as client:
                    connected = True
                    within = self._config.mbe.call_timeout + ANSWER_MARGIN
                    with anyio.move_on_after(within):
                        try:
                            return await client.call(method, params)
                        except ControlError as e:
                            # Waited for only while the assistant starts: "unavailable" after
                            # an engine timeout may follow a write that happened, not to repeat.
                            if e.code != UNAVAILABLE or not await _assistant_starting(client):
                                raise
                            waiting = e
                    if waiting is None:
                        raise ControlError(
                            f"the daemon did not answer {method} within {within:g} s; is it overloaded?"
                        )
                    raise waiting
            except ControlError as e:
                if e.code != UNAVAILABLE or (connected and e is not waiting):
                    raise  # a refused token, bad params, not a control plane: its message says what to do
                if anyio.current_time() >= deadline:
                    raise (e if connected else self._silent()) from None
                if not self._still_running():
                    raise ControlError(
                        "the daemon stopped while this call was being made; call again "
                        "(without a daemon this MCP server uses its own engine)",
                        code=UNAVAILABLE,
                    ) from None
                await anyio.sleep(RETRY_EVERY)

    def _starting_for_up_to(self) -> float:
        """Seconds left of REACH_WITHIN since the daemon started (it wrote the lock file then)."""
        try:
            started = self._lock_file.stat().st_mtime
        except OSError:
            return REACH_WITHIN
        return max(0.0, min(REACH_WITHIN, started + REACH_WITHIN - time.time()))

    def _silent(self) -> ControlError:
        where = f"{self._config.control.host}:{self._config.control.port}"
        return ControlError(
            f"a daemon runs on this data dir, but its control plane does not answer on {where}: check "
            "that it and this MCP server use the same config, and `mbe-gateway status`. This MCP "
            "server does not start a second engine beside the daemon's",
            code=UNAVAILABLE,
        )


async def _assistant_starting(client: ControlClient) -> bool:
    status = await client.call("status")
    return bool((status.get("components") or {}).get("assistant") == "starting")
