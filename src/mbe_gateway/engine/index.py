"""Per-user full-text indexes of analysed terms: FTS5 postings plus per-user term counts.

Each term is indexed as a 12-hex-digit key of the user id followed by the term (peanut →
3f9a7c1b2d4epeanut, one unicode61 token), so every user's terms are tokens of their own:
a search walks only that user's postings however many users share the file, and another
user's rows cannot match at all. The FTS5 tables are contentless (the base tables keep
the plain terms).

Beside each FTS5 table a plain table counts, per user, how many rows hold each term, and
under the empty term how many rows the user has. These are the document frequencies for
IDF and for choosing which of a message's terms are worth searching, read by primary
key: FTS5's own fts5vocab counts them by walking postings, which grows with history.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

ALL = ""
"""The term under which a user's row count is kept (no real term is empty)."""


@dataclass(frozen=True, slots=True)
class TermIndex:
    fts: str
    """The contentless FTS5 table (rowid = the base table's id)."""
    counts: str
    """The (user_id, term, docs) table."""


OBSERVATIONS = TermIndex(fts="observation_fts", counts="observation_terms")
MEMORIES = TermIndex(fts="memory_fts", counts="memory_terms")

SCHEMA = [
    statement
    for index in (OBSERVATIONS, MEMORIES)
    for statement in (
        f"CREATE VIRTUAL TABLE {index.fts} USING fts5 "
        "(terms, content='', tokenize='unicode61 remove_diacritics 0')",
        f"CREATE TABLE {index.counts} (user_id TEXT NOT NULL, term TEXT NOT NULL, "
        "docs INTEGER NOT NULL, PRIMARY KEY (user_id, term)) WITHOUT ROWID",
    )
]


def user_key(user_id: str) -> str:
    return hashlib.sha256(user_id.encode()).hexdigest()[:12]


def match_any(user_id: str, words: Iterable[str]) -> str:
    """An FTS5 query for the user's rows holding any of `words` (quoted: never syntax)."""
    key = user_key(user_id)
    return " OR ".join(f'"{key}{word}"' for word in dict.fromkeys(words))


def add(conn: sqlite3.Connection, index: TermIndex, user_id: str, rowid: int, words: list[str]) -> None:
    """Index one row's terms for the user (call inside the transaction that inserts the row)."""
    key = user_key(user_id)
    conn.execute(
        f"INSERT INTO {index.fts} (rowid, terms) VALUES (?, ?)",  # noqa: S608 (table names are constants)
        (rowid, " ".join(key + word for word in words)),
    )
    conn.executemany(
        f"INSERT INTO {index.counts} (user_id, term, docs) VALUES (?, ?, 1) "  # noqa: S608
        "ON CONFLICT (user_id, term) DO UPDATE SET docs = docs + 1",
        [(user_id, term) for term in {ALL, *words}],
    )


def frequencies(
    conn: sqlite3.Connection, index: TermIndex, user_id: str, words: Iterable[str]
) -> dict[str, int]:
    """How many of the user's rows hold each of `words` (absent: none); ALL gives the row count."""
    wanted = list(set(words))
    found: dict[str, int] = {}
    for start in range(0, len(wanted), 500):  # well under SQLite's bound-parameter limit
        chunk = wanted[start : start + 500]
        found.update(
            conn.execute(
                f"SELECT term, docs FROM {index.counts} WHERE user_id = ? "  # noqa: S608
                f"AND term IN ({','.join('?' * len(chunk))})",
                (user_id, *chunk),
            ).fetchall()
        )
    return found


def rarest(
    words: Iterable[str],
    counts: dict[str, int],
    *,
    at_most: int,
    budget: int | None = None,
    ubiquitous: int | None = None,
) -> list[str]:
    """The rarest of `words` the user has used (per `counts`), fewest rows first.

    At most `at_most` of them and, given a budget, only while their rows add up to it, and
    none held by more than `ubiquitous` rows (the rarest one always): common terms find
    most of a history and say little about it, so searching them costs without helping.
    """
    known = sorted((w for w in set(words) if counts.get(w)), key=lambda w: (counts[w], w))
    chosen: list[str] = []
    total = 0
    for word in known[:at_most]:
        total += counts[word]
        if chosen and (
            (budget is not None and total > budget) or (ubiquitous is not None and counts[word] > ubiquitous)
        ):
            break
        chosen.append(word)
    return chosen
