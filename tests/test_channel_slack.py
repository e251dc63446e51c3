"""The Slack channel: slack-sdk's real clients against a fake Slack on loopback (tests/fakes/slack.py).

A person's message reaches `deliver` once, normalized, and Slack hears "received" only after
that; replies come out converted, escaped, split and threaded; Slack's failures are waited
out, retried or reported as the outbox needs them.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fakes.slack import APIError, Drop, FakeSlack, RateLimited, ServerError, serve_fake_slack
from mbe_gateway.channels.base import Inbound, Outbound
from mbe_gateway.channels.slack import MAX_LENGTH, SlackChannel, from_settings
from mbe_gateway.channels.slack_markup import from_slack, length_bound, to_mrkdwn, to_plain
from mbe_gateway.config import SecretRef, SecretsSettings, SlackSettings
from mbe_gateway.errors import ChannelAuthFailed, SendFailed
from mbe_gateway.secrets import Secrets

pytestmark = pytest.mark.timeout(30)


class Inbox:
    """A deliver function that keeps what it is given, notes it on the fake's timeline, and can
    be told to fail."""

    def __init__(self, fake: FakeSlack) -> None:
        self.fake = fake
        self.messages: list[Inbound] = []
        self.failures = 0  # how many of the next deliveries raise
        self.attempts = 0
        self._arrived = anyio.Event()

    async def __call__(self, message: Inbound) -> None:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise RuntimeError("the inbox is unavailable")
        self.messages.append(message)
        self.fake.timeline.append(("delivered", message.platform_message_id))
        self._arrived.set()
        self._arrived = anyio.Event()

    async def wait(self, count: int, timeout: float = 10) -> list[Inbound]:
        with anyio.fail_after(timeout):
            while len(self.messages) < count:
                await self._arrived.wait()
        return self.messages


def channel_for(fake: FakeSlack, bot_token: str | None = None, app_token: str | None = None) -> SlackChannel:
    return SlackChannel(
        bot_token=bot_token or fake.bot_token, app_token=app_token or fake.app_token, api_base=fake.api_url
    )


@asynccontextmanager
async def running(channel: SlackChannel, inbox: Inbox) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(channel.run, inbox)
        await inbox.fake.wait_connected()
        yield
        tg.cancel_scope.cancel()


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with serve_fake_slack() as server:
        yield server


# -- receiving --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_direct_message_is_delivered_normalized_then_acknowledged(fake: FakeSlack) -> None:
    inbox = Inbox(fake)
    async with running(channel_for(fake), inbox):
        posted = await fake.dm("hello &lt;there&gt; &amp; <https://example.com|a link>")
        [message] = await inbox.wait(1)
        await fake.wait_acked(posted)

    assert message.channel == "slack"
    assert message.platform_message_id == f"DALICE:{posted.ts}"
    assert (message.chat_id, message.sender_id) == ("DALICE", "UALICE")
    assert message.text == "hello <there> & a link (https://example.com)"
    assert (message.is_group, message.addressed, message.reply_to) == (False, True, None)
    assert message.sent_at == pytest.approx(float(posted.ts))
    envelope_id = posted.envelopes[0].envelope_id
    assert fake.timeline == [
        ("envelope", envelope_id),
        ("delivered", message.platform_message_id),
        ("ack", envelope_id),
    ]


@pytest.mark.anyio
async def test_a_channel_message_is_unaddressed_unless_the_bot_is_mentioned(fake: FakeSlack) -> None:
    inbox = Inbox(fake)
    async with running(channel_for(fake), inbox):
        chatter = await fake.say("lunch anyone?")
        mention = await fake.say("what is the capital of France?", mention=True)
        mention_first = await fake.say("and of Spain?", mention=True, app_mention_first=True)
        for posted in (chatter, mention, mention_first):
            await fake.wait_acked(posted)
        messages = await inbox.wait(3)

    assert [m.text for m in messages] == [
        "lunch anyone?",
        "what is the capital of France?",
        "and of Spain?",
    ]
    assert [m.addressed for m in messages] == [False, True, True]
    assert all(m.is_group and m.chat_id == "CGENERAL" for m in messages)
    # Slack sends a mention twice (message + app_mention): delivered once, both acknowledged.
    assert len(mention.envelopes) == len(mention_first.envelopes) == 2
    assert inbox.attempts == 3
    # In a channel, the answer goes in a thread under the message.
    assert [m.reply_to for m in messages] == [chatter.ts, mention.ts, mention_first.ts]


@pytest.mark.anyio
async def test_a_thread_reply_to_the_bot_is_addressed_and_answered_in_that_thread(fake: FakeSlack) -> None:
    inbox = Inbox(fake)
    async with running(channel_for(fake), inbox):
        await fake.say("in a thread, to the bot", thread_ts="100.000001", parent_user_id=fake.bot_user_id)
        await fake.say("in a thread, to someone else", thread_ts="100.000002", parent_user_id="UBOB")
        await fake.dm("in a DM thread", thread_ts="100.000003")
        messages = await inbox.wait(3)

    assert [m.addressed for m in messages] == [True, False, True]
    assert [m.reply_to for m in messages] == ["100.000001", "100.000002", "100.000003"]


@pytest.mark.anyio
async def test_the_bots_own_posts_and_other_bots_are_acknowledged_but_not_delivered(fake: FakeSlack) -> None:
    inbox = Inbox(fake)
    channel = channel_for(fake)
    async with running(channel, inbox):
        await channel.send(Outbound(chat_id="DALICE", text="a reply of mine"))
        own = await fake.wait_envelopes(1)  # the fake echoes our post back, as Slack does
        other_bot = await fake.push_event(
            {
                "type": "message",
                "channel": "CGENERAL",
                "user": "UOTHER",
                "bot_id": "BOTHER",
                "text": f"<@{fake.bot_user_id}> hi",
                "ts": "200.000001",
                "channel_type": "channel",
            }
        )
        edited = await fake.push_event(
            {
                "type": "message",
                "subtype": "message_changed",
                "channel": "DALICE",
                "ts": "200.000002",
                "channel_type": "im",
                "message": {"text": "edited"},
            }
        )
        person = await fake.dm("a person")
        await inbox.wait(1)
        for envelope in (own[0], other_bot, edited):
            await fake.wait_acked(envelope)
        await fake.wait_acked(person)

    assert [m.text for m in inbox.messages] == ["a person"]
    assert own[0].event["bot_id"] == fake.bot_id


@pytest.mark.anyio
async def test_a_malformed_event_is_acknowledged_and_skipped(fake: FakeSlack) -> None:
    inbox = Inbox(fake)
    async with running(channel_for(fake), inbox):
        malformed = await fake.push_event(
            {"type": "message", "channel": "DALICE", "user": "UALICE", "text": "?", "ts": "yesterday"}
        )
        posted = await fake.dm("a proper one")
        await inbox.wait(1)
        await fake.wait_acked(malformed)
        await fake.wait_acked(posted)

    assert [m.text for m in inbox.messages] == ["a proper one"]
    assert fake.connections_opened == 1


@pytest.mark.anyio
async def test_a_failed_delivery_is_not_acknowledged_and_comes_again_with_the_same_id(
    fake: FakeSlack,
) -> None:
    fake.redeliver_after = 0.3
    inbox = Inbox(fake)
    inbox.failures = 1
    async with running(channel_for(fake), inbox):
        posted = await fake.dm("remember me")
        [message] = await inbox.wait(1)
        envelopes = await fake.wait_envelopes(2)
        await fake.wait_acked(envelopes[1])

    first, retry = envelopes
    assert not first.acked
    assert (retry.event_id, retry.retry_attempt) == (first.event_id, 1)
    assert message.platform_message_id == f"DALICE:{posted.ts}"
    assert message.meta["retry_attempt"] == 1
    assert inbox.attempts == 2
    assert fake.connections_opened == 1  # the connection stayed up


@pytest.mark.anyio
async def test_a_redelivery_of_a_delivered_message_is_acknowledged_without_a_second_delivery(
    fake: FakeSlack,
) -> None:
    inbox = Inbox(fake)
    async with running(channel_for(fake), inbox):
        posted = await fake.dm("once")
        await fake.wait_acked(posted)
        again = await fake.redeliver(posted.envelopes[0], reason="http_timeout")
        await fake.wait_acked(again)

    assert inbox.attempts == 1


# -- connection -------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("abrupt", [False, True], ids=["closed", "cut"])
async def test_the_bot_reconnects_after_the_connection_is_lost(
    fake: FakeSlack, abrupt: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mbe_gateway")
    inbox = Inbox(fake)
    async with running(channel_for(fake), inbox):
        await fake.drop(abrupt=abrupt)
        started = time.monotonic()
        await fake.wait_connected(2)
        reconnected_in = time.monotonic() - started
        posted = await fake.dm("still there?")
        await inbox.wait(1)
        await fake.wait_acked(posted)

    assert reconnected_in < 5
    assert "slack connection lost" in caplog.text
    for secret in (fake.bot_token, fake.app_token, "ticket="):
        assert secret not in caplog.text


@pytest.mark.anyio
async def test_a_refresh_request_is_followed_without_losing_a_message(fake: FakeSlack) -> None:
    inbox = Inbox(fake)
    async with running(channel_for(fake), inbox):
        await fake.refresh()
        await fake.wait_connected(2)
        posted = await fake.dm("after the refresh")
        await inbox.wait(1)
        await fake.wait_acked(posted)
        with anyio.fail_after(5):
            while fake.open_connections != 1:  # the old connection is closed by the fake
                await anyio.sleep(0.02)


@pytest.mark.anyio
async def test_transient_failures_to_open_a_connection_are_retried(fake: FakeSlack) -> None:
    fake.fail("apps.connections.open", ServerError(503), APIError("internal_error"), Drop())
    inbox = Inbox(fake)
    async with running(channel_for(fake), inbox):
        posted = await fake.dm("made it")
        await inbox.wait(1)
        await fake.wait_acked(posted)


@pytest.mark.anyio
async def test_a_socket_that_will_not_open_is_given_up_for_a_fresh_url_and_its_ticket_is_not_logged(
    fake: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mbe_gateway")
    fake.refuse_sockets = 1  # the SDK would retry this used ticket forever
    inbox = Inbox(fake)
    channel = SlackChannel(
        bot_token=fake.bot_token, app_token=fake.app_token, api_base=fake.api_url, connect_timeout=0.5
    )
    async with running(channel, inbox):
        posted = await fake.dm("through the second socket")
        await inbox.wait(1)
        await fake.wait_acked(posted)

    assert fake.calls.count("apps.connections.open") == 2
    assert "Failed to connect" in caplog.text  # the SDK's own report, kept...
    assert "ticket=[redacted]" in caplog.text  # ...with its one-time ticket masked
    assert re.search(r"ticket=(?!\[redacted\])", caplog.text) is None


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("tokens", "secret"),
    [
        ({"bot_token": "xoxb-9999-wrong-bot-token"}, "slack_bot_token"),
        ({"app_token": "xapp-1-AWRONG-wrong-app-token"}, "slack_app_token"),
        ({"app_token": "xoxb-1111-2222-fakebottoken"}, "slack_app_token"),  # the bot token, pasted twice
    ],
    ids=["bot", "app", "swapped"],
)
async def test_a_refused_token_stops_run_with_a_message_naming_the_secret(
    fake: FakeSlack, tokens: dict[str, str], secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mbe_gateway")
    channel = channel_for(fake, tokens.get("bot_token"), tokens.get("app_token"))
    with anyio.fail_after(10), pytest.raises(ChannelAuthFailed) as refused:
        await channel.run(Inbox(fake))

    message = str(refused.value)
    assert f"secret {secret}" in message
    assert f"mbe-gateway secrets set {secret}" in message
    for value in tokens.values():
        assert value not in message
        assert value not in caplog.text


@pytest.mark.anyio
async def test_check_names_the_bot_and_refuses_a_wrong_token(fake: FakeSlack) -> None:
    assert await channel_for(fake).check() == "@mbe on Fake Workspace"
    with pytest.raises(ChannelAuthFailed, match="slack_bot_token") as refused:
        await channel_for(fake, bot_token="xoxb-0-not-it").check()
    assert "xoxb-0-not-it" not in str(refused.value)


# -- sending ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_long_reply_is_split_in_order_under_the_limit_and_threaded(fake: FakeSlack) -> None:
    paragraphs = [f"**Part {i}.** " + "word & <tag> " * 60 for i in range(20)]
    ids = await channel_for(fake).send(
        Outbound(chat_id="CGENERAL", text="\n\n".join(paragraphs), reply_to="300.000001")
    )

    sent = fake.sent
    assert len(sent) > 1
    assert ids == [s.ts for s in sent]
    assert all(len(s.text) <= MAX_LENGTH for s in sent)
    assert all(s.thread_ts == "300.000001" and s.mrkdwn for s in sent)
    joined = "\n\n".join(s.text for s in sent)
    assert [f"*Part {i}.*" in joined for i in range(20)] == [True] * 20
    assert joined.index("*Part 3.*") < joined.index("*Part 17.*")
    assert "&amp; &lt;tag&gt;" in joined


@pytest.mark.anyio
async def test_hostile_markup_is_escaped_and_pings_nobody(fake: FakeSlack) -> None:
    hostile = "<!channel> <!here|here> <@U123> <b>bold</b> & @everyone @here \\@channel *unclosed _also `tick"
    await channel_for(fake).send(Outbound(chat_id="DALICE", text=hostile))

    [sent] = fake.sent
    assert "<" not in sent.text and ">" not in sent.text
    assert "&lt;!channel&gt;" in sent.text and "&lt;b&gt;bold&lt;/b&gt; &amp;" in sent.text
    assert "@everyone" not in sent.text and "@here" not in sent.text
    assert "@channel" not in sent.text  # "\\@channel": a Markdown-escaped @ is neutralized too
    assert sent.params["link_names"] in (False, "false", 0) and sent.params["parse"] == "none"
    assert sent.text.endswith("*unclosed _also `tick")


@pytest.mark.anyio
async def test_refused_markup_is_resent_as_plain_text(fake: FakeSlack) -> None:
    fake.fail("chat.postMessage", APIError("invalid_blocks"))
    [ts] = await channel_for(fake).send(Outbound(chat_id="DALICE", text="**bold** & <more>"))

    [sent] = fake.sent
    assert (sent.ts, sent.mrkdwn, sent.text) == (ts, False, "**bold** &amp; &lt;more&gt;")
    assert fake.calls == ["chat.postMessage", "chat.postMessage"]


@pytest.mark.anyio
async def test_a_short_rate_limit_is_waited_out(fake: FakeSlack) -> None:
    fake.fail("chat.postMessage", RateLimited(retry_after=1))
    started = time.monotonic()
    await channel_for(fake).send(Outbound(chat_id="DALICE", text="patience"))

    assert time.monotonic() - started >= 1
    assert [s.text for s in fake.sent] == ["patience"]


@pytest.mark.anyio
async def test_a_long_rate_limit_is_a_retryable_failure_with_the_wait(fake: FakeSlack) -> None:
    fake.fail("chat.postMessage", RateLimited(retry_after=120))
    started = time.monotonic()
    with pytest.raises(SendFailed) as failed:
        await channel_for(fake).send(Outbound(chat_id="DALICE", text="later"))

    assert time.monotonic() - started < 2
    assert (failed.value.retryable, failed.value.retry_after) == (True, 120)
    assert fake.sent == []


@pytest.mark.anyio
async def test_a_burst_of_server_errors_and_a_dropped_request_are_survived(fake: FakeSlack) -> None:
    fake.fail("chat.postMessage", ServerError(500), ServerError(503), Drop())
    await channel_for(fake).send(Outbound(chat_id="DALICE", text="eventually"))

    assert fake.calls.count("chat.postMessage") == 4
    assert [s.text for s in fake.sent] == ["eventually"]


@pytest.mark.anyio
async def test_lasting_server_errors_are_a_retryable_failure(fake: FakeSlack) -> None:
    fake.fail("chat.postMessage", *[ServerError(502)] * 10)
    with pytest.raises(SendFailed, match="HTTP 502") as failed:
        await channel_for(fake).send(Outbound(chat_id="DALICE", text="no luck"))

    assert failed.value.retryable
    assert fake.calls.count("chat.postMessage") == 4  # the first try and three retries


@pytest.mark.anyio
async def test_a_gone_conversation_is_not_retryable(fake: FakeSlack) -> None:
    fake.gone_channels.add("CGONE")
    with pytest.raises(SendFailed, match="channel_not_found") as failed:
        await channel_for(fake).send(Outbound(chat_id="CGONE", text="anyone?"))

    assert not failed.value.retryable
    assert fake.calls == ["chat.postMessage"]


@pytest.mark.anyio
async def test_a_refused_bot_token_while_sending_names_the_secret(fake: FakeSlack) -> None:
    with pytest.raises(ChannelAuthFailed, match="secrets set slack_bot_token"):
        await channel_for(fake, bot_token="xoxb-revoked").send(Outbound(chat_id="DALICE", text="hi"))


@pytest.mark.anyio
async def test_an_unreachable_slack_is_a_retryable_failure() -> None:
    async with serve_fake_slack() as gone:
        url = gone.api_url
    channel = SlackChannel(bot_token="xoxb-1-x", app_token="xapp-1-x", api_base=url)
    with pytest.raises(SendFailed) as failed:
        await channel.send(Outbound(chat_id="DALICE", text="hello?"))

    assert failed.value.retryable
    assert "xoxb-1-x" not in str(failed.value)


@pytest.mark.anyio
async def test_replies_reuse_one_http_connection_while_running_and_are_not_threaded_in_a_dm(
    fake: FakeSlack,
) -> None:
    inbox = Inbox(fake)
    channel = channel_for(fake)
    async with running(channel, inbox):
        posted = await fake.dm("ping")
        [message] = await inbox.wait(1)
        for text in ("pong", "pong again"):
            await channel.send(Outbound(chat_id=message.chat_id, text=text, reply_to=message.reply_to))
        await fake.wait_acked(posted)

    first, second = fake.sent
    assert (first.channel, first.text, first.thread_ts) == ("DALICE", "pong", None)
    assert first.client_port == second.client_port  # no new TCP (and TLS) handshake per reply
    assert channel.capabilities.typing is False
    await channel.typing("DALICE")  # a no-op, and never raises


def test_from_settings_reads_both_tokens_from_the_secrets(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MBE_GATEWAY_SECRET_MY_BOT", "xoxb-from-env")
    monkeypatch.setenv("MBE_GATEWAY_SECRET_MY_APP", "xapp-from-env")
    settings = SlackSettings(
        enabled=True, bot_token=SecretRef("my_bot"), app_token=SecretRef("my_app"), api_base="http://x/api/"
    )
    channel = from_settings(settings, Secrets(SecretsSettings(backend="env"), home))

    assert channel.name == "slack" and channel.capabilities.max_length == MAX_LENGTH
    assert "xoxb-from-env" not in repr(channel)


# -- markup -----------------------------------------------------------------------------------


def test_markdown_becomes_mrkdwn() -> None:
    markdown = "\n".join(
        [
            "# Title",
            "**bold**, __bold__, *italic*, _italic_, ~~gone~~, `a < b`",
            "- [a link](https://example.com/?a=1&b=2) and <https://example.org>",
            "> quoted",
            "```python",
            "if a < b and c: print('<!here>')",
            "```",
        ]
    )
    assert to_mrkdwn(markdown).split("\n") == [
        "*Title*",
        "*bold*, *bold*, _italic_, _italic_, ~gone~, `a &lt; b`",
        "• <https://example.com/?a=1&amp;b=2|a link> and <https://example.org>",
        "> quoted",
        "```",
        "if a &lt; b and c: print('&lt;!here&gt;')",
        "```",
    ]


def test_only_web_and_mail_addresses_become_links() -> None:
    assert to_mrkdwn("[click](javascript:alert)") == "click (javascript:alert)"
    assert to_mrkdwn("[pipe](https://x.test/a|b)") == "<https://x.test/a%7Cb|pipe>"


def test_an_unclosed_code_block_is_closed() -> None:
    assert to_mrkdwn("```\ncode") == "```\ncode\n```"


def test_in_word_markers_and_lone_stars_are_left_as_typed() -> None:
    assert to_mrkdwn("snake_case_name and 2 * 3 * 4") == "snake_case_name and 2 * 3 * 4"


def test_plain_text_keeps_the_markdown_but_still_escapes() -> None:
    assert to_plain("**x** <!channel> @here") == "**x** &lt;!channel&gt; @\u2060here"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab *_~`#>-[]()|<&@\n:/.hpstcerw")), max_size=200))
def test_the_length_bound_is_never_below_the_converted_length(markdown: str) -> None:
    assert length_bound(markdown) >= len(to_mrkdwn(markdown))
    assert length_bound(markdown) >= len(to_plain(markdown))


def test_hostile_input_converts_in_bounded_time() -> None:
    hostile = ("*a _b ~~c `d [e " * 2000) + ("x" * 5000)
    started = time.monotonic()
    to_mrkdwn(hostile)
    assert time.monotonic() - started < 2


def test_inbound_text_loses_the_bots_mention_and_slacks_escapes() -> None:
    text = "<@UBOT>: is 1 &lt; 2 &amp;&amp; <@UBOB|bob> in <#C1|general>? <!here> <mailto:a@b.test|a@b.test>"
    assert from_slack(text, "UBOT") == "is 1 < 2 && @bob in #general? @here a@b.test"
    assert from_slack("thanks <@UBOT|mbe>!", "UBOT") == "thanks!"
