"""The HTTP seam of the HTTP providers: one lazily created client, and every failure mapped.

openai.py and anthropic.py only build request bodies and read answers; how a POST goes
wrong (refused, timed out, a 429 with Retry-After, a 401, a body that is not JSON) is
decided here once, so both report failures the same way and never with a key in them.

The httpx2 client is created on first use, not at construction: building one costs
40–100 ms here (it loads the TLS trust store), which a daemon's cold start should not
pay for a fallback provider it may never call.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2

from mbe_gateway.errors import ProviderFailed
from mbe_gateway.llm.base import ApiKey

_SNIPPET = 200


class HTTPSession:
    """One provider's connection pool to one base URL, reused across requests."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        headers: Mapping[str, str],
        timeout: float,
        api_key: ApiKey | None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._headers = dict(headers)
        self._api_key = api_key
        self._client: httpx2.AsyncClient | None = None

    @property
    def client(self) -> httpx2.AsyncClient:
        if self._client is None:
            self._client = httpx2.AsyncClient(
                base_url=self.base_url, headers=self._headers, timeout=httpx2.Timeout(self.timeout)
            )
        return self._client

    async def post_json(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST a JSON body; the answer's JSON object, or ProviderFailed."""
        try:
            response = await self.client.post(path, json=body)
        except httpx2.TransportError as exc:
            raise self._transport_failure(exc) from None
        if response.status_code >= 400:
            raise self.status_failure(response.status_code, response.headers, response.content)
        try:
            data = response.json()
        except (ValueError, UnicodeDecodeError):
            raise self.failure(
                f"answered with something that is not JSON: {self._snippet(response.text)!r}"
            ) from None
        if not isinstance(data, dict):
            raise self.failure("answered with JSON that is not an object")
        return data

    @asynccontextmanager
    async def post_events(
        self, path: str, body: Mapping[str, Any]
    ) -> AsyncGenerator[AsyncGenerator[httpx2.ServerSentEvent, None], None]:
        """POST a JSON body and read the answer as server-sent events.

        An error status is reported before any event is read, so a caller that has not yet
        yielded text can still fail over; a connection that breaks later is reported from
        the event iterator.
        """
        try:
            async with self.client.sse(path, method="POST", json=body) as source:
                response = source.response
                if response.status_code >= 400:
                    raise self.status_failure(response.status_code, response.headers, await response.aread())
                yield self._events(source)
        except httpx2.TransportError as exc:
            raise self._transport_failure(exc) from None

    async def _events(self, source: httpx2.EventSource) -> AsyncGenerator[httpx2.ServerSentEvent, None]:
        try:
            async for event in source:
                yield event
        except httpx2.SSEError as exc:
            raise self.failure(str(exc)) from None
        except httpx2.TransportError as exc:
            raise self._transport_failure(exc) from None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- failures ---------------------------------------------------------------------------

    def failure(self, what: str) -> ProviderFailed:
        """A ProviderFailed naming this provider, with the key blanked should `what` quote it."""
        return ProviderFailed(f"{self.provider}: {self._scrub(what)}", provider=self.provider)

    def status_failure(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderFailed:
        """The ProviderFailed for an HTTP error status, with the server's own words where safe."""
        if status in (401, 403):
            return ProviderFailed(
                f"{self.provider}: the server refused the request (HTTP {status}); {self._key_hint()}",
                provider=self.provider,
            )
        said = server_message(body)
        detail = f": {self._scrub(said)}" if said else ""
        if status == 429:
            what = "is rate limiting us"
        elif status in (503, 529):
            what = "is overloaded"
        elif status == 404:
            what = f"has no such endpoint or model at {display_url(self.base_url)}"
        elif status >= 500:
            what = "failed"
        else:
            what = "rejected the request"
        return ProviderFailed(
            f"{self.provider}: the server {what} (HTTP {status}){detail}",
            provider=self.provider,
            retry_after=retry_after_seconds(headers),
        )

    def _transport_failure(self, exc: httpx2.TransportError) -> ProviderFailed:
        where = display_url(self.base_url)
        if isinstance(exc, httpx2.TimeoutException):
            what = f"no answer from {where} within {self.timeout:g} s"
        elif isinstance(exc, httpx2.ConnectError):
            what = f"could not connect to {where} ({exc}); is the server running?"
        else:
            what = f"the connection to {where} broke ({type(exc).__name__}: {exc})"
        return ProviderFailed(f"{self.provider}: {self._scrub(what)}", provider=self.provider)

    def _key_hint(self) -> str:
        if self._api_key is None:
            return 'it may need an API key: set api_key = "secret:NAME" for this provider'
        name = self._api_key.name
        return (
            f"check the API key secret {name!r} "
            f"(`mbe-gateway secrets set {name}`, or env MBE_GATEWAY_SECRET_{name.upper()})"
        )

    def _scrub(self, text: str) -> str:
        """The text with the key's value blanked, in case a server echoes it back."""
        if self._api_key is not None and self._api_key.value:
            text = text.replace(self._api_key.value, "***")
        return text

    @staticmethod
    def _snippet(text: str) -> str:
        return " ".join(text.split())[:_SNIPPET]


def server_message(body: bytes) -> str:
    """The error text a server put in its body: OpenAI's, Anthropic's, Ollama's shape, or the raw text."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:_SNIPPET]
    found: object = data
    if isinstance(found, dict):
        found = found.get("error", found.get("message", ""))
    if isinstance(found, dict):
        found = found.get("message", "")
    return " ".join(str(found).split())[:_SNIPPET]


def retry_after_seconds(headers: Mapping[str, str], *, now: Callable[[], float] = time.time) -> float | None:
    """The server's wait hint: `retry-after-ms`, or `Retry-After` as seconds or an HTTP-date."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now())


def display_url(url: str) -> str:
    """The URL without credentials or query, fit for a message or a log line."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def usage_count(value: object) -> int:
    """A token count from an answer's `usage`: 0 when a server leaves it out or sends junk."""
    return value if isinstance(value, int) and value >= 0 else 0
