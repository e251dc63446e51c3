"""The slash commands: answered by the gateway itself, never by a model.

An unknown command gets a short pointer to /help rather than an LLM call: "/stats" mistyped
as "/stat" should not cost a generation or end up in the user's memory.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from mbe_gateway import prompt
from mbe_gateway.errors import MBEError
from mbe_gateway.store import Database, sessions
from mbe_gateway.store.sessions import Session
from mbe_gateway.texts import Language, say

if TYPE_CHECKING:
    from mbe_gateway.pipeline import MBE

# "/stats", "/stats@my_bot" (Telegram groups), "/memories cooking" (an argument).
_COMMAND: Final = re.compile(r"^/([A-Za-z][A-Za-z0-9_]{0,31})(?:@\S+)?(?:\s+(.*))?$", re.S)
STATS_WINDOW_DAYS: Final = 30


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    argument: str = ""


@dataclass(frozen=True)
class Context:
    db: Database
    mbe: MBE
    language: Language
    session: Session
    user_id: str
    sender_name: str | None


def parse(text: str) -> Command | None:
    """The command in a message, or None for ordinary text (including a lone "/")."""
    match = _COMMAND.match(text.strip())
    if match is None:
        return None
    return Command(match[1].lower(), (match[2] or "").strip())


async def run(command: Command, context: Context) -> str:
    handler = HANDLERS.get(command.name)
    if handler is None:
        return say(context.language, "unknown_command", command=command.name)
    return await handler(command, context)


async def _start(command: Command, context: Context) -> str:
    name = context.sender_name or ""
    if name:
        name = f" {name}" if context.language == "en" else f",{name}"
    return say(context.language, "welcome", name=name)


async def _help(command: Command, context: Context) -> str:
    return say(context.language, "help")


async def _stats(command: Command, context: Context) -> str:
    language = context.language
    try:
        page = await context.mbe.memory_read(context.user_id, "", top_k=1)
        learning = await context.mbe.analyze_learning(context.user_id, window_days=STATS_WINDOW_DAYS)
    except MBEError:
        return say(language, "mbe_unavailable")
    experts = ", ".join(f"{e.name} ({e.count})" for e in learning.top_experts[:3])
    return say(
        language,
        "stats",
        memories=page.total_count,
        days=STATS_WINDOW_DAYS,
        interactions=learning.total_interactions,
        average=learning.average_surprise,
        novelty=learning.novelty_ratio,
        experts=experts or say(language, "stats_no_experts"),
        trend=say(language, f"trend_{learning.trend}")
        if f"trend_{learning.trend}" in _TREND_KEYS
        else learning.trend,
    )


async def _memories(command: Command, context: Context) -> str:
    try:
        page = await context.mbe.memory_read(context.user_id, command.argument, top_k=5)
    except MBEError:
        return say(context.language, "mbe_unavailable")
    if not page.memories:
        return say(context.language, "memories_none")
    items = "\n".join(f"• {prompt.memory_line(m, context.language)}" for m in page.memories)
    return say(context.language, "memories", items=items)


async def _reset(command: Command, context: Context) -> str:
    await sessions.reset(context.db, context.session.id)
    return say(context.language, "reset_done")


_TREND_KEYS: Final = frozenset(f"trend_{t}" for t in ("rising", "falling", "steady", "insufficient_data"))

HANDLERS: Final[dict[str, Callable[[Command, Context], Awaitable[str]]]] = {
    "start": _start,
    "help": _help,
    "stats": _stats,
    "memories": _memories,
    "reset": _reset,
    "new": _reset,
}

# What channels register with their platform (Telegram's setMyCommands), in menu order.
MENU: Final[dict[Language, tuple[tuple[str, str], ...]]] = {
    "en": (
        ("start", "Say hello"),
        ("help", "What I can do"),
        ("stats", "What I have learned about you"),
        ("memories", "What I remember about you"),
        ("reset", "Start a fresh conversation"),
    ),
    "zh": (
        ("start", "打个招呼"),
        ("help", "查看帮助"),
        ("stats", "我对你的了解统计"),
        ("memories", "我记得的关于你的内容"),
        ("reset", "开始新的对话"),
    ),
}
