"""A long history: what a user says again and again neither hides their newest memories
nor makes every search rank all of them."""

from __future__ import annotations

import time
from pathlib import Path

from mbe_gateway.engine import index, memory
from mbe_gateway.engine.store import open_db


def test_among_equally_relevant_memories_the_newest_are_recalled_however_many_there_are(
    tmp_path: Path,
) -> None:
    conn = open_db(tmp_path / "engine.sqlite3")
    now = time.time()
    count = memory.CANDIDATES + 50  # more equal matches than are re-ranked
    try:
        ids = [
            memory.write(
                conn,
                user_id="walker",
                memory_type="episodic",
                content={"text": "walked the dog in the park"},
                importance=0.5,
                now=now - (count - i) * 60,
            )
            for i in range(count)
        ]
        page = memory.read(conn, user_id="walker", query="dog park", top_k=5, memory_type=None, now=now)
    finally:
        conn.close()
    assert [m.id for m in page.memories] == ids[::-1][:5]
    assert page.total_count == count


def test_a_term_in_most_of_a_users_rows_is_searched_only_when_nothing_rarer_is() -> None:
    counts = {"messag": 900, "peanut": 3, "allergi": 40}
    query = ["messag", "peanut", "allergi"]
    assert index.rarest(query, counts, at_most=16, ubiquitous=500) == ["peanut", "allergi"]
    assert index.rarest(query, counts, at_most=16) == ["peanut", "allergi", "messag"]
    assert index.rarest(["messag"], counts, at_most=16, ubiquitous=500) == ["messag"]
