"""Replies leave in order per chat, chats don't wait for each other, failures are retried
across restarts, and nothing is sent twice."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from mbe_gateway.channels.base import Capabilities, Deliver, Outbound
from mbe_gateway.delivery import IN_DOUBT, Delivery
from mbe_gateway.errors import SendFailed
from mbe_gateway.mbe.backoff import Backoff
from mbe_gateway.store import Database, open_database, outbox


class RecordingChannel:
    """A channel whose platform is this list: `sent` in order; `failures` scripted per send."""

    name = "telegram"
    capabilities = Capabilities(max_length=4096, markup="plain")

    def __init__(self, *failures: Exception | None, slow_chats: tuple[str, ...] = ()) -> None:
        self.sent: list[tuple[str, str]] = []
        self.failures: deque[Exception | None] = deque(failures)
        self.slow_chats = slow_chats

    async def run(self, deliver: Deliver) -> None:
        await anyio.sleep_forever()

    async def send(self, message: Outbound) -> list[str]:
        if message.chat_id in self.slow_chats:
            await anyio.sleep(0.5)
        failure = self.failures.popleft() if self.failures else None
        if failure is not None:
            raise failure
        self.sent.append((message.chat_id, message.text))
        return [f"m{len(self.sent)}"]

    async def typing(self, chat_id: str) -> None:
        return None

    async def check(self) -> str:
        return "@recording"


FAST = Backoff(base=0.05, cap=0.2, jitter=0)


@pytest.fixture
async def db(home: Path) -> AsyncIterator[Database]:
    async with await open_database(home / "gateway.sqlite3") as database:
        yield database


async def deliver_until(db: Database, channel: RecordingChannel, condition, **options: object) -> Delivery:
    delivery = Delivery(db, {"telegram": channel}, backoff=FAST, poll=0.05, **options)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        await tg.start(delivery.run)
        with anyio.fail_after(10):
            while not condition():
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    return delivery


async def queue(db: Database, chat: str, *texts: str) -> None:
    for text in texts:
        await outbox.enqueue(db, channel="telegram", chat_id=chat, text=text)


@pytest.mark.anyio
async def test_replies_to_one_chat_arrive_in_order(db: Database) -> None:
    await queue(db, "c1", "one", "two", "three")
    channel = RecordingChannel()
    await deliver_until(db, channel, lambda: len(channel.sent) == 3)
    assert channel.sent == [("c1", "one"), ("c1", "two"), ("c1", "three")]
    assert await outbox.due(db, now=1e12) == []


@pytest.mark.anyio
async def test_a_slow_chat_does_not_hold_up_another(db: Database) -> None:
    await queue(db, "slow", "s1")
    await queue(db, "fast", "f1", "f2")
    channel = RecordingChannel(slow_chats=("slow",))
    await deliver_until(db, channel, lambda: len(channel.sent) == 3)
    assert channel.sent[:2] == [("fast", "f1"), ("fast", "f2")]


@pytest.mark.anyio
async def test_a_failed_send_is_retried_and_later_replies_wait_for_it(db: Database) -> None:
    await queue(db, "c1", "first", "second")
    channel = RecordingChannel(SendFailed("HTTP 502", retryable=True), SendFailed("HTTP 503", retryable=True))
    await deliver_until(db, channel, lambda: len(channel.sent) == 2)
    assert channel.sent == [("c1", "first"), ("c1", "second")]


@pytest.mark.anyio
async def test_retry_after_from_the_platform_is_honoured(db: Database) -> None:
    await queue(db, "c1", "hello")
    channel = RecordingChannel(SendFailed("429", retryable=True, retry_after=0.6))
    started = anyio.current_time()
    await deliver_until(db, channel, lambda: len(channel.sent) == 1)
    assert anyio.current_time() - started >= 0.6


@pytest.mark.anyio
async def test_a_reply_that_can_never_be_sent_is_given_up_and_the_next_one_goes(db: Database) -> None:
    await queue(db, "c1", "to a blocked bot", "next")
    channel = RecordingChannel(SendFailed("bot was blocked by the user", retryable=False))
    delivery = await deliver_until(db, channel, lambda: len(channel.sent) == 1)
    assert channel.sent == [("c1", "next")]
    assert delivery.failed == 1


@pytest.mark.anyio
async def test_a_send_that_keeps_failing_is_given_up_after_max_attempts(db: Database) -> None:
    await queue(db, "c1", "doomed")
    channel = RecordingChannel(*[SendFailed("HTTP 500", retryable=True)] * 3)
    delivery = await deliver_until(db, channel, lambda: not channel.failures, max_attempts=3)
    with anyio.fail_after(5):
        while delivery.failed == 0:  # the third failure is recorded just after it is raised
            await anyio.sleep(0.01)
    assert channel.sent == []
    assert await outbox.due(db, now=1e12) == []


@pytest.mark.anyio
async def test_pending_replies_survive_a_restart_and_one_in_doubt_is_not_sent_twice(home: Path) -> None:
    path = home / "gateway.sqlite3"
    async with await open_database(path) as db:
        await queue(db, "c1", "was being sent", "still waiting")
        (first, _) = await outbox.due(db)
        await outbox.claim(db, first.id)  # the crash came while this one was on the wire
    async with await open_database(path) as db:
        channel = RecordingChannel()
        delivery = await deliver_until(db, channel, lambda: len(channel.sent) == 1)
        assert channel.sent == [("c1", "still waiting")]
        assert delivery.failed == 1
        async with db.connection() as conn:
            rows = list(
                await conn.execute_fetchall("SELECT state, last_error FROM outbox WHERE id = ?", (first.id,))
            )
        assert tuple(rows[0]) == ("failed", IN_DOUBT)
