"""The engine's per-call shortcuts give exactly what the slower ways gave.

Argument checking by compiled predicates (schema_check.py) against jsonschema itself,
results as plain dicts against `dataclasses.asdict`, keyword matching by word runs
against what a keyword is: a run of whole words in the message.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from mbe_gateway import contract
from mbe_gateway.engine import learning, memory, routing, surprise
from mbe_gateway.engine.catalog import load_catalog, parse_catalog
from mbe_gateway.engine.schema_check import compile_check
from mbe_gateway.engine.server import _as_dict
from mbe_gateway.engine.store import open_db
from mbe_gateway.engine.text import normalize, terms

# --- argument checks --------------------------------------------------------------------------

NAMES = ["a", "b", "user_id"]
TYPES = ["object", "array", "string", "boolean", "null", "number", "integer"]
PATTERNS = ["^[a-z][a-z0-9_]{0,3}$", "b", "^x", "\\d"]

bounds = st.one_of(st.integers(-3, 3), st.floats(-3, 3, allow_nan=False).map(lambda x: round(x, 1)))
leaf_keywords = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(st.sampled_from(TYPES), st.lists(st.sampled_from(TYPES), min_size=1, max_size=3)),
        "minLength": st.integers(0, 4),
        "maxLength": st.integers(0, 4),
        "minimum": bounds,
        "maximum": bounds,
        "pattern": st.sampled_from(PATTERNS),
        "required": st.lists(st.sampled_from(NAMES), max_size=3, unique=True),
        "description": st.text(max_size=5),
        "default": st.integers(),
    },
)
schemas = st.recursive(
    leaf_keywords,
    lambda inner: st.tuples(leaf_keywords, st.dictionaries(st.sampled_from(NAMES), inner, max_size=3)).map(
        lambda pair: {**pair[0], "properties": pair[1]}
    ),
    max_leaves=6,
)
values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-5, 5),
        st.floats(-5, 5, allow_nan=False).map(lambda x: round(x, 1)),
        st.integers(-5, 5).map(float),  # 3.0 is an "integer" in JSON Schema
        st.text(alphabet="abx9_ \n", max_size=6),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from([*NAMES, "other"]), inner, max_size=4)
    ),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(schema=schemas, value=values)
@example(schema={"type": "integer"}, value=3.0)  # the corners where Python and JSON Schema differ
@example(schema={"type": "number"}, value=True)
@example(schema={"maximum": 1}, value=True)
@example(schema={"pattern": "^[a-z]+$"}, value="abc\n")
@example(schema={"maxLength": 2}, value="花生")
def test_a_compiled_check_accepts_exactly_what_jsonschema_accepts(schema: dict[str, Any], value: Any) -> None:
    check = compile_check(schema)
    assert check is not None
    assert check(value) == Draft202012Validator(schema).is_valid(value)


@pytest.mark.parametrize("tool", contract.REQUIRED_TOOLS)
def test_every_tool_input_schema_is_compiled(tool: str) -> None:
    assert compile_check(contract.INPUT_SCHEMAS[tool]) is not None


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "array", "items": {"type": "string"}},
        {"type": "object", "properties": {"a": {"enum": [1, 2]}}},
        {"properties": {"a": True}},
        {"type": "decimal"},
        {"anyOf": [{"type": "string"}]},
    ],
)
def test_a_schema_with_a_keyword_not_covered_is_left_to_jsonschema(schema: dict[str, Any]) -> None:
    assert compile_check(schema) is None


# --- results ----------------------------------------------------------------------------------


def test_results_are_sent_exactly_as_dataclasses_asdict_would_give_them(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "engine.sqlite3")
    catalog = load_catalog()
    now = time.time()
    try:
        results: list[Any] = [
            surprise.observe(conn, user_id="u", text="how do I boil an egg", now=now),
            routing.route(
                conn,
                catalog,
                text="how do I boil an egg",
                task_type="chat",
                user_id="u",
                surprise=0.2,
                now=now,
            ),
        ]
        content = {"text": "我对花生过敏", "tags": ["food", {"severity": 3}]}
        memory.write(conn, user_id="u", memory_type="semantic", content=content, importance=0.9, now=now)
        results.append(memory.read(conn, user_id="u", query="花生", top_k=5, memory_type=None, now=now))
        results.append(learning.analyze(conn, user_id="u", window_days=30, now=now))
    finally:
        conn.close()
    assert results[2].memories and results[3].top_experts  # nested results, not empty ones
    for result in results:
        plain = _as_dict(result)
        assert plain == dataclasses.asdict(result)
        assert json.dumps(plain) == json.dumps(dataclasses.asdict(result))


# --- keyword matching -------------------------------------------------------------------------


def test_a_word_keyword_matches_only_as_a_run_of_whole_words_in_order() -> None:
    document = {
        "experts": [
            {"id": "general", "name_en": "Anyone", "name_zh": "任何人", "description": "fallback"},
            {
                "id": "money",
                "name_en": "Banker",
                "name_zh": "银行家",
                "description": "cards",
                "keywords_en": ["lost credit card pin"],
            },
        ]
    }
    catalog = parse_catalog(json.dumps(document), "test catalog")
    assert catalog.longest_keyword == 4

    def fits(text: str) -> bool:
        runs = routing.word_runs(terms(text), catalog.longest_keyword)
        return routing.evidence(catalog.experts[1], normalize(text), runs) > 0

    assert fits("I lost my new credit card pin") is False
    assert fits("help: Lost credit cards PIN!") is True  # stemmed, case-folded
    assert fits("pin card credit lost") is False
    assert fits("lost credit card") is False
