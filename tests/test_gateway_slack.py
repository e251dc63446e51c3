"""End to end through Slack: a person writes, the assistant answers in the same conversation.

slack-sdk's real Socket Mode and Web API clients talk to a fake Slack (tests/fakes/slack.py),
the real engine runs as a child over stdio, the model is an OpenAI-compatible fake over HTTP;
only the platforms are fake. Each test starts its own daemon with `serve(load_config(path))`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from fake_llm_servers import FakeLLM, serve_fake_llm
from fakes.slack import FakeSlack, serve_fake_slack
from mbe_gateway.config import load_config
from mbe_gateway.gateway import Gateway, serve
from mbe_gateway.store import history, inbox, pairing, sessions

OPEN = 'dm_policy = "open"'


@pytest.fixture
async def platforms() -> AsyncIterator[tuple[FakeSlack, FakeLLM]]:
    async with serve_fake_slack() as slack, serve_fake_llm() as llm:
        yield slack, llm


@pytest.fixture
def configure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platforms: tuple[FakeSlack, FakeLLM]
) -> Callable[..., Path]:
    slack, llm = platforms
    monkeypatch.setenv("MBE_GATEWAY_SECRET_SLACK_BOT_TOKEN", slack.bot_token)
    monkeypatch.setenv("MBE_GATEWAY_SECRET_SLACK_APP_TOKEN", slack.app_token)

    def write(*, slack_extra: str = "") -> Path:
        path = tmp_path / "config.toml"
        path.write_text(
            "[[llm.providers]]\n"
            f'kind = "openai"\nname = "fake"\nbase_url = "{llm.openai_url}"\nmodel = "m"\n'
            "[channels.slack]\n"
            'enabled = true\nbot_token = "secret:slack_bot_token"\napp_token = "secret:slack_app_token"\n'
            f'api_base = "{slack.api_url}"\n{slack_extra}\n'
        )
        return path

    return write


@asynccontextmanager
async def running(config_path: Path, slack: FakeSlack) -> AsyncIterator[Gateway]:
    """The daemon, once its Socket Mode connection is open (the fake sends events only then)."""
    opened = slack.connections_opened
    async with anyio.create_task_group() as tg:
        gateway: Gateway = await tg.start(serve, load_config(config_path))
        await slack.wait_connected(opened + 1, timeout=20)
        yield gateway
        tg.cancel_scope.cancel()


def said_last(llm: FakeLLM) -> list[str]:
    """What the model was given as the person's message, request by request."""
    return [r.body["messages"][-1]["content"] for r in llm.requests]


@pytest.mark.anyio
async def test_a_dm_is_answered_in_the_same_conversation(
    configure: Callable[..., Path], platforms: tuple[FakeSlack, FakeLLM]
) -> None:
    slack, llm = platforms
    async with running(configure(slack_extra=OPEN), slack) as gateway:
        posted = await slack.dm("How long should I boil an egg for a soft yolk?")
        (reply,) = await slack.wait_sent(1, timeout=20)
        assert reply.channel == posted.channel == "DALICE"
        assert reply.thread_ts is None  # a DM is answered in the conversation, not in a thread
        assert reply.text.startswith("Hello from the fake model.")
        assert "New to you" in reply.text
        await slack.wait_acked(posted)
        session = await sessions.get_or_create(gateway.db, "slack", "DALICE")
        said = await history.recent(gateway.db, session.id)
        assert [m.text for m in said] == [
            "How long should I boil an egg for a soft yolk?",
            "Hello from the fake model.",
        ]
        await anyio.sleep(0.3)  # the bot's own post comes back as an event: not answered
        assert len(slack.sent) == 1
    assert said_last(llm) == ["How long should I boil an egg for a soft yolk?"]


@pytest.mark.anyio
async def test_a_mention_in_a_channel_is_answered_once_in_its_thread(
    configure: Callable[..., Path], platforms: tuple[FakeSlack, FakeLLM]
) -> None:
    slack, llm = platforms
    async with running(configure(slack_extra='allow_groups = ["*"]'), slack):
        chatter = await slack.say("we are just chatting among ourselves", user="UBOB")
        posted = await slack.say("what time is it in Tokyo when it is noon in Berlin?", mention=True)
        (reply,) = await slack.wait_sent(1, timeout=20)
        assert (reply.channel, reply.thread_ts) == ("CGENERAL", posted.ts)
        assert reply.text.startswith("Hello from the fake model.")
        await slack.wait_acked(posted)  # the `message` and the `app_mention` event alike
        await slack.wait_acked(chatter)  # not for us, but received: Slack must not send it again
        await anyio.sleep(0.3)
        assert len(slack.sent) == 1
    assert [e.event["type"] for e in posted.envelopes] == ["message", "app_mention"]
    assert said_last(llm) == ["what time is it in Tokyo when it is noon in Berlin?"]


@pytest.mark.anyio
async def test_a_redelivered_event_is_answered_once_even_across_a_restart(
    configure: Callable[..., Path], platforms: tuple[FakeSlack, FakeLLM]
) -> None:
    slack, llm = platforms
    config = configure(slack_extra=OPEN)
    async with running(config, slack):
        posted = await slack.dm("Are you there?")
        await slack.wait_sent(1, timeout=20)
        again = await slack.redeliver(posted.envelopes[0], reason="http_timeout")
        await slack.wait_acked(again)
        await anyio.sleep(0.3)
        assert len(slack.sent) == 1
    # A new process remembers nothing of the last one's deliveries: the inbox must.
    async with running(config, slack):
        once_more = await slack.redeliver(again, reason="http_timeout")
        await slack.wait_acked(once_more)
        await anyio.sleep(0.5)
        assert len(slack.sent) == 1
    first, second, third = (e for e in slack.envelopes if e.event_id == posted.envelopes[0].event_id)
    assert [e.retry_attempt for e in (first, second, third)] == [0, 1, 2]
    assert len(llm.requests) == 1


@pytest.mark.anyio
async def test_after_a_refresh_mid_conversation_the_next_message_is_still_answered(
    configure: Callable[..., Path], platforms: tuple[FakeSlack, FakeLLM]
) -> None:
    slack, llm = platforms
    async with running(configure(slack_extra=OPEN), slack):
        await slack.dm("I'm planning a weekend in Lisbon")
        await slack.wait_sent(1, timeout=20)
        await slack.refresh()  # Slack's `disconnect`: a new connection is wanted
        await slack.wait_connected(2, timeout=20)
        posted = await slack.dm("What should I eat there?")
        (_, reply) = await slack.wait_sent(2, timeout=20)
        assert (reply.channel, reply.thread_ts) == ("DALICE", None)
        assert reply.text.startswith("Hello from the fake model.")
        await slack.wait_acked(posted)
        with anyio.fail_after(15):
            while slack.open_connections != 1:  # the old connection is gone, the new one stays
                await anyio.sleep(0.05)
    assert said_last(llm) == ["I'm planning a weekend in Lisbon", "What should I eat there?"]
    earlier = [m["content"] for m in llm.requests[-1].body["messages"]]
    assert "I'm planning a weekend in Lisbon" in earlier  # the conversation went on where it was


@pytest.mark.anyio
async def test_a_stranger_gets_only_a_pairing_code_and_nothing_reaches_the_model(
    configure: Callable[..., Path], platforms: tuple[FakeSlack, FakeLLM], home: Path
) -> None:
    slack, llm = platforms
    async with running(configure(), slack) as gateway:
        posted = await slack.dm("hi, who are you? my card number is 4111 1111 1111 1111", user="UBOB")
        (code_message,) = await slack.wait_sent(1, timeout=20)
        assert (code_message.channel, code_message.thread_ts) == ("DBOB", None)
        assert "pairing code" in code_message.text
        await slack.wait_acked(posted)  # received, so Slack does not send it again
        assert llm.requests == []  # nothing from a stranger reaches the model...
        assert await inbox.pending(gateway.db) == []  # ...or the conversation store
        (request,) = await pairing.pending(gateway.db)
        assert (request.channel, request.sender_id, request.chat_id) == ("slack", "UBOB", "DBOB")
        assert request.code in code_message.text
    for stored in home.rglob("*"):  # what a stranger said is kept nowhere, not even in a log
        assert not stored.is_file() or b"4111 1111" not in stored.read_bytes(), stored
