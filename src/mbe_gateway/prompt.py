"""The prompt for one reply: persona, the chosen expert, recalled memories, recent turns.

Everything the model sees is bounded by `context_chars`: the user's message always goes in
whole; then the system prompt (with as many memories as fit, most relevant first); then as
many recent turns as fit, newest first. Recalled memories are quoted as data in the system
prompt, never as turns of their own, so text stored from one conversation cannot pose as
the user or the system in another.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from mbe_gateway.contract import Memory
from mbe_gateway.llm import ChatMessage
from mbe_gateway.texts import Language, say

MEMORY_CHARS = 400  # one recalled memory, at most, in the prompt


@dataclass(frozen=True, slots=True)
class Turn:
    role: str  # "user" | "assistant"
    text: str


def build(
    *,
    language: Language,
    persona: str,
    message: str,
    expert: str | None = None,
    memories: Sequence[Memory] = (),
    turns: Sequence[Turn] = (),
    context_chars: int = 8000,
) -> list[ChatMessage]:
    """The chat messages for the model, oldest first, within `context_chars` where possible."""
    budget = context_chars - len(message)
    system = persona or say(language, "persona")
    if expert:
        system += "\n\n" + say(language, "expert_guidance", expert=expert)
    lines = [memory_line(m, language) for m in memories]
    while lines and len(system) + _size(lines, language) > budget:
        lines.pop()
    if lines:
        system += "\n\n" + say(language, "memories_intro") + "\n" + "\n".join(f"- {line}" for line in lines)
    budget -= len(system)

    kept: list[ChatMessage] = []
    for turn in reversed(turns):
        budget -= len(turn.text)
        if budget < 0:
            break
        kept.append(ChatMessage("assistant" if turn.role == "assistant" else "user", turn.text))
    kept.reverse()
    # A history that opens with the assistant's words reads oddly to chat templates.
    while kept and kept[0].role == "assistant":
        kept.pop(0)
    return [ChatMessage("system", system), *kept, ChatMessage("user", message)]


def memory_line(memory: Memory, language: Language) -> str:
    """One recalled memory as a single line: an exchange as "they said … you answered …",
    anything else (notes written by other MCP clients, say) as its fields."""
    content = memory.content
    date = _date(memory.created_at)
    said, answered = content.get("user_message"), content.get("assistant_reply")
    if isinstance(said, str) and isinstance(answered, str):
        line = say(
            language,
            "memory_exchange",
            date=date,
            said=_clip(said, MEMORY_CHARS // 2),
            answered=_clip(answered, MEMORY_CHARS // 2),
        )
    else:
        fields = {k: v for k, v in content.items() if v not in (None, "", [], {})}
        line = f"[{date}] " + _clip(json.dumps(fields, ensure_ascii=False), MEMORY_CHARS)
    return " ".join(line.split())


def _size(lines: Sequence[str], language: Language) -> int:
    return len(say(language, "memories_intro")) + sum(len(line) + 3 for line in lines) + 2


def _date(created_at: str) -> str:
    try:
        return datetime.fromisoformat(created_at.replace("Z", "+00:00")).date().isoformat()
    except ValueError:
        return created_at[:10]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
