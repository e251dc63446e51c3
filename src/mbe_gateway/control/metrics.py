"""Counters and histograms in plain objects, and their Prometheus text exposition (format 0.0.4).

The gateway owns one `Metrics` (no global registry: two gateways in one test process count
apart) and feeds it where things happen: a message stored for answering, a reply queued, an
MBE call returning. Values that are a look at the present rather than a count (queue depths,
whether the engine is up) are not kept here: the server reads them at scrape time and hands
them to `exposition` as gauges.

Label values come from a closed set (channel names, pipeline stages, MBE tools, provider
names, error classes), never from what users write, so the series stay few.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from mbe_gateway.pipeline import Reply

# Seconds, from a fast MBE call (~2 ms) to a slow local model (a minute).
BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[str, ...]


@dataclass
class Counter:
    name: str  # ends in _total
    help: str
    labels: tuple[str, ...] = ()
    values: dict[Labels, float] = field(default_factory=dict)

    def inc(self, *label_values: str, by: float = 1.0) -> None:
        self.values[label_values] = self.values.get(label_values, 0.0) + by

    def lines(self) -> Iterator[str]:
        yield from _header(self.name, self.help, "counter")
        for values, number in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.labels, values)} {_number(number)}"


@dataclass
class Gauge:
    name: str
    help: str
    labels: tuple[str, ...] = ()
    values: dict[Labels, float] = field(default_factory=dict)

    def set(self, value: float, *label_values: str) -> None:
        self.values[label_values] = value

    def lines(self) -> Iterator[str]:
        yield from _header(self.name, self.help, "gauge")
        for values, number in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.labels, values)} {_number(number)}"


@dataclass
class _Series:
    counts: list[int]  # per bucket, not cumulative
    total: float = 0.0
    count: int = 0


@dataclass
class Histogram:
    name: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: Sequence[float] = BUCKETS
    series: dict[Labels, _Series] = field(default_factory=dict)

    def observe(self, value: float, *label_values: str) -> None:
        series = self.series.get(label_values)
        if series is None:
            series = self.series[label_values] = _Series([0] * len(self.buckets))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                series.counts[i] += 1
                break
        series.total += value
        series.count += 1

    def lines(self) -> Iterator[str]:
        yield from _header(self.name, self.help, "histogram")
        for values, series in sorted(self.series.items()):
            running = 0
            for bound, count in zip(self.buckets, series.counts, strict=True):
                running += count
                le = _labels((*self.labels, "le"), (*values, _number(bound)))
                yield f"{self.name}_bucket{le} {running}"
            inf = _labels((*self.labels, "le"), (*values, "+Inf"))
            yield f"{self.name}_bucket{inf} {series.count}"
            yield f"{self.name}_sum{_labels(self.labels, values)} {_number(series.total)}"
            yield f"{self.name}_count{_labels(self.labels, values)} {series.count}"


Family = Counter | Gauge | Histogram


def exposition(families: Iterable[Family]) -> str:
    """The text format Prometheus scrapes: HELP and TYPE, then the samples, for each family."""
    return "".join(line + "\n" for family in families for line in family.lines())


class Metrics:
    """What the gateway counts. `providers` are the model chain's, in order: an answer from any
    but the first is a failover. (A streamed answer names the chain, not the provider that
    wrote it, so it is counted in neither.)"""

    def __init__(self, *, providers: Sequence[str] = ()) -> None:
        self.providers = tuple(providers)
        self.messages_in = Counter(
            "mbe_gateway_messages_in_total", "Messages stored for answering, per channel.", ("channel",)
        )
        self.messages_refused = Counter(
            "mbe_gateway_messages_refused_total",
            "Messages not let in (access control, rate limit, size), per channel and reason.",
            ("channel", "reason"),
        )
        self.messages_out = Counter(
            "mbe_gateway_messages_out_total",
            "Answers and messages queued to be sent (or shown, on the control channel), per channel.",
            ("channel",),
        )
        self.stage_seconds = Histogram(
            "mbe_gateway_stage_seconds", "Time spent in each stage of answering a message.", ("stage",)
        )
        self.mbe_call_seconds = Histogram(
            "mbe_gateway_mbe_call_seconds", "MBE tool calls made while answering, by tool.", ("tool",)
        )
        self.mbe_errors = Counter(
            "mbe_gateway_mbe_errors_total",
            "MBE tool calls that failed, by tool and error.",
            ("tool", "error"),
        )
        self.llm_answers = Counter(
            "mbe_gateway_llm_answers_total", "Answers written by each LLM provider.", ("provider",)
        )
        self.llm_failovers = Counter(
            "mbe_gateway_llm_failovers_total",
            "Answers written by a provider other than the first of the chain, by provider.",
            ("provider",),
        )
        self.llm_unanswered = Counter(
            "mbe_gateway_llm_unanswered_total", "Messages no provider could answer (the user got an apology)."
        )
        self.control_refusals = Counter(
            "mbe_gateway_control_refusals_total",
            "Control-plane connections and requests refused, by reason.",
            ("reason",),
        )

    def received(self, channel: str) -> None:
        self.messages_in.inc(channel)

    def refused(self, channel: str, reason: str) -> None:
        self.messages_refused.inc(channel, reason)

    def sent(self, channel: str) -> None:
        self.messages_out.inc(channel)

    def answered(self, channel: str, reply: Reply) -> None:
        """One answer queued: its stage timings, and who wrote it."""
        self.sent(channel)
        self.observe_stages(reply.timings)
        if "llm" in reply.degraded:
            self.llm_unanswered.inc()
        elif reply.provider in self.providers:
            self.llm_answers.inc(reply.provider)
            if reply.provider != self.providers[0]:
                self.llm_failovers.inc(reply.provider)

    def observe_stages(self, timings: Mapping[str, float]) -> None:
        for stage, ms in timings.items():
            self.stage_seconds.observe(ms / 1000, stage)

    def mbe_call(self, tool: str, seconds: float, error: str | None = None) -> None:
        self.mbe_call_seconds.observe(seconds, tool)
        if error is not None:
            self.mbe_errors.inc(tool, error)

    def families(self) -> list[Family]:
        return [
            self.messages_in,
            self.messages_refused,
            self.messages_out,
            self.stage_seconds,
            self.mbe_call_seconds,
            self.mbe_errors,
            self.llm_answers,
            self.llm_failovers,
            self.llm_unanswered,
            self.control_refusals,
        ]


def _header(name: str, text: str, kind: str) -> Iterator[str]:
    escaped = text.replace("\\", "\\\\").replace("\n", "\\n")
    yield f"# HELP {name} {escaped}"
    yield f"# TYPE {name} {kind}"


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{name}="{_escape(value)}"' for name, value in zip(names, values, strict=True))
    return "{" + pairs + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)
