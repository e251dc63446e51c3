"""The store's tables as the gateway uses them: inbox, outbox, sessions, history, memory queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from mbe_gateway.errors import StoreError
from mbe_gateway.store import Database, history, inbox, memory_queue, open_database, outbox, sessions

pytestmark = pytest.mark.anyio


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with await open_database(tmp_path / "gateway.sqlite3") as database:
        yield database


async def _put(db: Database, message_id: str, text: str = "hello", chat: str = "c1") -> inbox.Put:
    return await inbox.put(
        db, channel="telegram", platform_message_id=message_id, chat_id=chat, sender_id="u1", text=text
    )


async def test_a_redelivered_message_is_recognised_and_changes_nothing(db: Database) -> None:
    first = await inbox.put(
        db,
        channel="telegram",
        platform_message_id="42",
        chat_id="c1",
        sender_id="u1",
        sender_name="Ada",
        text="hello",
        meta={"reply_to": "41", "thread": "话题"},
        now=100.0,
    )
    again = await inbox.put(
        db,
        channel="telegram",
        platform_message_id="42",
        chat_id="c1",
        sender_id="u1",
        text="edited",
        now=200.0,
    )
    other_channel = await inbox.put(
        db, channel="slack", platform_message_id="42", chat_id="c1", sender_id="u1", text="hi"
    )
    assert first.is_new and not again.is_new and other_channel.is_new
    assert again.message == first.message
    assert first.message.text == "hello" and first.message.received_at == 100.0
    assert first.message.meta == {"reply_to": "41", "thread": "话题"}
    assert first.message.sender_name == "Ada" and first.message.state == "pending"


async def test_messages_are_claimed_oldest_first_and_only_once(db: Database) -> None:
    for i in range(3):
        await _put(db, str(i), text=f"m{i}")
    claimed = [await inbox.claim_next(db) for _ in range(4)]
    assert [m.text if m else None for m in claimed] == ["m0", "m1", "m2", None]
    assert all(m.state == "processing" and m.attempts == 1 for m in claimed if m)


async def test_answered_and_failed_messages_leave_the_queue(db: Database) -> None:
    a, b = (await _put(db, "a")).message, (await _put(db, "b")).message
    await inbox.mark_answered(db, a.id)
    await inbox.mark_failed(db, b.id, "provider down")
    assert await inbox.pending(db) == []
    failed = await inbox.get(db, b.id)
    assert failed is not None and failed.state == "failed" and failed.last_error == "provider down"
    assert await inbox.get(db, 999) is None


async def test_a_message_interrupted_by_a_crash_is_processed_again_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    async with await open_database(path) as db:
        await _put(db, "1", text="interrupted")
        await _put(db, "2", text="waiting")
        assert await inbox.claim_next(db) is not None
    async with await open_database(path) as db:
        assert await inbox.requeue_interrupted(db) == 1
        assert [m.text for m in await inbox.pending(db)] == ["interrupted", "waiting"]
        again = await inbox.claim_next(db)
        assert again is not None and again.text == "interrupted" and again.attempts == 2


async def test_a_message_gets_one_reply_even_if_processed_twice(db: Database) -> None:
    message = (await _put(db, "7")).message
    first = await outbox.enqueue_reply(db, message, "the answer", meta={"parse_mode": "HTML"}, now=10.0)
    second = await outbox.enqueue_reply(db, message, "a different answer", now=20.0)
    assert first.is_new and not second.is_new
    assert second.item == first.item
    assert first.item.text == "the answer" and first.item.reply_to == "7" and first.item.chat_id == "c1"
    answered = await inbox.get(db, message.id)
    assert answered is not None and answered.state == "answered"
    assert [i.text for i in await outbox.due(db, now=10.0)] == ["the answer"]


async def test_a_failed_send_is_retried_when_its_backoff_has_passed(db: Database) -> None:
    message = (await _put(db, "1")).message
    await outbox.enqueue_reply(db, message, "reply", now=100.0)
    assert (await outbox.pick(db, now=99.0)).next_at == 100.0
    (pending,) = await outbox.due(db, now=100.0)
    item = await outbox.claim(db, pending.id)
    assert item is not None and item.state == "sending" and item.attempts == 1
    assert await outbox.claim(db, pending.id) is None
    assert await outbox.due(db, now=100.0) == []
    await outbox.mark_failed(db, item.id, "429 Too Many Requests", retry_at=130.0)
    assert (await outbox.pick(db, now=100.0)).next_at == 130.0
    assert await outbox.due(db, now=129.0) == []
    (again,) = await outbox.due(db, now=130.0)
    retry = await outbox.claim(db, again.id)
    assert retry is not None and retry.attempts == 2 and retry.last_error == "429 Too Many Requests"
    await outbox.mark_sent(db, retry.id, platform_message_id="m-99", now=131.0)
    assert (await outbox.pick(db, now=131.0)).next_at is None
    assert await outbox.in_doubt(db) == []


async def test_a_send_that_keeps_failing_can_be_given_up(db: Database) -> None:
    item = await outbox.enqueue(db, channel="discord", chat_id="d1", text="reminder: stretch", now=5.0)
    assert item.inbox_id is None
    (claimed,) = await outbox.due(db, now=5.0)
    await outbox.mark_failed(db, claimed.id, "chat not found", retry_at=None)
    assert await outbox.due(db, now=1e12) == []
    assert (await outbox.pick(db)).next_at is None


async def test_a_send_in_flight_at_a_crash_is_reported_in_doubt(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    async with await open_database(path) as db:
        message = (await _put(db, "1")).message
        queued = await outbox.enqueue_reply(db, message, "maybe sent")
        await outbox.enqueue(db, channel="telegram", chat_id="c1", text="not yet claimed")
        await outbox.claim(db, queued.item.id)
    async with await open_database(path) as db:
        assert [i.text for i in await outbox.in_doubt(db)] == ["maybe sent"]


async def test_due_items_come_oldest_first_up_to_the_limit(db: Database) -> None:
    for i in range(5):
        await outbox.enqueue(db, channel="telegram", chat_id="c", text=f"t{i}", now=float(10 - i))
    assert [i.text for i in await outbox.due(db, limit=3, now=100.0)] == ["t4", "t3", "t2"]


async def test_pick_claims_the_first_reply_of_each_idle_chat_and_lists_the_rest_in_order(
    db: Database,
) -> None:
    for chat, text, at in [
        ("a", "a1", 1.0),
        ("b", "b1", 2.0),
        ("a", "a2", 3.0),
        ("c", "c1", 4.0),
        ("a", "a3", 50.0),
    ]:
        await outbox.enqueue(db, channel="telegram", chat_id=chat, text=text, now=at)
    c1 = next(i for i in await outbox.due(db, now=10.0) if i.text == "c1")
    picked = await outbox.pick(db, busy={("telegram", "b")}, known={c1.id}, now=10.0)
    assert [(i.text, i.state, i.attempts) for i in picked.claimed] == [("a1", "sending", 1)]
    assert [(i.text, i.state) for i in picked.waiting] == [("b1", "pending"), ("a2", "pending")]
    assert picked.next_at == 50.0  # a3
    assert [i.text for i in await outbox.in_doubt(db)] == ["a1"]  # claimed on disk, as `claim` does
    # More due than the limit: look again at once.
    assert (await outbox.pick(db, busy={("telegram", "a")}, limit=1, now=10.0)).next_at == 10.0


async def test_recording_a_send_can_claim_the_chats_next_reply_in_the_same_step(db: Database) -> None:
    first = await outbox.enqueue(db, channel="telegram", chat_id="c", text="one", now=1.0)
    second = await outbox.enqueue(db, channel="telegram", chat_id="c", text="two", now=2.0)
    assert await outbox.claim(db, first.id) is not None
    claimed = await outbox.mark_sent(db, first.id, platform_message_id="m1", now=3.0, then_claim=second.id)
    assert claimed is not None and (claimed.id, claimed.state) == (second.id, "sending")
    assert await outbox.mark_sent(db, second.id, then_claim=second.id) is None  # no longer pending
    assert await outbox.in_doubt(db) == [] and await outbox.due(db, now=1e12) == []


async def test_a_chat_has_one_session_that_counts_its_turns(db: Database) -> None:
    session = await sessions.get_or_create(db, "telegram", "c1", now=1.0)
    same = await sessions.get_or_create(db, "telegram", "c1", now=2.0)
    group = await sessions.get_or_create(db, "telegram", "g1", is_group=True)
    assert same == session and group.id != session.id and group.is_group
    touched = await sessions.touch(db, session.id, now=3.0)
    assert touched.turns == 1 and touched.last_active_at == 3.0 and touched.created_at == 1.0
    with pytest.raises(StoreError, match="no session"):
        await sessions.touch(db, 12345)


async def test_after_a_reset_old_turns_are_no_longer_recalled(db: Database) -> None:
    session = await sessions.get_or_create(db, "slack", "D1")
    await history.append(db, session.id, "user", "my name is Ada")
    await history.append(db, session.id, "assistant", "hello Ada")
    await sessions.touch(db, session.id)
    reset = await sessions.reset(db, session.id, now=50.0)
    assert reset.turns == 0 and reset.generation == session.generation + 1 and reset.reset_at == 50.0
    await history.append(db, session.id, "user", "who am I?")
    assert [m.text for m in await history.recent(db, session.id)] == ["who am I?"]


async def test_recent_history_is_the_last_turns_in_order_with_what_was_learnt(db: Database) -> None:
    session = await sessions.get_or_create(db, "telegram", "c1")
    message = (await _put(db, "1")).message
    for i in range(6):
        await history.append(db, session.id, "user" if i % 2 == 0 else "assistant", f"t{i}")
    answer = await history.append(
        db,
        session.id,
        "assistant",
        "answer",
        inbox_id=message.id,
        surprise=0.75,
        expert_id="cooking",
        total_ms=8.5,
        timings={"surprise": 1.5, "generate": 5.0},
    )
    recent = await history.recent(db, session.id, limit=3)
    assert [m.text for m in recent] == ["t4", "t5", "answer"]
    assert recent[-1] == answer
    assert answer.timings == {"surprise": 1.5, "generate": 5.0} and answer.surprise == 0.75
    with pytest.raises(StoreError, match="no session"):
        await history.append(db, 999, "user", "orphan")


async def test_memory_writes_wait_in_order_until_mbe_takes_them(db: Database) -> None:
    ids = [
        await memory_queue.push(db, "telegram:u1", "episodic", {"q": f"q{i}", "a": "答"}, 0.5 + i / 10)
        for i in range(4)
    ]
    batch = await memory_queue.peek(db, limit=2)
    assert [m.id for m in batch] == ids[:2] and batch[0].content == {"q": "q0", "a": "答"}
    await memory_queue.note_failure(db, [batch[1].id], "MBE unavailable")
    await memory_queue.delete(db, [batch[0].id])
    rest = await memory_queue.peek(db)
    assert [m.id for m in rest] == ids[1:]
    assert rest[0].attempts == 1 and rest[0].last_error == "MBE unavailable"
    assert await memory_queue.count(db) == 3
    with pytest.raises(StoreError):
        await memory_queue.push(db, "u", "episodic", {}, importance=1.5)


async def test_concurrent_writers_in_one_task_group_lose_and_double_nothing(db: Database) -> None:
    new_ids: list[str] = []

    async def writer(worker: int) -> None:
        for i in range(40):
            put = await _put(db, str((worker * 20 + i) % 100), text=f"w{worker}")  # overlapping ids
            if put.is_new:
                new_ids.append(put.message.platform_message_id)
            await memory_queue.push(db, f"u{worker}", "episodic", {"i": i}, 0.5)

    async with anyio.create_task_group() as tg:
        for worker in range(6):
            tg.start_soon(writer, worker)
    assert sorted(new_ids, key=int) == [str(i) for i in range(100)]
    assert len(await inbox.pending(db, limit=1000)) == 100
    assert await memory_queue.count(db) == 240


async def test_two_connections_claim_each_message_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    claimed: list[int] = []
    async with await open_database(path) as first, await open_database(path) as second:
        for i in range(60):
            await _put(first, str(i))

        async def claimer(db: Database) -> None:
            while (message := await inbox.claim_next(db)) is not None:
                claimed.append(message.id)
                await outbox.enqueue_reply(db, message, "ok")

        async with anyio.create_task_group() as tg:
            for db in (first, second, first, second):
                tg.start_soon(claimer, db)
        assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 60
        assert len(await outbox.due(second, limit=100)) == 60


async def test_writers_cancelled_midway_leave_the_database_consistent_and_usable(db: Database) -> None:
    async with anyio.create_task_group() as tg:
        for i in range(30):
            tg.start_soon(_put, db, str(i))
        await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert (await _put(db, "after")).is_new
    async with db.connection() as conn:
        assert not conn.in_transaction
    stored = await inbox.pending(db, limit=100)
    assert len({m.platform_message_id for m in stored}) == len(stored)
