"""Any OpenAI-compatible chat completions server: OpenAI, Ollama, vLLM, llama.cpp server,
LM Studio, DeepSeek, Qwen (DashScope), Moonshot.

They all take `POST {base_url}/chat/completions` with the same body and answer either one
JSON object or, with `"stream": true`, server-sent events of `data: {chunk}` lines ending
with `data: [DONE]`. Local servers need no key; then no Authorization header is sent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any

from mbe_gateway.llm.base import ApiKey, ChatMessage, Completion
from mbe_gateway.llm.session import HTTPSession, usage_count

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIProvider:
    """Chat completions over HTTP, with one reused connection pool."""

    def __init__(
        self,
        name: str,
        model: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_key: ApiKey | None = None,
        timeout: float = 60.0,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        headers = {"Authorization": f"Bearer {api_key.value}"} if api_key else {}
        self._http = HTTPSession(name, base_url, headers=headers, timeout=timeout, api_key=api_key)

    def __repr__(self) -> str:
        return f"OpenAIProvider(name={self.name!r}, model={self.model!r}, base_url={self._http.base_url!r})"

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> Completion:
        data = await self._http.post_json("/chat/completions", self._body(messages, temperature, max_tokens))
        choice = _first_choice(data)
        message = choice.get("message") if choice else None
        text = message.get("content") if isinstance(message, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise self._http.failure("answered without any text (no choices, or empty content)")
        usage = data.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return Completion(
            text=text,
            model=str(data.get("model") or self.model),
            provider=self.name,
            prompt_tokens=usage_count(usage.get("prompt_tokens")),
            completion_tokens=usage_count(usage.get("completion_tokens")),
        )

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> AsyncGenerator[str, None]:
        body = self._body(messages, temperature, max_tokens) | {"stream": True}
        finished = False
        wrote = False
        async with self._http.post_events("/chat/completions", body) as events, aclosing(events):
            async for event in events:
                if event.data.strip() == "[DONE]":
                    finished = True
                    break
                chunk = self._chunk(event.data)
                choice = _first_choice(chunk)
                if choice is None:
                    continue  # a usage-only or keep-alive chunk
                delta = choice.get("delta")
                text = delta.get("content") if isinstance(delta, dict) else None
                if isinstance(text, str) and text:
                    wrote = True
                    yield text
                if choice.get("finish_reason"):
                    finished = True
        if not wrote:
            raise self._http.failure("streamed no text")
        if not finished:
            raise self._http.failure("the stream ended before the answer was finished")

    async def aclose(self) -> None:
        await self._http.aclose()

    def _body(
        self, messages: Sequence[ChatMessage], temperature: float | None, max_tokens: int | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
        }
        temperature = self.temperature if temperature is None else temperature
        max_tokens = self.max_tokens if max_tokens is None else max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        return body

    def _chunk(self, data: str) -> dict[str, Any]:
        try:
            chunk = json.loads(data)
        except ValueError:
            raise self._http.failure(f"streamed something that is not JSON: {data[:80]!r}") from None
        if not isinstance(chunk, dict):
            raise self._http.failure("streamed JSON that is not an object")
        if "error" in chunk:
            error = chunk["error"]
            said = error.get("message", "") if isinstance(error, dict) else str(error)
            raise self._http.failure(f"reported an error mid-stream: {str(said)[:200]}")
        return chunk


def _first_choice(data: dict[str, Any]) -> dict[str, Any] | None:
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return None
