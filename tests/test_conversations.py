"""Conversations are answered in order within a session, in parallel across sessions, and a
burst from one person is answered once, together."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import pytest

from conftest import Rig, echo
from mbe_gateway.conversations import Conversations, Turn
from mbe_gateway.llm import ScriptedProvider
from mbe_gateway.pipeline import Reply, Request
from mbe_gateway.store import history, memory_queue


def message(text: str, sender: str = "alice", chat: str | None = None) -> Request:
    return Request(
        channel="telegram",
        chat_id=chat or sender,
        sender_id=sender,
        texts=(text,),
        sender_name=sender.title(),
        is_group=chat is not None,
    )


class Answered:
    """The handler the gateway would give the lanes, keeping each reply for the test."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.replies: list[tuple[Request, Reply]] = []

    async def __call__(self, request: Request, turn: Turn) -> None:
        draft = await self.rig.pipeline.prepare(request)
        turn.commit()
        self.replies.append((request, await self.rig.pipeline.commit(request, draft)))

    async def wait_for(self, count: int) -> None:
        with anyio.fail_after(15):
            while len(self.replies) < count:
                await anyio.sleep(0.01)


Started = tuple[Conversations, Answered]


@pytest.fixture
async def lanes(rig: Callable[..., Rig]) -> AsyncIterator[Callable[..., Awaitable[Started]]]:
    async with anyio.create_task_group() as tg:

        async def start(llm: ScriptedProvider, **settings: object) -> Started:
            r = rig(llm=llm, **settings)
            answered = Answered(r)
            conversations = Conversations(answered, debounce=r.pipeline.settings.debounce)
            await tg.start(conversations.run)
            return conversations, answered

        yield start
        tg.cancel_scope.cancel()


async def until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(15):
        while not condition():
            await anyio.sleep(0.005)


@pytest.mark.anyio
async def test_messages_in_one_group_are_answered_in_the_order_they_came(lanes) -> None:
    llm = ScriptedProvider(echo, delay=0.2)
    conversations, answered = await lanes(llm)
    for sender, text in (("alice", "first"), ("bob", "second"), ("alice", "third")):
        conversations.submit(message(text, sender=sender, chat="group-1"))
    await answered.wait_for(3)
    assert [r.texts for r, _ in answered.replies] == [("first",), ("second",), ("third",)]
    assert [reply.body for _, reply in answered.replies] == [
        "You said: Alice: first",
        "You said: Bob: second",
        "You said: Alice: third",
    ]


@pytest.mark.anyio
async def test_different_sessions_are_answered_at_the_same_time(lanes) -> None:
    llm = ScriptedProvider(echo, delay=1.0)
    conversations, answered = await lanes(llm)
    for i in range(5):
        conversations.submit(message(f"hello {i}", sender=f"user{i}"))
    await until(lambda: len(llm.requests) == 5)
    assert answered.replies == []  # all five are being generated at once
    await answered.wait_for(5)


@pytest.mark.anyio
async def test_a_burst_within_the_debounce_window_is_answered_once_together(lanes) -> None:
    llm = ScriptedProvider(echo)
    conversations, answered = await lanes(llm, debounce=0.3)
    for text in ("hi", "quick question", "what's a good ramen place in Osaka?"):
        conversations.submit(message(text))
        await anyio.sleep(0.05)
    await answered.wait_for(1)
    await anyio.sleep(0.5)
    assert len(answered.replies) == 1
    assert len(llm.requests) == 1
    assert llm.requests[0][-1].content == "hi\nquick question\nwhat's a good ramen place in Osaka?"
    _, reply = answered.replies[0]
    said = await history.recent(answered.rig.db, reply.session_id)
    assert [m.role for m in said] == ["user", "user", "user", "assistant"]
    assert await memory_queue.count(answered.rig.db) == 1


@pytest.mark.anyio
async def test_more_of_a_burst_arriving_while_the_reply_is_written_joins_it(lanes) -> None:
    llm = ScriptedProvider(echo, delay=0.5)
    conversations, answered = await lanes(llm)
    conversations.submit(message("I need a gift idea"))
    await until(lambda: len(llm.requests) == 1)
    conversations.submit(message("for my sister, she loves climbing"))
    await answered.wait_for(1)
    await anyio.sleep(0.7)
    assert len(answered.replies) == 1
    request, reply = answered.replies[0]
    assert request.texts == ("I need a gift idea", "for my sister, she loves climbing")
    assert reply.body == "You said: I need a gift idea\nfor my sister, she loves climbing"
    assert [r[-1].content for r in llm.requests] == [
        "I need a gift idea",
        "I need a gift idea\nfor my sister, she loves climbing",
    ]


@pytest.mark.anyio
async def test_a_message_from_someone_else_does_not_interrupt_a_reply(lanes) -> None:
    llm = ScriptedProvider(echo, delay=0.3)
    conversations, answered = await lanes(llm)
    conversations.submit(message("alice asks", sender="alice", chat="group-2"))
    await until(lambda: len(llm.requests) == 1)
    conversations.submit(message("bob asks", sender="bob", chat="group-2"))
    await answered.wait_for(2)
    assert [r.texts for r, _ in answered.replies] == [("alice asks",), ("bob asks",)]
    assert len(llm.requests) == 2


@pytest.mark.anyio
async def test_a_failing_answer_does_not_stop_the_session() -> None:
    seen: list[str] = []

    async def flaky(request: Request, turn: Turn) -> None:
        if request.text == "boom":
            raise RuntimeError("a bug in a handler")
        seen.append(request.text)

    conversations = Conversations(flaky)
    async with anyio.create_task_group() as tg:
        await tg.start(conversations.run)
        conversations.submit(message("boom"))
        await anyio.sleep(0.05)
        conversations.submit(message("still here?"))
        await until(lambda: seen == ["still here?"])
        tg.cancel_scope.cancel()
