"""MBE as a provider: its optional `mbe_generate` tool, when the connected server offers it.

The gateway already holds an MCP session to MBE; this provider borrows it through the two
methods it needs (`GenerateClient`), so llm/ does not depend on the client's module. The
tool takes the newest user message as `prompt`, the system messages as `system_prompt`,
and the turns before the prompt as `messages`. It has no streaming and no token limit:
`stream` yields the whole answer as one delta, and `max_tokens` is not sent.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Protocol

from mbe_gateway.contract import GENERATE, Generation
from mbe_gateway.errors import MBEError, ProviderFailed
from mbe_gateway.llm.base import ChatMessage, Completion, system_text

# A server without the tool will not grow one soon (a restart of MBE at the earliest):
# ask the chain to leave this provider alone for a while rather than probe it every 5 s.
MISSING_TOOL_RETRY_AFTER = 300.0


class GenerateClient(Protocol):
    """The part of the MBE client this provider uses."""

    def offers(self, tool: str) -> bool: ...

    async def generate(
        self,
        prompt: str,
        *,
        system_prompt: str | None = None,
        temperature: float | None = None,
        messages: list[dict[str, str]] | None = None,
    ) -> Generation: ...


class MBEProvider:
    """Answers through the MBE server's `mbe_generate` tool."""

    def __init__(
        self, client: GenerateClient, *, name: str = "mbe", temperature: float | None = None
    ) -> None:
        self.name = name
        self.temperature = temperature
        self._client = client

    def __repr__(self) -> str:
        return f"MBEProvider(name={self.name!r})"

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> Completion:
        if not self._client.offers(GENERATE):
            raise ProviderFailed(
                f"{self.name}: the MBE server does not offer {GENERATE}",
                provider=self.name,
                retry_after=MISSING_TOOL_RETRY_AFTER,
            )
        prompt_at = _last_user_index(messages)
        if prompt_at is None:
            raise ProviderFailed(f"{self.name}: there is no user message to answer", provider=self.name)
        history = [{"role": m.role, "content": m.content} for m in messages[:prompt_at] if m.role != "system"]
        try:
            generation = await self._client.generate(
                messages[prompt_at].content,
                system_prompt=system_text(messages) or None,
                temperature=self.temperature if temperature is None else temperature,
                messages=history or None,
            )
        except MBEError as exc:
            raise ProviderFailed(f"{self.name}: {exc}", provider=self.name) from exc
        if not generation.content.strip():
            raise ProviderFailed(f"{self.name}: {GENERATE} answered with empty content", provider=self.name)
        return Completion(
            text=generation.content,
            model=generation.model or "mbe",
            provider=self.name,
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
        )

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> AsyncGenerator[str, None]:
        completion = await self.complete(messages, temperature=temperature, max_tokens=max_tokens)
        yield completion.text

    async def aclose(self) -> None:
        """Nothing to release: the MBE session belongs to the gateway, not to this provider."""


def _last_user_index(messages: Sequence[ChatMessage]) -> int | None:
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            return index
    return None
