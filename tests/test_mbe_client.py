"""The MBE client on a good day: typed round trips over real stdio (and HTTP), in parallel.

Every server here is a real child process (tests/mbe_servers/well_behaved.py, or the
embedded engine) or a real streamable-HTTP server on 127.0.0.1. One client is shared by
the module, since starting a Python MCP server costs about a second.
"""

from __future__ import annotations

import logging
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn

from mbe_gateway import contract
from mbe_gateway.errors import MBEUnavailable
from mbe_gateway.mbe import HttpServer, MBEClient, StdioServer, embedded_engine
from mbe_servers.well_behaved import build

WELL_BEHAVED = Path(__file__).parent / "mbe_servers" / "well_behaved.py"
ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


def well_behaved(*flags: str, **options: Any) -> StdioServer:
    return StdioServer((sys.executable, str(WELL_BEHAVED), *flags), **options)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mbe-home")


@pytest.fixture(scope="module")
async def mbe(module_home: Path) -> AsyncIterator[MBEClient]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MBE_TEST_PASSED", "passed through")
        env.setenv("MBE_TEST_WITHHELD", "kept back")
        server = well_behaved(pass_env=("MBE_TEST_PASSED",), env={"MBE_TEST_GIVEN": "given"})
        async with MBEClient(server, home=module_home) as client:
            await client.wait_ready(30)
            yield client


@pytest.mark.anyio
async def test_a_remembered_message_is_found_again_and_is_no_longer_novel(mbe: MBEClient) -> None:
    first = await mbe.surprise("I adopted a cat named Miso", user_id="ada", channel="telegram")
    assert first == contract.Surprise(surprise_score=0.9, is_novel=True, learning_mode="explore")

    memory_id = await mbe.memory_write("ada", "episodic", {"text": "I adopted a cat named Miso"}, 0.95)
    page = await mbe.memory_read("ada", "miso")

    assert [m.id for m in page.memories] == [memory_id]
    assert page.memories[0].content == {"text": "I adopted a cat named Miso"}
    assert page.memories[0].importance == 0.95
    assert page.memories[0].memory_type == "episodic"
    assert page.total_count == 1
    again = await mbe.surprise("I adopted a cat named Miso", user_id="ada")
    assert again.is_novel is False
    assert again.surprise_score < first.surprise_score


@pytest.mark.anyio
async def test_routing_and_learning_come_back_as_typed_values(mbe: MBEClient) -> None:
    profile = {"user_id": "bo", "surprise_score": 0.4}
    routing = await mbe.route("how long do I boil an egg?", user_profile=profile)
    assert routing.top == contract.Expert(id="general", name="Generalist", score=0.8)
    assert routing.routing_confidence == 0.8

    await mbe.memory_write("bo", "episodic", {"text": "boiled an egg"})
    learning = await mbe.analyze_learning("bo", window_days=7)
    assert learning.total_interactions == 1
    assert learning.window_days == 7
    assert learning.trend == "insufficient_data"
    assert learning.top_experts == (contract.ExpertUse(id="general", name="Generalist", count=1),)


@pytest.mark.anyio
async def test_generate_answers_when_the_server_offers_it(mbe: MBEClient) -> None:
    assert mbe.offers(contract.GENERATE)
    generation = await mbe.generate(
        "tell me a joke",
        system_prompt="be brief",
        temperature=0.2,
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
    )
    assert generation == contract.Generation(
        content="echo: tell me a joke", model="echo-1", prompt_tokens=4, completion_tokens=2
    )


@pytest.mark.anyio
async def test_many_calls_are_in_flight_at_once_over_one_session(mbe: MBEClient) -> None:
    """Ten calls that each take half a second on the server finish together, not in turn."""
    pid = mbe.pid
    results: list[contract.Surprise] = []

    async def slow_call() -> None:
        results.append(await mbe.surprise("please wait", user_id="cy"))

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(slow_call)
    elapsed = time.monotonic() - started

    assert len(results) == 10
    assert elapsed < 2.5, f"10 half-second calls took {elapsed:.2f} s: they did not overlap"
    assert mbe.pid == pid


@pytest.mark.anyio
async def test_surprise_and_memory_read_run_side_by_side_as_the_pipeline_runs_them(mbe: MBEClient) -> None:
    await mbe.memory_write("di", "preference", {"text": "likes green tea"})
    async with anyio.create_task_group() as tg:
        found: dict[str, Any] = {}

        async def surprise() -> None:
            found["surprise"] = await mbe.surprise("what tea do I like?", user_id="di")

        async def recall() -> None:
            found["memories"] = await mbe.memory_read("di", "tea", memory_type="preference")

        tg.start_soon(surprise)
        tg.start_soon(recall)
    assert found["surprise"].is_novel is True
    assert [m.content["text"] for m in found["memories"].memories] == ["likes green tea"]


@pytest.mark.anyio
async def test_only_the_chosen_environment_reaches_the_child(mbe: MBEClient, module_home: Path) -> None:
    names = ["MBE_TEST_PASSED", "MBE_TEST_WITHHELD", "MBE_TEST_GIVEN", "MBE_GATEWAY_HOME", "PATH"]
    seen = await mbe.call("debug_env", {"names": names})
    assert seen["MBE_TEST_PASSED"] == "passed through"
    assert seen["MBE_TEST_WITHHELD"] is None
    assert seen["MBE_TEST_GIVEN"] == "given"
    assert seen["MBE_GATEWAY_HOME"] == str(module_home)
    assert seen["PATH"]


@pytest.mark.anyio
async def test_the_childs_stderr_goes_to_a_log_file_in_the_data_dir(
    mbe: MBEClient, module_home: Path
) -> None:
    errlog = module_home / "logs" / "mbe-server.log"
    assert mbe.errlog == errlog
    text = errlog.read_text()
    assert "starting well_behaved.py" in text
    assert "well-behaved MBE starting" in text


@pytest.mark.anyio
async def test_answers_given_only_as_json_text_are_understood(tmp_path: Path) -> None:
    async with MBEClient(well_behaved("--text-only"), home=tmp_path) as mbe:
        await mbe.wait_ready(30)
        memory_id = await mbe.memory_write("ed", "semantic", {"text": "the sky is blue"})
        page = await mbe.memory_read("ed", "sky")
        surprise = await mbe.surprise("hello", user_id="ed")
    assert [m.id for m in page.memories] == [memory_id]
    assert surprise.is_novel is True


@pytest.mark.anyio
async def test_fields_the_contract_does_not_know_are_ignored(tmp_path: Path) -> None:
    async with MBEClient(well_behaved("--extra-fields"), home=tmp_path) as mbe:
        await mbe.wait_ready(30)
        surprise = await mbe.surprise("hello", user_id="fi")
        routing = await mbe.route("hello")
        await mbe.memory_write("fi", "episodic", {"text": "hello there"})
        page = await mbe.memory_read("fi", "hello")
        learning = await mbe.analyze_learning("fi")
    assert surprise.surprise_score == 0.9
    assert routing.top is not None and routing.top.id == "general"
    assert page.memories[0].content == {"text": "hello there"}
    assert learning.total_memories == 1


# --- streamable HTTP -------------------------------------------------------------------------


@asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a free loopback port; yields the MCP endpoint's URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        while not server.started:
            await anyio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            server.should_exit = True


@pytest.fixture
def every_log_record() -> Iterator[list[logging.LogRecord]]:
    """All records, from the root and from mbe_gateway (other tests may stop its propagation)."""
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler, loggers = Keep(logging.DEBUG), [logging.getLogger(), logging.getLogger("mbe_gateway")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield seen
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.mark.anyio
async def test_a_remote_mbe_over_http_gets_the_api_key_as_a_bearer_header(
    tmp_path: Path, every_log_record: list[logging.LogRecord]
) -> None:
    mcp_app = build().streamable_http_app()
    authorizations: list[str | None] = []

    async def recording(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            authorizations.append(dict(scope["headers"]).get(b"authorization", b"").decode() or None)
        await mcp_app(scope, receive, send)

    async with serving(recording) as url:
        server = HttpServer(url, api_key="sk-remote-0123456789abcdef")
        assert "sk-remote" not in repr(server)
        async with MBEClient(server, home=tmp_path) as mbe:
            await mbe.wait_ready(15)
            assert mbe.pid is None
            memory_id = await mbe.memory_write("gu", "episodic", {"text": "over the wire"})
            page = await mbe.memory_read("gu", "wire")
            surprise = await mbe.surprise("over the wire", user_id="gu")

    assert [m.id for m in page.memories] == [memory_id]
    assert surprise.is_novel is False
    assert authorizations, "the server saw no request"
    assert set(authorizations) == {"Bearer sk-remote-0123456789abcdef"}
    assert every_log_record, "nothing was logged, so nothing was checked"
    for record in every_log_record:
        assert "0123456789abcdef" not in record.getMessage() + repr(record.__dict__)


@pytest.mark.anyio
async def test_a_remote_mbe_that_cannot_be_reached_is_unavailable_with_a_clear_message(
    tmp_path: Path,
) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with MBEClient(HttpServer(f"http://user:pw@127.0.0.1:{port}/mcp?token=t"), home=tmp_path) as mbe:
        with pytest.raises(MBEUnavailable, match="not ready") as caught:
            await mbe.wait_ready(1.0)
    message = str(caught.value)
    assert f"cannot reach MBE at http://127.0.0.1:{port}/mcp" in message
    assert "pw" not in message and "token" not in message


@pytest.mark.anyio
async def test_an_error_inside_the_client_block_comes_out_as_it_is(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="from the body"):
        async with MBEClient(StdioServer(("/nonexistent/bin/mbe",)), home=tmp_path):
            raise KeyError("from the body")


# --- the real embedded engine -------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_embedded_engine_answers_every_required_tool(tmp_path: Path) -> None:
    async with MBEClient(embedded_engine(tmp_path / "engine.sqlite3"), home=tmp_path) as mbe:
        await mbe.wait_ready(30)
        first = await mbe.surprise("I love cooking pasta with garlic", user_id="hu", channel="cli")
        routing = await mbe.route("how do I cook pasta al dente?", user_profile={"user_id": "hu"})
        memory_id = await mbe.memory_write("hu", "episodic", {"text": "cooked pasta with garlic"}, 0.8)
        page = await mbe.memory_read("hu", "pasta")
        learning = await mbe.analyze_learning("hu")
        again = await mbe.surprise("I love cooking pasta with garlic", user_id="hu")

    assert first.is_novel is True
    assert again.surprise_score < first.surprise_score
    assert routing.top is not None and routing.top.id == "cooking"
    assert memory_id in [m.id for m in page.memories]
    assert learning.total_interactions >= 1
    assert (tmp_path / "engine.sqlite3").exists()
