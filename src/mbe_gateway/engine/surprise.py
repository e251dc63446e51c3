"""mbe_surprise: how new a message is to this user, learned from everything they said before.

Each call compares the message with the user's own earlier messages, then stores it, so
the next call knows it (online learning). Similarity is the cosine of TF-IDF term
vectors (sublinear term frequency; smoothed IDF over this user's messages), taken
against candidates: the user's most recent messages holding each of the message's
rarest terms (index.py). An exact repeat (same normalised text) is similarity 1 without
further work. surprise = 1 − max similarity: 0 for something said before, 1 for nothing
alike, between for a rewording.

The candidates are bounded (SEARCHED_TERMS × PER_TERM), so a call costs about the same
after ten messages as after fifty thousand.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from mbe_gateway.contract import Surprise
from mbe_gateway.engine import index
from mbe_gateway.engine.store import insert, transaction
from mbe_gateway.engine.text import normalize, terms

NOVEL_AT = 0.6
"""surprise ≥ this is novel, and "explore"; below ADAPT_AT is "reinforce"; between, "adapt"."""
ADAPT_AT = 0.3
SEARCHED_TERMS = 4
PER_TERM = 15
"""For each of the message's SEARCHED_TERMS rarest terms, its PER_TERM most recent uses."""


def learning_mode(score: float) -> str:
    if score >= NOVEL_AT:
        return "explore"
    return "adapt" if score >= ADAPT_AT else "reinforce"


@dataclass(frozen=True, slots=True)
class Vector:
    """A message's terms weighted (1 + ln tf) · idf, with the vector's length: a message is
    weighed once however many candidates it is compared with."""

    weights: dict[str, float]
    norm: float


def vector(counts: Counter[str], idf: Mapping[str, float]) -> Vector:
    weights = {t: (1.0 + math.log(n)) * idf.get(t, 1.0) for t, n in counts.items()}
    return Vector(weights, math.sqrt(sum(w * w for w in weights.values())))


def cosine(a: Vector, b: Vector) -> float:
    """Cosine of two weighted term vectors; 0 when either is empty."""
    dot = sum(w * b.weights[t] for t, w in a.weights.items() if t in b.weights)
    norm = a.norm * b.norm
    return min(1.0, dot / norm) if norm else 0.0


def _candidates(conn: sqlite3.Connection, user_id: str, searched: list[str]) -> list[Counter[str]]:
    ids: set[int] = set()
    for term in searched:
        ids.update(
            rowid
            for (rowid,) in conn.execute(
                f"SELECT rowid FROM {index.OBSERVATIONS.fts} WHERE {index.OBSERVATIONS.fts} MATCH ? "  # noqa: S608
                "ORDER BY rowid DESC LIMIT ?",
                (index.match_any(user_id, [term]), PER_TERM),
            )
        )
    marks = ",".join("?" * len(ids))
    # `+user_id`: looked up by id, the user only checked. Left to itself, SQLite walks the
    # user's whole history by an index on user_id instead (0.4 ms at 5k messages, and growing).
    rows = conn.execute(
        f"SELECT terms FROM observations WHERE id IN ({marks}) AND +user_id = ?",  # noqa: S608
        (*ids, user_id),
    )
    return [Counter(row[0].split()) for row in rows]


def max_similarity(conn: sqlite3.Connection, user_id: str, digest: str, words: list[str]) -> float:
    """The highest similarity of a message (its text digest and terms) to the user's history."""
    repeat = conn.execute(
        "SELECT 1 FROM observations WHERE user_id = ? AND text_hash = ? LIMIT 1", (user_id, digest)
    ).fetchone()
    if repeat:
        return 1.0
    query = Counter(words)
    counts = index.frequencies(conn, index.OBSERVATIONS, user_id, [index.ALL, *query])
    searched = index.rarest(query, counts, at_most=SEARCHED_TERMS)
    if not searched:
        return 0.0
    candidates = _candidates(conn, user_id, searched)
    vocabulary = set(query).union(*candidates)
    counts.update(index.frequencies(conn, index.OBSERVATIONS, user_id, vocabulary - counts.keys()))
    total = counts.get(index.ALL, 0)
    idf = {t: math.log((total + 1) / (counts.get(t, 0) + 1)) + 1.0 for t in vocabulary}
    message = vector(query, idf)
    return max((cosine(message, vector(candidate, idf)) for candidate in candidates), default=0.0)


def observe(
    conn: sqlite3.Connection,
    *,
    user_id: str,
    text: str,
    now: float,
    username: str | None = None,
    channel: str | None = None,
    domain: str | None = None,
) -> Surprise:
    """Score `text` against the user's history, then add it to that history."""
    normalized = normalize(text)
    digest = hashlib.sha256(normalized.encode()).hexdigest()
    words = terms(text)
    score = round(1.0 - max_similarity(conn, user_id, digest, words), 4)
    result = Surprise(surprise_score=score, is_novel=score >= NOVEL_AT, learning_mode=learning_mode(score))
    joined = " ".join(words)
    with transaction(conn):
        rowid = insert(
            conn,
            "INSERT INTO observations (user_id, created_at, text, text_hash, terms, surprise, is_novel, "
            "username, channel, domain) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (user_id, now, normalized, digest, joined, score, result.is_novel, username, channel, domain),
        )
        index.add(conn, index.OBSERVATIONS, user_id, rowid, words)
    return result
