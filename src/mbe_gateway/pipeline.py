"""One inbound message (or a burst of them) to one reply: the seed's flow, made fast and safe.

    surprise ──┐
               ├─► route ─► prompt ─► generate ─► decorate ─► record (one transaction)
    memories ──┘                                                 └─► memory writer (off the path)

Surprise and the memory read go to MBE together (one MCP session carries both), routing
follows with the surprise score in the profile, and the memory write is queued in the same
transaction as the reply and written by the MemoryWriter afterwards. Every stage is timed;
the timings are stored with the reply.

Answering is split in two so a caller can change its mind: `prepare` has no effect on the
gateway's own state (it may be cancelled, say because more of a burst arrived), and
`commit` records the exchange. MBE failing degrades the answer (no memory, no expert), with
one log line per outage; every provider failing gives the user a clear apology.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import anyio

from mbe_gateway import commands, prompt
from mbe_gateway.config import AssistantSettings
from mbe_gateway.contract import Learning, MemoryPage, Routing, Surprise
from mbe_gateway.errors import AllProvidersFailed, MBEError
from mbe_gateway.intake import clean_text
from mbe_gateway.llm import Chain, ChatMessage
from mbe_gateway.store import Database, exchanges, history, outbox, sessions
from mbe_gateway.store.sessions import Session
from mbe_gateway.texts import Language, say

log = logging.getLogger(__name__)

MEMORY_TYPE = "episodic"  # an exchange is an episode; MBE consolidates episodes over time
GENERAL_EXPERT = "general"  # "answered by the general expert" says nothing: never shown

OnDelta = Callable[[str], Awaitable[None]]
T = TypeVar("T")


class MBE(Protocol):
    """What the pipeline needs of mbe_gateway.mbe.MBEClient."""

    async def surprise(
        self,
        text: str,
        *,
        user_id: str,
        username: str | None = None,
        channel: str | None = None,
        domain: str | None = None,
    ) -> Surprise: ...

    async def route(
        self, text: str, *, task_type: str = "chat", user_profile: Mapping[str, Any] | None = None
    ) -> Routing: ...

    async def memory_read(
        self, user_id: str, query: str, *, top_k: int = 5, memory_type: str | None = None
    ) -> MemoryPage: ...

    async def analyze_learning(self, user_id: str, *, window_days: int = 30) -> Learning: ...


@dataclass(frozen=True, slots=True)
class Request:
    """What to answer: one message, or a burst from one sender answered together."""

    channel: str
    chat_id: str
    sender_id: str
    texts: tuple[str, ...]
    sender_name: str | None = None
    is_group: bool = False
    inbox_ids: tuple[int | None, ...] = ()  # one per text, when the texts came through the inbox
    reply_to: str | None = None  # where the platform threads the answer
    meta: Mapping[str, Any] = field(default_factory=dict)  # the channel's extras, for the reply
    late: bool = False  # received while the gateway was down: the answer says so

    def __post_init__(self) -> None:
        # Not every door is the gateway's (which cleans what channels deliver): the control
        # plane's chat and the terminal chat lead here too. Text that SQLite, the JSON logs or
        # an MCP call would choke on (a lone surrogate, NUL) is made safe whichever way it came.
        object.__setattr__(self, "texts", tuple(clean_text(text) for text in self.texts))

    @property
    def text(self) -> str:
        return "\n".join(self.texts)

    @property
    def user_id(self) -> str:
        """Whose memory this is: a person on a channel, the same in their DM and in groups."""
        return f"{self.channel}:{self.sender_id}"


@dataclass(frozen=True, slots=True)
class Reply:
    text: str  # what to send: the answer and its decorations
    body: str  # the answer alone
    session_id: int
    surprise: Surprise | None = None
    routing: Routing | None = None
    provider: str | None = None
    command: str | None = None  # set when a command answered, not the model
    degraded: frozenset[str] = frozenset()  # "mbe" (no memory), "llm" (the apology)
    timings: Mapping[str, float] = field(default_factory=dict)  # milliseconds per stage
    record: bool = True  # False for command answers and refusals: not part of the conversation


class Pipeline:
    """Answers requests; holds no per-request state, so many run at once (one per session)."""

    def __init__(
        self,
        *,
        db: Database,
        mbe: MBE,
        llm: Chain,
        settings: AssistantSettings,
        language: Language,
        on_recorded: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.mbe = mbe
        self.llm = llm
        self.settings = settings
        self.language = language
        self._on_recorded = on_recorded
        self._mbe_down = False  # for one log line per MBE outage, not one per message

    async def answer(self, request: Request, *, on_delta: OnDelta | None = None) -> Reply:
        """Prepare and commit: the whole flow for a caller that will not change its mind."""
        return await self.commit(request, await self.prepare(request, on_delta=on_delta))

    async def prepare(self, request: Request, *, on_delta: OnDelta | None = None) -> Reply:
        """Everything up to the reply's text; touches nothing of the gateway's own state
        except resetting an idle session (which a retry would do all the same)."""
        reply = await self._prepare(request, on_delta)
        if request.late:
            reply = replace(reply, text=say(self.language, "late") + "\n\n" + reply.text)
        return reply

    async def _prepare(self, request: Request, on_delta: OnDelta | None) -> Reply:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        session = await self._session(request)
        text = request.text
        command = commands.parse(text)
        if command is not None:
            answer = await commands.run(command, self._command_context(request, session))
            return Reply(answer, answer, session.id, command=command.name, record=False)
        if len(text) > self.settings.max_message_chars:
            refusal = say(self.language, "too_long", length=len(text), limit=self.settings.max_message_chars)
            return Reply(refusal, refusal, session.id, record=False)

        surprise, page = await self._recall(request, timings)
        routing = await self._route(request, surprise, timings)
        mark = time.perf_counter()
        recent = await history.recent(self.db, session.id, limit=2 * self.settings.history_turns)
        expert = routing.top if routing is not None else None
        messages = prompt.build(
            language=self.language,
            persona=self.settings.persona,
            message=self._as_said(request),
            expert=expert.name if expert is not None and expert.id != GENERAL_EXPERT else None,
            memories=page.memories if page is not None else (),
            turns=[prompt.Turn(m.role, m.text) for m in recent],
            context_chars=self.settings.context_chars,
        )
        timings["prompt"] = _ms(mark)
        degraded = {"mbe"} if surprise is None and page is None and routing is None else set()

        mark = time.perf_counter()
        try:
            body, provider = await self._generate(messages, on_delta, timings, mark)
        except AllProvidersFailed as e:
            body, provider = self._apology(e), None
            degraded.add("llm")
        timings["generate"] = _ms(mark)
        timings["total"] = _ms(started)
        return Reply(
            text=self._decorate(body, surprise, routing) if provider is not None else body,
            body=body,
            session_id=session.id,
            surprise=surprise,
            routing=routing,
            provider=provider,
            degraded=frozenset(degraded),
            timings=timings,
            record=provider is not None,
        )

    async def commit(self, request: Request, reply: Reply, *, send: bool = False) -> Reply:
        """Record the exchange (history, session, queued memory write) in one transaction, with
        the reply queued in the outbox for the request's inbox rows when `send` is set."""
        mark = time.perf_counter()
        outgoing = (
            outbox.Outgoing(
                inbox_ids=[i for i in request.inbox_ids if i is not None],
                channel=request.channel,
                chat_id=request.chat_id,
                text=reply.text,
                reply_to=request.reply_to,
                meta=request.meta,
            )
            if send
            else None
        )
        if not reply.record:
            if outgoing is not None:
                with anyio.CancelScope(shield=True):
                    await exchanges.record(self.db, None, outgoing)
            return reply
        score = reply.surprise.surprise_score if reply.surprise is not None else None
        expert = reply.routing.top if reply.routing is not None else None
        exchange = exchanges.Exchange(
            session_id=reply.session_id,
            sender_id=request.sender_id,
            said=[
                exchanges.UserMessage(text, inbox_id)
                for text, inbox_id in zip(
                    request.texts, request.inbox_ids or (None,) * len(request.texts), strict=True
                )
            ],
            reply=reply.body,
            surprise=score,
            expert_id=expert.id if expert is not None else None,
            total_ms=reply.timings.get("total"),
            timings=reply.timings,
            memory=exchanges.MemoryWrite(
                user_id=request.user_id,
                memory_type=MEMORY_TYPE,
                content={
                    "user_message": request.text,
                    "assistant_reply": reply.body,
                    "surprise_score": score,
                    "expert_id": expert.id if expert is not None else None,
                    "channel": request.channel,
                    "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
                },
                importance=0.5 + 0.5 * (score if score is not None else 0.0),
            ),
        )
        with anyio.CancelScope(shield=True):
            await exchanges.record(self.db, exchange, outgoing)
        if self._on_recorded is not None:
            self._on_recorded()
        return replace(reply, timings={**reply.timings, "commit": _ms(mark)})

    # --- the stages -------------------------------------------------------------------------

    async def _session(self, request: Request) -> Session:
        session = await sessions.get_or_create(
            self.db, request.channel, request.chat_id, is_group=request.is_group
        )
        idle = self.settings.idle_reset_minutes * 60
        if idle and session.turns and time.time() - session.last_active_at > idle:
            session = await sessions.reset(self.db, session.id)
        return session

    async def _recall(
        self, request: Request, timings: dict[str, float]
    ) -> tuple[Surprise | None, MemoryPage | None]:
        """Surprise and the memory read, concurrently; either may fail alone."""
        found: dict[str, Any] = {}
        mark = time.perf_counter()

        async def surprise() -> None:
            found["surprise"] = await self._mbe_call(
                self.mbe.surprise(
                    request.text,
                    user_id=request.user_id,
                    username=request.sender_name,
                    channel=request.channel,
                    domain="chat",
                )
            )
            timings["surprise"] = _ms(mark)

        async def memories() -> None:
            if self.settings.memory_top_k:
                found["page"] = await self._mbe_call(
                    self.mbe.memory_read(request.user_id, request.text, top_k=self.settings.memory_top_k)
                )
            timings["memory_read"] = _ms(mark)

        async with anyio.create_task_group() as tg:
            tg.start_soon(surprise)
            tg.start_soon(memories)
        timings["recall"] = _ms(mark)
        return found.get("surprise"), found.get("page")

    async def _route(
        self, request: Request, surprise: Surprise | None, timings: dict[str, float]
    ) -> Routing | None:
        mark = time.perf_counter()
        profile: dict[str, Any] = {"user_id": request.user_id, "channel": request.channel}
        if surprise is not None:
            profile["surprise_score"] = surprise.surprise_score
        routing = await self._mbe_call(self.mbe.route(request.text, task_type="chat", user_profile=profile))
        timings["route"] = _ms(mark)
        return routing

    async def _mbe_call(self, call: Awaitable[T]) -> T | None:
        """One MBE call that may fail: None instead of an error, one log line per outage."""
        try:
            result = await call
        except MBEError as e:
            if not self._mbe_down:
                self._mbe_down = True
                log.warning(
                    "MBE unavailable; answering without memory until it is back", extra={"error": str(e)}
                )
            return None
        if self._mbe_down:
            self._mbe_down = False
            log.info("MBE is back; answers use memory again")
        return result

    async def _generate(
        self,
        messages: Sequence[ChatMessage],
        on_delta: OnDelta | None,
        timings: dict[str, float],
        mark: float,
    ) -> tuple[str, str | None]:
        if on_delta is None:
            completion = await self.llm.complete(messages)
            return completion.text.strip(), completion.provider
        parts: list[str] = []
        answered_by: list[str] = []
        async with aclosing(self.llm.stream(messages, on_provider=answered_by.append)) as deltas:
            async for delta in deltas:
                if not parts:
                    timings["first_token"] = _ms(mark)
                parts.append(delta)
                await on_delta(delta)
        return "".join(parts).strip(), answered_by[0] if answered_by else self.llm.name

    def _decorate(self, body: str, surprise: Surprise | None, routing: Routing | None) -> str:
        """The seed's two optional lines: "new to you" and "answered by the X expert"."""
        lines = [body]
        if self.settings.show_novelty and surprise is not None and surprise.is_novel:
            lines.append(say(self.language, "novelty", score=surprise.surprise_score))
        top = routing.top if routing is not None else None
        if (
            self.settings.show_expert
            and routing is not None
            and top is not None
            and top.id != GENERAL_EXPERT
            and routing.routing_confidence > self.settings.expert_confidence
        ):
            lines.append(say(self.language, "expert", expert=top.name))
        return "\n\n".join(lines)

    def _apology(self, error: AllProvidersFailed) -> str:
        log.error("no LLM provider could answer", extra={"attempts": list(error.attempts)})
        if error.retry_in is not None and error.retry_in < 600:
            retry = say(self.language, "retry_in", seconds=max(1, round(error.retry_in)))
        else:
            retry = say(self.language, "retry_later")
        return say(self.language, "all_providers_failed", retry=retry)

    def _as_said(self, request: Request) -> str:
        """In a group the model must know who is talking; in a DM it is always the same person."""
        if request.is_group and request.sender_name:
            return f"{request.sender_name}: {request.text}"
        return request.text

    def _command_context(self, request: Request, session: Session) -> commands.Context:
        return commands.Context(
            db=self.db,
            mbe=self.mbe,
            language=self.language,
            session=session,
            user_id=request.user_id,
            sender_name=request.sender_name,
        )


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)
