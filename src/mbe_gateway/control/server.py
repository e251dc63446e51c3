"""The control plane's one listener: the control page at /, the WebSocket protocol at /ws,
/healthz and /metrics.

aiohttp.web serves it, because it is already a dependency (slack-sdk and aiogram run on it)
and has both a WebSocket server and client; uvicorn would need a WebSocket library we do
not have. Its runner lives inside our task group: no threads, no signal handlers of its
own, no access log (a URL may carry what someone thought was a token).

Security, in the order a connection meets it:

- The listener is on loopback unless `[control] allow_remote` says otherwise (with a
  warning). Forwarded headers (X-Forwarded-For and friends) are never read.
- /, /ws and /metrics refuse any query string: a token in a URL ends up in shell histories,
  browser histories and proxy logs, so none is ever accepted there.
- / and /ws refuse a Host that is not loopback while the listener is (a DNS-rebinding page
  names its own host), and /ws refuses a browser page from another origin (a page's Origin
  must name this host). The page itself holds no data and carries a strict CSP (page.py).
- The first frame must be `connect` with a token, within `AUTH_WITHIN` seconds; anything
  else, or a wrong token, closes the socket. Frames are capped at `protocol.MAX_FRAME`
  from the first byte, so an unauthenticated client cannot make us buffer more.
- Each method needs a scope; the read-only token cannot call an admin method.
- /metrics wants `Authorization: Bearer <token>` (either token); /healthz says only ok/not ok.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import anyio
import anyio.abc
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.http_websocket import WebSocketError
from anyio.streams.memory import MemoryObjectReceiveStream

from mbe_gateway import __version__
from mbe_gateway.config import ControlSettings, is_loopback
from mbe_gateway.control import metrics, page, protocol, status
from mbe_gateway.control.auth import Scope, Tokens, allows, ensure_tokens
from mbe_gateway.control.events import Event
from mbe_gateway.control.methods import METHODS, Call, ServerState
from mbe_gateway.errors import (
    ConfigError,
    ControlError,
    GatewayError,
    MBEError,
    PairingError,
    ProviderError,
    SecretError,
    StoreError,
)
from mbe_gateway.mbe.backoff import Backoff

if TYPE_CHECKING:
    from mbe_gateway.gateway import Gateway
    from mbe_gateway.secrets import Secrets

log = logging.getLogger(__name__)

AUTH_WITHIN: Final = 10.0  # seconds a new connection has to send `connect`
HEARTBEAT: Final = 30.0  # seconds between pings; a client that does not answer is dropped
MAX_CONNECTIONS: Final = 64  # open WebSockets, authenticated or not
MAX_IN_FLIGHT: Final = 16  # requests being answered on one connection
WATCH_EVERY: Final = 0.5  # seconds between looks at the components' states
HEALTH_WITHIN: Final = 2.0  # seconds the store has to answer /healthz
SHUTDOWN_WITHIN: Final = 2.0  # seconds open requests get when the daemon stops
EVENTS: Final = ("message", "state", "pairing", "chat.delta")


async def serve(
    gateway: Gateway,
    settings: ControlSettings,
    secrets: Secrets,
    *,
    backoff: Backoff | None = None,
    task_status: anyio.abc.TaskStatus[ControlServer | None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """The daemon's control plane, until cancelled; it never takes the daemon down.

    Served from the daemon's first moment, while the assistant may still be starting (status
    says so, and what needs the assistant answers `unavailable`). Makes the tokens if they are
    missing, then listens, and listens again (with backoff) if that fails, say because the
    port is taken. Without tokens (no secure place to keep them) it logs how to fix that and
    stays off. Started with the server, or None when it stays off.
    """
    try:
        tokens, made = ensure_tokens(secrets)
    except SecretError as e:
        log.error("control plane not started: it has no token", extra={"error": str(e)})
        task_status.started(None)
        return
    if made:
        log.info("control plane tokens generated and stored", extra={"secrets": list(made)})
    server = ControlServer(gateway, settings, tokens)
    task_status.started(server)
    backoff = backoff if backoff is not None else Backoff(base=1.0, cap=60.0)
    attempt = 0
    while True:
        started = anyio.current_time()
        try:
            await server.run()
        except ConfigError as e:
            log.error("control plane not started", extra={"error": str(e)})
            return
        except OSError as e:
            if anyio.current_time() - started > backoff.healthy_after:
                attempt = 0
            delay = backoff.delay(attempt)
            attempt += 1
            log.error(
                "control plane cannot listen; trying again",
                extra={
                    "address": f"{settings.host}:{settings.port}",
                    "error": str(e),
                    "retry_in": round(delay, 2),
                },
            )
            await anyio.sleep(delay)


class ControlServer:
    def __init__(self, gateway: Gateway, settings: ControlSettings, tokens: Tokens) -> None:
        self.gateway = gateway
        self.settings = settings
        self.tokens = tokens
        self.state = ServerState()
        self.address: tuple[str, int] | None = None  # where it listens, while it does
        self._sockets: set[web.WebSocketResponse] = set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and serve until cancelled; started with the bound (host, port).

        OSError when the address cannot be bound; ConfigError for a remote address without
        `allow_remote`.
        """
        host = self.settings.host.strip("[]")
        remote = not is_loopback(host)
        if remote and not self.settings.allow_remote:
            raise ConfigError(f"[control] host {host!r} is not loopback; set allow_remote = true to bind it")
        shown = page.load(self.gateway.language)
        app = web.Application()
        app.router.add_get("/", functools.partial(self._page, shown))
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/ws", self._websocket)
        app.on_shutdown.append(self._close_sockets)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_WITHIN)
        sock = _bind(host, self.settings.port)
        try:
            await runner.setup()
            await web.SockSite(runner, sock).start()
            bound = sock.getsockname()
            self.address = (str(bound[0]), int(bound[1]))
            where = f"{self.address[0]}:{self.address[1]}"
            if remote:
                log.warning(
                    "the control plane listens beyond loopback (allow_remote = true): anyone who can "
                    "reach this address can try tokens; prefer an SSH tunnel",
                    extra={"address": where},
                )
            log.info("control plane listening", extra={"address": where})
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_states, name="control: state events")
                task_status.started(self.address)
                await anyio.sleep_forever()
        finally:
            self.address = None
            with anyio.CancelScope(shield=True):
                await runner.cleanup()
            sock.close()

    # --- HTTP ---------------------------------------------------------------------------------

    async def _page(self, shown: page.Page, request: web.Request) -> web.Response:
        if request.query_string:
            return self._refuse_http(request, 400, "query_string", _NO_QUERY)
        if not self._local_host(request):
            return self._refuse_http(request, 403, "foreign_host", _FOREIGN_HOST)
        return web.Response(body=shown.body, headers=shown.headers(request.host))

    def _local_host(self, request: web.Request) -> bool:
        """Whether the request names this machine: a page that reached a loopback listener
        under another name got there by DNS rebinding. Beyond loopback any name goes."""
        if self.settings.allow_remote:
            return True
        hostname = urlsplit(f"//{request.host}").hostname
        return hostname is not None and is_loopback(hostname)

    async def _healthz(self, request: web.Request) -> web.Response:
        """ok while the daemon can use its store; nothing else, to anyone."""
        try:
            with anyio.fail_after(HEALTH_WITHIN):
                await status.queues(self.gateway)
            healthy = True
        except (TimeoutError, StoreError):
            healthy = False
        return web.Response(
            text="ok\n" if healthy else "not ok\n",
            status=200 if healthy else 503,
            headers={"Cache-Control": "no-store"},
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        if request.query_string:
            return self._refuse_http(request, 400, "query_string", _NO_QUERY)
        if self._bearer(request) is None:
            return self._refuse_http(
                request, 401, "http_unauthorized", "send a control token: Authorization: Bearer <token>\n"
            )
        families = [
            *self.gateway.metrics.families(),
            *await status.families(
                self.gateway, started_at=self.state.started_at, clients=self.state.clients
            ),
        ]
        return web.Response(
            body=metrics.exposition(families).encode(),
            headers={"Content-Type": metrics.CONTENT_TYPE, "Cache-Control": "no-store"},
        )

    def _bearer(self, request: web.Request) -> Scope | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.tokens.scope_of(token.strip())

    def _refuse_http(self, request: web.Request, code: int, reason: str, text: str) -> web.Response:
        self._refused(request, reason)
        headers = {"Cache-Control": "no-store"}
        if code == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="mbe-gateway"'
        return web.Response(status=code, text=text, headers=headers)

    def _refused(self, request: web.Request, reason: str) -> None:
        """Count and log a refusal: the peer and the reason, never what it sent."""
        self.gateway.metrics.control_refusals.inc(reason)
        log.warning("control plane refused a client", extra={"reason": reason, "peer": request.remote})

    # --- the WebSocket --------------------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if request.query_string:
            return self._refuse_http(request, 400, "query_string", _NO_QUERY)
        if not self._local_host(request):
            return self._refuse_http(request, 403, "foreign_host", _FOREIGN_HOST)
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            return self._refuse_http(
                request, 403, "foreign_origin", "pages from other sites may not connect\n"
            )
        if len(self._sockets) >= MAX_CONNECTIONS:
            return self._refuse_http(request, 503, "too_many_connections", "too many connections\n")
        ws = web.WebSocketResponse(max_msg_size=protocol.MAX_FRAME, heartbeat=HEARTBEAT, compress=False)
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            scope = await self._authenticate(request, ws)
            if scope is not None:
                log.debug("control client connected", extra={"scope": scope, "peer": request.remote})
                self.state.clients += 1
                try:
                    await _Connection(self, ws, scope).serve()
                finally:
                    self.state.clients -= 1
        finally:
            self._sockets.discard(ws)
            with anyio.CancelScope(shield=True):
                await ws.close()
        return ws

    async def _authenticate(self, request: web.Request, ws: web.WebSocketResponse) -> Scope | None:
        """The first frame: `connect` with a valid token, or the socket is closed."""
        try:
            message = await ws.receive(timeout=AUTH_WITHIN)
        except TimeoutError:
            await self._deny(request, ws, "auth_timeout", None, f"send connect within {AUTH_WITHIN:g} s")
            return None
        if message.type is WSMsgType.ERROR:  # aiohttp has closed it already (1009 when too big)
            error = message.data
            too_big = isinstance(error, WebSocketError) and error.code == WSCloseCode.MESSAGE_TOO_BIG
            self._refused(request, "oversized_frame" if too_big else "bad_frame")
            return None
        if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return None  # the client left
        frame = protocol.parse(message.data)
        if isinstance(frame, protocol.Malformed):
            await self._deny(request, ws, "bad_frame", frame.id, "the first frame must be a connect request")
            return None
        if frame.method != "connect":
            await self._deny(request, ws, "not_connect", frame.id, "the first request must be connect")
            return None
        scope = self.tokens.scope_of(frame.params.get("token"))
        if scope is None:
            await self._deny(request, ws, "wrong_token", frame.id, "no token, or a wrong one")
            return None
        hello = {
            "scope": scope,
            "version": __version__,
            "language": self.gateway.language,
            "methods": sorted(name for name, method in METHODS.items() if allows(scope, method.scope)),
            "events": list(EVENTS),
            "max_frame": protocol.MAX_FRAME,
        }
        await ws.send_str(protocol.response(frame.id, hello))
        return scope

    async def _deny(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        reason: str,
        request_id: protocol.RequestId | None,
        message: str,
    ) -> None:
        self._refused(request, reason)
        with contextlib.suppress(ConnectionError):
            await ws.send_str(protocol.error(request_id, protocol.UNAUTHORIZED, message))
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"unauthorized")

    async def _close_sockets(self, app: web.Application) -> None:
        for ws in list(self._sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"the daemon is stopping")

    async def _watch_states(self) -> None:
        """Publish a "state" event whenever a component's state changes."""
        seen = status.components(self.gateway)
        while True:
            await anyio.sleep(WATCH_EVERY)
            now = status.components(self.gateway)
            for component, state in now.items():
                if seen.get(component) != state:
                    self.gateway.events.publish("state", {"component": component, "state": state})
            seen = now


_NO_QUERY: Final = (
    "this endpoint takes no query string: tokens are never accepted in a URL; send them in the "
    "connect frame (WebSocket) or an Authorization: Bearer header\n"
)

_FOREIGN_HOST: Final = "this control plane answers only to a loopback name (127.0.0.1, localhost, ::1)\n"


class _Connection:
    """One authenticated client: its requests answered concurrently, events forwarded to it."""

    def __init__(self, server: ControlServer, ws: web.WebSocketResponse, scope: Scope) -> None:
        self._server = server
        self._gateway = server.gateway
        self._ws = ws
        self._scope = scope
        self._send_lock = anyio.Lock()
        self._in_flight = 0

    async def serve(self) -> None:
        with self._gateway.events.subscribe() as events:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._forward, events)
                async for message in self._ws:
                    if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                        continue
                    frame = protocol.parse(message.data)
                    if isinstance(frame, protocol.Malformed):
                        await self._send(protocol.error(frame.id, protocol.BAD_REQUEST, frame.message))
                    elif self._in_flight >= MAX_IN_FLIGHT:
                        busy = f"{MAX_IN_FLIGHT} requests are already being answered on this connection"
                        await self._send(protocol.error(frame.id, protocol.BUSY, busy))
                    else:
                        self._in_flight += 1
                        tg.start_soon(self._answer, frame)
                tg.cancel_scope.cancel()

    async def _forward(self, events: MemoryObjectReceiveStream[Event]) -> None:
        async for event in events:
            await self._send(protocol.event(event.name, event.payload))
        # The stream ended: this client fell too far behind.
        await self._ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow reading events")

    async def _answer(self, frame: protocol.Request) -> None:
        try:
            payload = await self._dispatch(frame)
            text = protocol.response(frame.id, payload)
        except ControlError as e:
            text = protocol.error(frame.id, e.code, str(e))
        except PairingError as e:
            text = protocol.error(frame.id, protocol.NOT_FOUND, str(e))
        except (ProviderError, MBEError) as e:
            text = protocol.error(frame.id, protocol.UNAVAILABLE, str(e))
        except GatewayError as e:
            text = protocol.error(frame.id, protocol.FAILED, str(e))
        except Exception:
            log.exception("a control request failed", extra={"method": frame.method})
            text = protocol.error(
                frame.id, protocol.INTERNAL, "an internal error; the daemon's log has details"
            )
        finally:
            self._in_flight -= 1
        await self._send(text)

    async def _dispatch(self, frame: protocol.Request) -> Mapping[str, Any]:
        if frame.method == "connect":
            raise ControlError("this connection is already authenticated", code=protocol.BAD_REQUEST)
        method = METHODS.get(frame.method)
        if method is None:
            raise ControlError(
                f"no method {frame.method[:64]!r}; known: {', '.join(sorted(METHODS))}",
                code=protocol.UNKNOWN_METHOD,
            )
        if not allows(self._scope, method.scope):
            self._gateway.metrics.control_refusals.inc("forbidden")
            raise ControlError(
                f"{frame.method} needs the admin token; this connection has the read-only one",
                code=protocol.FORBIDDEN,
            )
        call = Call(self._gateway, self._server.state, frame.id, frame.params, self._emit)
        return await method.handler(call)

    async def _emit(self, name: str, payload: Mapping[str, Any]) -> None:
        await self._send(protocol.event(name, payload))

    async def _send(self, text: str) -> None:
        """Send one frame; a client that has gone is not an error (its requests end with it)."""
        async with self._send_lock:
            if self._ws.closed:
                return
            with contextlib.suppress(ConnectionError):
                await self._ws.send_str(text)


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on host:port (port 0: any free one), IPv4 or IPv6."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock
