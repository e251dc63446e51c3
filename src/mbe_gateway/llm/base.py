"""The one interface every LLM provider implements, and the values that cross it.

A provider turns a list of chat messages into text, either all at once (`complete`, for
chat channels that send one reply) or as text deltas (`stream`, for the terminal chat).
Every way a provider can fail is reported as `errors.ProviderFailed`, so the failover
chain (chain.py) can treat an HTTP 500, a refused connection and a missing model alike.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Completion:
    """One whole answer; `provider` names who answered (the chain may have failed over)."""

    text: str
    model: str
    provider: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key's value together with the name of the secret it came from.

    The value never appears in a repr; messages about a refused key name the secret
    (`name`), which is what the user has to fix.
    """

    name: str
    value: str = field(repr=False)


class Provider(Protocol):
    """What the pipeline and the chain call.

    `stream` is an async generator of text deltas whose concatenation is the answer. A
    caller that stops reading early must close it (`contextlib.aclosing`) so the provider
    releases its connection or its model at once. Failures raise `errors.ProviderFailed`,
    from `complete`, from the first `anext` of `stream`, or (rarely) mid-stream.
    """

    name: str

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> Completion: ...

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> AsyncGenerator[str, None]: ...

    async def aclose(self) -> None: ...


def system_text(messages: Sequence[ChatMessage]) -> str:
    """All system messages joined, for APIs that take the system prompt apart (Anthropic, MBE)."""
    return "\n\n".join(m.content for m in messages if m.role == "system")
