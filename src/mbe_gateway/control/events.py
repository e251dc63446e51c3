"""What happens in the gateway, fanned out to the control plane's clients as it happens.

Publishing never waits: each subscriber (one per authenticated connection) has its own
bounded buffer, and a subscriber that falls `buffer` events behind is dropped (its stream
ends; the server closes that connection, and the client reconnects and asks for `status`)
rather than slowing the gateway down or growing without bound.

Events: "message" (a message stored for answering, or an answer or message queued to go out)
and "state" (a component's state changed). The payloads are built here, so the protocol
document and the code have one place to agree.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

if TYPE_CHECKING:
    from mbe_gateway.pipeline import Reply, Request
    from mbe_gateway.store.inbox import InboxMessage


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    payload: Mapping[str, Any]


class Events:
    def __init__(self, *, buffer: int = 256) -> None:
        self._buffer = buffer
        self._subscribers: set[MemoryObjectSendStream[Event]] = set()

    def publish(self, name: str, payload: Mapping[str, Any]) -> None:
        event = Event(name, payload)
        for stream in list(self._subscribers):
            try:
                stream.send_nowait(event)
            except anyio.WouldBlock:  # too far behind: let it go rather than wait or buffer more
                self._drop(stream)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._drop(stream)

    @contextmanager
    def subscribe(self) -> Iterator[MemoryObjectReceiveStream[Event]]:
        """Events from now on, until the block ends; the stream ends early if it falls behind."""
        send, receive = anyio.create_memory_object_stream[Event](self._buffer)
        self._subscribers.add(send)
        try:
            with receive:
                yield receive
        finally:
            self._drop(send)

    def _drop(self, stream: MemoryObjectSendStream[Event]) -> None:
        self._subscribers.discard(stream)
        stream.close()


def inbound(row: InboxMessage) -> dict[str, Any]:
    """A "message" payload for a message stored for answering."""
    return {
        "direction": "in",
        "channel": row.channel,
        "chat_id": row.chat_id,
        "sender_id": row.sender_id,
        "sender_name": row.sender_name,
        "text": row.text,
        "at": row.received_at,
    }


def answer(request: Request, reply: Reply) -> dict[str, Any]:
    """A "message" payload for an answer queued to go out (or shown, on the control channel)."""
    return {
        **outbound(request.channel, request.chat_id, reply.text),
        "session_id": reply.session_id,
        "provider": reply.provider,
        "total_ms": reply.timings.get("total"),
    }


def outbound(channel: str, chat_id: str, text: str) -> dict[str, Any]:
    """A "message" payload for a message queued to go out."""
    return {"direction": "out", "channel": channel, "chat_id": chat_id, "text": text, "at": time.time()}
