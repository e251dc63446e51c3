"""The daemon at a glance: components and their states, the engine, the models, the queues.

One place builds what `status` answers, what the "state" events compare and what /metrics
shows as gauges, so the three always agree. The control plane is served while the assistant
is still starting: until it is attached, the assistant and the engine are "starting", and
there is no model (null) nor any provider to show yet.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Final

from mbe_gateway import __version__
from mbe_gateway.control.metrics import Counter, Family, Gauge
from mbe_gateway.store import overview

if TYPE_CHECKING:
    from mbe_gateway.gateway import Gateway


STARTING: Final = "starting"


def components(gateway: Gateway) -> dict[str, str]:
    """Each component's state in words: "assistant" (starting | ready), "engine" (starting |
    ready | down | closed), then each channel by name (starting | running | reconnecting: why
    | stopped: why)."""
    if gateway.starting:
        return {"assistant": STARTING, "engine": STARTING, **gateway.states}
    return {"assistant": "ready", "engine": gateway.assistant.mbe.state, **gateway.states}


async def queues(gateway: Gateway) -> dict[str, int]:
    depths = await overview.queue_depths(gateway.db)
    return {
        **asdict(depths),
        "lanes": gateway.conversations.active,
        "delivering_chats": gateway.delivery.busy_chats,
    }


async def status(gateway: Gateway, *, started_at: float, clients: int) -> dict[str, Any]:
    if gateway.starting:
        engine: dict[str, Any] = {"state": STARTING, "server": None, "pid": None, "last_error": None}
        model, providers = None, []
    else:
        assistant = gateway.assistant
        mbe = assistant.mbe
        error = mbe.last_error
        engine = {
            "state": mbe.state,
            "server": mbe.server.name,
            "pid": mbe.pid,
            "last_error": str(error) if error is not None else None,
        }
        model, providers = assistant.model, [asdict(p) for p in assistant.chain.status()]
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime_s": round(time.time() - started_at, 3),
        "components": components(gateway),
        "channels": dict(gateway.states),
        "engine": engine,
        "model": model,
        "providers": providers,
        "queues": await queues(gateway),
        "delivery": {"sent": gateway.delivery.sent, "failed": gateway.delivery.failed},
        "control": {"clients": clients},
    }


async def families(gateway: Gateway, *, started_at: float, clients: int) -> list[Family]:
    """What /metrics shows beside `Metrics`: the present as gauges, and Delivery's own totals."""
    up = Gauge("mbe_gateway_up", "1 while the component runs (the engine is ready), else 0.", ("component",))
    for name, state in components(gateway).items():
        up.set(1.0 if state in ("ready", "running") else 0.0, name)
    depth = Gauge("mbe_gateway_queue_depth", "Items waiting, per queue.", ("queue",))
    for name, value in (await queues(gateway)).items():
        depth.set(value, name)
    cooling = Gauge(
        "mbe_gateway_llm_provider_cooldown_seconds",
        "Seconds until a failed LLM provider is tried again (0: it is tried).",
        ("provider",),
    )
    failures = Gauge(
        "mbe_gateway_llm_provider_consecutive_failures", "Failures in a row, per LLM provider.", ("provider",)
    )
    for provider in [] if gateway.starting else gateway.assistant.chain.status():
        cooling.set(provider.cooling_down_for, provider.name)
        failures.set(provider.consecutive_failures, provider.name)
    delivered = Counter(
        "mbe_gateway_delivery_total",
        "Messages the outbox sender handed to a platform (sent) or gave up on (failed).",
        ("outcome",),
    )
    delivered.inc("sent", by=gateway.delivery.sent)
    delivered.inc("failed", by=gateway.delivery.failed)
    uptime = Gauge("mbe_gateway_uptime_seconds", "Seconds since the control plane started.")
    uptime.set(time.time() - started_at)
    connected = Gauge("mbe_gateway_control_clients", "Authenticated control-plane connections.")
    connected.set(clients)
    return [up, depth, cooling, failures, delivered, uptime, connected]
