"""A control-plane client, for the CLI: connect with a token, call methods, hear events.

    async with connect(config.control, token) as client:
        payload = await client.call("status")

Every failure is a ControlError whose message says what to do: the daemon is not running,
the token is wrong, the method refused. Calls are one at a time (the CLI never needs more);
events that arrive while waiting for an answer go to `on_event`, or are dropped.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import aiohttp
import anyio

from mbe_gateway.config import ControlSettings
from mbe_gateway.control.protocol import UNAUTHORIZED, UNAVAILABLE
from mbe_gateway.errors import ControlError, DaemonNotRunning

OnEvent = Callable[[str, Mapping[str, Any]], Awaitable[None]]

CONNECT_WITHIN: Final = 5.0  # seconds to reach the daemon and be let in
MAX_ANSWER: Final = 16 * 1024 * 1024  # bytes in one answer from the daemon (a long history)
_ANY_ADDRESS: Final = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104 (mapped to loopback)


class ControlClient:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, where: str) -> None:
        self._ws = ws
        self._where = where
        self._ids = itertools.count(1)
        self._lock = anyio.Lock()

    async def call(
        self, method: str, params: Mapping[str, Any] | None = None, *, on_event: OnEvent | None = None
    ) -> dict[str, Any]:
        """The payload of `method`'s answer; ControlError (with the protocol's code) if refused."""
        async with self._lock:
            request_id = next(self._ids)
            frame = {"type": "req", "id": request_id, "method": method, "params": dict(params or {})}
            try:
                await self._ws.send_str(json.dumps(frame, ensure_ascii=False))
            except ConnectionError:
                raise self._gone() from None
            while True:
                message = await self._ws.receive()
                if message.type is not aiohttp.WSMsgType.TEXT:
                    raise self._gone()
                answer = json.loads(message.data)
                if answer.get("type") == "event":
                    if on_event is not None:
                        await on_event(str(answer.get("event")), answer.get("payload") or {})
                    continue
                if answer.get("type") != "res" or answer.get("id") != request_id:
                    continue
                if answer.get("ok"):
                    payload = answer.get("payload")
                    return payload if isinstance(payload, dict) else {}
                error = answer.get("error") or {}
                raise ControlError(
                    str(error.get("message", "refused")), code=str(error.get("code", "failed"))
                )

    def _gone(self) -> ControlError:
        why = f" ({self._ws.close_code})" if self._ws.close_code else ""
        return ControlError(f"the daemon at {self._where} closed the connection{why}", code=UNAVAILABLE)


@asynccontextmanager
async def connect(settings: ControlSettings, token: str) -> AsyncIterator[ControlClient]:
    """A connected, authenticated client of the daemon configured by `settings`."""
    host = settings.host.strip("[]")
    host = _ANY_ADDRESS.get(host, host)
    where = f"[{host}]:{settings.port}" if ":" in host else f"{host}:{settings.port}"
    async with aiohttp.ClientSession() as session:
        try:
            with anyio.fail_after(CONNECT_WITHIN):
                ws = await session.ws_connect(f"ws://{where}/ws", max_msg_size=MAX_ANSWER, autoping=True)
        except (aiohttp.ClientConnectorError, TimeoutError):
            raise DaemonNotRunning(
                f"the daemon is not running: nothing answers on {where}; start it with `mbe-gateway run`"
            ) from None
        except aiohttp.WSServerHandshakeError as e:
            raise ControlError(
                f"{where} is not an mbe-gateway control plane (HTTP {e.status}); check [control] port",
                code=UNAVAILABLE,
            ) from None
        async with ws:
            client = ControlClient(ws, where)
            try:
                with anyio.fail_after(CONNECT_WITHIN):
                    await client.call("connect", {"token": token})
            except TimeoutError:
                raise ControlError(
                    f"the daemon at {where} did not let us in; is it busy?", code=UNAVAILABLE
                ) from None
            except ControlError as e:
                if e.code != UNAUTHORIZED:
                    raise
                raise ControlError(
                    f"the daemon at {where} refused our control token: run this command as the user, "
                    "and with the config, that the daemon runs with",
                    code=UNAUTHORIZED,
                ) from None
            yield client
