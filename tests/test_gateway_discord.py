"""End to end through Discord: a person writes, the assistant answers in the same channel.

The real hikari client talks to a fake Discord (REST and Gateway, tests/fakes/discord.py), the
real engine runs as a child over stdio, the model is an OpenAI-compatible fake over HTTP; only
the platforms are fake. Each test starts its own daemon with `serve(load_config(path))`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from fake_llm_servers import Answer, FakeLLM, Hang, serve_fake_llm
from fakes.discord import FakeDiscord, serve_fake_discord
from mbe_gateway.config import load_config
from mbe_gateway.gateway import Gateway, serve
from mbe_gateway.store import history, inbox, pairing, sessions

OPEN = 'dm_policy = "open"'


@pytest.fixture
async def platforms() -> AsyncIterator[tuple[FakeDiscord, FakeLLM]]:
    async with serve_fake_discord() as discord, serve_fake_llm() as llm:
        yield discord, llm


@pytest.fixture
def configure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platforms: tuple[FakeDiscord, FakeLLM]
) -> Callable[..., Path]:
    discord, llm = platforms
    monkeypatch.setenv("MBE_GATEWAY_SECRET_DISCORD_TOKEN", discord.token)

    def write(*, discord_extra: str = "") -> Path:
        path = tmp_path / "config.toml"
        path.write_text(
            "[[llm.providers]]\n"
            f'kind = "openai"\nname = "fake"\nbase_url = "{llm.openai_url}"\nmodel = "m"\n'
            "[channels.discord]\n"
            f'enabled = true\ntoken = "secret:discord_token"\nrest_url = "{discord.rest_url}"\n'
            f"{discord_extra}\n"
        )
        return path

    return write


@asynccontextmanager
async def running(config_path: Path, discord: FakeDiscord) -> AsyncIterator[Gateway]:
    """The daemon, once its bot is connected to the fake gateway (what was said before that,
    Discord never sends)."""
    async with anyio.create_task_group() as tg:
        gateway: Gateway = await tg.start(serve, load_config(config_path))
        await discord.wait_ready(timeout=20)
        yield gateway
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_dm_is_answered_in_the_same_channel_threaded_to_the_question(
    configure: Callable[..., Path], platforms: tuple[FakeDiscord, FakeLLM]
) -> None:
    discord, llm = platforms
    alice = discord.add_user("alice")
    async with running(configure(discord_extra=OPEN), discord) as gateway:
        asked = await discord.dm(alice, "How long should I boil an egg for a soft yolk?")
        (reply,) = await discord.wait_sent(1, timeout=20)
        assert reply.channel_id == discord.dm_channel(alice)
        assert reply.reply_to == asked
        assert reply.content.startswith("Hello from the fake model.")
        assert "New to you" in reply.content
        assert reply.allowed_mentions == {"parse": []}  # pings nobody
        session = await sessions.get_or_create(gateway.db, "discord", discord.dm_channel(alice))
        said = await history.recent(gateway.db, session.id)
        assert [m.text for m in said] == [
            "How long should I boil an egg for a soft yolk?",
            "Hello from the fake model.",
        ]
        await anyio.sleep(0.3)  # the bot's own message comes back over the gateway: not answered
        assert len(discord.sent) == 1
    assert [r.body["messages"][-1]["content"] for r in llm.requests] == [
        "How long should I boil an egg for a soft yolk?"
    ]
    assert discord.typing == []  # answered at once: no "typing…" first (see gateway.TYPING_AFTER)


@pytest.mark.anyio
async def test_in_a_guild_channel_only_a_message_mentioning_the_bot_is_answered(
    configure: Callable[..., Path], platforms: tuple[FakeDiscord, FakeLLM]
) -> None:
    discord, llm = platforms
    alice, bob = discord.add_user("alice"), discord.add_user("bob")
    async with running(configure(discord_extra='allow_groups = ["*"]'), discord):
        await discord.post(alice, "we are just chatting among ourselves")
        asked = await discord.post(bob, "what time is it in Tokyo when it is noon in Berlin?", mention=True)
        (reply,) = await discord.wait_sent(1, timeout=20)
        assert reply.channel_id == discord.channel_id
        assert reply.reply_to == asked
        assert reply.content.startswith("Hello from the fake model.")
        await anyio.sleep(0.3)
        assert len(discord.sent) == 1
    (request,) = llm.requests
    assert (
        request.body["messages"][-1]["content"] == "Bob: what time is it in Tokyo when it is noon in Berlin?"
    )


@pytest.mark.anyio
async def test_a_stranger_gets_only_a_pairing_code_and_nothing_reaches_the_model(
    configure: Callable[..., Path], platforms: tuple[FakeDiscord, FakeLLM], home: Path
) -> None:
    discord, llm = platforms
    bob = discord.add_user("bob")
    secret = "my card number is 4111 1111 1111 1111"
    async with running(configure(), discord) as gateway:
        asked = await discord.dm(bob, f"hi, who are you? {secret}")
        (code_message,) = await discord.wait_sent(1, timeout=20)
        assert code_message.channel_id == discord.dm_channel(bob)
        assert code_message.reply_to == asked
        assert "pairing code" in code_message.content
        await discord.dm(bob, "hello?")  # the code was sent once: writing again gets nothing
        await anyio.sleep(0.5)
        assert len(discord.sent) == 1
        assert llm.requests == []  # nothing from a stranger reaches the model...
        assert await inbox.pending(gateway.db) == []  # ...or the conversation store
        (request,) = await pairing.pending(gateway.db)
        assert (request.sender_id, request.sender_name) == (bob.id, "Bob")
        assert request.code in code_message.content
    for stored in home.rglob("*"):  # what a stranger said is kept nowhere, not even in a log
        assert not stored.is_file() or b"4111 1111" not in stored.read_bytes(), stored


@pytest.mark.anyio
async def test_a_gateway_drop_while_a_reply_is_written_still_delivers_it_once(
    configure: Callable[..., Path], platforms: tuple[FakeDiscord, FakeLLM]
) -> None:
    discord, llm = platforms
    alice, bob = discord.add_user("alice"), discord.add_user("bob")
    llm.queue(Hang(2))  # the model is slow to answer Alice: the connection drops meanwhile
    async with running(configure(discord_extra=OPEN), discord):
        asked = await discord.dm(alice, "Plan me a weekend in Lisbon")
        with anyio.fail_after(20):
            while not llm.requests:
                await anyio.sleep(0.02)
        await discord.disconnect()  # no close frame: the network went away
        missed = await discord.dm(bob, "and one for Porto?")  # said while the bot was away
        await discord.wait_until(lambda: discord.resumes == 1, timeout=20)
        sent = await discord.wait_sent(2, timeout=20)
        await anyio.sleep(0.5)
        assert len(discord.sent) == 2
    assert {(m.channel_id, m.reply_to) for m in sent} == {
        (discord.dm_channel(alice), asked),
        (discord.dm_channel(bob), missed),
    }
    assert all(m.content.startswith("Hello from the fake model.") for m in sent)
    assert (discord.identifies, discord.resumes) == (1, 1)  # resumed, not a new session
    assert sorted(r.body["messages"][-1]["content"] for r in llm.requests) == [
        "Plan me a weekend in Lisbon",
        "and one for Porto?",
    ]


@pytest.mark.anyio
async def test_a_reply_longer_than_2000_characters_arrives_split_in_order(
    configure: Callable[..., Path], platforms: tuple[FakeDiscord, FakeLLM]
) -> None:
    discord, llm = platforms
    alice = discord.add_user("alice")
    paragraphs = [f"Paragraph {n}: " + "lorem ipsum " * 30 for n in range(12)]
    llm.default = Answer("\n\n".join(paragraphs))
    async with running(configure(discord_extra=OPEN), discord):
        asked = await discord.dm(alice, "Tell me everything about Lisbon")
        await discord.wait_until(lambda: any("New to you" in m.content for m in discord.sent), timeout=20)
        await anyio.sleep(0.3)
        parts = list(discord.sent)
    assert len(parts) >= 3
    assert all(len(m.content) <= 2000 for m in parts)
    assert [m.reply_to for m in parts] == [asked] + [None] * (len(parts) - 1)
    assert {m.channel_id for m in parts} == {discord.dm_channel(alice)}
    joined = "\n".join(m.content for m in parts)
    positions = [joined.index(f"Paragraph {n}:") for n in range(12)]
    assert positions == sorted(positions)
    assert "New to you" in parts[-1].content  # the decoration closes the reply, after the last part
    assert len(llm.requests) == 1
