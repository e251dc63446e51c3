"""The MBE tool contract: the tools' names, their JSON schemas, and their typed results.

This is the one place the contract lives in code. The embedded engine declares exactly
these schemas, the client parses answers with the `parse_*` functions below, and
docs/mbe-contract.md shows the same schemas to people (a test keeps the three equal).

Parsing is tolerant where MBE servers legitimately differ (structured content or JSON
text, unknown fields, ints for floats) and strict where a wrong value would mislead the
gateway (a score outside 0..1, a missing required field): that raises MBEProtocolError.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mbe_gateway.errors import MBEProtocolError

SURPRISE: Final = "mbe_surprise"
ROUTE: Final = "mbe_route"
MEMORY_WRITE: Final = "mbe_memory_write"
MEMORY_READ: Final = "mbe_memory_read"
ANALYZE_LEARNING: Final = "mbe_analyze_learning"
GENERATE: Final = "mbe_generate"

REQUIRED_TOOLS: Final = (SURPRISE, ROUTE, MEMORY_WRITE, MEMORY_READ, ANALYZE_LEARNING)
OPTIONAL_TOOLS: Final = (GENERATE,)

MAX_INPUT_CHARS: Final = 32_000
LEARNING_MODES: Final = ("reinforce", "adapt", "explore")
TRENDS: Final = ("rising", "falling", "steady", "insufficient_data")

JSONSchema = dict[str, Any]

_USER_ID: JSONSchema = {"type": "string", "minLength": 1, "maxLength": 256}
_UNIT: JSONSchema = {"type": "number", "minimum": 0, "maximum": 1}
_MEMORY_TYPE: JSONSchema = {
    "type": "string",
    "pattern": "^[a-z][a-z0-9_]{0,31}$",
    "description": "A memory's kind; conventional ones: working, episodic, semantic, preference.",
}

INPUT_SCHEMAS: Final[dict[str, JSONSchema]] = {
    SURPRISE: {
        "type": "object",
        "properties": {
            "input": {"type": "string", "minLength": 1, "maxLength": MAX_INPUT_CHARS},
            "context": {
                "type": "object",
                "properties": {
                    "user_id": _USER_ID,
                    "username": {"type": ["string", "null"]},
                    "channel": {"type": ["string", "null"]},
                    "domain": {"type": ["string", "null"]},
                },
                "required": ["user_id"],
            },
        },
        "required": ["input", "context"],
    },
    ROUTE: {
        "type": "object",
        "properties": {
            "input": {"type": "string", "minLength": 1, "maxLength": MAX_INPUT_CHARS},
            "task_type": {"type": "string", "default": "chat"},
            "user_profile": {
                "type": "object",
                "description": "Free-form; user_id and surprise_score are read when present.",
                "properties": {"user_id": _USER_ID, "surprise_score": _UNIT},
            },
        },
        "required": ["input"],
    },
    MEMORY_WRITE: {
        "type": "object",
        "properties": {
            "user_id": _USER_ID,
            "memory_type": _MEMORY_TYPE,
            "content": {"type": "object"},
            "importance": {**_UNIT, "default": 0.5},
        },
        "required": ["user_id", "memory_type", "content"],
    },
    MEMORY_READ: {
        "type": "object",
        "properties": {
            "user_id": _USER_ID,
            "query": {"type": "string", "maxLength": MAX_INPUT_CHARS},
            "top_k": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
            "memory_type": _MEMORY_TYPE,
        },
        "required": ["user_id", "query"],
    },
    ANALYZE_LEARNING: {
        "type": "object",
        "properties": {
            "user_id": _USER_ID,
            "window_days": {"type": "integer", "minimum": 1, "maximum": 3650, "default": 30},
        },
        "required": ["user_id"],
    },
    GENERATE: {
        "type": "object",
        "properties": {
            "prompt": {"type": "string"},
            "system_prompt": {"type": "string"},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "messages": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "role": {"type": "string", "enum": ["system", "user", "assistant"]},
                        "content": {"type": "string"},
                    },
                    "required": ["role", "content"],
                },
            },
        },
        "required": ["prompt"],
    },
}

_EXPERT: JSONSchema = {
    "type": "object",
    "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "score": _UNIT},
    "required": ["id", "name", "score"],
}

OUTPUT_SCHEMAS: Final[dict[str, JSONSchema]] = {
    SURPRISE: {
        "type": "object",
        "properties": {
            "surprise_score": _UNIT,
            "is_novel": {"type": "boolean"},
            "learning_mode": {"type": "string", "enum": list(LEARNING_MODES)},
        },
        "required": ["surprise_score", "is_novel", "learning_mode"],
    },
    ROUTE: {
        "type": "object",
        "properties": {
            "selected_experts": {"type": "array", "items": _EXPERT},
            "routing_confidence": _UNIT,
        },
        "required": ["selected_experts", "routing_confidence"],
    },
    MEMORY_WRITE: {
        "type": "object",
        "properties": {"memory_id": {"type": "string", "minLength": 1}},
        "required": ["memory_id"],
    },
    MEMORY_READ: {
        "type": "object",
        "properties": {
            "memories": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "memory_type": {"type": "string"},
                        "content": {"type": "object"},
                        "importance": _UNIT,
                        "score": {"type": "number", "minimum": 0},
                        "created_at": {"type": "string", "description": "ISO 8601, UTC"},
                    },
                    "required": ["id", "content", "importance", "score", "created_at"],
                },
            },
            "total_count": {
                "type": "integer",
                "minimum": 0,
                "description": "How many memories the user has (of memory_type, when given).",
            },
        },
        "required": ["memories", "total_count"],
    },
    ANALYZE_LEARNING: {
        "type": "object",
        "properties": {
            "user_id": {"type": "string"},
            "window_days": {"type": "integer"},
            "total_interactions": {"type": "integer", "minimum": 0},
            "novel_count": {"type": "integer", "minimum": 0},
            "average_surprise": _UNIT,
            "novelty_ratio": _UNIT,
            "top_experts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "count": {"type": "integer", "minimum": 0},
                    },
                    "required": ["id", "name", "count"],
                },
            },
            "trend": {"type": "string", "enum": list(TRENDS)},
            "total_memories": {"type": "integer", "minimum": 0},
        },
        "required": [
            "total_interactions",
            "average_surprise",
            "novelty_ratio",
            "top_experts",
            "trend",
        ],
    },
    GENERATE: {
        "type": "object",
        "properties": {
            "content": {"type": "string"},
            "model": {"type": "string"},
            "usage": {
                "type": "object",
                "properties": {
                    "prompt_tokens": {"type": "integer"},
                    "completion_tokens": {"type": "integer"},
                },
            },
        },
        "required": ["content"],
    },
}


# --- typed results ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Surprise:
    surprise_score: float
    is_novel: bool
    learning_mode: str


@dataclass(frozen=True, slots=True)
class Expert:
    id: str
    name: str
    score: float


@dataclass(frozen=True, slots=True)
class Routing:
    selected_experts: tuple[Expert, ...]
    routing_confidence: float

    @property
    def top(self) -> Expert | None:
        return self.selected_experts[0] if self.selected_experts else None


@dataclass(frozen=True, slots=True)
class Memory:
    id: str
    content: dict[str, Any]
    importance: float
    score: float
    created_at: str
    memory_type: str = ""


@dataclass(frozen=True, slots=True)
class MemoryPage:
    memories: tuple[Memory, ...]
    total_count: int


@dataclass(frozen=True, slots=True)
class ExpertUse:
    id: str
    name: str
    count: int


@dataclass(frozen=True, slots=True)
class Learning:
    total_interactions: int
    average_surprise: float
    novelty_ratio: float
    top_experts: tuple[ExpertUse, ...]
    trend: str
    novel_count: int = 0
    total_memories: int = 0
    window_days: int = 0


@dataclass(frozen=True, slots=True)
class Generation:
    content: str
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


# --- parsing ------------------------------------------------------------------------------


def payload_of(tool: str, structured: Any, texts: list[str]) -> dict[str, Any]:
    """The result object of one tool call, from structured content or else from JSON text.

    Servers built on older SDKs send only a text block holding JSON; newer ones send
    structured content (sometimes wrapped as {"result": {...}}). Both are accepted.
    """
    if isinstance(structured, Mapping):
        inner = structured.get("result")
        if len(structured) == 1 and isinstance(inner, Mapping):
            return dict(inner)
        return dict(structured)
    for text in texts:
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, Mapping):
            return dict(value)
    shown = (texts[0][:120] + "…") if texts and len(texts[0]) > 120 else (texts[0] if texts else "nothing")
    raise MBEProtocolError(f"{tool} answered with no JSON object (got {shown!r}); is this an MBE server?")


def _field(tool: str, payload: Mapping[str, Any], name: str) -> Any:
    if name not in payload:
        raise MBEProtocolError(f"{tool} answered without the required field {name!r}")
    return payload[name]


def _number(tool: str, name: str, value: Any, *, unit: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MBEProtocolError(f"{tool}: {name} should be a number, got {value!r}")
    if unit and not 0.0 <= value <= 1.0:
        raise MBEProtocolError(f"{tool}: {name} should be between 0 and 1, got {value!r}")
    return float(value)


def _integer(tool: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MBEProtocolError(f"{tool}: {name} should be a whole number ≥ 0, got {value!r}")
    return value


def _string(tool: str, name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise MBEProtocolError(f"{tool}: {name} should be text, got {value!r}")
    return value


def _list(tool: str, name: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise MBEProtocolError(f"{tool}: {name} should be a list, got {type(value).__name__}")
    return value


def _object(tool: str, name: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MBEProtocolError(f"{tool}: {name} should be an object, got {type(value).__name__}")
    return value


def parse_surprise(payload: Mapping[str, Any]) -> Surprise:
    t = SURPRISE
    novel = _field(t, payload, "is_novel")
    if not isinstance(novel, bool):
        raise MBEProtocolError(f"{t}: is_novel should be true or false, got {novel!r}")
    return Surprise(
        surprise_score=_number(t, "surprise_score", _field(t, payload, "surprise_score"), unit=True),
        is_novel=novel,
        learning_mode=_string(t, "learning_mode", _field(t, payload, "learning_mode")),
    )


def parse_routing(payload: Mapping[str, Any]) -> Routing:
    t = ROUTE
    experts = []
    for i, raw in enumerate(_list(t, "selected_experts", _field(t, payload, "selected_experts"))):
        item = _object(t, f"selected_experts[{i}]", raw)
        experts.append(
            Expert(
                id=_string(t, "expert id", _field(t, item, "id")),
                name=_string(t, "expert name", item.get("name", item.get("id"))),
                score=_number(t, "expert score", _field(t, item, "score"), unit=True),
            )
        )
    return Routing(
        selected_experts=tuple(experts),
        routing_confidence=_number(
            t, "routing_confidence", _field(t, payload, "routing_confidence"), unit=True
        ),
    )


def parse_memory_id(payload: Mapping[str, Any]) -> str:
    value = _field(MEMORY_WRITE, payload, "memory_id")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    memory_id = _string(MEMORY_WRITE, "memory_id", value)
    if not memory_id:
        raise MBEProtocolError(f"{MEMORY_WRITE}: memory_id is empty")
    return memory_id


def parse_memory_page(payload: Mapping[str, Any]) -> MemoryPage:
    t = MEMORY_READ
    memories = []
    for i, raw in enumerate(_list(t, "memories", _field(t, payload, "memories"))):
        item = _object(t, f"memories[{i}]", raw)
        memory_id = _field(t, item, "id")
        memories.append(
            Memory(
                id=str(memory_id) if isinstance(memory_id, int) else _string(t, "id", memory_id),
                content=dict(_object(t, "content", _field(t, item, "content"))),
                importance=_number(t, "importance", _field(t, item, "importance"), unit=True),
                score=_number(t, "score", _field(t, item, "score")),
                created_at=_string(t, "created_at", _field(t, item, "created_at")),
                memory_type=_string(t, "memory_type", item.get("memory_type", "")),
            )
        )
    return MemoryPage(
        memories=tuple(memories), total_count=_integer(t, "total_count", _field(t, payload, "total_count"))
    )


def parse_learning(payload: Mapping[str, Any]) -> Learning:
    t = ANALYZE_LEARNING
    top = []
    for i, raw in enumerate(_list(t, "top_experts", _field(t, payload, "top_experts"))):
        item = _object(t, f"top_experts[{i}]", raw)
        top.append(
            ExpertUse(
                id=_string(t, "expert id", _field(t, item, "id")),
                name=_string(t, "expert name", item.get("name", item.get("id"))),
                count=_integer(t, "count", item.get("count", 0)),
            )
        )
    return Learning(
        total_interactions=_integer(t, "total_interactions", _field(t, payload, "total_interactions")),
        average_surprise=_number(t, "average_surprise", _field(t, payload, "average_surprise"), unit=True),
        novelty_ratio=_number(t, "novelty_ratio", _field(t, payload, "novelty_ratio"), unit=True),
        top_experts=tuple(top),
        trend=_string(t, "trend", _field(t, payload, "trend")),
        novel_count=_integer(t, "novel_count", payload.get("novel_count", 0)),
        total_memories=_integer(t, "total_memories", payload.get("total_memories", 0)),
        window_days=_integer(t, "window_days", payload.get("window_days", 0)),
    )


def parse_generation(payload: Mapping[str, Any]) -> Generation:
    t = GENERATE
    usage = payload.get("usage")
    usage = usage if isinstance(usage, Mapping) else {}
    prompt_tokens = usage.get("prompt_tokens", 0)
    completion_tokens = usage.get("completion_tokens", 0)
    return Generation(
        content=_string(t, "content", _field(t, payload, "content")),
        model=str(payload.get("model", "")),
        prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else 0,
        completion_tokens=completion_tokens if isinstance(completion_tokens, int) else 0,
    )
