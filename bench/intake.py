"""What the gateway's door costs per message: `intake.clean` and `Intake.admit`, in-process.

    python bench/intake.py [--repeat N]

Every inbound message pays both before it is stored, so they must stay in microseconds:

  1. clean: a typical message (a sentence), a platform-maximum one (4096 characters), the
     largest let in (16000), a hostile one (control characters and lone surrogates, which take
     the slow path), and a 2-million-character one (what a refusal costs before it is made).
  2. admit: one sender within the limit, one sender flooding (every message refused), and
     10,000 senders in turn (the buckets at their bound, each take evicting one).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from mbe_gateway.channels.base import Inbound
from mbe_gateway.intake import Intake, SenderLimits, clean
from workload import SENTENCES


def message(text: str, sender: str = "1") -> Inbound:
    return Inbound("telegram", "m1", sender, sender, text, time.time(), sender_name="Ada Lovelace")


def per_call(run: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Microseconds per call: the median and the best of 5 batches of `repeat` calls."""
    batches = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat):
            run()
        batches.append((time.perf_counter() - started) / repeat * 1e6)
    return statistics.median(batches), min(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=2000, help="calls per batch (default 2000)")
    repeat = parser.parse_args().repeat

    sentence = SENTENCES[0]
    texts = {
        "a sentence": sentence,
        "4096 chars": (sentence * 100)[:4096],
        "16000 chars": (sentence * 400)[:16000],
        "hostile 4096": ("ab\x00\x1b[0m\ud800\r\n" * 600)[:4096],
        "2,000,000 chars": "x" * 2_000_000,
    }
    print("clean (µs per message: median, best)")
    for name, text in texts.items():
        inbound = message(text)
        runs = max(1, repeat // 100) if len(text) > 100_000 else repeat
        median, best = per_call(lambda inbound=inbound: clean(inbound), runs)
        print(f"  {name:18} {median:10.1f} {best:10.1f}")

    print("admit (µs per message: median, best)")
    calm = Intake(max_chars=16000, language="en", limits=SenderLimits(burst=10, per_minute=1e9))
    flooded = Intake(max_chars=16000, language="en", limits=SenderLimits(burst=10, per_minute=20))
    crowd = Intake(max_chars=16000, language="en", limits=SenderLimits(burst=10, per_minute=20))
    one = message(sentence)
    many = [message(sentence, sender=str(n)) for n in range(10_000)]
    turn = iter(range(10**9))
    cases: dict[str, Callable[[], object]] = {
        "within the limit": lambda: calm.admit(one),
        "flooding": lambda: flooded.admit(one),
        "10,000 senders": lambda: crowd.admit(many[next(turn) % len(many)]),
    }
    for name, run in cases.items():
        median, best = per_call(run, repeat)
        print(f"  {name:18} {median:10.2f} {best:10.2f}")
    assert crowd.limits is not None
    print(f"  buckets kept after the crowd: {len(crowd.limits)}")


if __name__ == "__main__":
    main()
