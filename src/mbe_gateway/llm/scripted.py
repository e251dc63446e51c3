"""A provider that answers from a script: for tests, benchmarks, and trying out a setup.

Like httpx's MockTransport, it is a real provider, not a test-only fake: give it a list of
replies (consumed in order), or a function of the messages (answers forever). A script item
that is an exception is raised instead of answering, and an `Interrupted` item streams some
text and then fails, so every failure path of the chain and the pipeline can be played
without a network. Every request is recorded in `requests` for inspection.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass

import anyio

from mbe_gateway.errors import ProviderFailed
from mbe_gateway.llm.base import ChatMessage, Completion


@dataclass(frozen=True, slots=True)
class Interrupted:
    """A reply that breaks off: `stream` yields `text` and then raises `error`; `complete` raises."""

    text: str
    error: Exception


ScriptItem = str | Exception | Interrupted
Responder = Callable[[Sequence[ChatMessage]], ScriptItem]

_PIECES = re.compile(r"\S+\s*|\s+")


class ScriptedProvider:
    """Answers with the next script item, after `delay` seconds (and `token_delay` per streamed piece)."""

    def __init__(
        self,
        script: Iterable[ScriptItem] | Responder,
        *,
        name: str = "scripted",
        model: str = "scripted",
        delay: float = 0.0,
        token_delay: float = 0.0,
    ) -> None:
        self.name = name
        self.model = model
        self.delay = delay
        self.token_delay = token_delay
        self.requests: list[tuple[ChatMessage, ...]] = []
        self._responder = script if callable(script) else None
        self._queue: deque[ScriptItem] = deque() if callable(script) else deque(script)

    def __repr__(self) -> str:
        return f"ScriptedProvider(name={self.name!r}, remaining={len(self._queue)})"

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> Completion:
        item = await self._next(messages)
        if isinstance(item, Interrupted):
            raise item.error
        return Completion(
            text=item,
            model=self.model,
            provider=self.name,
            prompt_tokens=sum(len(m.content.split()) for m in messages),
            completion_tokens=len(item.split()),
        )

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> AsyncGenerator[str, None]:
        item = await self._next(messages)
        text = item.text if isinstance(item, Interrupted) else item
        for piece in _PIECES.findall(text):
            yield piece
            if self.token_delay:
                await anyio.sleep(self.token_delay)
        if isinstance(item, Interrupted):
            raise item.error

    async def aclose(self) -> None:
        """Nothing to release."""

    async def _next(self, messages: Sequence[ChatMessage]) -> str | Interrupted:
        self.requests.append(tuple(messages))
        if self.delay:
            await anyio.sleep(self.delay)
        if self._responder is not None:
            item = self._responder(messages)
        elif self._queue:
            item = self._queue.popleft()
        else:
            raise ProviderFailed(f"{self.name}: the script has no more replies", provider=self.name)
        if isinstance(item, Exception):
            raise item
        return item
