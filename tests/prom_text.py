"""A strict parser of the Prometheus text format (0.0.4), for the metrics tests.

Stricter than node_exporter where it matters to us: every family has HELP and
TYPE before its samples, counters end in ``_total`` and never go negative, no
series twice, histograms cumulative with ``+Inf`` equal to ``_count``, and the
text ends in a newline. Raises ValueError naming the line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*)?\}})? (\S+)$")
_ONE_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
_SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}

Labels = frozenset[tuple[str, str]]


@dataclass
class ParsedFamily:
    name: str
    kind: str = ""
    help: str = ""
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _value(text: str, lineno: int) -> float:
    if text in ("NaN", "+Inf", "-Inf"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"line {lineno}: bad value {text!r}") from None


def parse(text: str) -> dict[str, ParsedFamily]:
    if not text.endswith("\n"):
        raise ValueError("the text does not end in a newline")
    families: dict[str, ParsedFamily] = {}
    current: ParsedFamily | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            if not re.fullmatch(_NAME, name) or name in families:
                raise ValueError(f"line {lineno}: HELP for {name!r} (bad or repeated)")
            current = families[name] = ParsedFamily(name, help=help_text)
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            if current is None or current.name != name or current.kind:
                raise ValueError(f"line {lineno}: TYPE for {name!r} not right after its HELP")
            if kind not in _SUFFIXES:
                raise ValueError(f"line {lineno}: unknown type {kind!r}")
            if kind == "counter" and not name.endswith("_total"):
                raise ValueError(f"line {lineno}: counter {name} does not end in _total")
            current.kind = kind
        elif line.startswith("#") or not line:
            raise ValueError(f"line {lineno}: unexpected {line!r}")
        else:
            match = _SAMPLE.match(line)
            if match is None:
                raise ValueError(f"line {lineno}: not a sample: {line!r}")
            name, labels_text, value_text = match.groups()
            if current is None or not current.kind:
                raise ValueError(f"line {lineno}: sample before HELP and TYPE")
            suffix = name[len(current.name):] if name.startswith(current.name) else None
            if suffix not in _SUFFIXES[current.kind]:
                raise ValueError(f"line {lineno}: {name} outside its family {current.name}")
            pairs = [(k, _unescape(v)) for k, v in _ONE_LABEL.findall(labels_text or "")]
            labels = frozenset(pairs)
            if len(labels) != len(pairs) or len({k for k, _ in pairs}) != len(pairs):
                raise ValueError(f"line {lineno}: a label given twice")
            key = (suffix, labels)
            if key in current.samples:
                raise ValueError(f"line {lineno}: series repeated")
            value = _value(value_text, lineno)
            if current.kind == "counter" and not value >= 0:
                raise ValueError(f"line {lineno}: counter {value}")
            current.samples[key] = value
    for family in families.values():
        if not family.kind:
            raise ValueError(f"{family.name}: HELP without TYPE")
        if family.kind == "histogram":
            _check_histogram(family)
    return families


def _check_histogram(family: ParsedFamily) -> None:
    series: dict[Labels, list[tuple[float, float]]] = {}
    for (suffix, labels), value in family.samples.items():
        if suffix == "_bucket":
            le = dict(labels)["le"]
            rest = frozenset(p for p in labels if p[0] != "le")
            series.setdefault(rest, []).append((_value(le, 0), value))
    for rest, buckets in series.items():
        buckets.sort()
        counts = [c for _, c in buckets]
        if counts != sorted(counts) or not math.isinf(buckets[-1][0]):
            raise ValueError(f"{family.name}{dict(rest)}: buckets not cumulative or no +Inf")
        if family.samples.get(("_count", rest)) != buckets[-1][1] or ("_sum", rest) not in (
            family.samples
        ):
            raise ValueError(f"{family.name}{dict(rest)}: _count differs from +Inf, or no _sum")


def value(families: dict[str, ParsedFamily], name: str, suffix: str = "", **labels: str) -> float:
    """The sample of ``name`` (a family name) with exactly these labels; KeyError if none."""
    return families[name].samples[(suffix, frozenset(labels.items()))]
