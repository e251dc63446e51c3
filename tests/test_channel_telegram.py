"""The Telegram channel: the real aiogram client against the fake Bot API (tests/fakes/telegram.py).

Each test runs its own fake server on loopback; the channel under test is exactly the one the
gateway runs, with only its API base URL pointed at the fake and its waits shortened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakes.telegram import (
    ALICE,
    BOB,
    CANT_PARSE,
    GROUP,
    OTHER_BOT,
    Answer,
    Chat,
    Disconnect,
    FakeTelegram,
    Garbage,
    flood_wait,
    parse_html,
    serve_fake_telegram,
    server_error,
)
from mbe_gateway.channels.base import Channel, Inbound, Outbound
from mbe_gateway.channels.telegram import RetryPolicy, TelegramChannel, from_settings
from mbe_gateway.channels.telegram_markup import MAX_LENGTH, to_html, utf16_len, visible_text
from mbe_gateway.config import SecretRef, SecretsSettings, TelegramSettings
from mbe_gateway.errors import ChannelAuthFailed, ChannelError, ConfigError, SendFailed
from mbe_gateway.logs import fields_of
from mbe_gateway.secrets import Secrets

FAST = RetryPolicy(base=0.02, cap=0.2, send_cap=0.05)
COMMANDS = [
    ("start", "Start talking to the assistant"),
    ("help", "What I can do"),
    ("stats", "Your learning statistics"),
    ("reset", "Forget this conversation"),
]
WRONG_TOKEN = "987654321:AAWrongTokenWrongTokenWrongToken12345"


class Inbox:
    """A `deliver` that keeps what it is given (and can be told to refuse some)."""

    def __init__(self) -> None:
        self.messages: list[Inbound] = []
        self.refuse: set[str] = set()  # platform ids to refuse once each
        self._changed = anyio.Event()

    async def __call__(self, message: Inbound) -> None:
        self.messages.append(message)
        self._changed.set()
        self._changed = anyio.Event()
        if message.platform_message_id in self.refuse:
            self.refuse.discard(message.platform_message_id)
            raise RuntimeError("the inbox is unavailable")

    async def wait(self, count: int, timeout: float = 5.0) -> list[Inbound]:
        with anyio.fail_after(timeout):
            while len(self.messages) < count:
                await self._changed.wait()
        return self.messages


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with serve_fake_telegram() as server:
        yield server


@pytest.fixture
async def channel(fake: FakeTelegram) -> AsyncIterator[TelegramChannel]:
    async with TelegramChannel(fake.token, api_base=fake.api_base, commands=COMMANDS, retry=FAST) as ch:
        yield ch


@asynccontextmanager
async def running(channel: TelegramChannel, fake: FakeTelegram, deliver: Inbox) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(channel.run, deliver)
        await fake.wait_polling()
        yield
        tg.cancel_scope.cancel()


def assert_no_token(caplog: pytest.LogCaptureFixture, token: str) -> None:
    secret_part = token.partition(":")[2]
    for record in caplog.records:
        seen = f"{record.getMessage()} {fields_of(record)} {record.exc_text or ''}"
        assert secret_part not in seen, record


async def send_in_chat(fake: FakeTelegram, channel: TelegramChannel, text: str) -> list[str]:
    """A reply to Alice's DM (the bot can only write to chats that wrote to it)."""
    first = fake.dm("hi")
    return await channel.send(Outbound(chat_id=str(first.chat_id), text=text, reply_to=str(first.message_id)))


# -- receiving ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_dm_arrives_as_a_normalized_inbound(fake: FakeTelegram, channel: TelegramChannel) -> None:
    inbox = Inbox()
    async with running(channel, fake, inbox):
        sent = fake.dm("hello there, 你好 👋")
        [message] = await inbox.wait(1)
    assert message.channel == "telegram"
    assert message.platform_message_id == f"{ALICE.id}:{sent.message_id}" == sent.platform_message_id
    assert (message.chat_id, message.sender_id, message.sender_name) == (
        str(ALICE.id),
        str(ALICE.id),
        "Alice",
    )
    assert message.text == "hello there, 你好 👋"
    assert (message.is_group, message.addressed, message.reply_to) == (False, True, str(sent.message_id))
    assert abs(message.sent_at - time.time()) < 5
    assert message.meta["username"] == "alice"


@pytest.mark.anyio
async def test_group_message_is_addressed_only_when_the_bot_is_called(
    fake: FakeTelegram, channel: TelegramChannel
) -> None:
    inbox = Inbox()
    async with running(channel, fake, inbox):
        fake.group("just chatting among friends")
        fake.group("@mbe_test_bot what's the weather?")
        fake.group("hey @MBE_Test_Bot, how are you")
        fake.group("👋🏽 @mbe_test_bot hi")
        fake.group("/stats@mbe_test_bot")
        fake.group("/stats@other_helper_bot")
        fake.group("/help", user=BOB)
        fake.group("@alice look at this")
        await inbox.wait(8)
        [own] = await channel.send(Outbound(chat_id=str(GROUP.id), text="I am here"))
        fake.group("thanks!", user=BOB, reply_to=int(own.partition(":")[2]))
        messages = await inbox.wait(9)
    seen = [(m.text, m.addressed) for m in messages]
    assert seen == [
        ("just chatting among friends", False),
        ("what's the weather?", True),
        ("hey, how are you", True),
        ("👋🏽 hi", True),
        ("/stats", True),
        ("/stats@other_helper_bot", False),
        ("/help", True),
        ("@alice look at this", False),
        ("thanks!", True),
    ]
    assert all(m.is_group and m.chat_id == str(GROUP.id) for m in messages)
    assert messages[-1].sender_id == str(BOB.id)
    assert messages[0].meta["chat_title"] == "Friends"


@pytest.mark.anyio
async def test_forum_topic_message_is_answered_in_its_topic(
    fake: FakeTelegram, channel: TelegramChannel
) -> None:
    forum = Chat(-1009876543210, "supergroup", title="Forum", is_forum=True)
    inbox = Inbox()
    async with running(channel, fake, inbox):
        fake.inject(forum, ALICE, "@mbe_test_bot in the topic", thread_id=7)
        [message] = await inbox.wait(1)
    assert message.meta["thread_id"] == 7
    await channel.send(Outbound(message.chat_id, "answer", reply_to=message.reply_to, meta=message.meta))
    assert fake.sent[0].message_thread_id == 7


@pytest.mark.anyio
async def test_messages_from_the_bot_itself_and_other_bots_are_ignored(
    fake: FakeTelegram, channel: TelegramChannel
) -> None:
    inbox = Inbox()
    async with running(channel, fake, inbox):
        own = fake.group("I said this myself", user=fake.bot)
        other = fake.group("@mbe_test_bot beep boop", user=OTHER_BOT)
        fake.dm("a person")
        await inbox.wait(1)
        await fake.wait_confirmed(other.update_id)
    assert [m.text for m in inbox.messages] == ["a person"]
    assert fake.is_confirmed(own.update_id)  # skipped, not left to come back forever


@pytest.mark.anyio
async def test_update_is_acknowledged_only_after_deliver_returns(
    fake: FakeTelegram, channel: TelegramChannel
) -> None:
    entered, release = anyio.Event(), anyio.Event()
    observed: dict[str, float | bool] = {}

    async def slow_deliver(message: Inbound) -> None:
        observed["confirmed_while_delivering"] = fake.is_confirmed(injected.update_id)
        entered.set()
        await release.wait()
        observed["returned_at"] = time.monotonic()

    async with anyio.create_task_group() as tg:
        tg.start_soon(channel.run, slow_deliver)
        await fake.wait_polling()
        injected = fake.dm("keep this safe")
        await entered.wait()
        await anyio.sleep(0.2)  # time for a premature acknowledgement to show
        assert not fake.is_confirmed(injected.update_id)
        release.set()
        await fake.wait_confirmed(injected.update_id)
        tg.cancel_scope.cancel()
    assert observed["confirmed_while_delivering"] is False
    confirming = next(p for p in fake.polls if p.offset is not None and p.offset > injected.update_id)
    assert confirming.at >= observed["returned_at"]


@pytest.mark.anyio
async def test_refused_delivery_comes_again_with_the_same_id_and_polling_goes_on(
    fake: FakeTelegram, channel: TelegramChannel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mbe_gateway")
    inbox = Inbox()
    async with running(channel, fake, inbox):
        first = fake.dm("first")
        inbox.refuse.add(first.platform_message_id)
        second = fake.dm("second")
        messages = await inbox.wait(3)
        await fake.wait_confirmed(second.update_id)
    assert [(m.platform_message_id, m.text) for m in messages] == [
        (first.platform_message_id, "first"),
        (first.platform_message_id, "first"),
        (second.platform_message_id, "second"),
    ]
    refusals = [r for r in caplog.records if "unacknowledged" in r.getMessage()]
    assert len(refusals) == 1
    assert_no_token(caplog, fake.token)


@pytest.mark.anyio
async def test_the_channel_says_it_is_receiving_once_it_polls(
    fake: FakeTelegram, channel: TelegramChannel
) -> None:
    assert not channel.receiving.is_set()
    async with running(channel, fake, Inbox()):
        with anyio.fail_after(5):
            await channel.receiving.wait()
        assert fake.calls_to("getMe") and fake.calls_to("setMyCommands")  # connected first


@pytest.mark.anyio
async def test_a_batch_is_delivered_chat_by_chat_at_once_each_chat_in_order(
    fake: FakeTelegram, channel: TelegramChannel
) -> None:
    both_in, order, first_alice = anyio.Event(), [], []
    in_flight: set[str] = set()

    async def deliver(message: Inbound) -> None:
        in_flight.add(message.chat_id)
        if len(in_flight) == 2:
            both_in.set()
        with anyio.fail_after(5):
            await both_in.wait()  # returns only once Alice's and Bob's chats are in at the same time
        order.append(message.text)
        in_flight.discard(message.chat_id)
        if message.text == "a1":
            first_alice.append(fake.is_confirmed(a1.update_id))

    a1, _, _, b2 = fake.dm("a1"), fake.dm("b1", user=BOB), fake.dm("a2"), fake.dm("b2", user=BOB)
    async with anyio.create_task_group() as tg:
        tg.start_soon(channel.run, deliver)
        await fake.wait_confirmed(b2.update_id)
        tg.cancel_scope.cancel()
    assert [t for t in order if t[0] == "a"] == ["a1", "a2"] and [t for t in order if t[0] == "b"] == [
        "b1",
        "b2",
    ]
    assert first_alice == [False]
    assert len([p for p in fake.polls if p.offset is not None]) == 1  # the whole batch, confirmed at once


@pytest.mark.anyio
async def test_a_refusal_in_one_chat_holds_back_its_later_messages_and_the_offset_not_the_others(
    fake: FakeTelegram, channel: TelegramChannel
) -> None:
    inbox = Inbox()
    a1, b1, _, b2 = fake.dm("a1"), fake.dm("b1", user=BOB), fake.dm("a2"), fake.dm("b2", user=BOB)
    inbox.refuse.add(a1.platform_message_id)
    async with running(channel, fake, inbox):
        await fake.wait_confirmed(b2.update_id)
    alice = [m.text for m in inbox.messages if m.chat_id == str(a1.chat_id)]
    assert alice == ["a1", "a1", "a2"]  # refused, taken, then the one behind it (never ahead of it)
    # The offset stopped at a1: Bob's messages came again (duplicates the inbox recognises).
    assert [m.text for m in inbox.messages if m.chat_id == str(b1.chat_id)] == ["b1", "b2", "b1", "b2"]


@pytest.mark.anyio
async def test_polling_reconnects_after_the_connection_drops(
    fake: FakeTelegram, channel: TelegramChannel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mbe_gateway")
    inbox = Inbox()
    async with running(channel, fake, inbox):
        fake.fail("getUpdates", server_error(502), Garbage(), Disconnect())
        assert fake.disconnect() == 1
        fake.dm("are you still there?")
        [message] = await inbox.wait(1)
    assert message.text == "are you still there?"
    reconnects = [r for r in caplog.records if "reconnecting" in r.getMessage()]
    assert len(reconnects) == 4  # the dropped poll, 502, garbage, dropped again
    assert_no_token(caplog, fake.token)


@pytest.mark.anyio
async def test_another_poller_is_reported_and_polling_goes_on_once_it_stops(
    fake: FakeTelegram, channel: TelegramChannel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mbe_gateway")
    inbox = Inbox()
    async with running(channel, fake, inbox):
        rival = TelegramChannel(fake.token, api_base=fake.api_base, retry=FAST)
        async with rival, anyio.create_task_group() as tg:
            tg.start_soon(rival.run, Inbox())
            with anyio.fail_after(5):
                while not any("another program is polling" in r.getMessage() for r in caplog.records):
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        fake.dm("only one of us now")
        [message] = await inbox.wait(1)
    assert message.text == "only one of us now"


@pytest.mark.anyio
async def test_a_webhook_stops_polling_with_a_clear_message(
    fake: FakeTelegram, channel: TelegramChannel
) -> None:
    fake.webhook_url = "https://example.org/hook"
    with anyio.fail_after(5), pytest.raises(ChannelError, match="webhook is set") as raised:
        await channel.run(Inbox())
    assert "deleteWebhook" in str(raised.value)
    assert fake.token not in str(raised.value)


@pytest.mark.anyio
async def test_commands_are_offered_in_telegrams_menu_once_running(
    fake: FakeTelegram, channel: TelegramChannel
) -> None:
    async with running(channel, fake, Inbox()):
        pass
    assert [c["command"] for c in fake.commands] == ["start", "help", "stats", "reset"]
    assert fake.commands[2]["description"] == "Your learning statistics"


# -- sending --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_reply_is_html_and_answers_the_message(fake: FakeTelegram, channel: TelegramChannel) -> None:
    ids = await send_in_chat(
        fake, channel, "**Sure.** Try `pip install x` or see [the docs](https://example.org/a?b=1&c=2)."
    )
    [sent] = fake.sent
    assert ids == [sent.platform_message_id]
    assert sent.parse_mode == "HTML"
    assert sent.text == "Sure. Try pip install x or see the docs."
    assert {e["type"] for e in sent.entities} == {"bold", "code", "text_link"}
    assert (
        next(e for e in sent.entities if e["type"] == "text_link")["url"] == "https://example.org/a?b=1&c=2"
    )
    assert (sent.reply_to_message_id, sent.allow_sending_without_reply) == (1, True)


@pytest.mark.anyio
async def test_long_reply_is_split_in_order_under_the_limit(
    fake: FakeTelegram, channel: TelegramChannel
) -> None:
    paragraphs = [f"**Part {n}.** " + ("Emoji 😀 and <tags> & words. " * 60) for n in range(1, 9)]
    code = "```python\n" + "\n".join(f"print({i})  # a line of code" for i in range(300)) + "\n```"
    text = "\n\n".join([*paragraphs[:4], code, *paragraphs[4:]])
    started = time.perf_counter()
    ids = await send_in_chat(fake, channel, text)
    elapsed = time.perf_counter() - started
    sent = fake.sent
    assert len(sent) >= 5
    assert ids == [s.platform_message_id for s in sent]
    assert all(utf16_len(s.text) <= MAX_LENGTH and s.parse_mode == "HTML" for s in sent)
    shown = "\n\n".join(s.text for s in sent)
    positions = [shown.index(f"Part {n}.") for n in range(1, 9)]
    assert positions == sorted(positions)
    assert shown.count("print(") == 300 and shown.index("print(299)") < shown.index("Part 5.")
    code_parts = [s for s in sent if "print(" in s.text]
    assert len(code_parts) >= 2  # the code block was cut, and reopened in the next part
    assert all(
        any(e["type"] == "pre" and e.get("language") == "python" for e in s.entities) for s in code_parts
    )
    assert [s.reply_to_message_id for s in sent] == [1] + [None] * (len(sent) - 1)
    assert elapsed < 5


@pytest.mark.anyio
async def test_long_reply_dense_with_markup_is_split_quickly(
    fake: FakeTelegram, channel: TelegramChannel
) -> None:
    text = "**bold** _it_ [link](https://example.org/x) `code` & <tag> " * 500  # one 29,000-character line
    started = time.perf_counter()
    await send_in_chat(fake, channel, text)
    assert time.perf_counter() - started < 2  # converting every candidate cut took 100+ s here
    assert len(fake.sent) >= 4
    assert "".join(s.text for s in fake.sent).count("link") == 500


@pytest.mark.anyio
async def test_hostile_markup_is_escaped_not_obeyed(fake: FakeTelegram, channel: TelegramChannel) -> None:
    hostile = (
        "<b>bold?</b> & <script>alert(1)</script> *half **open `tick ~~x "
        "[click](javascript:alert(1)) [ping](tg://user?id=42) a_b_c 5 > 3 &amp; &lt;i&gt;"
    )
    await send_in_chat(fake, channel, hostile)
    [sent] = fake.sent
    assert sent.parse_mode == "HTML"  # accepted as it was: nothing for Telegram to refuse
    assert sent.text == (
        "<b>bold?</b> & <script>alert(1)</script> *half **open `tick ~~x "
        "[click](javascript:alert(1)) ping a_b_c 5 > 3 & <i>"
    )
    assert sent.entities == []


@pytest.mark.anyio
async def test_markup_telegram_refuses_is_sent_again_as_plain_text(
    fake: FakeTelegram, channel: TelegramChannel
) -> None:
    fake.fail("sendMessage", CANT_PARSE)
    await send_in_chat(fake, channel, "**Hello** _world_")
    [sent] = fake.sent
    assert (sent.parse_mode, sent.text) == (None, "Hello world")
    assert [c.params.get("parse_mode") for c in fake.calls_to("sendMessage")] == ["HTML", None]


@pytest.mark.anyio
async def test_short_flood_wait_is_waited_out(fake: FakeTelegram, channel: TelegramChannel) -> None:
    fake.fail("sendMessage", flood_wait(1))
    started = time.monotonic()
    await send_in_chat(fake, channel, "after the wait")
    assert 1.0 <= time.monotonic() - started < 3
    assert [s.text for s in fake.sent] == ["after the wait"]


@pytest.mark.anyio
async def test_long_flood_wait_is_handed_back_as_retryable(
    fake: FakeTelegram, channel: TelegramChannel
) -> None:
    fake.fail("sendMessage", flood_wait(60))
    with anyio.fail_after(2), pytest.raises(SendFailed) as raised:
        await send_in_chat(fake, channel, "too soon")
    assert (raised.value.retryable, raised.value.retry_after) == (True, 60.0)
    assert fake.sent == []


@pytest.mark.anyio
async def test_a_burst_of_server_errors_is_survived(
    fake: FakeTelegram, channel: TelegramChannel, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail("sendMessage", server_error(500), Garbage(), Disconnect())
    await send_in_chat(fake, channel, "eventually")
    assert [s.text for s in fake.sent] == ["eventually"]
    assert len(fake.calls_to("sendMessage")) == 4


@pytest.mark.anyio
async def test_server_errors_that_go_on_end_in_a_retryable_failure(
    fake: FakeTelegram, channel: TelegramChannel
) -> None:
    fake.fail("sendMessage", *[server_error(502)] * 10)
    with pytest.raises(SendFailed, match="after 4 tries") as raised:
        await send_in_chat(fake, channel, "never")
    assert raised.value.retryable
    assert fake.token.partition(":")[2] not in str(raised.value)


@pytest.mark.anyio
async def test_a_chat_that_blocked_the_bot_is_not_retried(
    fake: FakeTelegram, channel: TelegramChannel
) -> None:
    fake.blocked.add(ALICE.id)
    with pytest.raises(SendFailed, match="blocked") as raised:
        await send_in_chat(fake, channel, "hello?")
    assert not raised.value.retryable
    assert len(fake.calls_to("sendMessage")) == 1
    with pytest.raises(SendFailed, match="chat not found") as gone:
        await channel.send(Outbound(chat_id="424242", text="anyone?"))
    assert not gone.value.retryable


@pytest.mark.anyio
async def test_retry_after_a_partial_send_continues_where_it_stopped(
    fake: FakeTelegram, channel: TelegramChannel
) -> None:
    text = "\n\n".join(f"Section {n}. " + "word " * 700 for n in range(1, 4))
    fake.fail("sendMessage", Answer(), flood_wait(30))
    first = fake.dm("tell me a long story")
    message = Outbound(chat_id=str(first.chat_id), text=text, reply_to=str(first.message_id))
    with pytest.raises(SendFailed):
        await channel.send(message)
    ids = await channel.send(message)
    assert [s.text.split(".")[0] for s in fake.sent] == ["Section 1", "Section 2", "Section 3"]
    assert ids == [s.platform_message_id for s in fake.sent]


@pytest.mark.anyio
async def test_typing_is_shown_and_never_raises(fake: FakeTelegram, channel: TelegramChannel) -> None:
    first = fake.dm("hi")
    await channel.typing(str(first.chat_id))
    await channel.typing("424242")  # a chat the bot cannot see: ignored
    await channel.typing("not a chat id")
    fake.fail("sendChatAction", Disconnect())
    await channel.typing(str(first.chat_id))
    actions = fake.calls_to("sendChatAction")
    assert [(c.params["chat_id"], c.params["action"]) for c in actions[:1]] == [(str(ALICE.id), "typing")]


# -- credentials ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_check_names_the_bot(channel: TelegramChannel) -> None:
    assert await channel.check() == "@mbe_test_bot"


@pytest.mark.anyio
async def test_wrong_token_is_refused_with_a_clear_message_without_the_token(
    fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mbe_gateway")
    async with TelegramChannel(WRONG_TOKEN, api_base=fake.api_base, retry=FAST) as wrong:
        with pytest.raises(ChannelAuthFailed) as checked:
            await wrong.check()
        with anyio.fail_after(5), pytest.raises(ChannelAuthFailed) as ran:
            await wrong.run(Inbox())
    for error in (checked.value, ran.value):
        message = str(error)
        assert "secret telegram_token" in message and "mbe-gateway secrets set telegram_token" in message
        assert "@BotFather" in message
        assert WRONG_TOKEN.partition(":")[2] not in message and error.__cause__ is None
    assert_no_token(caplog, WRONG_TOKEN)


def test_a_value_that_is_not_a_bot_token_is_refused_without_echoing_it() -> None:
    with pytest.raises(ChannelAuthFailed, match="not a Telegram bot token") as raised:
        TelegramChannel("sk-pasted-the-wrong-secret", secret_name="tg_bot")
    assert "sk-pasted" not in str(raised.value) and "secrets set tg_bot" in str(raised.value)


@pytest.mark.anyio
async def test_channel_is_built_from_its_config_section_and_secret(
    fake: FakeTelegram, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MBE_GATEWAY_SECRET_TELEGRAM_TOKEN", fake.token)
    settings = TelegramSettings(enabled=True, token=SecretRef("telegram_token"), api_base=fake.api_base)
    channel: Channel = from_settings(
        settings, Secrets(SecretsSettings(backend="env"), home), commands=COMMANDS
    )
    assert isinstance(channel, TelegramChannel)
    async with channel:
        assert await channel.check() == "@mbe_test_bot"
    with pytest.raises(ConfigError, match="token is not set"):
        from_settings(TelegramSettings(enabled=True), Secrets(SecretsSettings(backend="env"), home))


def test_commands_telegram_would_refuse_are_caught_at_construction() -> None:
    with pytest.raises(ValueError, match="names are 1-32"):
        TelegramChannel(WRONG_TOKEN, commands=[("Start!", "go")])


@pytest.mark.anyio
async def test_the_fake_can_be_driven_over_http_for_manual_runs(
    fake: FakeTelegram, channel: TelegramChannel
) -> None:
    inbox = Inbox()
    async with running(channel, fake, inbox), aiohttp.ClientSession() as http:
        async with http.post(f"{fake.api_base}/_fake/dm", json={"text": "from curl"}) as response:
            injected = await response.json()
        [message] = await inbox.wait(1)
        await channel.send(Outbound(message.chat_id, "**hello**", reply_to=message.reply_to))
        async with http.get(f"{fake.api_base}/_fake/sent") as response:
            [sent] = await response.json()
    assert message.platform_message_id == f"{injected['chat_id']}:{injected['message_id']}"
    assert (sent["text"], sent["parse_mode"]) == ("hello", "HTML")


# -- Markdown to Telegram HTML --------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "html"),
    [
        ("**bold** and __bold__", "<b>bold</b> and <b>bold</b>"),
        ("*it* _it_ ~~gone~~", "<i>it</i> <i>it</i> <s>gone</s>"),
        ("snake_case_name and 2*3*4", "snake_case_name and 2<i>3</i>4"),
        ("`a < b`", "<code>a &lt; b</code>"),
        ("```py\nif a<b:\n    pass\n```", '<pre><code class="language-py">if a&lt;b:\n    pass</code></pre>'),
        ("```\nplain\n```", "<pre>plain</pre>"),
        ('[site](https://e.org/?q=a&b="c")', '<a href="https://e.org/?q=a&amp;b=%22c%22">site</a>'),
        ("# Title\ntext\n\nmore", "<b>Title</b>\ntext\n\nmore"),
        ("- one\n- two\n  1. sub", "• one\n• two\n  1. sub"),
        ("> quoted\n>\n> > deeper", "<blockquote>quoted\n\ndeeper</blockquote>"),
        ("[`code` link](https://e.org)", '<a href="https://e.org">code link</a>'),
        ("a &amp; b", "a &amp; b"),
    ],
)
def test_markdown_becomes_telegram_html(markdown: str, html: str) -> None:
    assert to_html(markdown) == html
    parse_html(html)  # and Telegram would accept it


_PIECES = [
    *"ab *_`~[]()<>&#-+1.!:/\\\"' \n\t",
    "**", "__", "```", "~~", "> ", "- ", "1. ", "# ", "&amp;", "&lt;", "&#128512;", "😀", "你好",
    "http://e.org", "tg://user?id=1", "javascript:x", "<b>", "</i>", "    ", "\n\n",
]  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_PIECES), max_size=60).map("".join))
def test_any_text_becomes_html_telegram_accepts_and_never_longer(markdown: str) -> None:
    html = to_html(markdown)
    shown, _ = parse_html(html)
    assert shown == visible_text(html)
    assert utf16_len(shown) <= utf16_len(markdown)  # what lets `measure` skip converting short texts
