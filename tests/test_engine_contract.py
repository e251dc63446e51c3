"""The embedded engine, as a real child process over stdio, held to the MBE tool contract.

One engine child serves the whole module (spawning costs about a second); each test uses
its own user ids, so tests cannot see each other's data. Every successful result is
checked against contract.OUTPUT_SCHEMAS, as structured content and as its JSON text.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from mcp import Client, StdioServerParameters

from mbe_gateway import contract

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def _engine(db: Path, env: dict[str, str] | None = None) -> Client:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mbe_gateway.engine", "--db", str(db)], env=env
    )
    return Client(params, read_timeout_seconds=20)


@pytest.fixture(scope="module")
def engine_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine") / "data" / "engine.sqlite3"


@pytest.fixture(scope="module")
async def engine(engine_db: Path) -> AsyncIterator[Client]:
    async with _engine(engine_db) as client:
        yield client


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A successful call's result, after checking it against the tool's output schema."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    payload = result.structured_content
    assert isinstance(payload, dict)
    errors = list(Draft202012Validator(contract.OUTPUT_SCHEMAS[tool]).iter_errors(payload))
    assert errors == [], errors
    texts = [block.text for block in result.content if block.type == "text"]
    assert [json.loads(text) for text in texts] == [payload]  # the same object for text-only clients
    return payload


async def error_of(client: Client, tool: str, arguments: dict[str, Any]) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error
    assert result.structured_content is None
    return " ".join(block.text for block in result.content if block.type == "text")


async def surprise(client: Client, user: str, text: str) -> dict[str, Any]:
    return await call(client, contract.SURPRISE, {"input": text, "context": {"user_id": user}})


# --- the tool list ------------------------------------------------------------------------


async def test_tool_list_is_exactly_the_five_required_tools_with_the_contract_schemas(engine: Client) -> None:
    tools = {tool.name: tool for tool in (await engine.list_tools()).tools}
    assert set(tools) == set(contract.REQUIRED_TOOLS)
    for name, tool in tools.items():
        assert tool.input_schema == contract.INPUT_SCHEMAS[name]
        assert tool.output_schema == contract.OUTPUT_SCHEMAS[name]
        assert tool.description


async def test_every_tool_answers_a_new_user_within_its_output_schema(engine: Client) -> None:
    user = "schema-check"
    await surprise(engine, user, "hello there")
    hinted = {"input": "hello there", "user_profile": {"user_id": user, "tier": "gold"}, "hint": "x"}
    await call(engine, contract.ROUTE, hinted)  # fields the engine does not know are ignored
    await call(
        engine, contract.MEMORY_WRITE, {"user_id": user, "memory_type": "episodic", "content": {"a": 1}}
    )
    await call(engine, contract.MEMORY_READ, {"user_id": user, "query": "1"})
    await call(engine, contract.ANALYZE_LEARNING, {"user_id": user})
    parsed = contract.parse_learning(await call(engine, contract.ANALYZE_LEARNING, {"user_id": user}))
    assert parsed.total_interactions == 1


# --- mbe_surprise ---------------------------------------------------------------------------

MESSAGES = {
    "en": ("How long should I boil an egg for a runny yolk?", "Explain how interest rates affect bonds"),
    "zh": ("今天晚上想吃红烧肉，怎么做比较好吃", "量子计算机和普通电脑有什么区别"),
    "mixed": ("帮我看看这段Python代码为什么报错", "周末想去hiking，推荐一条easy的trail"),
}


@pytest.mark.parametrize("language", MESSAGES)
async def test_new_message_is_novel_and_its_repeat_is_not(engine: Client, language: str) -> None:
    user = f"repeat-{language}"
    first, other = MESSAGES[language]
    new = await surprise(engine, user, first)
    assert new["is_novel"] is True
    assert new["surprise_score"] >= 0.9
    assert new["learning_mode"] == "explore"

    repeat = await surprise(engine, user, first)
    assert repeat["is_novel"] is False
    assert repeat["surprise_score"] == 0.0
    assert repeat["learning_mode"] == "reinforce"

    unrelated = await surprise(engine, user, other)
    assert unrelated["is_novel"] is True


REWORDINGS = {
    "en": ("how long do I boil an egg", "how long should eggs boil for a soft yolk"),
    "zh": ("我想学做红烧肉", "红烧肉怎么做"),
    "mixed": ("帮我看看这段Python代码为什么报错", "这段python代码还是报错"),
}


@pytest.mark.parametrize("language", REWORDINGS)
async def test_reworded_message_is_less_surprising_than_a_new_one_but_not_a_repeat(
    engine: Client, language: str
) -> None:
    user = f"reworded-{language}"
    said, reworded = REWORDINGS[language]
    await surprise(engine, user, said)
    near = await surprise(engine, user, reworded)
    assert 0.1 < near["surprise_score"] < 0.6
    assert near["is_novel"] is False
    assert near["learning_mode"] != "explore"


async def test_what_one_user_said_is_still_new_to_another(engine: Client) -> None:
    await surprise(engine, "alice-surprise", "my sourdough starter smells like nail polish")
    for_bob = await surprise(engine, "bob-surprise", "my sourdough starter smells like nail polish")
    assert for_bob["is_novel"] is True
    assert for_bob["surprise_score"] == 1.0


# --- mbe_route ------------------------------------------------------------------------------

ROUTES = {
    "en": ("How long do I boil an egg?", "hmm ok", "Chef", "General assistant"),
    "zh": ("煮鸡蛋要煮多久？", "嗯嗯好的", "厨师", "通用助手"),
}


@pytest.mark.parametrize("language", ROUTES)
async def test_cooking_question_routes_to_the_chef_more_confidently_than_a_vague_message(
    engine: Client, language: str
) -> None:
    cooking, vague, chef, general = ROUTES[language]
    clear = await call(engine, contract.ROUTE, {"input": cooking})
    unclear = await call(engine, contract.ROUTE, {"input": vague})

    assert clear["selected_experts"][0] == {
        "id": "cooking",
        "name": chef,
        "score": pytest.approx(0.83, abs=0.1),
    }
    assert clear["routing_confidence"] >= 0.6
    assert unclear["selected_experts"][0]["id"] == "general"
    assert unclear["selected_experts"][0]["name"] == general
    assert unclear["routing_confidence"] <= 0.2
    assert [e["score"] for e in clear["selected_experts"]] == sorted(
        (e["score"] for e in clear["selected_experts"]), reverse=True
    )


async def test_what_do_you_think_falls_back_to_the_general_expert(engine: Client) -> None:
    routing = contract.parse_routing(await call(engine, contract.ROUTE, {"input": "what do you think?"}))
    assert routing.top is not None
    assert routing.top.id == "general"
    assert routing.routing_confidence < 0.2


async def test_two_equally_fitting_experts_make_the_routing_less_confident(engine: Client) -> None:
    one = await call(engine, contract.ROUTE, {"input": "is it legal to break my lease early"})
    two = await call(engine, contract.ROUTE, {"input": "I feel so anxious about my job interview"})
    assert {e["id"] for e in two["selected_experts"][:2]} == {"wellbeing", "career"}
    assert two["routing_confidence"] < one["routing_confidence"]


# --- mbe_memory_write / mbe_memory_read -----------------------------------------------------

RECALL = {
    "en": ("I'm allergic to peanuts", "what foods should I avoid? peanut allergy"),
    "zh": ("我对花生过敏", "花生能吃吗"),
    "mixed": ("我在学Python，想做数据分析", "learning python 数据分析 入门"),
}


async def remember(client: Client, user: str, text: str, **extra: Any) -> str:
    arguments = {"user_id": user, "memory_type": "semantic", "content": {"text": text}, **extra}
    return contract.parse_memory_id(await call(client, contract.MEMORY_WRITE, arguments))


async def recall(client: Client, user: str, query: str, **extra: Any) -> contract.MemoryPage:
    arguments = {"user_id": user, "query": query, **extra}
    return contract.parse_memory_page(await call(client, contract.MEMORY_READ, arguments))


@pytest.mark.parametrize("language", RECALL)
async def test_memory_is_found_by_a_differently_worded_query_and_never_by_another_user(
    engine: Client, language: str
) -> None:
    fact, question = RECALL[language]
    owner, stranger = f"recall-{language}", f"stranger-{language}"
    await remember(engine, owner, "My cat is called Mochi")
    wanted = await remember(engine, owner, fact)
    await remember(engine, stranger, "I like the sea")

    found = await recall(engine, owner, question)
    assert found.memories[0].id == wanted
    assert found.memories[0].content == {"text": fact}
    assert found.memories[0].memory_type == "semantic"
    assert found.memories[0].created_at.endswith("Z")

    not_theirs = await recall(engine, stranger, question)
    assert wanted not in {m.id for m in not_theirs.memories}
    assert not_theirs.total_count == 1


async def test_total_count_and_memory_type_filter(engine: Client) -> None:
    user = "counting"
    for i in range(3):
        await remember(engine, user, f"preference number {i}", memory_type="preference")
    await remember(engine, user, "an episode", memory_type="episodic")

    everything = await recall(engine, user, "", top_k=2)
    assert everything.total_count == 4
    assert len(everything.memories) == 2

    preferences = await recall(engine, user, "preference", memory_type="preference", top_k=10)
    assert preferences.total_count == 3
    assert {m.memory_type for m in preferences.memories} == {"preference"}
    assert len(preferences.memories) == 3

    episodes = await recall(engine, user, "preference", memory_type="episodic")
    assert episodes.total_count == 1
    assert episodes.memories == ()


async def test_empty_query_gives_the_most_important_memories_first(engine: Client) -> None:
    user = "importance"
    await remember(engine, user, "minor detail", importance=0.1)
    key = await remember(engine, user, "life-changing news", importance=1.0)
    await remember(engine, user, "ordinary thing", importance=0.5)
    page = await recall(engine, user, "")
    assert page.memories[0].id == key
    assert [m.score for m in page.memories] == sorted((m.score for m in page.memories), reverse=True)


async def test_nested_content_values_are_searchable(engine: Client) -> None:
    user = "nested"
    content = {"fact": {"who": "dentist", "when": ["Tuesday", 3]}, "flag": True}
    arguments = {"user_id": user, "memory_type": "episodic", "content": content, "importance": 0.7}
    memory_id = contract.parse_memory_id(await call(engine, contract.MEMORY_WRITE, arguments))
    page = await recall(engine, user, "when is the dentist?")
    assert page.memories[0].id == memory_id
    assert page.memories[0].content == content
    assert page.memories[0].importance == 0.7


# --- mbe_analyze_learning -------------------------------------------------------------------


async def test_learning_summary_figures_add_up(engine: Client) -> None:
    user = "learner"
    said = ["how do I boil an egg", "how do I boil an egg", "best pasta sauce", "how do I boil an egg"]
    scores = [(await surprise(engine, user, text))["surprise_score"] for text in said]
    for text in ["how long do I boil an egg", "煮鸡蛋要多久", "hmm ok"]:
        await call(engine, contract.ROUTE, {"input": text, "user_profile": {"user_id": user}})
    await remember(engine, user, "likes eggs")

    summary = contract.parse_learning(await call(engine, contract.ANALYZE_LEARNING, {"user_id": user}))
    assert summary.total_interactions == len(said)
    assert summary.novel_count == sum(1 for s in scores if s >= 0.6) == 2
    assert summary.novelty_ratio == pytest.approx(summary.novel_count / summary.total_interactions)
    assert summary.average_surprise == pytest.approx(sum(scores) / len(scores), abs=1e-4)
    assert summary.trend == "insufficient_data"
    assert summary.total_memories == 1
    assert summary.window_days == 30
    assert summary.top_experts[0] == contract.ExpertUse(id="cooking", name="厨师", count=2)
    assert summary.top_experts[1] == contract.ExpertUse(id="general", name="General assistant", count=1)


async def test_learning_summary_of_an_unknown_user_is_empty(engine: Client) -> None:
    summary = contract.parse_learning(
        await call(engine, contract.ANALYZE_LEARNING, {"user_id": "nobody", "window_days": 7})
    )
    assert (summary.total_interactions, summary.novel_count, summary.total_memories) == (0, 0, 0)
    assert (summary.average_surprise, summary.novelty_ratio) == (0.0, 0.0)
    assert summary.top_experts == ()
    assert summary.window_days == 7


# --- bad calls -------------------------------------------------------------------------------

U = "mischief"
INVALID = [
    (contract.SURPRISE, {}, "'input' is a required property"),
    (contract.SURPRISE, {"input": "", "context": {"user_id": U}}, "input"),
    (contract.SURPRISE, {"input": 42, "context": {"user_id": U}}, "input"),
    (contract.SURPRISE, {"input": "hi"}, "'context' is a required property"),
    (contract.SURPRISE, {"input": "hi", "context": {"user_id": ""}}, "context/user_id"),
    (
        contract.ROUTE,
        {"input": "hi", "user_profile": {"user_id": U, "surprise_score": 1.5}},
        "surprise_score",
    ),
    (
        contract.MEMORY_WRITE,
        {"user_id": U, "memory_type": "semantic", "content": {}, "importance": 2},
        "importance",
    ),
    (contract.MEMORY_WRITE, {"user_id": U, "memory_type": "Not A Type", "content": {}}, "memory_type"),
    (contract.MEMORY_WRITE, {"user_id": U, "memory_type": "semantic\n", "content": {}}, "memory_type"),
    (contract.MEMORY_WRITE, {"user_id": U, "memory_type": "semantic", "content": "text"}, "content"),
    (
        contract.MEMORY_WRITE,
        {"user_id": U, "memory_type": "semantic", "content": {"t": "x" * 70_000}},
        "limit",
    ),
    (contract.MEMORY_READ, {"user_id": U, "query": "x", "top_k": 0}, "top_k"),
    (contract.MEMORY_READ, {"user_id": U, "query": "x", "top_k": "5"}, "top_k"),
    (contract.ANALYZE_LEARNING, {"user_id": U, "window_days": 0}, "window_days"),
    ("mbe_generate", {"prompt": "hi"}, "unknown tool"),
]


@pytest.mark.parametrize(("tool", "arguments", "mentions"), INVALID)
async def test_invalid_arguments_get_a_clear_error_and_write_nothing(
    engine: Client, tool: str, arguments: dict[str, Any], mentions: str
) -> None:
    message = await error_of(engine, tool, arguments)
    assert mentions in message
    assert len(message) < 400
    summary = await call(engine, contract.ANALYZE_LEARNING, {"user_id": U})
    assert (summary["total_interactions"], summary["total_memories"], summary["top_experts"]) == (0, 0, [])


# --- the process and its file -----------------------------------------------------------------


async def test_database_is_private_wal_and_in_a_directory_the_engine_created(
    engine_db: Path, engine: Client
) -> None:
    await surprise(engine, "file-check", "hello")
    assert engine_db.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(engine_db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_memories_and_history_survive_an_engine_restart(tmp_path: Path) -> None:
    db = tmp_path / "engine.sqlite3"
    async with _engine(db) as first:
        await surprise(first, "persistent", "remember the milk")
        memory_id = await remember(first, "persistent", "我对花生过敏")
    async with _engine(db) as second:
        assert (await surprise(second, "persistent", "remember the milk"))["is_novel"] is False
        page = await recall(second, "persistent", "花生能吃吗")
        assert [m.id for m in page.memories] == [memory_id]


async def test_a_replacement_expert_catalog_from_the_environment_is_used(tmp_path: Path) -> None:
    catalog = {
        "experts": [
            {"id": "general", "name_en": "Anyone", "name_zh": "任何人", "description": "fallback"},
            {
                "id": "gardening",
                "name_en": "Gardener",
                "name_zh": "园丁",
                "description": "plants",
                "keywords_en": ["tomato", "seedling"],
                "keywords_zh": ["番茄"],
            },
        ]
    }
    path = tmp_path / "experts.json"
    path.write_text(json.dumps(catalog), encoding="utf-8")
    async with _engine(tmp_path / "engine.sqlite3", env={"MBE_ENGINE_EXPERTS": str(path)}) as client:
        routing = await call(client, contract.ROUTE, {"input": "番茄苗发黄了怎么办"})
    assert routing["selected_experts"][0] == {
        "id": "gardening",
        "name": "园丁",
        "score": pytest.approx(0.59, abs=0.01),
    }


def _start_and_fail(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mbe_gateway.engine", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_bad_expert_catalog_stops_the_engine_at_start_with_a_clear_message(tmp_path: Path) -> None:
    catalog = tmp_path / "experts.json"
    catalog.write_text('{"experts": [{"id": "cooking", "name_en": "Chef"}]}', encoding="utf-8")
    done = _start_and_fail("--db", str(tmp_path / "e.sqlite3"), "--experts", str(catalog))
    assert done.returncode == 2
    assert str(catalog) in done.stderr
    assert "cooking" in done.stderr
    assert done.stdout == ""


def test_a_file_that_is_not_a_database_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    db = tmp_path / "engine.sqlite3"
    db.write_bytes(b"these are my notes, not a database" * 100)
    before = db.read_bytes()
    done = _start_and_fail("--db", str(db))
    assert done.returncode == 2
    assert "not a usable engine database" in done.stderr
    assert db.read_bytes() == before
