"""The method table: each protocol method's name, the scope it needs, and its handler.

Handlers receive a `Call` (the gateway, this server's shared state, the checked request's
params, and a way to send events to the calling client only) and return the response's
payload, or raise: ControlError with a protocol code, or any GatewayError, which the server
maps to a code (docs/control-protocol.md). `connect` is not here: the server handles it before
any of these can be called.

The server answers from the daemon's first moment, before the assistant is attached: what
needs the assistant (`chat.send`, `mbe.call`) is then `unavailable`; everything else reads
the store, the channels and the outbox, which are there from the start.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import anyio

from mbe_gateway import __version__, access, contract
from mbe_gateway.control import events, status
from mbe_gateway.control.auth import Scope
from mbe_gateway.control.protocol import (
    FAILED,
    INVALID_PARAMS,
    NOT_FOUND,
    UNAVAILABLE,
    RequestId,
    int_param,
    optional_text_param,
    text_param,
)
from mbe_gateway.errors import ControlError, MBEToolError, PairingError
from mbe_gateway.pipeline import Reply, Request
from mbe_gateway.store import history, outbox, overview, pairing

if TYPE_CHECKING:
    from mbe_gateway.assistant import Assistant
    from mbe_gateway.gateway import Gateway

CONTROL_CHANNEL: Final = "control"  # the channel name of conversations held through the control plane
OWNER: Final = "owner"  # who speaks there: the one who holds the admin token
MAX_TEXT: Final = 32_000  # characters in a chat message or a message to send
MAX_CHAT_ID: Final = 256
MAX_FOUND_CHARS: Final = 2000  # characters of each message a history search shows
MBE_TOOLS: Final = (*contract.REQUIRED_TOOLS, *contract.OPTIONAL_TOOLS)

Emit = Callable[[str, Mapping[str, Any]], Awaitable[None]]


@dataclass
class ServerState:
    """What the running server shares with its handlers."""

    started_at: float = field(default_factory=time.time)
    clients: int = 0  # authenticated connections
    chat_lock: anyio.Lock = field(default_factory=anyio.Lock)  # one answer at a time in control chats


@dataclass(frozen=True)
class Call:
    gateway: Gateway
    server: ServerState
    request_id: RequestId
    params: Mapping[str, Any]
    emit: Emit  # an event to the calling client only


Handler = Callable[[Call], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True)
class Method:
    scope: Scope
    handler: Handler
    summary: str


# --- reads ---------------------------------------------------------------------------------


async def health(call: Call) -> Mapping[str, Any]:
    return {"ok": True, "version": __version__, "uptime_s": round(time.time() - call.server.started_at, 3)}


async def get_status(call: Call) -> Mapping[str, Any]:
    return await status.status(call.gateway, started_at=call.server.started_at, clients=call.server.clients)


async def sessions_list(call: Call) -> Mapping[str, Any]:
    limit = int_param(call.params, "limit", default=50, low=1, high=500)
    channel = optional_text_param(call.params, "channel", max_chars=64)
    found = await overview.recent_sessions(call.gateway.db, limit=limit, channel=channel)
    return {"sessions": [asdict(s) for s in found]}


async def sessions_history(call: Call) -> Mapping[str, Any]:
    session_id = int_param(call.params, "session_id", default=None, low=1, high=2**63 - 1)
    limit = int_param(call.params, "limit", default=50, low=1, high=500)
    found = await overview.session(call.gateway.db, session_id)
    if found is None:
        raise ControlError(f"no session {session_id}; `sessions.list` shows them", code=NOT_FOUND)
    messages = await history.recent(call.gateway.db, session_id, limit=limit)
    return {
        "session": asdict(found),
        "messages": [
            {
                "id": m.id,
                "role": m.role,
                "text": m.text,
                "created_at": m.created_at,
                "sender_id": m.sender_id,
                "surprise": m.surprise,
                "expert_id": m.expert_id,
                "total_ms": m.total_ms,
                "timings": dict(m.timings),
            }
            for m in messages
        ],
    }


async def history_search(call: Call) -> Mapping[str, Any]:
    """Messages holding every word of `query`, newest first (overview.search_messages)."""
    query = text_param(call.params, "query", max_chars=500)
    limit = int_param(call.params, "limit", default=20, low=1, high=100)
    channel = optional_text_param(call.params, "channel", max_chars=64)
    found = await overview.search_messages(
        call.gateway.db, query, limit=limit, channel=channel, max_chars=MAX_FOUND_CHARS
    )
    return {"messages": [asdict(m) for m in found]}


async def pairing_list(call: Call) -> Mapping[str, Any]:
    db = call.gateway.db
    return {
        "pending": [asdict(r) for r in await pairing.pending(db)],
        "approved": [asdict(a) for a in await pairing.allowed(db)],
    }


# --- changes -------------------------------------------------------------------------------


async def chat_send(call: Call) -> Mapping[str, Any]:
    """Talk to the assistant as its owner: "chat.delta" events as the answer is written, then
    the whole reply. The conversation is a session on the "control" channel (one per chat_id),
    remembered like any other; answers are given one at a time."""
    text = text_param(call.params, "text", max_chars=MAX_TEXT)
    chat_id = optional_text_param(call.params, "chat_id", max_chars=MAX_CHAT_ID) or OWNER
    gateway = call.gateway
    assistant = _assistant(call)  # before the message is counted: it cannot be answered yet
    request = Request(
        channel=CONTROL_CHANNEL, chat_id=chat_id, sender_id=OWNER, sender_name=OWNER, texts=(text,)
    )

    async def delta(piece: str) -> None:
        await call.emit("chat.delta", {"id": call.request_id, "text": piece})

    gateway.metrics.received(CONTROL_CHANNEL)
    async with call.server.chat_lock:
        reply = await assistant.pipeline.answer(request, on_delta=delta)
    gateway.metrics.answered(CONTROL_CHANNEL, reply)
    gateway.events.publish("message", events.answer(request, reply))
    return _reply(reply)


async def send(call: Call) -> Mapping[str, Any]:
    """Queue a message to someone on a running channel; the delivery worker sends it."""
    channel = text_param(call.params, "channel", max_chars=64)
    chat_id = text_param(call.params, "chat_id", max_chars=MAX_CHAT_ID)
    text = text_param(call.params, "text", max_chars=MAX_TEXT)
    gateway = call.gateway
    if channel not in gateway.channels:
        running = ", ".join(sorted(gateway.channels)) or "none"
        raise ControlError(f"the {channel} channel is not running (running: {running})", code=UNAVAILABLE)
    item = await outbox.enqueue(gateway.db, channel=channel, chat_id=chat_id, text=text)
    gateway.delivery.nudge()
    gateway.metrics.sent(channel)
    gateway.events.publish("message", events.outbound(channel, chat_id, text))
    return {"outbox_id": item.id, "state": item.state}


async def mbe_call(call: Call) -> Mapping[str, Any]:
    """One MBE tool call on the daemon's own engine, so other MCP clients (`mbe-gateway mcp`)
    share its memory instead of starting a second engine on the same database. Admin: most
    tools write (a memory, or the observation mbe_surprise records)."""
    tool = text_param(call.params, "tool", max_chars=64)
    if tool not in MBE_TOOLS:
        known = ", ".join(MBE_TOOLS)
        raise ControlError(f'"tool" must be one of {known}, got {tool[:64]!r}', code=INVALID_PARAMS)
    arguments = call.params.get("arguments", {})
    if not isinstance(arguments, dict):
        raise ControlError('"arguments" must be an object', code=INVALID_PARAMS)
    try:
        result = await _assistant(call).mbe.call(tool, arguments)
    except MBEToolError as e:  # the engine refused the call: the caller's problem, not an outage
        raise ControlError(str(e), code=FAILED) from None
    return {"tool": tool, "result": result}


async def pairing_approve(call: Call) -> Mapping[str, Any]:
    """Let the sender behind `code` talk to the assistant; they are told so in their chat."""
    code = text_param(call.params, "code", max_chars=64)
    request = await access.approve(call.gateway.db, code, call.gateway.language)
    call.gateway.delivery.nudge()
    return _answered(call, "approved", request.channel, request.sender_id, request.sender_name)


async def pairing_deny(call: Call) -> Mapping[str, Any]:
    code = text_param(call.params, "code", max_chars=64)
    request = await pairing.deny(call.gateway.db, code)
    return _answered(call, "denied", request.channel, request.sender_id, request.sender_name)


async def pairing_revoke(call: Call) -> Mapping[str, Any]:
    """Take an approval back: the sender's next message gets a new pairing code."""
    channel = text_param(call.params, "channel", max_chars=64)
    sender_id = text_param(call.params, "sender_id", max_chars=MAX_CHAT_ID)
    approved = {(a.channel, a.sender_id): a for a in await pairing.allowed(call.gateway.db)}
    sender = approved.get((channel, sender_id))
    if sender is None or not await pairing.revoke(call.gateway.db, channel, sender_id):
        raise PairingError(f"{channel}:{sender_id} is not approved; `pairing list` shows who is")
    return _answered(call, "revoked", channel, sender_id, sender.sender_name)


METHODS: Final[Mapping[str, Method]] = MappingProxyType(
    {
        "health": Method("read", health, "the daemon answers"),
        "status": Method("read", get_status, "components and their states, engine, models, queues"),
        "sessions.list": Method("read", sessions_list, "conversations, the most recently active first"),
        "sessions.history": Method("read", sessions_history, "one conversation since its last reset"),
        "pairing.list": Method("read", pairing_list, "pending pairing requests and approved senders"),
        "history.search": Method("read", history_search, "messages holding words, newest first"),
        "chat.send": Method("admin", chat_send, "talk to the assistant, with the answer streamed"),
        "send": Method("admin", send, "send a message to a chat on a running channel"),
        "mbe.call": Method("admin", mbe_call, "call a tool of the daemon's MBE engine"),
        "pairing.approve": Method("admin", pairing_approve, "let a sender in by their code"),
        "pairing.deny": Method("admin", pairing_deny, "drop a pairing request by its code"),
        "pairing.revoke": Method("admin", pairing_revoke, "take back a sender's approval"),
    }
)


def _assistant(call: Call) -> Assistant:
    """The running assistant, or `unavailable` while the daemon is still starting it."""
    if call.gateway.starting:
        raise ControlError("the assistant is still starting; try again in a moment", code=UNAVAILABLE)
    return call.gateway.assistant


def _reply(reply: Reply) -> dict[str, Any]:
    return {
        "text": reply.text,
        "body": reply.body,
        "session_id": reply.session_id,
        "provider": reply.provider,
        "command": reply.command,
        "degraded": sorted(reply.degraded),
        "timings": dict(reply.timings),
    }


def _answered(
    call: Call, action: str, channel: str, sender_id: str, sender_name: str | None
) -> dict[str, Any]:
    """The owner's answer to a pairing request, told to every client (their lists change)."""
    sender = {"channel": channel, "sender_id": sender_id, "sender_name": sender_name}
    call.gateway.events.publish("pairing", {"action": action, **sender})
    return sender
