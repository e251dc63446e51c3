"""How long to wait before starting MBE again: exponential, capped, jittered.

Full jitter (a uniform draw between 0 and the exponential bound) keeps a crash-looping
server from being restarted in lockstep with anything else restarting on the machine,
and the count starts over once a run has stayed healthy for a while.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 0.5  # seconds: the bound of the first wait
    cap: float = 30.0  # seconds: no wait is longer than this
    healthy_after: float = 60.0  # seconds ready before a later crash counts as the first again
    jitter: float = 1.0  # the random share of each wait: 1 is full jitter, 0 a fixed wait

    def delay(self, attempt: int) -> float:
        """The wait before restart number `attempt` (0 for the first restart after a healthy run)."""
        bound = min(self.cap, self.base * 2.0 ** min(attempt, 32))
        return bound * (1.0 - self.jitter * random.random())
