"""mbe_route: which experts of the catalog fit a message, and how sure that is.

Evidence for an expert is the summed weight of its keywords found in the message (a
keyword's weight is 1 / the number of experts listing it; a `task_type` equal to the
expert's id counts as one more keyword). Evidence becomes a fit in 0..1 that saturates:

    fit = 1 − exp(−0.9 · evidence)        one keyword ≈ 0.59, two ≈ 0.83, three ≈ 0.93

Continuity: when the caller passes the user's `surprise_score`, a familiar message (low
surprise) leans towards the experts this user was routed to lately:

    fit ← 1 − (1 − fit)(1 − 0.25 · (1 − surprise) · share of the user's last 20 routes)

so it can tip a choice between experts but never, on its own, outweigh the fallback.
The fallback ("general") ranks at least FALLBACK_PRIOR, so it wins when nothing fits
better.

routing_confidence = fit(best) − fit(second best) / 2: high when one expert clearly fits,
about half as much when two fit equally, and 0 when nothing fits (vague messages).
"""

from __future__ import annotations

import math
import sqlite3

from mbe_gateway.contract import Expert, Routing
from mbe_gateway.engine.catalog import FALLBACK_ID, Catalog, CatalogExpert
from mbe_gateway.engine.store import transaction
from mbe_gateway.engine.text import is_chinese, normalize, terms

FALLBACK_PRIOR = 0.3
SELECTED = 3
LISTED_FROM = 0.1
"""Experts ranked below this are not listed: they fit by a hair of continuity, not by content."""
HISTORY = 20
CONTINUITY = 0.25


def word_runs(words: list[str], longest: int) -> set[tuple[str, ...]]:
    """Every run of 1..longest consecutive words: a word keyword occurs in the message
    exactly when its terms are one of them (one set lookup per keyword, for all experts)."""
    return {tuple(words[i : i + n]) for n in range(1, longest + 1) for i in range(len(words) - n + 1)}


def evidence(expert: CatalogExpert, normalized: str, runs: set[tuple[str, ...]]) -> float:
    """The summed weight of the expert's keywords that occur in the message (its normalised
    text, for Chinese keywords, and its `word_runs` up to the catalog's longest keyword)."""
    return sum(k.weight for k in expert.keywords if (k.text in normalized if k.chinese else k.terms in runs))


def recent_shares(conn: sqlite3.Connection, user_id: str) -> dict[str, float]:
    """Which experts the user's last HISTORY routes went to, as shares of 1."""
    rows = conn.execute(
        "SELECT expert_id, count(*) FROM (SELECT expert_id FROM routes WHERE user_id = ? "
        "ORDER BY created_at DESC, id DESC LIMIT ?) GROUP BY expert_id",
        (user_id, HISTORY),
    ).fetchall()
    total = sum(n for _, n in rows)
    return {expert_id: n / total for expert_id, n in rows} if total else {}


def route(
    conn: sqlite3.Connection,
    catalog: Catalog,
    *,
    text: str,
    task_type: str,
    user_id: str | None,
    surprise: float | None,
    now: float,
) -> Routing:
    """Rank the catalog for `text`; record the choice for the user when there is one."""
    normalized = normalize(text)
    runs = word_runs(terms(text), catalog.longest_keyword)
    shares = recent_shares(conn, user_id) if user_id is not None and surprise is not None else {}
    fits: dict[str, float] = {}
    for expert in catalog.experts:
        found = evidence(expert, normalized, runs) + (1.0 if task_type == expert.id else 0.0)
        fit = 1.0 - math.exp(-0.9 * found)
        if shares and surprise is not None:
            fit = 1.0 - (1.0 - fit) * (1.0 - CONTINUITY * (1.0 - surprise) * shares.get(expert.id, 0.0))
        fits[expert.id] = fit

    rank = {i: max(f, FALLBACK_PRIOR) if i == FALLBACK_ID else f for i, f in fits.items()}
    order = sorted(catalog.experts, key=lambda e: -rank[e.id])  # stable: catalog order breaks ties
    best, second = [*sorted(fits.values(), reverse=True), 0.0][:2]
    confidence = round(min(1.0, max(0.0, best - second / 2)), 4)
    chinese = is_chinese(text)
    selected = tuple(
        Expert(id=e.id, name=e.name(chinese), score=round(rank[e.id], 4))
        for e in order[:SELECTED]
        if rank[e.id] >= LISTED_FROM
    )
    if user_id is not None:
        with transaction(conn):
            conn.execute(
                "INSERT INTO routes (user_id, created_at, expert_id, expert_name, confidence) "
                "VALUES (?, ?, ?, ?, ?)",
                (user_id, now, selected[0].id, selected[0].name, confidence),
            )
    return Routing(selected_experts=selected, routing_confidence=confidence)
