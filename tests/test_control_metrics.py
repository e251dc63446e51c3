"""/metrics as Prometheus reads it: the exposition checked by a strict reader of the text
format (0.0.4), and what the gateway's counters say after the things they count.

The reader (`parse`) is strict where scrapers are strict, and a little stricter where a mistake
would hide: metric and label names, label value escapes, numbers, one TYPE (before the samples)
and at most one HELP per family, a family's samples together, no sample twice, histograms with
cumulative buckets in rising `le` order ending in +Inf, whose count equals `_count`, and a final
newline. tests/test_control.py scrapes the running daemon with it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pytest

from mbe_gateway.control.metrics import Counter, Gauge, Metrics, exposition
from mbe_gateway.pipeline import Reply

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class ParseError(ValueError):
    pass


@dataclass
class Family:
    name: str
    type: str = "untyped"
    help: str | None = None
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def value(self, sample: str | None = None, **labels: str) -> float:
        """The value of the one sample named `sample` (default: the family's name) with `labels`."""
        wanted = sample or self.name
        found = [v for name, have, v in self.samples if name == wanted and have == labels]
        if len(found) != 1:
            raise KeyError(f"{wanted}{labels}: {len(found)} samples")
        return found[0]


def parse(text: str) -> dict[str, Family]:
    if text and not text.endswith("\n"):
        raise ParseError("the exposition must end with a newline")
    families: dict[str, Family] = {}
    finished: set[str] = set()
    current: str | None = None
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"line {number}: {line!r}"
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not _NAME.fullmatch(name):
                    raise ParseError(f"{where}: bad metric name")
                family = families.setdefault(name, Family(name))
                if family.samples or name in finished:
                    raise ParseError(f"{where}: {parts[1]} after the family's samples")
                if parts[1] == "TYPE":
                    kind = parts[3] if len(parts) == 4 else ""
                    if kind not in _TYPES or family.type != "untyped":
                        raise ParseError(f"{where}: bad or repeated TYPE")
                    family.type = kind
                else:
                    if family.help is not None:
                        raise ParseError(f"{where}: repeated HELP")
                    family.help = _unescape(parts[3] if len(parts) == 4 else "", help_text=True)
            continue
        name, labels, value = _sample(line, where)
        family_name = _family_of(name, families)
        if current is not None and family_name != current:
            finished.add(current)
        if family_name in finished:
            raise ParseError(f"{where}: the samples of {family_name} are not together")
        current = family_name
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            raise ParseError(f"{where}: a sample given twice")
        seen.add(key)
        families.setdefault(family_name, Family(family_name)).samples.append((name, labels, value))
    for family in families.values():
        if family.type == "histogram":
            _check_histogram(family)
        if family.type == "counter":
            for name, labels, value in family.samples:
                if value < 0 or math.isnan(value):
                    raise ParseError(f"{name}{labels}: a counter cannot be {value}")
    return families


def _sample(line: str, where: str) -> tuple[str, dict[str, str], float]:
    match = _NAME.match(line)
    if match is None:
        raise ParseError(f"{where}: no metric name")
    name, rest = match.group(), line[match.end() :]
    labels: dict[str, str] = {}
    if rest.startswith("{"):
        rest = rest[1:]
        while not rest.startswith("}"):
            label = _LABEL.match(rest)
            if label is None:
                raise ParseError(f"{where}: bad label")
            if label.group(1) in labels:
                raise ParseError(f"{where}: label {label.group(1)} twice")
            labels[label.group(1)] = _unescape(label.group(2))
            rest = rest[label.end() :]
            if rest.startswith(","):
                rest = rest[1:]
            elif not rest.startswith("}"):
                raise ParseError(f"{where}: expected , or }} after a label")
        rest = rest[1:]
    if not rest.startswith(" "):
        raise ParseError(f"{where}: expected a space before the value")
    fields = rest.split()
    if len(fields) not in (1, 2):
        raise ParseError(f"{where}: expected a value and an optional timestamp")
    return name, labels, _number(fields[0], where)


def _number(text: str, where: str) -> float:
    if text in ("+Inf", "Inf"):
        return math.inf
    if text == "-Inf":
        return -math.inf
    if text == "NaN":
        return math.nan
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
        raise ParseError(f"{where}: {text!r} is not a number")
    return float(text)


def _unescape(text: str, *, help_text: bool = False) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "n":
                out.append("\n")
            elif nxt == "\\" or (nxt == '"' and not help_text):
                out.append(nxt)
            else:
                raise ParseError(f"bad escape \\{nxt} in {text!r}")
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _family_of(sample: str, families: dict[str, Family]) -> str:
    if sample in families:
        return sample
    for suffix in ("_bucket", "_sum", "_count"):
        base = sample.removesuffix(suffix)
        if base != sample and families.get(base, Family(base)).type in ("histogram", "summary"):
            return base
    return sample


def _check_histogram(family: Family) -> None:
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    counts: dict[tuple[tuple[str, str], ...], float] = {}
    for name, labels, value in family.samples:
        if name == family.name + "_bucket":
            if "le" not in labels:
                raise ParseError(f"{name}{labels}: a bucket without le")
            rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            series.setdefault(rest, []).append((_number(labels["le"], name), value))
        elif name == family.name + "_count":
            counts[tuple(sorted(labels.items()))] = value
        elif name != family.name + "_sum":
            raise ParseError(f"{name}: not a sample of histogram {family.name}")
    for rest, buckets in series.items():
        bounds = [b for b, _ in buckets]
        values = [v for _, v in buckets]
        if bounds != sorted(bounds) or bounds[-1] != math.inf:
            raise ParseError(f"{family.name}{dict(rest)}: buckets out of order or without +Inf")
        if values != sorted(values):
            raise ParseError(f"{family.name}{dict(rest)}: buckets are not cumulative")
        if counts.get(rest) != values[-1]:
            raise ParseError(f"{family.name}{dict(rest)}: _count differs from the +Inf bucket")


# --- the tests -------------------------------------------------------------------------------


def _reply(provider: str | None, **timings: float) -> Reply:
    degraded = frozenset() if provider is not None else frozenset({"llm"})
    return Reply("text", "text", 1, provider=provider, degraded=degraded, timings=timings)


def test_an_answer_is_counted_by_channel_stage_and_provider() -> None:
    metrics = Metrics(providers=["ollama", "openai"])
    metrics.received("telegram")
    metrics.answered("telegram", _reply("ollama", surprise=3.0, generate=420.0, total=431.5))
    metrics.answered("telegram", _reply("openai", total=1200.0))  # the first provider failed
    metrics.answered("slack", _reply(None, total=9.0))  # no provider could answer
    metrics.mbe_call("mbe_surprise", 0.003)
    metrics.mbe_call("mbe_route", 10.5, "MBETimeout")

    families = parse(exposition(metrics.families()))

    assert families["mbe_gateway_messages_in_total"].value(channel="telegram") == 1
    assert families["mbe_gateway_messages_out_total"].value(channel="telegram") == 2
    assert families["mbe_gateway_messages_out_total"].value(channel="slack") == 1
    stages = families["mbe_gateway_stage_seconds"]
    assert stages.type == "histogram"
    assert stages.value("mbe_gateway_stage_seconds_count", stage="total") == 3
    assert stages.value("mbe_gateway_stage_seconds_sum", stage="total") == pytest.approx(1.6405)
    assert stages.value("mbe_gateway_stage_seconds_bucket", stage="total", le="0.01") == 1
    assert stages.value("mbe_gateway_stage_seconds_bucket", stage="total", le="0.5") == 2
    assert stages.value("mbe_gateway_stage_seconds_bucket", stage="generate", le="0.25") == 0
    assert families["mbe_gateway_llm_answers_total"].value(provider="ollama") == 1
    assert families["mbe_gateway_llm_failovers_total"].value(provider="openai") == 1
    with pytest.raises(KeyError):
        families["mbe_gateway_llm_failovers_total"].value(provider="ollama")
    assert families["mbe_gateway_llm_unanswered_total"].value() == 1
    calls = families["mbe_gateway_mbe_call_seconds"]
    assert calls.value("mbe_gateway_mbe_call_seconds_count", tool="mbe_route") == 1
    assert calls.value("mbe_gateway_mbe_call_seconds_bucket", tool="mbe_route", le="+Inf") == 1
    assert calls.value("mbe_gateway_mbe_call_seconds_bucket", tool="mbe_route", le="10") == 0
    assert families["mbe_gateway_mbe_errors_total"].value(tool="mbe_route", error="MBETimeout") == 1


def test_label_values_and_help_texts_are_escaped() -> None:
    odd = 'a "quoted"\\back\nslash'
    counter = Counter("x_total", "first line\nsecond \\ line", ("channel",))
    counter.inc(odd, by=2.5)
    gauge = Gauge("y", "a gauge")
    gauge.set(-1.0)

    families = parse(exposition([counter, gauge]))

    assert families["x_total"].value(channel=odd) == 2.5
    assert families["x_total"].help == "first line\nsecond \\ line"
    assert families["y"].type == "gauge" and families["y"].value() == -1


def test_an_empty_family_still_says_what_it_is() -> None:
    families = parse(exposition(Metrics().families()))
    assert families["mbe_gateway_llm_unanswered_total"].type == "counter"
    assert families["mbe_gateway_llm_unanswered_total"].samples == []


@pytest.mark.parametrize(
    "text",
    [
        "x 1",  # no final newline
        "x{a=b} 1\n",  # unquoted label value
        'x{a="\\t"} 1\n',  # an escape the format does not have
        "x one\n",
        "# TYPE x counter\n# TYPE x counter\nx 1\n",
        "x 1\n# TYPE x counter\n",
        "# TYPE x counter\nx -1\n",
        "a 1\nb 1\na 2\n",  # a family split in two
        'x{a="1"} 1\nx{a="1"} 2\n',
        '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
        '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n',  # no +Inf bucket
        '# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n',
    ],
)
def test_the_reader_refuses_what_prometheus_would_refuse(text: str) -> None:
    with pytest.raises(ParseError):
        parse(text)
