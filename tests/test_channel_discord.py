"""The Discord channel: the real hikari client against a fake Discord (tests/fakes/discord.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fakes.discord import (
    FakeDiscord,
    LoseResponse,
    Proceed,
    cannot_message_user,
    invalid_form_body,
    make_token,
    rate_limited,
    serve_fake_discord,
    server_error,
)
from mbe_gateway.channels.base import Inbound, Outbound
from mbe_gateway.channels.discord import DiscordChannel, RetryPolicy, from_settings
from mbe_gateway.channels.discord_markup import ZWSP, measure, to_discord, to_plain
from mbe_gateway.channels.split import split_markdown
from mbe_gateway.config import DiscordSettings, SecretRef, SecretsSettings
from mbe_gateway.errors import ChannelAuthFailed, ConfigError, SendFailed
from mbe_gateway.secrets import Secrets

pytestmark = pytest.mark.anyio

QUICK = RetryPolicy(base=0.01, send_cap=0.05, cap=0.2)
SUPPRESS_EMBEDS = 1 << 2


class Inbox:
    """A `deliver` that keeps what it is given; it can be told to refuse the first tries."""

    def __init__(self, refuse: int = 0) -> None:
        self.delivered: list[Inbound] = []
        self.offered: list[str] = []
        self._refuse = refuse

    async def __call__(self, inbound: Inbound) -> None:
        self.offered.append(inbound.platform_message_id)
        if self._refuse:
            self._refuse -= 1
            raise OSError("disk full")
        self.delivered.append(inbound)

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Inbound]:
        with anyio.fail_after(timeout):
            while len(self.delivered) < count:
                await anyio.sleep(0.005)
        return self.delivered


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with serve_fake_discord() as fake:
        yield fake


@pytest.fixture
async def channel(fake: FakeDiscord) -> AsyncIterator[DiscordChannel]:
    async with DiscordChannel(fake.token, rest_url=fake.rest_url, retry=QUICK) as channel:
        yield channel


@asynccontextmanager
async def running(channel: DiscordChannel, fake: FakeDiscord, deliver: Inbox) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(channel.run, deliver)
        await fake.wait_ready()
        yield
        tg.cancel_scope.cancel()


# -- receiving ------------------------------------------------------------------------------


async def test_a_dm_arrives_as_a_normalized_inbound(fake: FakeDiscord, channel: DiscordChannel) -> None:
    alice = fake.add_user("alice")
    inbox = Inbox()
    async with running(channel, fake, inbox):
        message_id = await fake.dm(alice, "  what is **MBE**?  ")
        [inbound] = await inbox.wait_for(1)
    assert inbound.channel == "discord"
    assert inbound.platform_message_id == message_id == inbound.reply_to
    assert inbound.chat_id == fake.dm_channel(alice)
    assert inbound.sender_id == alice.id
    assert inbound.sender_name == "Alice"
    assert inbound.text == "what is **MBE**?"
    assert (inbound.is_group, inbound.addressed) == (False, True)
    assert abs(inbound.sent_at - time.time()) < 5
    assert inbound.meta["username"] == "alice"


async def test_a_group_message_is_addressed_only_when_mentioned_or_replied_to(
    fake: FakeDiscord, channel: DiscordChannel
) -> None:
    bob = fake.add_user("bob", nick="Bobby")
    inbox = Inbox()
    async with running(channel, fake, inbox):
        [bot_said] = await channel.send(Outbound(chat_id=fake.channel_id, text="I am here."))
        await fake.post(bob, "just chatting")
        await fake.post(bob, "what time is it?", mention=True)
        await fake.post(bob, "hey,  are you there?", nick_mention=True)
        await fake.post(bob, "thanks!", reply_to=bot_said)
        chatting, mentioned, nick_mentioned, replied = await inbox.wait_for(4)
    assert all(i.is_group and i.chat_id == fake.channel_id for i in inbox.delivered)
    assert all(i.meta["guild_id"] == fake.guild_id and i.sender_name == "Bobby" for i in inbox.delivered)
    assert (chatting.addressed, chatting.text) == (False, "just chatting")
    assert (mentioned.addressed, mentioned.text) == (True, "what time is it?")
    assert (nick_mentioned.addressed, nick_mentioned.text) == (True, "hey,  are you there?")
    assert (replied.addressed, replied.text) == (True, "thanks!")


async def test_the_bots_own_messages_and_other_bots_are_ignored(
    fake: FakeDiscord, channel: DiscordChannel
) -> None:
    carol, other_bot = fake.add_user("carol"), fake.add_user("weatherbot", bot=True)
    inbox = Inbox()
    async with running(channel, fake, inbox):
        await channel.send(Outbound(chat_id=fake.channel_id, text=f"<@{fake.bot.id}> talking to myself"))
        await fake.post(other_bot, "beep", mention=True)
        last = await fake.dm(carol, "only me")
        await inbox.wait_for(1)
        await anyio.sleep(0.05)
    assert [i.platform_message_id for i in inbox.delivered] == [last]


async def test_a_refused_delivery_is_offered_again_with_the_same_id_and_order_kept(
    fake: FakeDiscord, channel: DiscordChannel
) -> None:
    dave = fake.add_user("dave")
    inbox = Inbox(refuse=2)
    async with running(channel, fake, inbox):
        first = await fake.dm(dave, "one")
        second = await fake.dm(dave, "two")
        await inbox.wait_for(2)
    assert inbox.offered == [first, first, first, second]
    assert [i.platform_message_id for i in inbox.delivered] == [first, second]
    assert (fake.connections, fake.identifies) == (1, 1)  # the connection stayed up throughout


async def test_a_dropped_gateway_resumes_and_misses_nothing(
    fake: FakeDiscord, channel: DiscordChannel
) -> None:
    erin = fake.add_user("erin")
    inbox = Inbox()
    async with running(channel, fake, inbox):
        sent = [await fake.dm(erin, "before")]
        await inbox.wait_for(1)
        await fake.disconnect()  # no close frame: the network went away
        sent += [await fake.dm(erin, "while away 1"), await fake.dm(erin, "while away 2")]
        await fake.wait_until(lambda: fake.resumes == 1)
        sent.append(await fake.dm(erin, "after"))
        await inbox.wait_for(4)
        await anyio.sleep(0.05)
    assert [i.platform_message_id for i in inbox.delivered] == sent
    assert (fake.identifies, fake.resumes) == (1, 1)


async def test_an_invalidated_session_is_replaced_by_a_new_one(
    fake: FakeDiscord, channel: DiscordChannel
) -> None:
    frank = fake.add_user("frank")
    inbox = Inbox()
    async with running(channel, fake, inbox):
        await fake.invalidate_session(resumable=False)
        await fake.wait_until(lambda: fake.identifies == 2 and bool(fake._live_connections()))
        message_id = await fake.dm(frank, "still there?")
        [inbound] = await inbox.wait_for(1)
    assert inbound.platform_message_id == message_id


async def test_run_keeps_trying_until_discord_answers(fake: FakeDiscord, channel: DiscordChannel) -> None:
    grace = fake.add_user("grace")
    fake.script(server_error(502), server_error(503), route="gateway_bot")
    inbox = Inbox()
    async with running(channel, fake, inbox):
        await fake.dm(grace, "hello")
        await inbox.wait_for(1)
    gateway_bot = [r for r in fake.requests if r.path.endswith("/gateway/bot")]
    assert len(gateway_bot) == 3


async def test_cancelling_run_while_discord_is_down_leaves_nothing_running(
    fake: FakeDiscord, channel: DiscordChannel
) -> None:
    fake.gateway_down = True
    with anyio.move_on_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(channel.run, Inbox())
            await fake.wait_until(lambda: fake.connections >= 1)
            tg.cancel_scope.cancel()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("keep alive")]
    attempts = fake.connections
    await anyio.sleep(2.5)  # hikari would try again within ~2 s
    assert fake.connections == attempts


# -- sending --------------------------------------------------------------------------------


async def test_a_long_reply_is_split_in_order_under_2000_characters(
    fake: FakeDiscord, channel: DiscordChannel
) -> None:
    henry = fake.add_user("henry")
    question = await fake.dm(henry, "tell me everything")
    paragraphs = [f"Paragraph {n}: " + "words " * 60 for n in range(20)]
    code = "```python\n" + "\n".join(f"print({n})" for n in range(300)) + "\n```"
    text = "\n\n".join([*paragraphs[:10], code, *paragraphs[10:]])
    ids = await channel.send(Outbound(chat_id=fake.dm_channel(henry), text=text, reply_to=question))
    assert len(ids) >= 4 and ids == [m.id for m in fake.sent]
    assert all(len(m.content) <= 2000 for m in fake.sent)
    assert [m.reply_to for m in fake.sent] == [question] + [None] * (len(ids) - 1)
    joined = "\n".join(m.content for m in fake.sent)
    positions = [joined.index(f"Paragraph {n}:") for n in range(20)]
    assert positions == sorted(positions)
    assert [int(line[6:-1]) for line in joined.split("\n") if line.startswith("print(")] == list(range(300))
    assert all(m.content.count("```") % 2 == 0 for m in fake.sent)  # every part's code block is closed


async def test_hostile_markup_is_escaped_and_pings_nobody(fake: FakeDiscord, channel: DiscordChannel) -> None:
    text = "@everyone look: <b>bold</b> & __strong__ snake__case__ ||secret|| `@here stays code` *half"
    await channel.send(Outbound(chat_id=fake.channel_id, text=text))
    [message] = fake.sent
    assert message.content == (
        f"@{ZWSP}everyone look: <b>bold</b> & **strong** snake\\_\\_case\\_\\_ \\|\\|secret\\|\\|"
        " `@here stays code` *half"
    )
    assert message.allowed_mentions == {"parse": []}
    assert message.flags & SUPPRESS_EMBEDS


async def test_refused_formatting_is_resent_as_plain_text(fake: FakeDiscord, channel: DiscordChannel) -> None:
    fake.script(invalid_form_body())
    text = "**Step 1**: run `make`"
    ids = await channel.send(Outbound(chat_id=fake.channel_id, text=text))
    assert [m.content for m in fake.sent] == [to_plain(text)] == ["\\*\\*Step 1\\*\\*: run \\`make\\`"]
    assert ids == [fake.sent[0].id]


@pytest.mark.parametrize("scope", ["user", "shared", "global"])
async def test_a_short_rate_limit_is_waited_out(
    fake: FakeDiscord, channel: DiscordChannel, scope: str
) -> None:
    fake.script(rate_limited(0.4, scope=scope))  # type: ignore[arg-type]
    started = time.monotonic()
    await channel.send(Outbound(chat_id=fake.channel_id, text="patience"))
    assert time.monotonic() - started >= 0.35
    assert [m.content for m in fake.sent] == ["patience"]


async def test_a_long_rate_limit_is_raised_as_retryable_with_its_wait(
    fake: FakeDiscord, channel: DiscordChannel
) -> None:
    fake.script(rate_limited(30.0))
    with anyio.fail_after(3), pytest.raises(SendFailed) as raised:
        await channel.send(Outbound(chat_id=fake.channel_id, text="too soon"))
    assert raised.value.retryable and raised.value.retry_after == pytest.approx(30.0, abs=1)
    assert fake.sent == []


async def test_a_burst_of_server_errors_is_survived(fake: FakeDiscord, channel: DiscordChannel) -> None:
    fake.script(server_error(500), server_error(502), server_error(503))
    ids = await channel.send(Outbound(chat_id=fake.channel_id, text="through the storm"))
    assert ids == [m.id for m in fake.sent] and len(ids) == 1


async def test_server_errors_that_go_on_fail_retryably(fake: FakeDiscord, channel: DiscordChannel) -> None:
    fake.script(*[server_error(500)] * QUICK.send_attempts)
    with pytest.raises(SendFailed) as raised:
        await channel.send(Outbound(chat_id=fake.channel_id, text="nope"))
    assert raised.value.retryable and fake.sent == []


async def test_a_lost_answer_is_retried_without_a_duplicate(
    fake: FakeDiscord, channel: DiscordChannel
) -> None:
    fake.script(LoseResponse())
    ids = await channel.send(Outbound(chat_id=fake.channel_id, text="exactly once"))
    posts = [r for r in fake.requests if r.path.endswith("/messages")]
    assert len(posts) == 2 and posts[0].body["nonce"] == posts[1].body["nonce"]
    assert [m.content for m in fake.sent] == ["exactly once"] and ids == [fake.sent[0].id]


async def test_sending_again_after_a_failure_continues_after_the_parts_already_sent(
    fake: FakeDiscord, channel: DiscordChannel
) -> None:
    text = "\n\n".join(f"Part {n} " + "x" * 1500 for n in range(3))
    fake.script(Proceed(), *[server_error(503)] * QUICK.send_attempts)
    message = Outbound(chat_id=fake.channel_id, text=text)
    with pytest.raises(SendFailed):
        await channel.send(message)
    assert len(fake.sent) == 1
    ids = await channel.send(message)
    assert ids == [m.id for m in fake.sent]
    assert [m.content[:6] for m in fake.sent] == ["Part 0", "Part 1", "Part 2"]


async def test_a_gone_chat_or_a_blocked_bot_is_not_retried(
    fake: FakeDiscord, channel: DiscordChannel
) -> None:
    with pytest.raises(SendFailed) as gone:
        await channel.send(Outbound(chat_id="4242424242", text="anyone?"))
    fake.script(cannot_message_user())
    with pytest.raises(SendFailed) as blocked:
        await channel.send(Outbound(chat_id=fake.channel_id, text="hello?"))
    assert not gone.value.retryable and "Unknown Channel" in str(gone.value)
    assert not blocked.value.retryable and "Cannot send messages to this user" in str(blocked.value)
    assert len([r for r in fake.requests if r.path.endswith("/messages")]) == 2


async def test_typing_is_shown_and_never_raises(fake: FakeDiscord, channel: DiscordChannel) -> None:
    await channel.typing(fake.channel_id)
    await channel.typing("4242424242")
    await channel.typing("not a channel")
    assert fake.typing == [fake.channel_id]


# -- credentials ------------------------------------------------------------------------------


async def test_check_names_the_bot(fake: FakeDiscord, channel: DiscordChannel) -> None:
    assert await channel.check() == f"@mbe-bot ({fake.bot.id})"


async def test_a_wrong_token_is_reported_clearly_and_never_shown(
    fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = make_token(fake.bot.id, "not-the-right-secret")
    async with DiscordChannel(wrong, rest_url=fake.rest_url, retry=QUICK) as channel:
        with pytest.raises(ChannelAuthFailed) as from_check:
            await channel.check()
        with anyio.fail_after(5), pytest.raises(ChannelAuthFailed) as from_run:
            await channel.run(Inbox())
        with pytest.raises(ChannelAuthFailed) as from_send:
            await channel.send(Outbound(chat_id=fake.channel_id, text="hi"))
    for error in (from_check.value, from_run.value, from_send.value):
        assert "discord_token" in str(error) and "mbe-gateway secrets set" in str(error)
        assert wrong not in str(error)
    assert all(wrong not in record.getMessage() for record in caplog.records)


def test_something_that_is_not_a_token_is_refused_at_once() -> None:
    with pytest.raises(ChannelAuthFailed, match="secret my_discord is not a Discord bot token"):
        DiscordChannel("hunter2!", secret_name="my_discord")


@pytest.mark.parametrize(("code", "hint"), [(4004, "Reset Token"), (4014, "MESSAGE CONTENT INTENT")])
async def test_a_gateway_refusal_stops_run_with_what_to_fix(
    fake: FakeDiscord, channel: DiscordChannel, code: int, hint: str
) -> None:
    fake.refuse_identify = code
    with anyio.fail_after(5), pytest.raises(ChannelAuthFailed, match=hint):
        await channel.run(Inbox())
    assert fake.identifies == 0


async def test_from_settings_reads_the_token_from_the_secrets(
    fake: FakeDiscord, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MBE_GATEWAY_SECRET_DISCORD_TOKEN", fake.token)
    secrets = Secrets(SecretsSettings(backend="env"), home)
    settings = DiscordSettings(enabled=True, token=SecretRef("discord_token"), rest_url=fake.rest_url)
    async with from_settings(settings, secrets) as channel:
        assert (await channel.check()).startswith("@mbe-bot")
    with pytest.raises(ConfigError, match="discord_token"):
        from_settings(DiscordSettings(enabled=True), secrets)


# -- the Markdown flavour -------------------------------------------------------------------


_PIECES = st.sampled_from(
    [*"ab @_*`|>#~\n-[]()", "everyone", "here", "```", "~~~", "| a |", "|---|", "word "]
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_PIECES, max_size=1500).map("".join))
def test_every_part_fits_in_both_forms_and_pings_nobody(text: str) -> None:
    for part in split_markdown(text, 2000, measure):
        assert len(to_discord(part)) <= 2000 and len(to_plain(part)) <= 2000
        assert "@everyone" not in to_plain(part) and "@here" not in to_plain(part)
        if "`" not in part and "~~~" not in part:  # code shows text as written; allowed_mentions stops pings
            assert "@everyone" not in to_discord(part)
