"""Fake OpenAI- and Anthropic-compatible HTTP servers on 127.0.0.1, for tests and benchmarks.

One real HTTP server (starlette + uvicorn on a loopback socket) speaks both wire formats:
`POST /v1/chat/completions` (OpenAI; base URL `fake.openai_url`) and `POST /v1/messages`
(Anthropic; base URL `fake.anthropic_url`), each as one JSON answer or as server-sent
events when the body asks for `"stream": true`. What it answers is scripted: queue
behaviours with `fake.queue(...)` (used in order, one per request); when the queue is
empty it answers `fake.default`. Every request is recorded (`fake.requests`).

    async with serve_fake_llm() as fake:
        fake.queue(Status(429, headers={"Retry-After": "7"}), Answer("hello"))
        provider = OpenAIProvider("t", "m", base_url=fake.openai_url)

Run it alone for a benchmark: `python tests/fake_llm_servers.py --port 8099`.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass(frozen=True)
class Answer:
    """A normal answer; streamed as word pieces, `chunk_delay` seconds apart."""

    text: str = "Hello from the fake model."
    model: str = "fake-model"
    chunk_delay: float = 0.0


@dataclass(frozen=True)
class Status:
    """An HTTP error status with a JSON (or raw text) body."""

    code: int
    body: Any = field(default_factory=lambda: {"error": {"message": "scripted failure"}})
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Hang:
    """Wait this long before answering (longer than the client's timeout)."""

    seconds: float


@dataclass(frozen=True)
class Garbage:
    """HTTP 200 whose body (or, streaming, whose first event) is not JSON."""

    text: str = "<html>502 Bad Gateway</html>"


@dataclass(frozen=True)
class NoText:
    """HTTP 200 in the right shape but without any text (no choices / no content blocks)."""


@dataclass(frozen=True)
class BreakAfter:
    """Stream `text`, then drop the connection without finishing the answer."""

    text: str


@dataclass(frozen=True)
class StreamError:
    """Stream an in-band error event (Anthropic's `event: error`, OpenAI's `{"error": ...}`)."""

    message: str = "Overloaded"


Behaviour = Answer | Status | Hang | Garbage | NoText | BreakAfter | StreamError


@dataclass
class RecordedRequest:
    api: str  # "openai" | "anthropic"
    headers: dict[str, str]
    body: dict[str, Any]
    client_port: int  # the same port again means the same (reused) connection


class FakeLLM:
    """The scripted state behind the server; tests reset it between uses."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.default: Behaviour = Answer()
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Behaviour] = deque()

    @property
    def openai_url(self) -> str:
        return f"{self.base}/v1"

    @property
    def anthropic_url(self) -> str:
        return self.base

    def queue(self, *behaviours: Behaviour) -> None:
        self._queue.extend(behaviours)

    def reset(self) -> None:
        self.default = Answer()
        self.requests.clear()
        self._queue.clear()

    def next(self) -> Behaviour:
        return self._queue.popleft() if self._queue else self.default

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._openai, methods=["POST"]),
                Route("/v1/messages", self._anthropic, methods=["POST"]),
            ]
        )

    async def _openai(self, request: Request) -> Response:
        return await self._answer("openai", request)

    async def _anthropic(self, request: Request) -> Response:
        return await self._answer("anthropic", request)

    async def _answer(self, api: str, request: Request) -> Response:
        body = await request.json()
        port = request.client.port if request.client else 0
        self.requests.append(RecordedRequest(api, dict(request.headers), body, port))
        behaviour = self.next()
        if isinstance(behaviour, Hang):
            await anyio.sleep(behaviour.seconds)
            behaviour = Answer()
        if isinstance(behaviour, Status):
            if isinstance(behaviour.body, str):
                return Response(behaviour.body, behaviour.code, dict(behaviour.headers))
            return JSONResponse(behaviour.body, behaviour.code, dict(behaviour.headers))
        wire = _OPENAI if api == "openai" else _ANTHROPIC
        if body.get("stream"):
            events = wire.events(behaviour, body)
            return StreamingResponse(events, media_type="text/event-stream")
        if isinstance(behaviour, Garbage):
            return Response(behaviour.text, 200, media_type="text/html")
        return JSONResponse(wire.whole(behaviour, body))


_PIECES = re.compile(r"\S+\s*")


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"{head}data: {payload}\n\n".encode()


class _OpenAIWire:
    def whole(self, behaviour: Behaviour, body: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(behaviour, Answer):
            return {"id": "x", "object": "chat.completion", "model": "fake-model", "choices": []}
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": behaviour.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": behaviour.text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": sum(len(m["content"].split()) for m in body["messages"]),
                "completion_tokens": len(behaviour.text.split()),
            },
        }

    async def events(self, behaviour: Behaviour, body: dict[str, Any]) -> AsyncIterator[bytes]:
        if isinstance(behaviour, Garbage):
            yield _sse(behaviour.text)
            return
        if isinstance(behaviour, StreamError):
            yield _sse({"error": {"message": behaviour.message}})
            return
        if isinstance(behaviour, NoText):
            yield _sse("[DONE]")
            return
        text = behaviour.text if isinstance(behaviour, Answer | BreakAfter) else ""
        model = behaviour.model if isinstance(behaviour, Answer) else "fake-model"
        yield _sse({"model": model, "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
        for piece in _PIECES.findall(text):
            yield _sse({"model": model, "choices": [{"index": 0, "delta": {"content": piece}}]})
            if isinstance(behaviour, Answer) and behaviour.chunk_delay:
                await anyio.sleep(behaviour.chunk_delay)
        if isinstance(behaviour, BreakAfter):
            raise ConnectionAbortedError("scripted: drop the connection mid-answer")
        yield _sse({"model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        yield _sse("[DONE]")


class _AnthropicWire:
    def whole(self, behaviour: Behaviour, body: dict[str, Any]) -> dict[str, Any]:
        text = behaviour.text if isinstance(behaviour, Answer) else ""
        model = behaviour.model if isinstance(behaviour, Answer) else "fake-model"
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}] if text else [],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 11, "output_tokens": len(text.split())},
        }

    async def events(self, behaviour: Behaviour, body: dict[str, Any]) -> AsyncIterator[bytes]:
        if isinstance(behaviour, Garbage):
            yield _sse(behaviour.text, "content_block_delta")
            return
        model = behaviour.model if isinstance(behaviour, Answer) else "fake-model"
        start = {"type": "message_start", "message": {"id": "msg_fake", "model": model, "content": []}}
        yield _sse(start, "message_start")
        if isinstance(behaviour, StreamError):
            error = {"type": "error", "error": {"type": "overloaded_error", "message": behaviour.message}}
            yield _sse(error, "error")
            return
        text = behaviour.text if isinstance(behaviour, Answer | BreakAfter) else ""
        block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        yield _sse(block, "content_block_start")
        yield _sse({"type": "ping"}, "ping")
        for piece in _PIECES.findall(text):
            delta = {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            }
            yield _sse(delta, "content_block_delta")
            if isinstance(behaviour, Answer) and behaviour.chunk_delay:
                await anyio.sleep(behaviour.chunk_delay)
        if isinstance(behaviour, BreakAfter):
            raise ConnectionAbortedError("scripted: drop the connection mid-answer")
        yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        yield _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}, "message_delta")
        yield _sse({"type": "message_stop"}, "message_stop")


_OPENAI = _OpenAIWire()
_ANTHROPIC = _AnthropicWire()


@asynccontextmanager
async def serve_fake_llm(port: int = 0) -> AsyncGenerator[FakeLLM, None]:
    """Run the fake on 127.0.0.1 (`port` 0: any free port) for the duration of the block."""
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it every answer written in two parts waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    fake = FakeLLM(f"http://127.0.0.1:{sock.getsockname()[1]}")
    config = uvicorn.Config(
        fake.app(), log_level="warning", lifespan="off", timeout_graceful_shutdown=1, access_log=False
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.005)
        try:
            yield fake
        finally:
            server.should_exit = True
    sock.close()


def unused_port() -> int:
    """A loopback port with nothing listening on it (for 'connection refused')."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _main(port: int) -> None:
    async with serve_fake_llm(port) as fake:
        print(f"fake OpenAI at {fake.openai_url}, fake Anthropic at {fake.anthropic_url}", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8099)
    anyio.run(_main, parser.parse_args().port)
