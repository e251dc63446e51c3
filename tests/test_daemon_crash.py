"""Stopping and crashing `mbe-gateway run`, as real processes: nothing a user wrote is lost,
and nothing is answered twice.

Each test runs the daemon as `python -m mbe_gateway run` against the fake Telegram and a fake
OpenAI-compatible model, stops it with a signal or kill -9 (the daemon or its engine child),
and looks at what Telegram received and what reached the engine's database.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process

from fake_llm_servers import FakeLLM, Hang, serve_fake_llm
from fakes.telegram import FakeTelegram, serve_fake_telegram, server_error

REPLY = "Hello from the fake model."


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeTelegram, FakeLLM]]:
    async with serve_fake_telegram() as telegram, serve_fake_llm() as llm:
        yield telegram, llm


def _config(path: Path, telegram: FakeTelegram, llm: FakeLLM, *, drain_seconds: float = 10) -> Path:
    path.write_text(
        f"[gateway]\ndrain_seconds = {drain_seconds}\n"
        "[[llm.providers]]\n"
        f'kind = "openai"\nbase_url = "{llm.openai_url}"\nmodel = "m"\n'
        "[channels.telegram]\n"
        f'enabled = true\ntoken = "secret:telegram_token"\napi_base = "{telegram.api_base}"\n'
        'dm_policy = "open"\n'
    )
    return path


def _command(config: Path) -> list[str]:
    return [sys.executable, "-m", "mbe_gateway", "--config", str(config), "run"]


@asynccontextmanager
async def _daemon(config: Path, telegram: FakeTelegram) -> AsyncIterator[Process]:
    """A running daemon, polling Telegram; killed if the test leaves it running."""
    env = {**os.environ, "MBE_GATEWAY_SECRET_TELEGRAM_TOKEN": telegram.token}
    polls = len(telegram.polls)
    async with await anyio.open_process(_command(config), env=env) as daemon:
        try:
            await telegram.wait_for(lambda: len(telegram.polls) > polls, timeout=30)
            yield daemon
        finally:
            if daemon.returncode is None:
                daemon.kill()


async def _stop(daemon: Process) -> int:
    daemon.send_signal(signal.SIGTERM)
    with anyio.fail_after(25):
        return await daemon.wait()


async def _until(predicate: Callable[[], object], timeout: float) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


def _engine_children(daemon: Process) -> list[int]:
    """The pids of the daemon's children running the embedded engine (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        parent = int(stat.rpartition(")")[2].split()[1])
        if parent == daemon.pid and b"mbe_gateway.engine" in cmdline:
            found.append(int(entry.name))
    return found


def _outbox_waiting_for_retry(home: Path) -> bool:
    """A reply is in the outbox, its first send failed and recorded, waiting for its retry."""
    with sqlite3.connect(home / "gateway.sqlite3") as db:
        return bool(
            db.execute("SELECT 1 FROM outbox WHERE state = 'pending' AND last_error IS NOT NULL").fetchall()
        )


def _memories(home: Path) -> list[str]:
    with sqlite3.connect(home / "engine.sqlite3") as db:
        return [json.dumps(json.loads(content)) for (content,) in db.execute("SELECT content FROM memories")]


@pytest.mark.anyio
async def test_sigterm_while_a_reply_is_written_still_sends_it_once(
    fakes: tuple[FakeTelegram, FakeLLM], tmp_path: Path
) -> None:
    telegram, llm = fakes
    llm.queue(Hang(1.5))  # the model takes 1.5 s over this reply
    async with _daemon(_config(tmp_path / "config.toml", telegram, llm), telegram) as daemon:
        telegram.dm("What goes well with miso soup?")
        await _until(lambda: llm.requests, timeout=20)
        code = await _stop(daemon)
    assert code == 0
    (reply,) = telegram.sent
    assert reply.text.startswith(REPLY)


@pytest.mark.anyio
async def test_a_message_cut_off_by_kill_9_is_answered_once_after_restart(
    fakes: tuple[FakeTelegram, FakeLLM], tmp_path: Path, home: Path
) -> None:
    telegram, llm = fakes
    config = _config(tmp_path / "config.toml", telegram, llm)
    llm.queue(Hang(120))  # the model never answers this daemon
    async with _daemon(config, telegram) as daemon:
        telegram.dm("Is it too late to plant garlic?")
        await _until(lambda: llm.requests, timeout=20)
        daemon.kill()
        await daemon.wait()
    assert telegram.sent == []
    async with _daemon(config, telegram) as daemon:
        (reply,) = await telegram.wait_sent(1, timeout=30)
        await anyio.sleep(1.5)  # a second answer would have come by now
        assert await _stop(daemon) == 0
    assert reply.text.startswith(REPLY)
    assert len(telegram.sent) == 1
    assert any("garlic" in memory for memory in _memories(home))


@pytest.mark.anyio
async def test_a_second_signal_stops_at_once_without_waiting_for_the_model(
    fakes: tuple[FakeTelegram, FakeLLM], tmp_path: Path
) -> None:
    telegram, llm = fakes
    llm.queue(Hang(120))
    config = _config(tmp_path / "config.toml", telegram, llm, drain_seconds=60)
    async with _daemon(config, telegram) as daemon:
        telegram.dm("How long do I boil an egg?")
        await _until(lambda: llm.requests, timeout=20)
        daemon.send_signal(signal.SIGINT)
        await anyio.sleep(0.3)
        started = anyio.current_time()
        code = await _stop(daemon)
        stopped_in = anyio.current_time() - started
    assert code == 0
    assert stopped_in < 10  # not the 60 s drain
    assert telegram.sent == []  # the next run answers it (see the kill -9 test)


@pytest.mark.anyio
async def test_a_reply_not_yet_sent_when_killed_with_9_is_sent_once_after_restart(
    fakes: tuple[FakeTelegram, FakeLLM], tmp_path: Path, home: Path
) -> None:
    telegram, llm = fakes
    config = _config(tmp_path / "config.toml", telegram, llm)
    # The channel's own quick retries fail too, so the reply waits in the outbox for a later try.
    telegram.fail("sendMessage", *[server_error()] * 4)
    async with _daemon(config, telegram) as daemon:
        telegram.dm("Which wine with raclette?")
        await _until(lambda: _outbox_waiting_for_retry(home), timeout=30)
        daemon.kill()
        await daemon.wait()
    assert telegram.sent == []
    async with _daemon(config, telegram) as daemon:
        (reply,) = await telegram.wait_sent(1, timeout=30)
        await anyio.sleep(1.5)  # a second copy would have come by now
        assert await _stop(daemon) == 0
    assert reply.text.startswith(REPLY)
    assert len(telegram.sent) == 1
    assert len(llm.requests) == 1  # sent from the outbox, not written again


@pytest.mark.anyio
async def test_the_engine_killed_with_9_is_respawned_and_replies_keep_going(
    fakes: tuple[FakeTelegram, FakeLLM], tmp_path: Path, home: Path
) -> None:
    telegram, llm = fakes
    async with _daemon(_config(tmp_path / "config.toml", telegram, llm), telegram) as daemon:
        telegram.dm("I love hiking in the Alps.")
        await telegram.wait_sent(1, timeout=30)
        await _until(lambda: _engine_children(daemon), timeout=10)
        (engine,) = _engine_children(daemon)
        os.kill(engine, signal.SIGKILL)
        telegram.dm("Any advice on crampons for glacier walks?")
        (_, reply) = await telegram.wait_sent(2, timeout=30)
        await _until(lambda: set(_engine_children(daemon)) - {engine}, timeout=30)
        code = await _stop(daemon)
    assert code == 0
    assert reply.text.startswith(REPLY)
    assert any("crampons" in memory for memory in _memories(home))


@pytest.mark.anyio
async def test_a_second_daemon_on_the_same_data_is_refused_and_the_first_keeps_answering(
    fakes: tuple[FakeTelegram, FakeLLM], tmp_path: Path, home: Path
) -> None:
    telegram, llm = fakes
    config = _config(tmp_path / "config.toml", telegram, llm)
    async with _daemon(config, telegram) as first:
        telegram.dm("Hi!")
        await telegram.wait_sent(1, timeout=30)  # by now the first daemon made every file it makes
        before = {p.name for p in home.iterdir()}
        second = await anyio.run_process(_command(config), check=False)
        assert second.returncode == 1
        stderr = second.stderr.decode()
        assert f"another mbe-gateway (pid {first.pid}) is running on {home}" in stderr
        assert len(stderr.strip().splitlines()) == 1
        assert {p.name for p in home.iterdir()} == before
        telegram.dm("Still there?")
        (_, reply) = await telegram.wait_sent(2, timeout=30)
        assert await _stop(first) == 0
    assert reply.text.startswith(REPLY)
