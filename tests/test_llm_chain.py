"""The failover chain: order, cooldowns, Retry-After, recovery, and streaming's one rule.

Time is a hand-moved clock, so cooldown tests take no wall time. Most providers are
ScriptedProviders (the library's own test double); the last tests run the chain over the
real HTTP providers against the fake servers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from fake_llm_servers import Answer, FakeLLM, Status, serve_fake_llm
from mbe_gateway.errors import AllProvidersFailed, ProviderFailed
from mbe_gateway.llm import ApiKey, Chain, ChatMessage, Interrupted, Provider, ScriptedProvider
from mbe_gateway.llm.anthropic import AnthropicProvider
from mbe_gateway.llm.openai import OpenAIProvider

ASK = [ChatMessage("user", "What's the weather like?")]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def down(name: str, retry_after: float | None = None) -> ProviderFailed:
    return ProviderFailed(f"{name}: connection refused", provider=name, retry_after=retry_after)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def cooldowns(chain: Chain) -> dict[str, float]:
    return {s.name: s.cooling_down_for for s in chain.status()}


async def read(deltas: AsyncIterator[str]) -> str:
    return "".join([d async for d in deltas])


@pytest.mark.anyio
async def test_first_provider_answers_when_healthy(clock: Clock) -> None:
    first, second = ScriptedProvider(["from first"], name="first"), ScriptedProvider(["x"], name="second")
    completion = await Chain([first, second], clock=clock).complete(ASK)
    assert (completion.text, completion.provider) == ("from first", "first")
    assert second.requests == []


@pytest.mark.anyio
async def test_failed_provider_is_skipped_while_it_cools_down(clock: Clock) -> None:
    first = ScriptedProvider([down("first"), "never sent"], name="first")
    second = ScriptedProvider(["backup one", "backup two"], name="second")
    chain = Chain([first, second], clock=clock)

    assert (await chain.complete(ASK)).provider == "second"
    clock.advance(4.9)
    assert (await chain.complete(ASK)).text == "backup two"
    assert len(first.requests) == 1  # not asked again during its cooldown
    assert cooldowns(chain) == {"first": pytest.approx(0.1), "second": 0.0}


@pytest.mark.anyio
async def test_cooldown_doubles_with_each_failure_in_a_row_up_to_a_cap(clock: Clock) -> None:
    flaky = ScriptedProvider([down("flaky")] * 8, name="flaky")
    chain = Chain([flaky, ScriptedProvider(lambda _: "ok", name="steady")], clock=clock, max_cooldown=60)
    seen = []
    for _ in range(6):
        await chain.complete(ASK)
        seen.append(cooldowns(chain)["flaky"])
        clock.advance(seen[-1])
    assert seen == [5, 10, 20, 40, 60, 60]
    assert chain.status()[0].consecutive_failures == 6


@pytest.mark.anyio
async def test_retry_after_longer_than_the_cooldown_is_honoured(clock: Clock) -> None:
    limited = ScriptedProvider([down("limited", retry_after=42), "later"], name="limited")
    chain = Chain([limited, ScriptedProvider(lambda _: "ok", name="backup")], clock=clock)
    await chain.complete(ASK)
    assert cooldowns(chain)["limited"] == 42
    clock.advance(41)
    assert (await chain.complete(ASK)).provider == "backup"
    clock.advance(1)
    assert (await chain.complete(ASK)).provider == "limited"


@pytest.mark.anyio
async def test_short_retry_after_does_not_shorten_the_own_cooldown(clock: Clock) -> None:
    limited = ScriptedProvider([down("limited", retry_after=1)], name="limited")
    chain = Chain([limited, ScriptedProvider(lambda _: "ok", name="backup")], clock=clock)
    await chain.complete(ASK)
    assert cooldowns(chain)["limited"] == 5


@pytest.mark.anyio
async def test_provider_recovers_after_its_cooldown_and_success_resets_it(clock: Clock) -> None:
    first = ScriptedProvider([down("first"), down("first"), "back again", down("first")], name="first")
    chain = Chain([first, ScriptedProvider(lambda _: "ok", name="second")], clock=clock)
    await chain.complete(ASK)
    clock.advance(5)
    await chain.complete(ASK)
    clock.advance(10)
    assert (await chain.complete(ASK)).text == "back again"
    assert chain.status()[0].consecutive_failures == 0
    await chain.complete(ASK)
    assert cooldowns(chain)["first"] == 5  # the count started over


@pytest.mark.anyio
async def test_all_providers_failing_gives_one_summary_error(clock: Clock) -> None:
    chain = Chain(
        [ScriptedProvider([down("a")], name="a"), ScriptedProvider([down("b", retry_after=30)], name="b")],
        clock=clock,
    )
    with pytest.raises(AllProvidersFailed) as caught:
        await chain.complete(ASK)
    assert caught.value.attempts == ("a: connection refused", "b: connection refused")
    assert caught.value.retry_in == 5
    assert "no LLM provider could answer" in str(caught.value)


@pytest.mark.anyio
async def test_all_cooling_down_fails_at_once_without_asking_anyone(clock: Clock) -> None:
    a = ScriptedProvider([down("a"), "unused"], name="a")
    b = ScriptedProvider([down("b"), "unused"], name="b")
    chain = Chain([a, b], clock=clock)
    with pytest.raises(AllProvidersFailed):
        await chain.complete(ASK)
    clock.advance(2)
    with pytest.raises(AllProvidersFailed) as caught:
        await chain.complete(ASK)
    assert caught.value.attempts == ("a is cooling down for 3 s more", "b is cooling down for 3 s more")
    assert caught.value.retry_in == 3
    assert (len(a.requests), len(b.requests)) == (1, 1)


@pytest.mark.anyio
async def test_a_provider_bug_fails_over_instead_of_reaching_the_user(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    buggy = ScriptedProvider([KeyError("choices")], name="buggy")
    chain = Chain([buggy, ScriptedProvider(["fine"], name="fine")], clock=clock)
    assert (await chain.complete(ASK)).text == "fine"
    assert caplog.records[0].levelno == logging.ERROR
    assert caplog.records[0].exc_info is not None


@pytest.mark.anyio
async def test_each_failover_is_one_structured_log_line(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "mbe_gateway.llm")
    chain = Chain(
        [ScriptedProvider([down("a", retry_after=9)], name="a"), ScriptedProvider(["ok"], name="b")],
        clock=clock,
    )
    await chain.complete(ASK)
    (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.name == "mbe_gateway.llm"
    assert record.__dict__["llm_provider"] == "a"
    assert record.__dict__["llm_error"] == "a: connection refused"
    assert record.__dict__["cooldown_s"] == 9
    assert record.__dict__["consecutive_failures"] == 1


# --- streaming -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_stream_fails_over_when_the_first_provider_fails_before_any_text(clock: Clock) -> None:
    first = ScriptedProvider([down("first")], name="first")
    second = ScriptedProvider(["the backup answer"], name="second")
    chain = Chain([first, second], clock=clock)
    assert await read(chain.stream(ASK)) == "the backup answer"
    assert cooldowns(chain)["first"] == 5


@pytest.mark.anyio
async def test_stream_failure_after_text_is_raised_not_spliced_with_another_model(clock: Clock) -> None:
    first = ScriptedProvider([Interrupted("It will be sunny and", down("first"))], name="first")
    second = ScriptedProvider(["A different answer entirely"], name="second")
    chain = Chain([first, second], clock=clock)
    seen: list[str] = []

    async def read_all() -> None:
        async for delta in chain.stream(ASK):
            seen.append(delta)

    with pytest.raises(ProviderFailed, match="first: connection refused"):
        await read_all()
    assert "".join(seen) == "It will be sunny and"
    assert second.requests == []
    assert cooldowns(chain)["first"] == 5


@pytest.mark.anyio
async def test_stream_that_yields_nothing_counts_as_a_failure(clock: Clock) -> None:
    chain = Chain([ScriptedProvider([""], name="mute"), ScriptedProvider(["spoken"], name="b")], clock=clock)
    assert await read(chain.stream(ASK)) == "spoken"
    assert chain.status()[0].last_error == "mute: streamed nothing"


@pytest.mark.anyio
async def test_stream_with_everyone_down_raises_all_providers_failed(clock: Clock) -> None:
    chain = Chain([ScriptedProvider([down("a")], name="a")], clock=clock)
    with pytest.raises(AllProvidersFailed):
        await read(chain.stream(ASK))


@pytest.mark.anyio
async def test_successful_stream_clears_an_earlier_failure(clock: Clock) -> None:
    first = ScriptedProvider([down("first"), "recovered"], name="first")
    chain = Chain([first, ScriptedProvider(lambda _: "ok", name="second")], clock=clock)
    await chain.complete(ASK)
    clock.advance(5)
    assert await read(chain.stream(ASK)) == "recovered"
    assert chain.status()[0].consecutive_failures == 0


def test_a_chain_needs_distinct_provider_names() -> None:
    with pytest.raises(ValueError, match="unique"):
        Chain([ScriptedProvider(["a"], name="x"), ScriptedProvider(["b"], name="x")])
    with pytest.raises(ValueError, match="at least one"):
        Chain([])


# --- over real HTTP ---------------------------------------------------------------------------


@pytest.fixture
async def two_servers() -> AsyncIterator[tuple[FakeLLM, FakeLLM]]:
    async with serve_fake_llm() as primary, serve_fake_llm() as backup:
        yield primary, backup


@pytest.mark.anyio
async def test_http_chain_fails_over_from_a_broken_server_and_streams_from_the_backup(
    two_servers: tuple[FakeLLM, FakeLLM], clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    primary, backup = two_servers
    key = ApiKey("openai_api_key", "sk-live-SHOULDNEVERBELOGGED000000")
    primary.default = Status(500, {"error": {"message": f"upstream died; key {key.value}"}})
    backup.queue(Answer("Sunny, 24 degrees."), Answer("Still sunny."))
    providers: list[Provider] = [
        OpenAIProvider("vllm", "qwen", base_url=primary.openai_url, api_key=key, timeout=5),
        AnthropicProvider("claude", "claude-test", base_url=backup.anthropic_url, api_key=None, timeout=5),
    ]
    chain = Chain(providers, clock=clock)
    try:
        completion = await chain.complete(ASK)
        assert (completion.text, completion.provider) == ("Sunny, 24 degrees.", "claude")
        clock.advance(5)
        assert await read(chain.stream(ASK)) == "Still sunny."
    finally:
        await chain.aclose()
    assert len(primary.requests) == 2
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]
    assert all(key.value not in r.getMessage() + str(r.__dict__) for r in caplog.records)


@pytest.mark.anyio
async def test_http_chain_honours_a_servers_retry_after(
    two_servers: tuple[FakeLLM, FakeLLM], clock: Clock
) -> None:
    primary, backup = two_servers
    primary.queue(Status(429, headers={"Retry-After": "120"}))
    chain = Chain(
        [
            OpenAIProvider("primary", "m", base_url=primary.openai_url, timeout=5),
            OpenAIProvider("backup", "m", base_url=backup.openai_url, timeout=5),
        ],
        clock=clock,
    )
    try:
        for _ in range(3):
            assert (await chain.complete(ASK)).provider == "backup"
            clock.advance(30)
        clock.advance(30)
        assert (await chain.complete(ASK)).provider == "primary"
    finally:
        await chain.aclose()
    assert len(primary.requests) == 2
