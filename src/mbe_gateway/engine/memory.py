"""mbe_memory_write / mbe_memory_read: a user's memories, found again by what they mean.

A memory's content is any JSON object; the text of its values (strings and numbers,
however deeply nested) is analysed by text.terms and indexed with FTS5, so "I'm allergic
to peanuts" is found by "peanut allergy?" and "我对花生过敏" by "花生能吃吗".

Ranking blends three things, each in 0..1:

    relevance  = BM25 of the memory / BM25 of the best match for this query
    importance = as written (0.5 unless given)
    recency    = 0.5 ** (age in days / 30)
    score      = 0.6 · relevance + 0.25 · importance + 0.15 · recency

Only memories sharing a term with the query are returned. The query's terms are searched
rarest first, up to SEARCHED_TERMS of them and while the memories holding them add up to
BUDGET: a term in thousands of the user's memories ranks nothing, and ranking them all
would cost the most exactly when it helps the least. For the same reason a term held by
more than half of the user's memories (and by more than CANDIDATES of them) is not
searched unless it is the rarest: BM25's IDF for it would be nil (≤ 0) within the user's
own memories, though FTS5, counting the rows of every user, still weighs it. Left in,
such a term ("message", a signature, a name said every time) made every search rank the
user's whole history. An empty query (or one with no
words, like "👍") returns the most important and recent (the best of the user's 500
most recent and 500 most important): relevance is left out and the other two weights
are rescaled, score = 0.625 · importance + 0.375 · recency.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from mbe_gateway.contract import Memory, MemoryPage
from mbe_gateway.engine import index
from mbe_gateway.engine.store import insert, transaction
from mbe_gateway.engine.text import terms

RELEVANCE, IMPORTANCE, RECENCY = 0.6, 0.25, 0.15
HALF_LIFE_DAYS = 30.0
CANDIDATES = 200
"""How many best BM25 matches are re-ranked by the blended score."""
SEARCHED_TERMS = 16
BUDGET = 1_000
UNRANKED_CANDIDATES = 500
"""An empty query ranks the user's this-many most recent and this-many most important."""


def text_values(value: Any) -> Iterator[str]:
    """The strings and numbers inside a JSON value, depth first (keys are not content)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from text_values(item)
    elif isinstance(value, list):
        for item in value:
            yield from text_values(item)


def iso(timestamp: float) -> str:
    """Unix seconds as ISO 8601 in UTC, e.g. 2025-03-14T09:26:53.589Z."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def recency(created_at: float, now: float) -> float:
    return float(0.5 ** (max(0.0, now - created_at) / 86_400 / HALF_LIFE_DAYS))


def write(
    conn: sqlite3.Connection,
    *,
    user_id: str,
    memory_type: str,
    content: dict[str, Any],
    importance: float,
    now: float,
) -> str:
    """Store one memory and index it; its new id."""
    memory_id = str(uuid.uuid4())
    words = terms(" \n".join(text_values(content)))
    with transaction(conn):
        rowid = insert(
            conn,
            "INSERT INTO memories (memory_id, user_id, memory_type, content, importance, created_at, terms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                memory_id,
                user_id,
                memory_type,
                json.dumps(content, ensure_ascii=False),
                importance,
                now,
                " ".join(words),
            ),
        )
        index.add(conn, index.MEMORIES, user_id, rowid, words)
    return memory_id


def count(conn: sqlite3.Connection, user_id: str, memory_type: str | None = None) -> int:
    """How many memories the user has (of memory_type, when given)."""
    if memory_type is None:
        return index.frequencies(conn, index.MEMORIES, user_id, [index.ALL]).get(index.ALL, 0)
    row = conn.execute(
        "SELECT count(*) FROM memories WHERE user_id = ? AND memory_type = ?", (user_id, memory_type)
    ).fetchone()
    return int(row[0])


def _memory(row: tuple[str, str, str, float, float], score: float) -> Memory:
    memory_id, memory_type, content, importance, created_at = row
    return Memory(
        id=memory_id,
        memory_type=memory_type,
        content=json.loads(content),
        importance=importance,
        score=round(score, 4),
        created_at=iso(created_at),
    )


_BEST_MATCHES = (
    # FTS5 ranks its matches alone (it needs nothing else to), then only the CANDIDATES
    # best are looked up in memories: every match would be, were the join inside. Equal
    # BM25 (a user who says the same thing often) goes to the newest, which the blended
    # score prefers too; the outer ORDER BY restates the inner one for the join's output.
    "SELECT f.rowid, m.importance, m.created_at, f.relevance FROM "
    "(SELECT rowid, -bm25(memory_fts) AS relevance FROM memory_fts WHERE memory_fts MATCH ? "
    "ORDER BY bm25(memory_fts), rowid DESC LIMIT ?) AS f "
    "JOIN memories AS m ON m.id = f.rowid WHERE m.user_id = ? ORDER BY f.relevance DESC, f.rowid DESC"
)
_BEST_MATCHES_OF_TYPE = (
    # The type is known only in memories, so it must be joined before the LIMIT.
    "SELECT m.id, m.importance, m.created_at, -bm25(memory_fts) FROM memory_fts "
    "JOIN memories AS m ON m.id = memory_fts.rowid "
    "WHERE memory_fts MATCH ? AND m.user_id = ? AND m.memory_type = ? "
    "ORDER BY bm25(memory_fts), m.id DESC LIMIT ?"
)


def _by_relevance(
    conn: sqlite3.Connection, user_id: str, words: list[str], memory_type: str | None, now: float
) -> list[tuple[float, int]]:
    """(score, rowid) of the best BM25 matches of the query's terms, best match first."""
    counts = index.frequencies(conn, index.MEMORIES, user_id, [index.ALL, *words])
    ubiquitous = max(counts.pop(index.ALL, 0) // 2, CANDIDATES)
    searched = index.rarest(words, counts, at_most=SEARCHED_TERMS, budget=BUDGET, ubiquitous=ubiquitous)
    if not searched:
        return []
    match = index.match_any(user_id, searched)
    matches: list[tuple[int, float, float, float]] = (
        conn.execute(_BEST_MATCHES, (match, CANDIDATES, user_id)).fetchall()
        if memory_type is None
        else conn.execute(_BEST_MATCHES_OF_TYPE, (match, user_id, memory_type, CANDIDATES)).fetchall()
    )
    best = max((relevance for *_, relevance in matches), default=0.0) or 1.0
    return [
        (RELEVANCE * relevance / best + IMPORTANCE * importance + RECENCY * recency(created_at, now), rowid)
        for rowid, importance, created_at, relevance in matches
    ]


def _by_standing(
    conn: sqlite3.Connection, user_id: str, memory_type: str | None, now: float
) -> list[tuple[float, int]]:
    """(score, rowid) of the user's most recent and most important memories, without relevance.

    Two index walks, scored in Python (the recency curve is not an SQL function in every SQLite).
    """
    type_filter, type_args = (" AND memory_type = ?", (memory_type,)) if memory_type else ("", ())
    weight = IMPORTANCE + RECENCY
    standing: dict[int, tuple[float, float]] = {}
    for order in ("created_at", "importance"):
        standing.update(
            (rowid, (importance, created_at))
            for rowid, importance, created_at in conn.execute(
                f"SELECT id, importance, created_at FROM memories "  # noqa: S608 (constant fragments)
                f"WHERE user_id = ?{type_filter} ORDER BY {order} DESC LIMIT ?",
                (user_id, *type_args, UNRANKED_CANDIDATES),
            )
        )
    return [
        ((IMPORTANCE * importance + RECENCY * recency(created_at, now)) / weight, rowid)
        for rowid, (importance, created_at) in standing.items()
    ]


def read(
    conn: sqlite3.Connection,
    *,
    user_id: str,
    query: str,
    top_k: int,
    memory_type: str | None,
    now: float,
) -> MemoryPage:
    """The user's top_k memories for `query` (of `memory_type`, when given), best first.

    Candidates are ranked by their ids, importance and age; only the top_k are then read
    whole (their content is most of a row, and most candidates are not shown).
    """
    words = terms(query)
    scored = (
        _by_relevance(conn, user_id, words, memory_type, now)
        if words
        else _by_standing(conn, user_id, memory_type, now)
    )
    top = heapq.nlargest(top_k, scored, key=lambda pair: pair[0])
    rows = {
        row[0]: row[1:]
        for row in conn.execute(
            "SELECT id, memory_id, memory_type, content, importance, created_at FROM memories "  # noqa: S608
            f"WHERE id IN ({','.join('?' * len(top))})",
            [rowid for _, rowid in top],
        )
    }
    return MemoryPage(
        memories=tuple(_memory(rows[rowid], score) for score, rowid in top),
        total_count=count(conn, user_id, memory_type),
    )
