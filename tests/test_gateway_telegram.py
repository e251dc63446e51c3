"""End to end through Telegram: a person writes, the assistant answers in the same chat.

The real aiogram client talks to a fake Bot API server, the real engine runs as a child over
stdio, the model is an OpenAI-compatible fake over HTTP; only the platforms are fake.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import pytest

from fake_llm_servers import Answer, FakeLLM, Hang, serve_fake_llm
from fakes.slack import serve_fake_slack
from fakes.telegram import ALICE, BOB, FakeTelegram, serve_fake_telegram
from mbe_gateway import access, paths
from mbe_gateway.assistant import open_assistant
from mbe_gateway.channels.base import Inbound
from mbe_gateway.config import load_config
from mbe_gateway.gateway import TYPING_AFTER, Gateway, open_channel, policy_of, serve
from mbe_gateway.secrets import Secrets
from mbe_gateway.store import history, inbox, open_database, sessions


@pytest.fixture
async def platforms() -> AsyncIterator[tuple[FakeTelegram, FakeLLM]]:
    async with serve_fake_telegram() as telegram, serve_fake_llm() as llm:
        yield telegram, llm


@pytest.fixture
def configure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platforms: tuple[FakeTelegram, FakeLLM]
) -> Callable[..., Path]:
    telegram, llm = platforms
    monkeypatch.setenv("MBE_GATEWAY_SECRET_TELEGRAM_TOKEN", telegram.token)

    def write(*, telegram_extra: str = "", gateway_extra: str = "", llm_timeout: float = 30) -> Path:
        path = tmp_path / "config.toml"
        path.write_text(
            f"[gateway]\n{gateway_extra}\n"
            "[[llm.providers]]\n"
            f'kind = "openai"\nname = "fake"\nbase_url = "{llm.openai_url}"\nmodel = "m"\n'
            f"timeout = {llm_timeout}\n"
            "[channels.telegram]\n"
            f'enabled = true\ntoken = "secret:telegram_token"\napi_base = "{telegram.api_base}"\n'
            f"{telegram_extra}\n"
        )
        return path

    return write


@asynccontextmanager
async def running(config_path: Path) -> AsyncIterator[Gateway]:
    async with anyio.create_task_group() as tg:
        gateway: Gateway = await tg.start(serve, load_config(config_path))
        yield gateway
        tg.cancel_scope.cancel()


OPEN = 'dm_policy = "open"'


@pytest.mark.anyio
async def test_a_dm_is_answered_in_the_same_chat_threaded_to_the_question(configure, platforms) -> None:
    telegram, llm = platforms
    async with running(configure(telegram_extra=OPEN)) as gateway:
        asked = telegram.dm("How long should I boil an egg for a soft yolk?")
        (reply,) = await telegram.wait_sent(1, timeout=20)
        assert reply.chat_id == ALICE.id
        assert reply.reply_to_message_id == asked.message_id
        assert reply.text.startswith("Hello from the fake model.")
        assert "New to you" in reply.text
        await telegram.wait_confirmed(asked.update_id)
        session = await sessions.get_or_create(gateway.db, "telegram", str(ALICE.id))
        said = await history.recent(gateway.db, session.id)
        assert [m.text for m in said] == [
            "How long should I boil an egg for a soft yolk?",
            "Hello from the fake model.",
        ]
    assert (
        llm.requests[-1].body["messages"][-1]["content"] == "How long should I boil an egg for a soft yolk?"
    )
    assert [c.params.get("commands") is not None for c in telegram.calls_to("setMyCommands")] == [True]


@pytest.mark.anyio
async def test_a_stranger_gets_only_a_pairing_code_until_the_owner_approves(configure, platforms) -> None:
    telegram, llm = platforms
    async with running(configure()) as gateway:
        telegram.dm("hi, who are you?", user=BOB)
        (code_message,) = await telegram.wait_sent(1, timeout=20)
        assert "pairing code" in code_message.text
        assert llm.requests == []  # nothing from a stranger reaches the model...
        assert await inbox.pending(gateway.db) == []  # ...or the conversation store
        code = code_message.text.split("Your pairing code: ")[1][:8]
        await access.approve(gateway.db, code, "en")
        (_, approved) = await telegram.wait_sent(2, timeout=10)
        assert approved.text.startswith("✅ You're approved")
        telegram.dm("hello again", user=BOB)
        (*_, answer) = await telegram.wait_sent(3, timeout=20)
        assert answer.text.startswith("Hello from the fake model.")
    assert len(llm.requests) == 1


@pytest.mark.anyio
async def test_in_a_group_only_messages_addressed_to_the_bot_are_answered(configure, platforms) -> None:
    telegram, llm = platforms
    async with running(configure(telegram_extra='allow_groups = ["*"]')):
        telegram.group("we are just chatting among ourselves")
        telegram.group("@mbe_test_bot what time is it in Tokyo when it is noon in Berlin?", user=BOB)
        (reply,) = await telegram.wait_sent(1, timeout=20)
        assert reply.text.startswith("Hello from the fake model.")
        await anyio.sleep(0.3)
        assert len(telegram.sent) == 1
    (request,) = llm.requests
    assert (
        request.body["messages"][-1]["content"] == "Bob: what time is it in Tokyo when it is noon in Berlin?"
    )


@pytest.mark.anyio
async def test_a_message_caught_by_a_restart_is_answered_once_afterwards(configure, platforms) -> None:
    telegram, llm = platforms
    config = configure(telegram_extra=OPEN)
    llm.default = Hang(60)
    async with running(config):
        asked = telegram.dm("Plan me a weekend in Lisbon")
        await telegram.wait_confirmed(asked.update_id, timeout=20)  # stored, acknowledged...
        await telegram.wait_for(lambda: len(llm.requests) == 1, timeout=20)  # ...being answered: stop now
    assert telegram.sent == []
    llm.default = Answer("Day one: Alfama.")
    async with running(config) as gateway:
        (reply,) = await telegram.wait_sent(1, timeout=20)
        assert reply.text.startswith("Day one: Alfama.")
        assert reply.reply_to_message_id == asked.message_id
        await anyio.sleep(0.5)
        assert len(telegram.sent) == 1
        assert await inbox.pending(gateway.db) == []


@pytest.mark.anyio
async def test_a_redelivered_message_is_answered_once(configure, platforms) -> None:
    telegram, llm = platforms
    async with running(configure(telegram_extra=OPEN)) as gateway:
        asked = telegram.dm("Are you there?")
        await telegram.wait_confirmed(asked.update_id, timeout=20)
        # The same message again, as the adapter hands over a redelivered update.
        chat = str(ALICE.id)
        again = Inbound("telegram", asked.platform_message_id, chat, chat, "Are you there?", time.time())
        await gateway.deliver(again)
        await telegram.wait_sent(1, timeout=20)
        await anyio.sleep(0.5)
        assert len(telegram.sent) == 1
    assert len(llm.requests) == 1


@pytest.mark.anyio
async def test_a_backlog_after_downtime_gets_one_late_reply_per_sender(configure, platforms) -> None:
    telegram, llm = platforms
    hour_ago = time.time() - 3600
    for i, text in enumerate(("are you up?", "I need a recipe", "something with leeks")):
        telegram.dm(text, date=hour_ago + i)  # queued at Telegram while the gateway was down
    async with running(configure(telegram_extra=OPEN, gateway_extra="late_after_minutes = 5")):
        (reply,) = await telegram.wait_sent(1, timeout=20)
        await anyio.sleep(0.5)
        assert len(telegram.sent) == 1
    assert reply.text.startswith("⏰")
    assert "Hello from the fake model." in reply.text
    assert (
        llm.requests[-1].body["messages"][-1]["content"]
        == "are you up?\nI need a recipe\nsomething with leeks"
    )


@pytest.mark.anyio
async def test_a_wrong_telegram_token_stops_only_telegram_and_slack_still_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platforms
) -> None:
    telegram, llm = platforms
    async with serve_fake_slack() as slack:
        monkeypatch.setenv(
            "MBE_GATEWAY_SECRET_TELEGRAM_TOKEN", "123456789:AAwrongwrongwrongwrongwrongwrongwrong"
        )
        monkeypatch.setenv("MBE_GATEWAY_SECRET_SLACK_BOT_TOKEN", slack.bot_token)
        monkeypatch.setenv("MBE_GATEWAY_SECRET_SLACK_APP_TOKEN", slack.app_token)
        config = tmp_path / "config.toml"
        config.write_text(
            "[[llm.providers]]\n"
            f'kind = "openai"\nbase_url = "{llm.openai_url}"\nmodel = "m"\n'
            "[channels.telegram]\n"
            f'enabled = true\ntoken = "secret:telegram_token"\napi_base = "{telegram.api_base}"\n'
            "[channels.slack]\n"
            'enabled = true\nbot_token = "secret:slack_bot_token"\napp_token = "secret:slack_app_token"\n'
            f'api_base = "{slack.api_url}"\ndm_policy = "open"\n'
        )
        async with running(config) as gateway:
            await slack.wait_connected(timeout=20)
            await slack.dm("Still there?")
            (reply,) = await slack.wait_sent(1, timeout=20)
            assert reply.text.startswith("Hello from the fake model.")
            with anyio.fail_after(10):
                while not gateway.states["telegram"].startswith("stopped"):
                    await anyio.sleep(0.05)
            assert "telegram_token" in gateway.states["telegram"]
            assert "AAwrong" not in gateway.states["telegram"]


@pytest.mark.anyio
async def test_a_message_that_arrives_while_the_assistant_starts_waits_and_is_answered_once_it_runs(
    configure, platforms
) -> None:
    telegram, llm = platforms
    config = load_config(configure(telegram_extra=OPEN))
    secrets = Secrets(config.secrets, paths.data_dir())
    async with AsyncExitStack() as stack:
        db = await stack.enter_async_context(await open_database(paths.gateway_db()))
        channels = {"telegram": await open_channel("telegram", config, secrets, stack)}
        gateway = Gateway(None, channels, {"telegram": policy_of(config, "telegram")}, config=config, db=db)
        async with anyio.create_task_group() as tg:
            await tg.start(gateway.run)
            asked = telegram.dm("Are you awake yet?")
            await telegram.wait_confirmed(asked.update_id, timeout=20)  # on disk, acknowledged
            await anyio.sleep(0.3)
            assert telegram.sent == [] and llm.requests == []  # nobody to answer it yet
            with pytest.raises(RuntimeError, match="still starting"):
                _ = gateway.assistant
            async with open_assistant(config, db=db) as assistant:
                gateway.attach(assistant)
                (reply,) = await telegram.wait_sent(1, timeout=20)
                await gateway.stop()
            tg.cancel_scope.cancel()
    assert reply.reply_to_message_id == asked.message_id
    assert reply.text.startswith("Hello from the fake model.")
    assert len(llm.requests) == 1


@pytest.mark.anyio
async def test_the_daemon_starts_its_engine_once_and_the_assistant_uses_that_one(
    configure, platforms
) -> None:
    telegram, _ = platforms
    async with running(configure(telegram_extra=OPEN)) as gateway:
        telegram.dm("hello")
        await telegram.wait_sent(1, timeout=20)
        assert gateway.assistant.mbe.state == "ready"
        pid = gateway.assistant.mbe.pid
    starts = (paths.data_dir() / "logs" / "mbe-server.log").read_text().count(" starting ")
    assert starts == 1 and pid is not None


@pytest.mark.anyio
async def test_a_slow_answer_shows_typing_until_it_arrives(configure, platforms) -> None:
    telegram, llm = platforms
    llm.default = Hang(TYPING_AFTER + 2.0)
    async with running(configure(telegram_extra=OPEN)):
        asked = telegram.dm("Summarise War and Peace")
        (reply,) = await telegram.wait_sent(1, timeout=30)
    actions = telegram.calls_to("sendChatAction")
    assert [(c.params["chat_id"], c.params["action"]) for c in actions][:1] == [(str(ALICE.id), "typing")]
    assert actions[0].at - asked.at >= TYPING_AFTER  # not for an answer that comes at once
    assert reply.text.startswith("Hello from the fake model.")


@pytest.mark.anyio
async def test_a_batch_that_comes_again_after_a_refusal_answers_each_message_once(
    configure, platforms
) -> None:
    telegram, llm = platforms
    config = load_config(configure(telegram_extra=OPEN))
    secrets = Secrets(config.secrets, paths.data_dir())
    refused: list[str] = []
    offered: list[str] = []
    b1, a1, b2 = telegram.dm("b1", user=BOB), telegram.dm("a1"), telegram.dm("b2", user=BOB)  # one batch
    async with AsyncExitStack() as stack:
        channels = {"telegram": await open_channel("telegram", config, secrets, stack)}
        assistant = await stack.enter_async_context(open_assistant(config))
        gateway = Gateway(assistant, channels, {"telegram": policy_of(config, "telegram")})
        take = gateway.deliver

        async def flaky(message: Inbound) -> None:  # the store fails once, on Bob's first message
            offered.append(message.text)
            if message.text == "b1" and not refused:
                refused.append(message.platform_message_id)
                raise RuntimeError("disk hiccup")
            await take(message)

        gateway.deliver = flaky  # type: ignore[method-assign]  # what the channel is handed
        async with anyio.create_task_group() as tg:
            await tg.start(gateway.run)
            await telegram.wait_confirmed(b2.update_id, timeout=20)
            await telegram.wait_for(lambda: {s.chat_id for s in telegram.sent} == {ALICE.id, BOB.id}, 20)
            await anyio.sleep(0.5)
            await gateway.stop()
        left = await inbox.pending(gateway.db)
    # Alice's a1 was stored in the first round; the offset stayed at b1, so a1 came again:
    # recognised, not stored or answered twice. Bob's b1 and b2 kept their order.
    assert refused and b1.update_id < a1.update_id < b2.update_id
    assert offered.count("a1") == 2 and offered.count("b1") == 2 and offered.count("b2") == 1
    assert [s.chat_id for s in telegram.sent].count(ALICE.id) == 1
    said = [r.body["messages"][-1]["content"] for r in llm.requests]
    assert said.count("a1") == 1
    assert "\n".join(text for text in said if text != "a1") == "b1\nb2"  # one reply or a burst, in order
    assert left == []


@pytest.mark.anyio
async def test_a_full_disk_keeps_the_message_on_telegram_says_why_and_it_is_answered_once_there_is_room(
    configure, platforms, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite's max_page_count makes the database "full" exactly as a full disk does (SQLITE_FULL):
    the message is not acknowledged (Telegram keeps it), the log names the cause, the channel
    retries with backoff, and once there is room it is stored and answered, once."""
    telegram, _ = platforms
    async with running(configure(telegram_extra=OPEN)) as gateway:
        async with gateway.db.connection() as conn:
            pages = (await (await conn.execute("PRAGMA page_count")).fetchone())[0]
            await conn.execute(f"PRAGMA max_page_count = {pages}")
        long_note = "我明天早上九点要去机场接我妈妈。" * 250  # ~12 KB: it needs pages the file cannot grow
        asked = telegram.dm(long_note)
        def reported() -> bool:
            return any(
                r.getMessage() == "delivering a message failed; it stays unacknowledged and comes again"
                and "gateway.sqlite3: database or disk is full" in str(getattr(r, "error", ""))
                for r in caplog.records
            )

        await telegram.wait_for(reported, timeout=20)
        assert not telegram.is_confirmed(asked.update_id)
        assert telegram.sent == []
        async with gateway.db.connection() as conn:
            await conn.execute("PRAGMA max_page_count = 1073741823")  # room again
        (reply,) = await telegram.wait_sent(1, timeout=30)
        assert reply.chat_id == ALICE.id
        await telegram.wait_confirmed(asked.update_id, timeout=10)
        await anyio.sleep(0.5)
        assert len(telegram.sent) == 1
        rows = await inbox.pending(gateway.db, limit=10)
        assert rows == []  # answered, nothing left waiting
