"""The MBE client on a bad day: servers that die, hang, lie, lack tools, or never start.

Each fault is acted out by a real child process (tests/mbe_servers/); the client must
fail the one call that was hit, fast and with the right error, and then be usable again.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mbe_gateway import contract
from mbe_gateway.errors import (
    MBEConnectionLost,
    MBEProtocolError,
    MBETimeout,
    MBEToolError,
    MBEToolMissing,
    MBEUnavailable,
)
from mbe_gateway.mbe import Backoff, MBEClient, StdioServer

WELL_BEHAVED = Path(__file__).parent / "mbe_servers" / "well_behaved.py"
# A fixed half-second pause before each restart, so "down" lasts long enough to observe.
STEADY = Backoff(base=0.5, cap=0.5, jitter=0.0)


def well_behaved(*flags: str) -> StdioServer:
    return StdioServer((sys.executable, str(WELL_BEHAVED), *flags))


def python(code: str) -> StdioServer:
    return StdioServer((sys.executable, "-c", code))


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie awaiting its parent counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def until(condition: Any, within: float = 15.0) -> None:
    with anyio.fail_after(within):
        while not condition():
            await anyio.sleep(0.02)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def warnings_about(self, tool: str) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno == logging.WARNING and getattr(r, "tool", None) == tool]


@pytest.fixture
def records() -> Iterator[Records]:
    """What the client logged (its own handler: other tests may turn off propagation)."""
    logger = logging.getLogger("mbe_gateway.mbe")
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def mbe(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MBEClient]:
    home = tmp_path_factory.mktemp("mbe-faults")
    async with MBEClient(well_behaved(), home=home, call_timeout=5, backoff=STEADY) as client:
        yield client


@pytest.fixture
async def ready(mbe: MBEClient) -> MBEClient:
    """The shared client, ready again after whatever the previous test did to it."""
    await mbe.wait_ready(30)
    return mbe


async def a_normal_call_works(mbe: MBEClient) -> None:
    surprise = await mbe.surprise("hello again", user_id="ok")
    assert 0.0 <= surprise.surprise_score <= 1.0


@pytest.mark.anyio
async def test_a_call_that_hangs_times_out_and_the_next_call_works(ready: MBEClient) -> None:
    pid = ready.pid
    started = time.monotonic()
    hang = {"input": "please hang", "context": {"user_id": "h"}}
    with pytest.raises(MBETimeout, match=r"mbe_surprise took longer than 0\.3 s"):
        await ready.call(contract.SURPRISE, hang, timeout=0.3)
    assert time.monotonic() - started < 1.5
    await a_normal_call_works(ready)
    assert ready.pid == pid, "one timeout must not restart the server"


@pytest.mark.anyio
async def test_a_malformed_answer_is_a_protocol_error_and_the_next_call_works(ready: MBEClient) -> None:
    with pytest.raises(MBEProtocolError, match="is_novel should be true or false"):
        await ready.surprise("please send garbage", user_id="m")
    await a_normal_call_works(ready)


@pytest.mark.anyio
async def test_a_failing_tool_reports_the_servers_own_message(ready: MBEClient) -> None:
    with pytest.raises(MBEToolError, match="the surprise engine is on fire"):
        await ready.surprise("please fail", user_id="f")
    await a_normal_call_works(ready)


@pytest.mark.anyio
async def test_a_call_to_a_tool_the_server_lacks_is_refused_without_asking(ready: MBEClient) -> None:
    with pytest.raises(MBEToolMissing, match="does not offer mbe_dream"):
        await ready.call("mbe_dream", {})


@pytest.mark.anyio
async def test_a_child_that_dies_mid_call_fails_that_call_fast_and_is_respawned(
    ready: MBEClient, records: Records
) -> None:
    old_pid = ready.pid
    assert old_pid is not None
    started = time.monotonic()
    with pytest.raises(MBEConnectionLost, match="went away during mbe_surprise"):
        await ready.surprise("please die", user_id="d")
    assert time.monotonic() - started < 1.0, "the call waited for its timeout instead of failing fast"

    # While it is down (the fixed half-second backoff), calls fail at once.
    await until(lambda: ready.state == "down", within=2)
    started = time.monotonic()
    with pytest.raises(MBEUnavailable, match="down and being restarted"):
        await ready.surprise("anyone there?", user_id="d")
    assert time.monotonic() - started < 0.1

    await ready.wait_ready(30)
    assert ready.pid not in (None, old_pid)
    await a_normal_call_works(ready)
    gone = [r for r in records.records if r.getMessage() == "the MBE server went away"]
    assert [getattr(r, "reason", None) for r in gone] == ["exited with code 70"]


@pytest.mark.anyio
async def test_a_child_that_dies_while_idle_is_noticed_and_respawned_without_any_call(
    ready: MBEClient, records: Records
) -> None:
    old_pid = ready.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)

    await until(lambda: ready.state != "ready", within=2)
    await until(lambda: ready.state == "ready" and ready.pid not in (None, old_pid))
    gone = [r for r in records.records if r.getMessage() == "the MBE server went away"]
    assert [getattr(r, "reason", None) for r in gone] == ["was killed by SIGKILL"]
    await a_normal_call_works(ready)


@pytest.mark.anyio
async def test_a_server_that_stops_answering_is_restarted_after_timeouts_in_a_row(tmp_path: Path) -> None:
    hang = {"input": "please hang", "context": {"user_id": "w"}}
    async with MBEClient(well_behaved(), home=tmp_path, backoff=STEADY, restart_after_timeouts=2) as mbe:
        await mbe.wait_ready(30)
        wedged = mbe.pid
        for _ in range(2):
            with pytest.raises(MBETimeout):
                await mbe.call(contract.SURPRISE, hang, timeout=0.2)
        await until(lambda: mbe.state == "ready" and mbe.pid not in (None, wedged))
        await a_normal_call_works(mbe)
    assert wedged is not None and not alive(wedged)


@pytest.mark.anyio
async def test_a_server_without_generate_warns_once_and_refuses_generate(
    tmp_path: Path, records: Records
) -> None:
    async with MBEClient(well_behaved("--without", "mbe_generate"), home=tmp_path, backoff=STEADY) as mbe:
        await mbe.wait_ready(30)
        assert not mbe.offers(contract.GENERATE)
        with pytest.raises(MBEToolMissing, match="does not offer mbe_generate"):
            await mbe.generate("write me a poem")
        await a_normal_call_works(mbe)

        first = mbe.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)  # a restart must not repeat the warning
        await until(lambda: mbe.state == "ready" and mbe.pid not in (None, first))

    assert len(records.warnings_about(contract.GENERATE)) == 1


@pytest.mark.anyio
async def test_a_server_missing_a_required_tool_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    async with MBEClient(well_behaved("--without", "mbe_route"), home=tmp_path) as mbe:
        started = time.monotonic()
        with pytest.raises(MBEProtocolError, match="does not look like MBE: missing mbe_route"):
            await mbe.wait_ready(30)
        assert time.monotonic() - started < 10, "a server that is not MBE was retried"
        assert mbe.state == "down"
        with pytest.raises(MBEProtocolError, match="missing mbe_route"):
            await mbe.surprise("hello", user_id="r")


@pytest.mark.anyio
async def test_a_command_that_does_not_exist_is_unavailable_with_a_clear_message(tmp_path: Path) -> None:
    server = StdioServer(("/nonexistent/bin/mbe-server", "serve"))
    async with MBEClient(server, home=tmp_path) as mbe:
        with pytest.raises(MBEUnavailable, match="cannot start the MBE server '/nonexistent/bin/mbe-server'"):
            await mbe.wait_ready(5)
        started = time.monotonic()
        with pytest.raises(MBEUnavailable, match=r"No such file or directory; check \[mbe\] command"):
            await mbe.surprise("hello", user_id="n")
        assert time.monotonic() - started < 0.1


@pytest.mark.anyio
async def test_a_server_that_crashes_at_start_is_retried_less_and_less_often(
    tmp_path: Path, records: Records
) -> None:
    crashing = python("import sys; print('ImportError: no module named mbe', file=sys.stderr); sys.exit(3)")
    doubling = Backoff(base=0.05, cap=0.4, jitter=0.0)
    async with MBEClient(crashing, home=tmp_path, backoff=doubling) as mbe:
        with pytest.raises(MBEUnavailable, match="exited with code 3 during startup; its stderr is in"):
            await mbe.wait_ready(1.5)
    waits = [getattr(r, "delay_s", None) for r in records.records if r.getMessage() == "restarting MBE"]
    assert waits[:5] == [0.05, 0.1, 0.2, 0.4, 0.4]
    assert (tmp_path / "logs" / "mbe-server.log").read_text().count("no module named mbe") >= 5


@pytest.mark.anyio
async def test_a_server_that_ran_healthily_is_restarted_after_the_shortest_wait_again(
    tmp_path: Path, records: Records
) -> None:
    forgiving = Backoff(base=0.2, cap=5.0, healthy_after=0.0, jitter=0.0)
    async with MBEClient(well_behaved(), home=tmp_path, backoff=forgiving) as mbe:
        for _ in range(2):
            await mbe.wait_ready(30)
            pid = mbe.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            await until(lambda: mbe.state != "ready", within=2)
        await mbe.wait_ready(30)
    waits = [getattr(r, "delay_s", None) for r in records.records if r.getMessage() == "restarting MBE"]
    assert waits == [0.2, 0.2]


@given(
    base=st.floats(0.01, 10),
    cap=st.floats(0.01, 100),
    attempt=st.integers(0, 10_000),
    jitter=st.floats(0, 1),
)
def test_no_restart_wait_is_longer_than_the_cap_or_the_exponential_bound(
    base: float, cap: float, attempt: int, jitter: float
) -> None:
    bound = min(cap, base * 2.0 ** min(attempt, 32))
    delay = Backoff(base=base, cap=cap, jitter=jitter).delay(attempt)
    assert bound * (1 - jitter) - 1e-9 <= delay <= bound


@pytest.mark.anyio
async def test_a_server_that_never_answers_the_handshake_is_given_up_on_in_time(tmp_path: Path) -> None:
    silent = python("import sys; sys.stdin.read()")  # reads until its stdin closes, says nothing
    async with MBEClient(silent, home=tmp_path, connect_timeout=0.5, backoff=Backoff(base=5, cap=5)) as mbe:
        with pytest.raises(MBEUnavailable, match=r"did not finish the MCP handshake within 0\.5 s"):
            await mbe.wait_ready(1.5)
        await until(lambda: mbe.state == "down", within=2)
        with pytest.raises(MBEUnavailable, match="did not finish the MCP handshake"):
            await mbe.surprise("hello", user_id="s")


@pytest.mark.anyio
async def test_a_call_made_while_the_server_starts_waits_for_it(tmp_path: Path) -> None:
    async with MBEClient(well_behaved(), home=tmp_path) as mbe:
        assert mbe.state == "starting"
        surprise = await mbe.surprise("first words", user_id="early")
    assert surprise.is_novel is True


@pytest.mark.anyio
async def test_closing_the_client_stops_the_child_and_everything_it_started(tmp_path: Path) -> None:
    async with MBEClient(well_behaved(), home=tmp_path) as mbe:
        await mbe.wait_ready(30)
        child = mbe.pid
        grandchild = (await mbe.call("debug_spawn", {"seconds": 60}))["pid"]
        assert child is not None and alive(child) and alive(grandchild)
    assert mbe.state == "closed"
    await until(lambda: not alive(child) and not alive(grandchild), within=5)
    with pytest.raises(MBEUnavailable, match="closed"):
        await mbe.surprise("still there?", user_id="c")
