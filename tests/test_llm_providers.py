"""The scripted provider, MBE's generate tool as a provider, and building a chain from config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from mbe_gateway.config import ProviderSettings, SecretRef
from mbe_gateway.contract import GENERATE, Generation
from mbe_gateway.errors import ConfigError, MBETimeout, ProviderFailed, SecretError
from mbe_gateway.llm import ChatMessage, Interrupted, ScriptedProvider, build_chain
from mbe_gateway.llm import factory as factory_module
from mbe_gateway.llm.anthropic import AnthropicProvider
from mbe_gateway.llm.local import LocalProvider
from mbe_gateway.llm.mbe import MISSING_TOOL_RETRY_AFTER, MBEProvider
from mbe_gateway.llm.openai import OpenAIProvider

CHAT = [
    ChatMessage("system", "You are Mimi."),
    ChatMessage("user", "Hi"),
    ChatMessage("assistant", "Hello!"),
    ChatMessage("system", "The user likes tea."),
    ChatMessage("user", "What should I drink?"),
]


# --- scripted ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_scripted_replies_come_in_order_then_the_script_runs_out() -> None:
    provider = ScriptedProvider(["one", "two"])
    assert (await provider.complete(CHAT)).text == "one"
    assert (await provider.complete(CHAT)).text == "two"
    with pytest.raises(ProviderFailed, match="no more replies"):
        await provider.complete(CHAT)
    assert provider.requests == [tuple(CHAT)] * 3


@pytest.mark.anyio
async def test_scripted_function_answers_from_the_messages_forever() -> None:
    provider = ScriptedProvider(lambda messages: f"echo: {messages[-1].content}", model="echo-1")
    for _ in range(3):
        completion = await provider.complete(CHAT)
    assert (completion.text, completion.model, completion.provider) == (
        "echo: What should I drink?",
        "echo-1",
        "scripted",
    )


@pytest.mark.anyio
async def test_scripted_stream_pieces_join_to_the_reply_and_interruptions_raise() -> None:
    provider = ScriptedProvider(["Green tea,  please.\n", Interrupted("Half a", ProviderFailed("cut"))])
    assert [d async for d in provider.stream(CHAT)] == ["Green ", "tea,  ", "please.\n"]
    seen: list[str] = []

    async def read_all() -> None:
        async for delta in provider.stream(CHAT):
            seen.append(delta)

    with pytest.raises(ProviderFailed, match="cut"):
        await read_all()
    assert seen == ["Half ", "a"]


# --- MBE's generate tool -------------------------------------------------------------------------


class FakeMBE:
    """Stands in for mbe_gateway.mbe.MBEClient: the two methods the provider uses."""

    def __init__(self, *, offers: bool = True, answer: Generation | Exception | None = None) -> None:
        self._offers = offers
        self._answer = answer or Generation(content="Try jasmine tea.", model="mbe-7b", prompt_tokens=30)
        self.calls: list[dict[str, object]] = []

    def offers(self, tool: str) -> bool:
        return self._offers and tool == GENERATE

    async def generate(
        self,
        prompt: str,
        *,
        system_prompt: str | None = None,
        temperature: float | None = None,
        messages: Sequence[Mapping[str, str]] | None = None,
    ) -> Generation:
        self.calls.append(
            {
                "prompt": prompt,
                "system_prompt": system_prompt,
                "temperature": temperature,
                "messages": messages,
            }
        )
        if isinstance(self._answer, Exception):
            raise self._answer
        return self._answer


@pytest.mark.anyio
async def test_mbe_gets_the_last_user_message_as_prompt_with_system_and_history() -> None:
    mbe = FakeMBE()
    completion = await MBEProvider(mbe, temperature=0.4).complete(CHAT)
    assert (completion.text, completion.model, completion.provider) == ("Try jasmine tea.", "mbe-7b", "mbe")
    assert completion.prompt_tokens == 30
    assert mbe.calls == [
        {
            "prompt": "What should I drink?",
            "system_prompt": "You are Mimi.\n\nThe user likes tea.",
            "temperature": 0.4,
            "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        }
    ]


@pytest.mark.anyio
async def test_mbe_without_the_generate_tool_fails_with_a_long_retry_after() -> None:
    with pytest.raises(ProviderFailed, match="does not offer mbe_generate") as caught:
        await MBEProvider(FakeMBE(offers=False)).complete(CHAT)
    assert caught.value.retry_after == MISSING_TOOL_RETRY_AFTER


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "expected"),
    [(MBETimeout("mbe_generate took longer than 30 s"), "took longer"), (Generation(content="  "), "empty")],
)
async def test_mbe_errors_and_empty_answers_become_provider_failures(
    answer: Generation | Exception, expected: str
) -> None:
    provider = MBEProvider(FakeMBE(answer=answer), name="engine")
    with pytest.raises(ProviderFailed, match=expected) as caught:
        await provider.complete(CHAT)
    assert caught.value.provider == "engine"


@pytest.mark.anyio
async def test_mbe_stream_gives_the_whole_answer_as_one_piece() -> None:
    assert [d async for d in MBEProvider(FakeMBE()).stream(CHAT)] == ["Try jasmine tea."]


# --- building the chain from settings -------------------------------------------------------------


class DictSecrets:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def get(self, ref: SecretRef) -> str:
        if ref.name not in self.values:
            raise SecretError(f"secret {ref.name} is not set")
        return self.values[ref.name]


@pytest.mark.anyio
async def test_chain_is_built_in_the_configured_order_with_keys_from_secrets(tmp_path: Path) -> None:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")
    settings = [
        ProviderSettings(
            kind="openai", name="ollama", model="qwen2.5:7b", base_url="http://127.0.0.1:11434/v1"
        ),
        ProviderSettings(
            kind="anthropic", name="claude", model="claude-x", api_key=SecretRef("anthropic_api_key")
        ),
        ProviderSettings(kind="mbe", name="mbe"),
        ProviderSettings(kind="local", name="pocket", path=str(model), context_window=2048),
    ]
    chain = build_chain(settings, secrets=DictSecrets({"anthropic_api_key": "sk-ant-xyz"}), mbe=FakeMBE())
    ollama, claude, mbe, local = chain.providers
    assert isinstance(ollama, OpenAIProvider)
    assert isinstance(claude, AnthropicProvider)
    assert isinstance(mbe, MBEProvider)
    assert isinstance(local, LocalProvider)
    assert [p.name for p in chain.providers] == ["ollama", "claude", "mbe", "pocket"]
    assert (local.path, local.context_window) == (model, 2048)
    assert "sk-ant-xyz" not in repr(chain.providers)
    await chain.aclose()


def test_a_missing_key_stops_the_build_naming_the_secret() -> None:
    settings = [
        ProviderSettings(kind="anthropic", name="claude", model="c", api_key=SecretRef("anthropic_key"))
    ]
    with pytest.raises(SecretError, match="anthropic_key"):
        build_chain(settings, secrets=DictSecrets({}))


def test_mbe_provider_without_an_mbe_connection_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="needs a connected MBE server"):
        build_chain([ProviderSettings(kind="mbe", name="mbe")], secrets=DictSecrets({}))


def test_local_model_path_that_does_not_exist_is_a_config_error(tmp_path: Path) -> None:
    settings = [ProviderSettings(kind="local", name="pocket", path=str(tmp_path / "gone.gguf"))]
    with pytest.raises(ConfigError, match=r"no model file at .*gone\.gguf"):
        build_chain(settings, secrets=DictSecrets({}))


def test_no_provider_configured_falls_back_to_the_bundled_local_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundled = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    bundled.write_bytes(b"GGUF")
    monkeypatch.setattr(factory_module, "local_model_available", lambda: True)
    monkeypatch.setattr(factory_module, "bundled_model_path", lambda: bundled)
    chain = build_chain([], secrets=DictSecrets({}))
    (local,) = chain.providers
    assert isinstance(local, LocalProvider)
    assert local.path == bundled
    assert "loaded=False" in repr(local)  # found, not loaded: loading waits for the first message


def test_no_provider_and_no_local_model_says_how_to_configure_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(factory_module, "local_model_available", lambda: False)
    with pytest.raises(ConfigError) as caught:
        build_chain([], secrets=DictSecrets({}))
    message = str(caught.value)
    assert "[[llm.providers]]" in message
    assert "pipx install 'mbe-gateway[local]'" in message
    assert "config.toml" in message
