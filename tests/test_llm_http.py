"""The OpenAI-compatible and Anthropic providers against real HTTP servers on loopback.

One fake server (tests/fake_llm_servers.py) serves the whole module; each test scripts
what it answers. Every failure a real provider shows in the wild must arrive as one
ProviderFailed with a message a user can act on, and never with the key in it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from email.utils import formatdate
from typing import Any

import pytest

from fake_llm_servers import (
    Answer,
    BreakAfter,
    FakeLLM,
    Garbage,
    Hang,
    NoText,
    Status,
    StreamError,
    serve_fake_llm,
    unused_port,
)
from mbe_gateway.errors import ProviderFailed
from mbe_gateway.llm import ApiKey, ChatMessage, Provider
from mbe_gateway.llm.anthropic import AnthropicProvider
from mbe_gateway.llm.openai import OpenAIProvider
from mbe_gateway.llm.session import retry_after_seconds

KEY = ApiKey("openai_api_key", "sk-test-VERYSECRETVALUE0123456789")
HELLO = [ChatMessage("system", "You are terse."), ChatMessage("user", "Say hello")]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[FakeLLM]:
    async with serve_fake_llm() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeLLM) -> FakeLLM:
    server.reset()
    return server


def openai(fake: FakeLLM, **kwargs: Any) -> OpenAIProvider:
    options: dict[str, Any] = {"base_url": fake.openai_url, "api_key": KEY, "timeout": 5.0} | kwargs
    return OpenAIProvider("openai-test", "gpt-test", **options)


def anthropic(fake: FakeLLM, **kwargs: Any) -> AnthropicProvider:
    key = ApiKey("anthropic_api_key", "sk-ant-test-VERYSECRET0123456789")
    options: dict[str, Any] = {"base_url": fake.anthropic_url, "api_key": key, "timeout": 5.0} | kwargs
    return AnthropicProvider("anthropic-test", "claude-test", **options)


Make = Callable[[FakeLLM], Provider]


async def collect(provider: Provider, messages: Sequence[ChatMessage] = HELLO) -> list[str]:
    try:
        return [delta async for delta in provider.stream(messages)]
    finally:
        await provider.aclose()


async def failure_of_complete(provider: Provider) -> ProviderFailed:
    try:
        with pytest.raises(ProviderFailed) as caught:
            await provider.complete(HELLO)
    finally:
        await provider.aclose()
    assert caught.value.provider == provider.name
    return caught.value


# --- answers ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_openai_answer_arrives_with_model_and_token_counts(fake: FakeLLM) -> None:
    fake.queue(Answer("Hello there!", model="gpt-test-0613"))
    provider = openai(fake, temperature=0.3, max_tokens=50)
    completion = await provider.complete(HELLO)
    await provider.aclose()

    assert completion.text == "Hello there!"
    assert (completion.model, completion.provider) == ("gpt-test-0613", "openai-test")
    assert (completion.prompt_tokens, completion.completion_tokens) == (5, 2)
    sent = fake.requests[0]
    assert sent.headers["authorization"] == f"Bearer {KEY.value}"
    assert sent.body == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello"},
        ],
        "temperature": 0.3,
        "max_tokens": 50,
    }


@pytest.mark.anyio
async def test_local_server_without_key_gets_no_authorization_header(fake: FakeLLM) -> None:
    provider = openai(fake, api_key=None)
    assert (await provider.complete(HELLO)).text
    await provider.aclose()
    assert "authorization" not in fake.requests[0].headers


@pytest.mark.anyio
async def test_openai_stream_yields_the_answer_piece_by_piece(fake: FakeLLM) -> None:
    fake.queue(Answer("One two three four."))
    deltas = await collect(openai(fake))
    assert deltas == ["One ", "two ", "three ", "four."]
    assert fake.requests[0].body["stream"] is True


@pytest.mark.anyio
async def test_connection_is_reused_across_requests(fake: FakeLLM) -> None:
    provider = openai(fake)
    for _ in range(3):
        await provider.complete(HELLO)
    async for _ in provider.stream(HELLO):
        pass
    await provider.aclose()
    assert len(fake.requests) == 4
    assert len({r.client_port for r in fake.requests}) == 1


@pytest.mark.anyio
async def test_anthropic_gets_the_system_prompt_apart_and_its_own_headers(fake: FakeLLM) -> None:
    fake.queue(Answer("Hi!", model="claude-test-2025"))
    provider = anthropic(fake, temperature=1.5)
    completion = await provider.complete(HELLO)
    await provider.aclose()

    assert (completion.text, completion.model, completion.provider) == (
        "Hi!",
        "claude-test-2025",
        "anthropic-test",
    )
    assert (completion.prompt_tokens, completion.completion_tokens) == (11, 1)
    sent = fake.requests[0]
    assert sent.headers["x-api-key"] == "sk-ant-test-VERYSECRET0123456789"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.body["system"] == "You are terse."
    assert sent.body["messages"] == [{"role": "user", "content": "Say hello"}]
    assert sent.body["max_tokens"] == 1024  # required by the API; the default when none is set
    assert sent.body["temperature"] == 1.0  # Anthropic's range ends at 1


@pytest.mark.anyio
async def test_anthropic_stream_yields_text_deltas_until_message_stop(fake: FakeLLM) -> None:
    fake.queue(Answer("Bonjour tout le monde"))
    assert await collect(anthropic(fake)) == ["Bonjour ", "tout ", "le ", "monde"]


# --- failures ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_nothing_listening_is_a_failure_that_names_the_url() -> None:
    url = f"http://127.0.0.1:{unused_port()}/v1"
    failure = await failure_of_complete(OpenAIProvider("ollama", "qwen", base_url=url, timeout=2))
    assert "could not connect" in str(failure)
    assert url in str(failure)


@pytest.mark.anyio
async def test_server_error_is_a_failure_with_the_servers_words(fake: FakeLLM) -> None:
    fake.queue(Status(500, {"error": {"message": "CUDA out of memory"}}))
    failure = await failure_of_complete(openai(fake))
    assert "HTTP 500" in str(failure)
    assert "CUDA out of memory" in str(failure)
    assert failure.retry_after is None


@pytest.mark.anyio
async def test_rate_limit_carries_the_retry_after_seconds(fake: FakeLLM) -> None:
    fake.queue(Status(429, {"error": {"message": "slow down"}}, {"Retry-After": "7"}))
    failure = await failure_of_complete(openai(fake))
    assert "rate limit" in str(failure)
    assert failure.retry_after == 7


@pytest.mark.anyio
async def test_rate_limit_with_an_http_date_is_converted_to_seconds(fake: FakeLLM) -> None:
    fake.queue(Status(429, headers={"Retry-After": formatdate(time.time() + 30, usegmt=True)}))
    failure = await failure_of_complete(anthropic(fake))
    assert failure.retry_after is not None
    assert 27 <= failure.retry_after <= 30


def test_retry_after_accepts_seconds_dates_and_milliseconds_and_ignores_junk() -> None:
    now = 1_700_000_000.0
    assert retry_after_seconds({"retry-after": "12"}) == 12
    assert retry_after_seconds({"retry-after": "1.5"}) == 1.5
    assert retry_after_seconds({"retry-after-ms": "2500", "retry-after": "9"}) == 2.5
    assert retry_after_seconds({"retry-after": formatdate(now + 40, usegmt=True)}, now=lambda: now) == 40
    assert retry_after_seconds({"retry-after": formatdate(now - 40, usegmt=True)}, now=lambda: now) == 0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


@pytest.mark.anyio
async def test_slow_server_times_out_as_a_failure(fake: FakeLLM) -> None:
    fake.queue(Hang(1.0))
    started = time.monotonic()
    failure = await failure_of_complete(openai(fake, timeout=0.2))
    assert time.monotonic() - started < 0.9
    assert "within 0.2 s" in str(failure)


@pytest.mark.anyio
async def test_answer_that_is_not_json_is_a_failure(fake: FakeLLM) -> None:
    fake.queue(Garbage("<html>502 Bad Gateway</html>"))
    failure = await failure_of_complete(openai(fake))
    assert "not JSON" in str(failure)
    assert "502 Bad Gateway" in str(failure)


@pytest.mark.anyio
@pytest.mark.parametrize("make", [openai, anthropic], ids=["openai", "anthropic"])
async def test_answer_without_text_is_a_failure(fake: FakeLLM, make: Make) -> None:
    fake.queue(NoText())
    failure = await failure_of_complete(make(fake))
    assert "without any text" in str(failure)


@pytest.mark.anyio
@pytest.mark.parametrize("status", [401, 403])
async def test_refused_key_names_the_secret_to_fix_and_never_the_key(fake: FakeLLM, status: int) -> None:
    fake.queue(Status(status, {"error": {"message": f"Incorrect API key provided: {KEY.value}"}}))
    failure = await failure_of_complete(openai(fake))
    assert f"HTTP {status}" in str(failure)
    assert "openai_api_key" in str(failure)
    assert "MBE_GATEWAY_SECRET_OPENAI_API_KEY" in str(failure)
    assert KEY.value not in str(failure)
    assert KEY.value not in repr(openai(fake))


@pytest.mark.anyio
async def test_a_key_echoed_in_any_error_is_blanked(fake: FakeLLM) -> None:
    fake.queue(Status(400, {"error": {"message": f"bad request from {KEY.value}"}}))
    failure = await failure_of_complete(openai(fake))
    assert "rejected the request (HTTP 400)" in str(failure)
    assert KEY.value not in str(failure)
    assert "***" in str(failure)


@pytest.mark.anyio
async def test_missing_key_hint_says_how_to_configure_one(fake: FakeLLM) -> None:
    fake.queue(Status(401, "Unauthorized"))
    failure = await failure_of_complete(openai(fake, api_key=None))
    assert 'api_key = "secret:NAME"' in str(failure)


@pytest.mark.anyio
async def test_anthropic_overloaded_529_is_a_failure(fake: FakeLLM) -> None:
    fake.queue(Status(529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
    failure = await failure_of_complete(anthropic(fake))
    assert "overloaded (HTTP 529): Overloaded" in str(failure)


@pytest.mark.anyio
@pytest.mark.parametrize("make", [openai, anthropic], ids=["openai", "anthropic"])
async def test_error_status_on_a_stream_fails_before_any_text(fake: FakeLLM, make: Make) -> None:
    fake.queue(Status(503, {"error": {"message": "warming up"}}, {"Retry-After": "3"}))
    with pytest.raises(ProviderFailed, match="HTTP 503") as caught:
        await collect(make(fake))
    assert caught.value.retry_after == 3


@pytest.mark.anyio
@pytest.mark.parametrize("make", [openai, anthropic], ids=["openai", "anthropic"])
async def test_in_band_stream_error_is_a_failure(fake: FakeLLM, make: Make) -> None:
    fake.queue(StreamError("Overloaded"))
    with pytest.raises(ProviderFailed, match=r"error mid-stream.*Overloaded"):
        await collect(make(fake))


@pytest.mark.anyio
@pytest.mark.parametrize("make", [openai, anthropic], ids=["openai", "anthropic"])
async def test_stream_of_garbage_is_a_failure(fake: FakeLLM, make: Make) -> None:
    fake.queue(Garbage("{not json"))
    with pytest.raises(ProviderFailed, match="not JSON"):
        await collect(make(fake))


@pytest.mark.anyio
@pytest.mark.parametrize("make", [openai, anthropic], ids=["openai", "anthropic"])
async def test_connection_dropped_mid_stream_fails_after_the_text_so_far(fake: FakeLLM, make: Make) -> None:
    fake.queue(BreakAfter("Half an"))
    provider = make(fake)
    seen: list[str] = []

    async def read_all() -> None:
        async for delta in provider.stream(HELLO):
            seen.append(delta)

    with pytest.raises(ProviderFailed) as caught:
        await read_all()
    await provider.aclose()
    assert seen == ["Half ", "an"]
    assert "broke" in str(caught.value) or "ended before" in str(caught.value)


@pytest.mark.anyio
async def test_stream_abandoned_early_releases_the_connection(fake: FakeLLM) -> None:
    fake.queue(Answer("a b c d e f g h", chunk_delay=0.01), Answer("next"))
    provider = openai(fake)
    deltas = provider.stream(HELLO)
    assert await anext(deltas) == "a "
    await deltas.aclose()
    assert (await provider.complete(HELLO)).text == "next"
    await provider.aclose()
