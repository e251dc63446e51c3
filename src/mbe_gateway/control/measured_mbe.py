"""The pipeline's MBE calls, timed and counted for /metrics, without the client knowing.

It wraps whatever the pipeline calls MBE through (the `MBE` protocol) and passes every call
on unchanged: the latency of each call per tool, and each failure per tool and error class
(MBETimeout, MBEUnavailable, ...). A call cancelled from outside (a burst that grew, a
shutdown) says nothing about MBE and is not counted.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from mbe_gateway import contract
from mbe_gateway.control.metrics import Metrics
from mbe_gateway.errors import MBEError
from mbe_gateway.pipeline import MBE

T = TypeVar("T")


class MeasuredMBE:
    """An `MBE` that records each call in `metrics` and otherwise is `mbe`."""

    def __init__(self, mbe: MBE, metrics: Metrics) -> None:
        self.mbe = mbe
        self._metrics = metrics

    async def surprise(
        self,
        text: str,
        *,
        user_id: str,
        username: str | None = None,
        channel: str | None = None,
        domain: str | None = None,
    ) -> contract.Surprise:
        return await self._timed(
            contract.SURPRISE,
            self.mbe.surprise(text, user_id=user_id, username=username, channel=channel, domain=domain),
        )

    async def route(
        self, text: str, *, task_type: str = "chat", user_profile: Mapping[str, Any] | None = None
    ) -> contract.Routing:
        return await self._timed(
            contract.ROUTE, self.mbe.route(text, task_type=task_type, user_profile=user_profile)
        )

    async def memory_read(
        self, user_id: str, query: str, *, top_k: int = 5, memory_type: str | None = None
    ) -> contract.MemoryPage:
        return await self._timed(
            contract.MEMORY_READ, self.mbe.memory_read(user_id, query, top_k=top_k, memory_type=memory_type)
        )

    async def analyze_learning(self, user_id: str, *, window_days: int = 30) -> contract.Learning:
        return await self._timed(
            contract.ANALYZE_LEARNING, self.mbe.analyze_learning(user_id, window_days=window_days)
        )

    async def _timed(self, tool: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            result = await call
        except MBEError as e:
            self._metrics.mbe_call(tool, time.perf_counter() - started, type(e).__name__)
            raise
        self._metrics.mbe_call(tool, time.perf_counter() - started)
        return result
