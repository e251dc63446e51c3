"""What the gateway itself costs per message: the pipeline on the real engine, with a model
that answers instantly, so every millisecond measured is ours (MBE calls, SQLite, prompt).

    python bench/pipeline.py [--messages N] [--sessions N]

In one run, on a fresh data dir, against the embedded engine over stdio:

  1. sequential: N messages from 10 users, answered one at a time (`Pipeline.answer`), the
     MemoryWriter draining the queue in the background as in the daemon. Per stage p50/p99
     from the timings the pipeline records (recall = surprise ‖ memory read, route, prompt,
     generate, commit, total), and the gateway's overhead: everything but generation.
     Interleaved with them, message by message so both see the same load, the seed's plan:
     surprise → route → memory read → memory write, one call after another, on the path.
  2. concurrent: `--sessions` users at once through `Conversations` lanes, the way the daemon
     runs them; each user sends their next message when the previous one is answered, N
     messages in all. Messages per second, and each message's time from submit to recorded.
  3. resources: CPU per message on each side (this process, and the engine from
     /proc/PID/schedstat), peak RSS of this process (getrusage ru_maxrss) and of the engine
     child (VmHWM in /proc/PID/status).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from mbe_gateway import logs
from mbe_gateway.config import AssistantSettings
from mbe_gateway.conversations import Conversations, Turn
from mbe_gateway.llm import Chain, ChatMessage, ScriptedProvider
from mbe_gateway.mbe import MBEClient, embedded_engine
from mbe_gateway.memory_writer import MemoryWriter
from mbe_gateway.pipeline import Pipeline, Request
from mbe_gateway.store import Database, memory_queue, open_database
from workload import SENTENCES

USERS = 10  # sequential phase: enough users that memories and histories grow like real ones
WARM_UP = 20
STAGES = ("surprise", "memory_read", "recall", "route", "prompt", "generate", "commit", "total")


def answer(messages: Sequence[ChatMessage]) -> str:
    """The instant model: a short reply that varies with the question."""
    return f"Here is a short answer about: {messages[-1].content[:60]}"


def text(i: int) -> str:
    return f"{SENTENCES[i % len(SENTENCES)]} (message {i})"


def dm(user: str, message: str) -> Request:
    return Request(channel="bench", chat_id=user, sender_id=user, texts=(message,), sender_name=user)


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def engine_cpu(pid: int | None) -> float:
    """Seconds the engine has spent on a CPU (Linux), NaN where that cannot be read."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError, TypeError):
        return math.nan


def engine_peak_rss_mib(pid: int | None) -> float:
    """The engine child's peak resident set (VmHWM), NaN where /proc cannot say."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, TypeError):
        pass
    return math.nan


def own_peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


@dataclass
class Phase:
    """Wall times (ms) of one phase and the CPU both sides spent on it."""

    wall: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    overhead: list[float] = field(default_factory=list)
    seed_calls: dict[str, list[float]] = field(default_factory=dict)
    own_cpu: float = 0.0
    engine_cpu: float = 0.0
    seconds: float = 0.0


@dataclass
class Rig:
    db: Database
    mbe: MBEClient
    pipeline: Pipeline
    writer: MemoryWriter


async def seed_plan(mbe: MBEClient, user: str, message: str, calls: dict[str, list[float]]) -> float:
    """The seed's order: each MBE call waits for the one before, the memory write included."""
    started = time.perf_counter()
    mark = started

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        calls.setdefault(name, []).append((now - mark) * 1000)
        mark = now

    surprise = await mbe.surprise(message, user_id=user, channel="bench", domain="chat")
    lap("surprise")
    await mbe.route(message, user_profile={"user_id": user, "surprise_score": surprise.surprise_score})
    lap("route")
    await mbe.memory_read(user, message, top_k=5)
    lap("memory_read")
    await mbe.memory_write(user, "episodic", {"user_message": message, "assistant_reply": "ok"}, 0.5)
    lap("memory_write")
    return (time.perf_counter() - started) * 1000


async def sequential(rig: Rig, messages: int) -> tuple[Phase, Phase]:
    """The pipeline and the seed plan, message by message; each starts on a quiet engine."""
    pipeline, seed = Phase(), Phase()
    for i in range(WARM_UP):
        await rig.pipeline.answer(dm(f"warm{i % USERS}", text(i)))
        await seed_plan(rig.mbe, f"seed-warm{i % USERS}", text(i), {})
    pid = rig.mbe.pid
    for i in range(messages):
        own, engine, mark = time.process_time(), engine_cpu(pid), time.perf_counter()
        reply = await rig.pipeline.answer(dm(f"user{i % USERS}", text(i)))
        pipeline.wall.append((time.perf_counter() - mark) * 1000)
        await quiet(rig.db)  # its memory write, off the reply's path, still costs CPU: count it
        pipeline.seconds += time.perf_counter() - mark
        pipeline.own_cpu += time.process_time() - own
        pipeline.engine_cpu += engine_cpu(pid) - engine
        for stage in STAGES:
            pipeline.stages[stage].append(reply.timings[stage])
        pipeline.overhead.append(reply.timings["total"] - reply.timings["generate"] + reply.timings["commit"])

        own, engine, mark = time.process_time(), engine_cpu(pid), time.perf_counter()
        seed.wall.append(await seed_plan(rig.mbe, f"seed{i % USERS}", text(i), seed.seed_calls))
        seed.seconds += time.perf_counter() - mark
        seed.own_cpu += time.process_time() - own
        seed.engine_cpu += engine_cpu(pid) - engine
    return pipeline, seed


async def quiet(db: Database) -> None:
    """Until the MemoryWriter has written everything queued."""
    while await memory_queue.count(db):  # the writer offers no "queue empty" event
        await anyio.sleep(0.001)


async def concurrent(rig: Rig, messages: int, sessions: int) -> Phase:
    """`sessions` users at once through lanes; each waits for its answer before the next message."""
    phase = Phase()
    answered: dict[str, anyio.Event] = {}

    async def handle(request: Request, turn: Turn) -> None:
        reply = await rig.pipeline.prepare(request)
        turn.commit()
        reply = await rig.pipeline.commit(request, reply)
        phase.overhead.append(reply.timings["total"] - reply.timings["generate"] + reply.timings["commit"])
        answered[request.chat_id].set()

    conversations = Conversations(handle)
    per_session = [messages // sessions + (1 if s < messages % sessions else 0) for s in range(sessions)]

    async def user(session: int, count: int) -> None:
        name = f"crowd{session}"
        for i in range(count):
            answered[name] = anyio.Event()
            mark = time.perf_counter()
            conversations.submit(dm(name, text(session * 7 + i)))
            await answered[name].wait()
            phase.wall.append((time.perf_counter() - mark) * 1000)

    pid = rig.mbe.pid
    async with anyio.create_task_group() as tg:
        await tg.start(conversations.run)
        own_before, engine_before, started = time.process_time(), engine_cpu(pid), time.perf_counter()
        async with anyio.create_task_group() as crowd:
            for session, count in enumerate(per_session):
                crowd.start_soon(user, session, count)
        phase.seconds = time.perf_counter() - started
        phase.own_cpu = time.process_time() - own_before
        phase.engine_cpu = engine_cpu(pid) - engine_before
        tg.cancel_scope.cancel()
    return phase


def row(name: str, values: Sequence[float], note: str = "") -> str:
    return f"   {name:<40} {pct(values, 50):8.2f} {pct(values, 99):8.2f}  {note}".rstrip()


def cpu(phase: Phase, count: int) -> str:
    return (
        f"this process {phase.own_cpu / count * 1000:.2f} ms, engine {phase.engine_cpu / count * 1000:.2f} ms"
    )


def report(
    seq: Phase, seed: Phase, crowd: Phase, sessions: int, drain_s: float, own_rss: float, engine_rss: float
) -> None:
    n = len(seq.wall)
    print(f"\n1. sequential: {n} messages from {USERS} users, one at a time")
    print(f"   {'(ms)':<40} {'p50':>8} {'p99':>8}")
    for stage in STAGES:
        print(row(stage, seq.stages[stage]))
    print(row("answer(), as the caller sees it", seq.wall))
    print(row("gateway overhead: all but generate", seq.overhead, "(total - generate + commit)"))
    print(f"   CPU per message: {cpu(seq, n)} (its memory write included)")

    critical = [r + t for r, t in zip(seq.stages["recall"], seq.stages["route"], strict=True)]
    print("\n   MBE on the reply's path, same run, same messages, interleaved")
    print(f"   {'(ms)':<40} {'p50':>8} {'p99':>8}")
    print(row("pipeline: (surprise ‖ memory read) + route", critical, "memory write queued, off the path"))
    print(row("seed plan: 4 calls one after another", seed.wall))
    for name, values in seed.seed_calls.items():
        print(row(f"  seed {name}", values))
    print(
        f"   → the pipeline's MBE path takes {pct(critical, 50) / pct(seed.wall, 50):.0%} of the seed "
        f"plan's at p50 ({pct(seed.wall, 50) - pct(critical, 50):.2f} ms less), "
        f"{pct(critical, 99) / pct(seed.wall, 99):.0%} at p99"
    )
    print(f"   seed plan CPU per message: {cpu(seed, n)}")

    m = len(crowd.wall)
    print(f"\n2. concurrent: {sessions} sessions through Conversations lanes, {m} messages")
    print(f"   throughput: {m / crowd.seconds:.0f} msgs/s ({crowd.seconds:.2f} s)")
    print(f"   {'(ms)':<40} {'p50':>8} {'p99':>8}")
    print(row("submit → answered and recorded", crowd.wall))
    print(row("gateway overhead: all but generate", crowd.overhead))
    print(f"   CPU per message: {cpu(crowd, m)}")
    print(f"   memory writes still queued at the end: drained in {drain_s:.2f} s")

    print("\n3. peak RSS")
    print(f"   this process (ru_maxrss): {own_rss:.1f} MiB")
    print(f"   engine child (VmHWM):     {engine_rss:.1f} MiB")
    print("\nDESIGN.md's aim (update → reply, with a channel): p50 ≤ 10 ms, p99 ≤ 30 ms, ≥ 200 msgs/s")


async def main(messages: int, sessions: int) -> None:
    print(
        f"bench/pipeline.py: Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"instant scripted model, embedded engine over stdio"
    )
    logs.configure("error")  # the engine's "optional tool not offered" notice is not a result
    with tempfile.TemporaryDirectory(prefix="mbe-bench-") as tmp:
        home = Path(tmp)
        database = await open_database(home / "gateway.sqlite3")
        async with database as db, MBEClient(embedded_engine(home / "engine.sqlite3"), home=home) as mbe:
            started = time.perf_counter()
            await mbe.wait_ready(60)
            print(f"engine ready in {time.perf_counter() - started:.2f} s (pid {mbe.pid})")
            writer = MemoryWriter(db, mbe)
            pipeline = Pipeline(
                db=db,
                mbe=mbe,
                llm=Chain([ScriptedProvider(answer)]),
                settings=AssistantSettings(),
                language="en",
                on_recorded=writer.nudge,
            )
            rig = Rig(db, mbe, pipeline, writer)
            async with anyio.create_task_group() as tg:
                tg.start_soon(writer.run)
                seq, seed = await sequential(rig, messages)
                crowd = await concurrent(rig, messages, sessions)
                started = time.perf_counter()
                await quiet(db)
                drain_s = time.perf_counter() - started
                engine_rss = engine_peak_rss_mib(mbe.pid)
                tg.cancel_scope.cancel()
    report(seq, seed, crowd, sessions, drain_s, own_peak_rss_mib(), engine_rss)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=500, help="messages per phase (default 500)")
    parser.add_argument("--sessions", type=int, default=100, help="concurrent sessions (default 100)")
    options = parser.parse_args()
    anyio.run(main, options.messages, options.sessions)
