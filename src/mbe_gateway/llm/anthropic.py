"""Anthropic's Messages API (`POST {base_url}/v1/messages`).

It differs from OpenAI's shape in ways that matter here: the key goes in `x-api-key` with
an `anthropic-version` header, the system prompt is a top-level `system` field (not a
message), `max_tokens` is required, the answer is a list of content blocks, and a stream
is typed events (`content_block_delta`, `message_stop`, `error`). HTTP 529 means the API
is overloaded, which fails over like a 5xx.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any

from mbe_gateway.llm.base import ApiKey, ChatMessage, Completion, system_text
from mbe_gateway.llm.session import HTTPSession, usage_count

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024  # the API insists on a limit; this one fits a chat reply


class AnthropicProvider:
    """Claude models over the Messages API, with one reused connection pool."""

    def __init__(
        self,
        name: str,
        model: str,
        *,
        api_key: ApiKey | None,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 60.0,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        headers = {"anthropic-version": API_VERSION}
        if api_key is not None:
            headers["x-api-key"] = api_key.value
        self._http = HTTPSession(name, base_url, headers=headers, timeout=timeout, api_key=api_key)

    def __repr__(self) -> str:
        return (
            f"AnthropicProvider(name={self.name!r}, model={self.model!r}, base_url={self._http.base_url!r})"
        )

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> Completion:
        data = await self._http.post_json("/v1/messages", self._body(messages, temperature, max_tokens))
        blocks = data.get("content")
        texts = [
            b["text"]
            for b in (blocks if isinstance(blocks, list) else [])
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        ]
        text = "".join(texts)
        if not text.strip():
            raise self._http.failure("answered without any text content")
        usage = data.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return Completion(
            text=text,
            model=str(data.get("model") or self.model),
            provider=self.name,
            prompt_tokens=usage_count(usage.get("input_tokens")),
            completion_tokens=usage_count(usage.get("output_tokens")),
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
        async with self._http.post_events("/v1/messages", body) as events, aclosing(events):
            async for event in events:
                if event.event == "message_stop":
                    finished = True
                    break
                if event.event == "error":
                    raise self._http.failure(f"reported an error mid-stream: {_error_text(event.data)}")
                if event.event != "content_block_delta":
                    continue  # message_start, ping, content_block_start/stop, message_delta
                delta = self._data(event.data).get("delta")
                if isinstance(delta, dict) and delta.get("type") == "text_delta":
                    text = delta.get("text")
                    if isinstance(text, str) and text:
                        wrote = True
                        yield text
        if not wrote:
            raise self._http.failure("streamed no text")
        if not finished:
            raise self._http.failure("the stream ended before message_stop")

    async def aclose(self) -> None:
        await self._http.aclose()

    def _body(
        self, messages: Sequence[ChatMessage], temperature: float | None, max_tokens: int | None
    ) -> dict[str, Any]:
        limit = max_tokens if max_tokens is not None else self.max_tokens
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": limit if limit is not None else DEFAULT_MAX_TOKENS,
            "messages": [{"role": m.role, "content": m.content} for m in messages if m.role != "system"],
        }
        system = system_text(messages)
        if system:
            body["system"] = system
        temperature = self.temperature if temperature is None else temperature
        if temperature is not None:
            body["temperature"] = min(temperature, 1.0)  # Anthropic's range is 0..1, OpenAI's 0..2
        return body

    def _data(self, data: str) -> dict[str, Any]:
        try:
            parsed = json.loads(data)
        except ValueError:
            raise self._http.failure(f"streamed something that is not JSON: {data[:80]!r}") from None
        if not isinstance(parsed, dict):
            raise self._http.failure("streamed JSON that is not an object")
        return parsed


def _error_text(data: str) -> str:
    try:
        parsed = json.loads(data)
    except ValueError:
        return data[:200]
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        return f"{error.get('type', 'error')}: {error.get('message', '')}"[:200]
    return data[:200]
