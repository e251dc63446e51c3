"""mbe_analyze_learning: what the engine has learned about a user over a window of days.

An interaction is one mbe_surprise call for the user (the gateway makes one per message),
so total_interactions, novel_count, average_surprise and novelty_ratio (= novel_count /
total_interactions) all describe the same set of observations. top_experts counts the
routes recorded for the user in the window. total_memories is all of the user's
memories, not only the window's: it is what /stats shows.

trend compares the mean surprise of the older half of the window's observations with the
newer half (the middle one left out when their number is odd): "rising" when the newer
half is more than TREND_STEP higher, "falling" when more than TREND_STEP lower, else
"steady"; with fewer than MIN_POINTS observations, "insufficient_data".
"""

from __future__ import annotations

import sqlite3
from statistics import fmean

from mbe_gateway.contract import ExpertUse, Learning
from mbe_gateway.engine import memory

MIN_POINTS = 6
TREND_STEP = 0.1
TOP_EXPERTS = 5


def trend(scores: list[float]) -> str:
    """The direction of a chronological series of surprise scores (see the module doc)."""
    if len(scores) < MIN_POINTS:
        return "insufficient_data"
    half = len(scores) // 2
    change = fmean(scores[-half:]) - fmean(scores[:half])
    if change > TREND_STEP:
        return "rising"
    return "falling" if change < -TREND_STEP else "steady"


def analyze(conn: sqlite3.Connection, *, user_id: str, window_days: int, now: float) -> Learning:
    since = now - window_days * 86_400
    rows = conn.execute(
        "SELECT surprise, is_novel FROM observations WHERE user_id = ? AND created_at >= ? "
        "ORDER BY created_at, id",
        (user_id, since),
    ).fetchall()
    scores = [score for score, _ in rows]
    novel = sum(1 for _, is_novel in rows if is_novel)
    # SQLite fills the bare column expert_name from the row holding max(created_at):
    # each expert is shown by the name it was last routed under (the user's language).
    experts = conn.execute(
        "SELECT expert_id, expert_name, count(*) AS uses, max(created_at) FROM routes "
        "WHERE user_id = ? AND created_at >= ? GROUP BY expert_id ORDER BY uses DESC, max(created_at) DESC "
        "LIMIT ?",
        (user_id, since, TOP_EXPERTS),
    ).fetchall()
    return Learning(
        total_interactions=len(rows),
        novel_count=novel,
        average_surprise=round(fmean(scores), 4) if scores else 0.0,
        novelty_ratio=round(novel / len(rows), 4) if rows else 0.0,
        top_experts=tuple(ExpertUse(id=i, name=name, count=n) for i, name, n, _ in experts),
        trend=trend(scores),
        total_memories=memory.count(conn, user_id),
        window_days=window_days,
    )
