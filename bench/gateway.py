"""The daemon end to end, as a user runs it, against the floor and DESIGN.md's table.

    python bench/gateway.py [--messages N] [--load N] [--starts N] [--sustain SECONDS] [--profile]

Everything runs as real processes against the fakes in tests/ (which live in this process):
`python -m mbe_gateway --config ... run` (ours: the embedded engine as its child, an instant
model) and bench/floor_bot.py (the floor: a bare aiogram echo bot, no storage, no model).
Each bot has its own fake Telegram, and both run at once, so a phase can alternate between
them message by message and both see the same machine load.

The instant model is tests/fake_llm_servers.py's OpenAI-compatible fake, over loopback HTTP
in this process: the daemon talks to it as to any OpenAI-compatible server. What that costs
the daemon is its `generate` stage, read back from the timings stored with each reply and
printed; it is part of our figures (a real model call costs at least that), not of the floor.

  1. update → reply: from the update being available at the fake (`Injected.at`) to the
     answering sendMessage arriving there (`Sent.at`), `--messages` messages one at a time
     from 10 users, ours and the floor's interleaved. For ours, where that time went: from
     the inbox, history and outbox rows the daemon wrote (wall clocks, same machine).
  2. load: 20 users, then 100 chats, each sending its next message as soon as the previous
     one is answered, `--load` messages per shape: messages per second, latency p50/p99, and
     for ours the same stages as in 1.
  3. CPU per message, from /proc/PID/stat (all threads, exited ones included), counted until
     the bot settles (ours writes each exchange to MBE after answering): the daemon and its
     engine child, the floor bot; this process (the fakes) for scale.
  4. RSS (VmRSS): idle, the daemon with Telegram, Discord and Slack on, engine ready and
     every channel connected, its engine child apart; the floor once polling; then both
     after the load.
  5. cold start: process start → the fake's first getUpdates, `--starts` times each, the
     daemon (Telegram only) and the floor alternating, with `python -c "import aiogram"`
     (spawn → import done) beside them; and ours with all three channels → all connected.
  6. with `--sustain SECONDS`: ours alone under the 20-user load for that long (a minute
     shows what a short burst hides: a queue that grows, memory that creeps): messages per
     second overall and per 10 s window, latency p50/p99, CPU per message, and the RSS of
     the daemon and its engine before and after.

`--profile` then samples ours with py-spy (`pip install py-spy`; attached to the daemon and
to its engine, not pausing them) through one more sequential and 100-chat load, and prints
where they were busy: by package, by function, and by our innermost function with the
package below it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the fakes are the tests' own

from fake_llm_servers import FakeLLM, serve_fake_llm  # noqa: E402
from fakes.discord import FakeDiscord, serve_fake_discord  # noqa: E402
from fakes.slack import FakeSlack, serve_fake_slack  # noqa: E402
from fakes.telegram import FakeTelegram, Injected, Sent, User, serve_fake_telegram  # noqa: E402
from workload import SENTENCES  # noqa: E402

FLOOR_BOT = HERE / "floor_bot.py"
USERS = 10  # the sequential phase rotates through this many people
WARM_UP = 20
CLK_TCK = os.sysconf("SC_CLK_TCK")
WALL_MINUS_MONOTONIC = time.time() - time.monotonic()  # to put the fakes' times on the daemon's clock
# DESIGN.md, "How fast, against whom": measured by someone else, printed as the reference.
REFERENCE = [
    ("OpenClaw 2026.9.6 (Node 24)", "1000 / 2244", "1.8", "560–800", "1336", "16.5"),
    ("nanobot 0.3.5 (Python)", "192 / 431", "5.4", "120–155", "148", "1.9"),
    ("bare aiogram echo bot", "2 / 13", "417", "2", "167", "4.0"),
]
TARGETS = (
    "p50 ≤ 10 ms, p99 ≤ 30 ms, ≥ 200 msgs/s, idle RSS ≤ floor + ~40 MiB, cold start ≤ aiogram import + ~0.5 s"
)


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def text(i: int) -> str:
    return f"{SENTENCES[i % len(SENTENCES)]} (message {i})"


def people(count: int) -> list[User]:
    return [User(7_000_001 + n, f"Person {n}", f"person{n}") for n in range(count)]


# -- processes, seen from /proc ------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of a process, all its threads (exited ones too); NaN if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return float(int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime: fields 14 and 15
    except (OSError, ValueError, IndexError):
        return math.nan


def rss_mib(pid: int | None) -> float:
    """Resident set now (VmRSS), NaN if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return math.nan


@dataclass
class Bot:
    """One bot process under test and the fake Telegram it polls."""

    name: str
    process: Process
    telegram: FakeTelegram
    spawned: float  # time.monotonic() just before the process was started
    home: Path | None = None  # ours: the data dir (log, database)
    engine: int | None = None  # ours: the engine child's pid, once ready

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far: the bot's process, its engine child (0 for the floor)."""
        return cpu_seconds(self.pid), cpu_seconds(self.engine) if self.engine else 0.0

    async def polling(self, timeout: float = 60) -> float:
        """Seconds from spawn to the fake's first getUpdates."""
        await self.telegram.wait_for(lambda: bool(self.telegram.polls), timeout)
        return self.telegram.polls[0].at - self.spawned

    async def engine_ready(self, timeout: float = 60) -> float:
        """Seconds from spawn to the daemon's "MBE ready" log line (its own timestamp)."""
        assert self.home is not None
        log = self.home / "logs" / "gateway.log"
        with anyio.fail_after(timeout):
            while True:
                for line in log.read_text().splitlines() if log.exists() else []:
                    entry = json.loads(line)
                    if entry["msg"] == "MBE ready":
                        self.engine = int(entry["pid"])
                        ready = datetime.fromisoformat(entry["ts"]).timestamp()
                        return ready - WALL_MINUS_MONOTONIC - self.spawned
                await anyio.sleep(0.02)


def daemon_config(
    home: Path, llm: FakeLLM, telegram: FakeTelegram | None, discord: FakeDiscord | None = None,
    slack: FakeSlack | None = None,
) -> tuple[Path, dict[str, str]]:  # fmt: skip
    """A config.toml for these fakes, and the environment carrying their tokens."""
    lines = [
        "[gateway]",
        "rate_limit_per_minute = 0",  # the load is the point here: no per-sender limit
        "[[llm.providers]]",
        f'kind = "openai"\nbase_url = "{llm.openai_url}"\nmodel = "instant"',
    ]
    env = {"MBE_GATEWAY_HOME": str(home)}
    if telegram is not None:
        lines += [
            "[channels.telegram]",
            'enabled = true\ndm_policy = "open"',
            f'api_base = "{telegram.api_base}"',
        ]
        lines.append('token = "secret:telegram_token"')
        env["MBE_GATEWAY_SECRET_TELEGRAM_TOKEN"] = telegram.token
    if discord is not None:
        lines += [
            "[channels.discord]",
            'enabled = true\ndm_policy = "open"',
            f'rest_url = "{discord.rest_url}"',
        ]
        lines.append('token = "secret:discord_token"')
        env["MBE_GATEWAY_SECRET_DISCORD_TOKEN"] = discord.token
    if slack is not None:
        lines += ["[channels.slack]", 'enabled = true\ndm_policy = "open"', f'api_base = "{slack.api_url}"']
        lines.append('bot_token = "secret:slack_bot_token"\napp_token = "secret:slack_app_token"')
        env["MBE_GATEWAY_SECRET_SLACK_BOT_TOKEN"] = slack.bot_token
        env["MBE_GATEWAY_SECRET_SLACK_APP_TOKEN"] = slack.app_token
    config = home / "config.toml"
    config.write_text("\n".join(lines) + "\n")
    env["MBE_GATEWAY_CONFIG"] = str(config)
    return config, env


@asynccontextmanager
async def running(
    name: str, command: Sequence[str], env: dict[str, str], telegram: FakeTelegram, home: Path
) -> AsyncIterator[Bot]:
    """The process for the block's duration; stopped with SIGTERM (it must exit within 30 s)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MBE_GATEWAY_")} | env
    with open(home / f"{name}.stderr", "wb") as stderr:
        spawned = time.monotonic()
        process = await anyio.open_process(
            list(command), env=environment, stdout=subprocess.DEVNULL, stderr=stderr
        )
        bot = Bot(name, process, telegram, spawned, home if name != "floor" else None)
        try:
            yield bot
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                with anyio.move_on_after(30) as waiting:
                    await process.wait()
                if waiting.cancelled_caught:
                    process.kill()
                    await process.wait()
                    print(f"   ({name} did not stop within 30 s of SIGTERM: killed)")
                await process.aclose()


def ours(home: Path, llm: FakeLLM, telegram: FakeTelegram, **more: Any) -> AbstractAsyncContextManager[Bot]:
    home.mkdir(parents=True, exist_ok=True)
    config, env = daemon_config(home, llm, telegram, **more)
    command = [sys.executable, "-m", "mbe_gateway", "--config", str(config), "run"]
    return running("ours", command, env, telegram, home)


def floor(home: Path, telegram: FakeTelegram) -> AbstractAsyncContextManager[Bot]:
    home.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(FLOOR_BOT), "--api-base", telegram.api_base]
    return running("floor", command, {"MBE_BENCH_TELEGRAM_TOKEN": telegram.token}, telegram, home)


# -- the measurements ----------------------------------------------------------------------------


@dataclass
class Run:
    """What one bot did in one phase: latencies (ms), elapsed seconds, CPU per side."""

    latency: list[float] = field(default_factory=list)
    seconds: float = 0.0  # load phases: first message written → last answer
    cpu: float = 0.0  # the bot's process
    engine_cpu: float = 0.0  # ours: the engine child
    fakes_cpu: float = 0.0  # this process: the fakes and the driver
    injected: list[Injected] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)

    def per_message(self, seconds: float) -> float:
        return seconds / len(self.latency) * 1000 if self.latency else math.nan


async def answered(bot: Bot, injected: Injected, since: int, timeout: float = 30) -> Sent:
    """The first message sent to the injected message's chat at or after index `since`."""
    fake = bot.telegram

    def reply() -> Sent | None:
        return next((s for s in fake.sent[since:] if s.chat_id == injected.chat_id), None)

    await fake.wait_for(lambda: reply() is not None, timeout)
    found = reply()
    assert found is not None
    return found


async def settled(bot: Bot, timeout: float = 60) -> tuple[float, float]:
    """`bot.cpu()` once the bot has stopped working (no CPU tick in 0.2 s): ours writes each
    exchange to MBE after answering, and that work belongs to the message too."""
    with anyio.fail_after(timeout):
        before = bot.cpu()
        while True:
            await anyio.sleep(0.2)
            now = bot.cpu()
            if sum(now) - sum(before) < 1.5 / CLK_TCK:
                return now
            before = now


async def one_at_a_time(bots: Sequence[Bot], messages: int, runs: Sequence[Run]) -> None:
    """`messages` messages to each bot, alternating bots, each waiting for its answer.

    A bot's CPU is counted over the whole phase, until it settles: while one bot answers, the
    other is idle in a long poll, or finishing the work it deferred (which is its own)."""
    users = people(USERS)
    cpu = [await settled(bot) for bot in bots]
    for i in range(messages):
        for bot, run in zip(bots, runs, strict=True):
            fakes = time.process_time()
            since = len(bot.telegram.sent)
            injected = bot.telegram.dm(text(i), user=users[i % USERS])
            sent = await answered(bot, injected, since)
            run.latency.append((sent.at - injected.at) * 1000)
            run.fakes_cpu += time.process_time() - fakes
            run.injected.append(injected)
            run.sent.append(sent)
    for bot, run, (own, engine) in zip(bots, runs, cpu, strict=True):
        own_after, engine_after = await settled(bot)
        run.cpu, run.engine_cpu = own_after - own, engine_after - engine


async def crowd(bot: Bot, users: Sequence[User], total: int, timeout: float = 60) -> Run:
    """Each user writes again as soon as they are answered, until `total` messages are answered."""
    fake, run = bot.telegram, Run()
    by_chat = {user.id: user for user in users}
    waiting: dict[int, Injected] = {}
    seen = len(fake.sent)

    def write(user: User) -> None:
        waiting[user.id] = injected = fake.dm(text(len(run.injected)), user=user)
        run.injected.append(injected)

    own, engine = await settled(bot)
    fakes, started = time.process_time(), time.monotonic()
    for user in users[:total]:
        write(user)
    while waiting:
        await fake.wait_for(lambda: len(fake.sent) > seen, timeout)  # noqa: B023 (read at once)
        for sent in fake.sent[seen:]:
            injected = waiting.pop(sent.chat_id)
            run.latency.append((sent.at - injected.at) * 1000)
            run.sent.append(sent)
            if len(run.injected) < total:
                write(by_chat[sent.chat_id])
        seen = len(fake.sent)
    run.seconds = run.sent[-1].at - started
    run.fakes_cpu = time.process_time() - fakes
    own_after, engine_after = await settled(bot)
    run.cpu, run.engine_cpu = own_after - own, engine_after - engine
    return run


@dataclass
class Sustained:
    """Ours under a steady load for a while: the run, answers per window, RSS around it."""

    run: Run
    users: int
    window: float  # seconds per window
    windows: list[list[float]]  # latencies (ms) of the answers sent in each window
    rss: tuple[float, float]  # the daemon before, after (MiB)
    engine_rss: tuple[float, float]  # its engine child before, after


async def sustain(bot: Bot, users: Sequence[User], seconds: float, window: float = 10.0) -> Sustained:
    """Each user writes again as soon as they are answered, for `seconds`; then the last
    answers are awaited (and counted), and nobody writes again."""
    fake, run = bot.telegram, Run()
    by_chat = {user.id: user for user in users}
    waiting: dict[int, Injected] = {}
    seen = len(fake.sent)
    rss_before, engine_before = rss_mib(bot.pid), rss_mib(bot.engine)

    def write(user: User) -> None:
        waiting[user.id] = injected = fake.dm(text(len(run.injected)), user=user)
        run.injected.append(injected)

    own, engine = await settled(bot)
    fakes, started = time.process_time(), time.monotonic()
    deadline = started + seconds
    for user in users:
        write(user)
    while waiting:
        await fake.wait_for(lambda: len(fake.sent) > seen, 60)  # noqa: B023 (read at once)
        for sent in fake.sent[seen:]:
            injected = waiting.pop(sent.chat_id)
            run.latency.append((sent.at - injected.at) * 1000)
            run.sent.append(sent)
            if sent.at < deadline:
                write(by_chat[sent.chat_id])
        seen = len(fake.sent)
    run.seconds = run.sent[-1].at - started
    run.fakes_cpu = time.process_time() - fakes
    own_after, engine_after = await settled(bot)
    run.cpu, run.engine_cpu = own_after - own, engine_after - engine
    # Whole windows; the last one also holds the tail (the answers still on their way at the end).
    windows: list[list[float]] = [[] for _ in range(max(1, int(run.seconds / window)))]
    for sent, latency in zip(run.sent, run.latency, strict=True):
        windows[min(len(windows) - 1, int((sent.at - started) / window))].append(latency)
    return Sustained(
        run, len(users), window, windows, (rss_before, rss_mib(bot.pid)), (engine_before, rss_mib(bot.engine))
    )


def breakdown(home: Path, run: Run) -> dict[str, list[float]]:
    """Where each answer's time went, from the rows the daemon wrote (ms per message).

    receive: the update at the fake → the inbox row (long poll answered, parsed, let in);
    inbox → pipeline: the durable inbox write and the lane; then the pipeline's own stages;
    record → send: the one transaction with the outbox row, and delivery picking it up;
    send: sendMessage until it reaches the fake.
    """
    stages: dict[str, list[float]] = {}
    with sqlite3.connect(f"file:{home / 'gateway.sqlite3'}?mode=ro", uri=True) as db:
        rows = {
            pmid: (received, recorded, json.loads(timings), sending)
            for pmid, received, recorded, timings, sending in db.execute(
                "SELECT i.platform_message_id, i.received_at, m.created_at, m.timings, o.sent_at"
                " FROM inbox i JOIN messages m ON m.inbox_id = i.id AND m.role = 'assistant'"
                " JOIN outbox o ON o.inbox_id = i.id"
            )
        }
    for injected, sent in zip(run.injected, run.sent, strict=True):
        received, recorded, timings, sending = rows[injected.platform_message_id]
        pipeline = timings["total"] / 1000
        marks = {
            "receive (poll → inbox row)": received - (injected.at + WALL_MINUS_MONOTONIC),
            "inbox write + lane": recorded - pipeline - received,
            "  recall (surprise ‖ memory read)": timings["recall"] / 1000,
            "  route": timings["route"] / 1000,
            "  prompt": timings["prompt"] / 1000,
            "  generate (the instant model)": timings["generate"] / 1000,
            "pipeline (the four above)": pipeline,
            "record + outbox → delivery": sending - recorded,
            "send (sendMessage → fake)": sent.at + WALL_MINUS_MONOTONIC - sending,
        }
        for name, seconds in marks.items():
            stages.setdefault(name, []).append(seconds * 1000)
    return stages


@dataclass
class Starts:
    """Seconds from spawn, one value per start."""

    ours: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    engine: list[float] = field(default_factory=list)  # ours: spawn → engine ready
    import_aiogram: list[float] = field(default_factory=list)


def import_aiogram() -> tuple[float, float]:
    """Seconds from spawning `python -c "import aiogram"` to the import being done, and the
    process's RSS then (MiB). The process ends with os._exit: tearing down 165 MiB of objects
    takes a few tenths of a second that no bot pays before it polls."""
    probe = (
        "import os, resource, aiogram; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)"
    )
    started = time.monotonic()
    with subprocess.Popen([sys.executable, "-c", probe + "; os._exit(0)"], stdout=subprocess.PIPE) as child:
        assert child.stdout is not None
        peak = int(child.stdout.readline())
        took = time.monotonic() - started
    return took, peak / 1024


# -- the report ----------------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}×" if b and not math.isnan(a) and not math.isnan(b) else "–"


def report_table(
    seq: tuple[Run, Run], loads: dict[str, tuple[Run, Run]], stages: dict[str, list[float]],
    three: ThreeChannels, floor_rss: float, starts: Starts, sustained: Sustained | None,
) -> None:  # fmt: skip
    (s_ours, s_floor), (u_ours, u_floor), (c_ours, c_floor) = seq, loads["20 users"], loads["100 chats"]
    model = stages["  generate (the instant model)"]
    without = [total - generate for total, generate in zip(s_ours.latency, model, strict=True)]
    cpu_ours = s_ours.per_message(s_ours.cpu + s_ours.engine_cpu)
    cpu_floor = s_floor.per_message(s_floor.cpu)
    start_ours, start_floor = statistics.median(starts.ours), statistics.median(starts.floor)
    start_import = statistics.median(starts.import_aiogram)
    rows = [
        ("update → reply p50 (ms)", pct(s_ours.latency, 50), pct(s_floor.latency, 50), "≤ 10", ".1f"),
        ("update → reply p99 (ms)", pct(s_ours.latency, 99), pct(s_floor.latency, 99), "≤ 30", ".1f"),
        ("  ours less its model call, p50", pct(without, 50), math.nan, "", ".1f"),
        ("  ours less its model call, p99", pct(without, 99), math.nan, "", ".1f"),
        ("msgs/s, 20 users", len(u_ours.latency) / u_ours.seconds, len(u_floor.latency) / u_floor.seconds,
         "≥ 200", ".0f"),
        ("  p99 under that load (ms)", pct(u_ours.latency, 99), pct(u_floor.latency, 99), "", ".1f"),
        ("msgs/s, 100 chats", len(c_ours.latency) / c_ours.seconds, len(c_floor.latency) / c_floor.seconds,
         "≥ 200", ".0f"),
        ("  p99 under that load (ms)", pct(c_ours.latency, 99), pct(c_floor.latency, 99), "", ".1f"),
        ("CPU per message (ms, +engine)", cpu_ours, cpu_floor, "", ".2f"),
        ("idle RSS (MiB, 3 channels)", three.rss, floor_rss, f"≤ {floor_rss + 40:.0f}", ".0f"),
        ("  engine child (MiB, extra)", three.engine_rss, math.nan, "", ".0f"),
        ("cold start → polling (s)", start_ours, start_floor, f"≤ {start_import + 0.5:.2f}", ".2f"),
    ]  # fmt: skip
    if sustained is not None:
        run = sustained.run
        rows[6:6] = [  # after the 20-user load
            (f"msgs/s, 20 users, {run.seconds:.0f} s", len(run.latency) / run.seconds, math.nan,
             "≥ 200", ".0f"),
            ("  p99 over that time (ms)", pct(run.latency, 99), math.nan, "", ".1f"),
        ]  # fmt: skip
    print(f"\n{'':<32} {'ours':>9} {'floor':>9} {'ratio':>7}   DESIGN target")
    for name, mine, theirs, target, spec in rows:
        shown = f"{theirs:9{spec}}" if not math.isnan(theirs) else f"{'–':>9}"
        print(f"{name:<32} {mine:9{spec}} {shown} {ratio(mine, theirs):>7}   {target}")
    print(f"   (python -c 'import aiogram': {start_import:.2f} s, median of {len(starts.import_aiogram)})")

    print("\nDESIGN.md's reference, measured elsewhere (not in this run):")
    print(f"   {'':<30} {'p50 / p99 ms':>13} {'msgs/s':>7} {'CPU ms':>8} {'RSS MiB':>8} {'start s':>8}")
    for name, latency, rate, cpu, mem, start in REFERENCE:
        print(f"   {name:<30} {latency:>13} {rate:>7} {cpu:>8} {mem:>8} {start:>8}")


def report_details(
    seq: tuple[Run, Run], loads: dict[str, tuple[Run, Run]], stages: dict[str, dict[str, list[float]]]
) -> None:
    s_ours, s_floor = seq
    print(
        f"\n1. update → reply, {len(s_ours.latency)} messages one at a time from {USERS} users, interleaved"
    )
    print(f"   {'(ms)':<36} {'p50':>7} {'p99':>7} {'max':>7}")
    for name, run in (("ours", s_ours), ("floor", s_floor)):
        print(
            f"   {name:<36} {pct(run.latency, 50):7.2f} {pct(run.latency, 99):7.2f} {max(run.latency):7.2f}"
        )
    print("   ours, where the time went (from the daemon's own rows):")
    for name, values in stages["one at a time"].items():
        print(f"   {name:<36} {pct(values, 50):7.2f} {pct(values, 99):7.2f} {max(values):7.2f}")

    print("\n2. load: each user writes again once answered")
    print(f"   {'':<22} {'msgs':>6} {'s':>6} {'msgs/s':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for shape, pair in loads.items():
        for name, run in zip(("ours", "floor"), pair, strict=True):
            n = len(run.latency)
            print(
                f"   {name + ', ' + shape:<22} {n:6d} {run.seconds:6.2f} {n / run.seconds:7.0f}"
                f" {pct(run.latency, 50):8.1f} {pct(run.latency, 99):8.1f}"
            )
    print("   ours under load, where the time went (ms, p50 / p99):")
    print(f"   {'':<36}" + "".join(f"{shape:>18}" for shape in loads))
    for name in stages["one at a time"]:
        cells = (stages[shape][name] for shape in loads)
        print(f"   {name:<36}" + "".join(f"{pct(v, 50):9.1f} /{pct(v, 99):7.1f}" for v in cells))

    print("\n3. CPU per message (ms), /proc/PID/stat")
    print(f"   {'':<22} {'bot':>7} {'engine':>7} {'total':>7} {'fakes (this process)':>22}")
    for shape, (a, b) in {"one at a time": seq, **loads}.items():
        for name, run in (("ours", a), ("floor", b)):
            total = run.per_message(run.cpu + run.engine_cpu)
            print(
                f"   {name + ', ' + shape:<22} {run.per_message(run.cpu):7.2f}"
                f" {run.per_message(run.engine_cpu):7.2f} {total:7.2f} {run.per_message(run.fakes_cpu):22.2f}"
            )


def report_starts(starts: Starts, three: ThreeChannels, aiogram_rss: float) -> None:
    def spread(values: list[float]) -> str:
        return f"median {statistics.median(values):.2f}  min {min(values):.2f}  max {max(values):.2f}"

    print(f"\n5. cold start (s), {len(starts.ours)} starts each, alternating")
    print(f"   ours, spawn → first getUpdates:     {spread(starts.ours)}")
    print(f"   ours, spawn → engine ready:         {spread(starts.engine)}")
    print(f"   floor, spawn → first getUpdates:    {spread(starts.floor)}")
    print(
        f"   python -c 'import aiogram' → done:  {spread(starts.import_aiogram)}, RSS {aiogram_rss:.0f} MiB"
    )
    print(
        f"   ours, 3 channels: → Telegram polling {three.polling:.2f}, → all connected {three.connected:.2f}"
    )


def report_sustained(sustained: Sustained) -> None:
    run = sustained.run
    n = len(run.latency)
    print(
        f"\n6. sustained: {sustained.users} users for {run.seconds:.0f} s, each writing again once answered"
    )
    print(
        f"   {n} messages, {n / run.seconds:.0f} msgs/s; latency p50 {pct(run.latency, 50):.1f},"
        f" p99 {pct(run.latency, 99):.1f}, max {max(run.latency):.1f} ms"
    )
    print(
        f"   CPU per message (ms): daemon {run.per_message(run.cpu):.2f}, engine"
        f" {run.per_message(run.engine_cpu):.2f}, fakes {run.per_message(run.fakes_cpu):.2f}"
    )
    (before, after), (engine_before, engine_after) = sustained.rss, sustained.engine_rss
    print(
        f"   RSS (MiB): daemon {before:.1f} → {after:.1f} ({after - before:+.1f}),"
        f" engine {engine_before:.1f} → {engine_after:.1f} ({engine_after - engine_before:+.1f})"
    )
    print(f"   per {sustained.window:.0f} s window: {'msgs/s':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for index, latencies in enumerate(sustained.windows):
        last = index == len(sustained.windows) - 1
        span = run.seconds - index * sustained.window if last else sustained.window
        print(
            f"   {index * sustained.window:5.0f}–{index * sustained.window + span:<5.0f} s"
            f"        {len(latencies) / span:7.0f} {pct(latencies, 50):8.1f} {pct(latencies, 99):8.1f}"
        )


# -- the run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThreeChannels:
    """Ours with Telegram, Discord and Slack on: idle RSS (MiB), and seconds from spawn."""

    rss: float
    engine_rss: float
    polling: float  # → Telegram's first getUpdates
    connected: float  # → every channel connected


async def three_channels(root: Path, llm: FakeLLM) -> ThreeChannels:
    async with (
        serve_fake_telegram() as telegram,
        serve_fake_discord() as discord,
        serve_fake_slack() as slack,
        ours(root / "three", llm, telegram, discord=discord, slack=slack) as bot,
    ):
        polling = await bot.polling()
        await discord.wait_ready(timeout=60)
        await slack.wait_connected(timeout=60)
        connected = time.monotonic() - bot.spawned
        await bot.engine_ready()
        await anyio.sleep(1.0)  # let start-up garbage settle
        return ThreeChannels(rss_mib(bot.pid), rss_mib(bot.engine), polling, connected)


async def main(options: argparse.Namespace) -> None:
    print(
        f"bench/gateway.py: Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.2f}; "
        f"ours = `python -m mbe_gateway run` (embedded engine, OpenAI-compatible fake as the instant model), "
        f"floor = bench/floor_bot.py (aiogram echo)"
    )
    if options.profile:
        py_spy()  # missing: say so now, not after the measurements
    starts = Starts()
    with tempfile.TemporaryDirectory(prefix="mbe-bench-gw-") as tmp:
        root = Path(tmp)
        async with serve_fake_llm() as llm, AsyncExitStack() as stack:
            for attempt in range(options.starts):
                last = attempt == options.starts - 1
                took, aiogram_rss = import_aiogram()
                starts.import_aiogram.append(took)
                # Each start gets a fresh fake and data dir: a truly cold start, nothing confirmed.
                async with AsyncExitStack() as one:
                    keep = stack if last else one
                    telegram = await keep.enter_async_context(serve_fake_telegram())
                    floor_bot = await keep.enter_async_context(floor(root / f"floor{attempt}", telegram))
                    starts.floor.append(await floor_bot.polling())
                    telegram = await keep.enter_async_context(serve_fake_telegram())
                    our_bot = await keep.enter_async_context(ours(root / f"ours{attempt}", llm, telegram))
                    starts.ours.append(await our_bot.polling())
                    starts.engine.append(await our_bot.engine_ready())
            print(f"started {options.starts}× each; measuring")
            await anyio.sleep(1.0)
            memory = {
                "ours, Telegram only, idle": rss_mib(our_bot.pid),
                "floor, idle": rss_mib(floor_bot.pid),
            }
            bots = (our_bot, floor_bot)

            await one_at_a_time(bots, WARM_UP, (Run(), Run()))
            seq = (Run(), Run())
            await one_at_a_time(bots, options.messages, seq)
            loads = {
                "20 users": (await crowd(our_bot, people(20), options.load),
                             await crowd(floor_bot, people(20), options.load)),
                "100 chats": (await crowd(our_bot, people(100), options.load),
                              await crowd(floor_bot, people(100), options.load)),
            }  # fmt: skip
            memory["ours, Telegram only, after the load"] = rss_mib(our_bot.pid)
            memory["  its engine child, after the load"] = rss_mib(our_bot.engine)
            memory["floor, after the load"] = rss_mib(floor_bot.pid)
            sustained = await sustain(our_bot, people(20), options.sustain) if options.sustain else None
            profiled = await profile(our_bot, options, options.stacks or root) if options.profile else None
            await stack.aclose()  # stop both: the daemon's rows are then all on disk
            assert our_bot.home is not None
            stages = {
                shape: breakdown(our_bot.home, runs[0])
                for shape, runs in {"one at a time": seq, **loads}.items()
            }
            three = await three_channels(root, llm)

    report_details(seq, loads, stages)
    print("\n4. RSS (MiB, VmRSS); idle = polling, engine ready, 1 s after")
    print(f"   {'ours, Telegram + Discord + Slack, idle':<40} {three.rss:6.1f}")
    print(f"   {'  its engine child, idle':<40} {three.engine_rss:6.1f}")
    for name, mib in memory.items():
        print(f"   {name:<40} {mib:6.1f}")
    report_starts(starts, three, aiogram_rss)
    if sustained is not None:
        report_sustained(sustained)
    report_table(seq, loads, stages["one at a time"], three, memory["floor, idle"], starts, sustained)
    print(f"\nDESIGN.md's aim: {TARGETS}")
    if profiled is not None:
        report_profile(profiled, options.top)


def py_spy() -> str:
    """The py-spy program beside this interpreter, or on PATH (`pip install py-spy`)."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    return found


def area(frame: str) -> str:
    """Which package a py-spy frame ("name (path)") belongs to: ours by module, others by top name."""
    path = frame.rpartition(" (")[2].rstrip(")")
    if path.startswith("mbe_gateway/"):
        return path.removesuffix(".py").replace("/", ".")
    return path.split("/")[0].removesuffix(".py")


@dataclass
class Samples:
    """py-spy's raw stacks of one process: (frames root first, count)."""

    stacks: list[tuple[list[str], int]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> Samples:
        samples = cls()
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                samples.stacks.append((stack.split(";"), int(count)))
        return samples

    def total(self) -> int:
        return sum(count for _, count in self.stacks)

    def own(self, key: Any) -> dict[str, int]:
        """Samples by `key(frame)` of the innermost frame: where the CPU was."""
        found: dict[str, int] = {}
        for frames, count in self.stacks:
            found[key(frames[-1])] = found.get(key(frames[-1]), 0) + count
        return found

    def within(self) -> dict[str, int]:
        """Samples by our innermost function on the stack, and the package the CPU was in below it."""
        found: dict[str, int] = {}
        for frames, count in self.stacks:
            mine = next((f for f in reversed(frames) if area(f).startswith("mbe_gateway.")), "-")
            name = f"{mine.partition(' (')[0]} ({area(mine)}) → {area(frames[-1])}"
            found[name] = found.get(name, 0) + count
        return found


def print_top(title: str, counts: dict[str, int], per_message: float, top: int) -> None:
    total = sum(counts.values())
    print(f"   {title}")
    for name, count in sorted(counts.items(), key=lambda item: -item[1])[:top]:
        print(f"   {count / total:6.1%} {count * per_message:7.3f}  {name[:120]}")


@dataclass
class Profile:
    rate: int
    messages: int  # answered while sampled
    run: Run  # the one-at-a-time part
    samples: dict[str, Samples]  # "daemon", "engine"


async def profile(bot: Bot, options: argparse.Namespace, out: Path, rate: int = 500) -> Profile:
    """py-spy on the daemon and its engine (attached, sampling without pausing them) through one
    sequential and one 100-chat load."""
    spies: list[tuple[str, Path, Process]] = []
    for name, pid in (("daemon", bot.pid), ("engine", bot.engine)):
        path = out / f"{name}.pyspy"
        command = [py_spy(), "record", "-p", str(pid), "-r", str(rate), "--nonblocking", "--nolineno"]
        command += ["-f", "raw", "-o", str(path)]
        spies.append((name, path, await anyio.open_process(command, stdout=subprocess.DEVNULL)))
    await anyio.sleep(1.0)  # attached
    run = Run()
    await one_at_a_time([bot], options.messages, [run])
    messages = len(run.latency) + len((await crowd(bot, people(100), options.load)).latency)
    for _, _, spy in spies:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file and exits
        await spy.wait()
    return Profile(rate, messages, run, {name: Samples.read(path) for name, path, _ in spies})


def report_profile(profile: Profile, top: int) -> None:
    run = profile.run
    print(f"\nprofile: py-spy at {profile.rate} Hz on ours, {profile.messages} messages (1 by 1, 100 chats)")
    print(
        f"   update → reply while sampled: p50 {pct(run.latency, 50):.1f}, p99 {pct(run.latency, 99):.1f} ms"
    )
    per_message = 1000 / profile.rate / profile.messages  # ms per message, per sample
    for name, samples in profile.samples.items():
        # Samples of threads py-spy saw as busy: running, or waiting in ways it cannot tell from
        # running (the GIL, an fsync), so the sum is above what /proc counts as CPU.
        busy = samples.total() * per_message
        print(f"\n   {name}: {busy:.2f} ms busy per message, all threads (/proc's CPU is less: GIL, fsync)")
        print("   share, ms per message:")
        print_top("by package (where the CPU was)", samples.own(area), per_message, top)
        print_top("by function (own time)", samples.own(lambda frame: frame), per_message, top)
        if name == "daemon":
            print_top("by our innermost function → the package below it", samples.within(), per_message, top)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1: the last bot started is the one measured")
    return value


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=300, help="one at a time, per bot (default 300)")
    parser.add_argument("--load", type=int, default=1000, help="per load shape, per bot (default 1000)")
    parser.add_argument(
        "--starts", type=_positive, default=3, help="cold starts per bot (default 3; the last is measured)"
    )
    parser.add_argument(
        "--sustain", type=float, default=0.0, metavar="SECONDS", help="then ours under 20 users this long"
    )
    parser.add_argument("--profile", action="store_true", help="then profile ours (pip install py-spy)")
    parser.add_argument("--top", type=int, default=20, help="lines per profile listing (default 20)")
    parser.add_argument("--stacks", type=Path, help="keep py-spy's raw stacks here (flamegraph.pl input)")
    anyio.run(main, parser.parse_args())
