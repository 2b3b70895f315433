"""Rendering for `spotwatch status`: the table, the JSON, and the change lines of --watch.

Pure functions over :class:`~spotwatch.spot_codes.SpotRequest` lists; the clock
("now") is passed in.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from spotwatch.spot_codes import CLASSES, SpotRequest, assess_request, urgency

# JSON field names, in order: a stable contract for scripts.
JSON_FIELDS = (
    "request_id",
    "instance_id",
    "state",
    "status_code",
    "status_message",
    "updated",
    "class",
    "meaning",
    "instance_state",
    "region",
)

_COLUMNS = ("REQUEST", "INSTANCE", "STATE", "STATUS", "UPDATED", "MEANING", "MESSAGE")
_GAP = "  "


def order(requests: Iterable[SpotRequest]) -> list[SpotRequest]:
    """Most urgent first; within a class, most recently updated first."""

    def key(request: SpotRequest) -> tuple[int, float, str, str]:
        updated = -request.updated.timestamp() if request.updated is not None else 0.0
        return (urgency(assess_request(request).category), updated, request.region,
                request.request_id)

    return sorted(requests, key=key)


def utc_text(moment: datetime | None) -> str:
    """``2026-11-26 03:00:25Z``, or ``-`` for no time."""
    if moment is None:
        return "-"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def ago(moment: datetime, now: datetime) -> str:
    """How long before ``now``: ``45s``, ``2m``, ``5h``, ``3d`` (never negative)."""
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def record(request: SpotRequest) -> dict[str, Any]:
    """One request as a JSON object with the :data:`JSON_FIELDS` names."""
    assessment = assess_request(request)
    updated = None
    if request.updated is not None:
        updated = request.updated.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "request_id": request.request_id,
        "instance_id": request.instance_id,
        "state": request.state,
        "status_code": request.status_code,
        "status_message": request.status_message,
        "updated": updated,
        "class": assessment.category,
        "meaning": assessment.meaning,
        "instance_state": request.instance_state,
        "region": request.region,
    }


def render_json(requests: Iterable[SpotRequest], *, compact: bool = False) -> str:
    """A JSON list of :func:`record` objects, most urgent first."""
    records = [record(request) for request in order(requests)]
    if compact:
        return json.dumps(records, separators=(",", ":"))
    return json.dumps(records, indent=2)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def render_table(
    requests: Iterable[SpotRequest],
    now: datetime,
    *,
    show_region: bool = False,
    width: int | None = None,
) -> str:
    """A table for people: one row per request, most urgent first.

    Columns fit their contents; the message comes last and is not padded. With
    ``width`` (a terminal's), lines longer than that are cut with ``…``.
    """
    ordered = order(requests)
    header: list[str] = list(_COLUMNS)
    rows: list[list[str]] = []
    for request in ordered:
        updated = utc_text(request.updated)
        if request.updated is not None:
            updated += f" ({ago(request.updated, now)} ago)"
        rows.append([
            request.request_id,
            request.instance_id or "-",
            request.state or "-",
            request.status_code or "-",
            updated,
            assess_request(request).meaning,
            _one_line(request.status_message) or "-",
        ])
    if show_region:
        header.insert(0, "REGION")
        for row, request in zip(rows, ordered):
            row.insert(0, request.region)
    widths = [max(len(cells[i]) for cells in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for cells in [header, *rows]:
        padded = [cell.ljust(w) for cell, w in zip(cells, widths)]
        line = _GAP.join([*padded, cells[-1]]).rstrip()
        if width is not None and len(line) > width:
            line = line[: max(width - 1, 0)] + "…"
        lines.append(line)
    return "\n".join(lines)


def render_summary(requests: Sequence[SpotRequest]) -> str:
    """``3 requests: 1 interrupting, 2 healthy`` (classes in urgency order)."""
    counts = Counter(assess_request(request).category for request in requests)
    parts = [f"{counts[c]} {c}" for c in CLASSES if counts[c]]
    noun = "request" if len(requests) == 1 else "requests"
    return f"{len(requests)} {noun}: " + ", ".join(parts) if parts else "0 requests"


# --watch: what changed between two polls.

Key = tuple[str, str]  # (region, request_id)
Snapshot = Mapping[Key, SpotRequest]

APPEARED = "(new)"
GONE = "(gone)"


@dataclass(frozen=True)
class Change:
    """A request whose status code or class changed between two polls."""

    region: str
    request_id: str
    instance_id: str | None
    before: str  # status code, or APPEARED
    after: str  # status code, or GONE
    meaning: str  # of ``after`` (empty when the request is gone)


def snapshot(requests: Iterable[SpotRequest]) -> dict[Key, SpotRequest]:
    """The requests of one poll, keyed for :func:`changes`."""
    return {(request.region, request.request_id): request for request in requests}


def _label(request: SpotRequest) -> str:
    return request.status_code or "-"


def changes(before: Snapshot, after: Snapshot) -> list[Change]:
    """What differs from ``before`` to ``after``, most urgent first.

    A change is a new status code, a new class for the same code (a reclaimed
    instance that stopped running), a request that appeared, or one that went.
    """
    found: list[tuple[int, Change]] = []
    for key, now in after.items():
        then = before.get(key)
        meaning = assess_request(now)
        if then is None:
            label = APPEARED
        elif then.status_code != now.status_code:
            label = _label(then)
        elif assess_request(then).category != meaning.category:
            label = f"{_label(then)} ({assess_request(then).category})"
        else:
            continue
        after_label = _label(now)
        if then is not None and then.status_code == now.status_code:
            after_label += f" ({meaning.category})"
        change = Change(key[0], key[1], now.instance_id, label, after_label, meaning.meaning)
        found.append((urgency(meaning.category), change))
    for key, then in before.items():
        if key not in after:
            change = Change(key[0], key[1], then.instance_id, _label(then), GONE, "")
            found.append((len(CLASSES), change))
    found.sort(key=lambda item: (item[0], item[1].region, item[1].request_id))
    return [change for _, change in found]


def render_change(change: Change, now: datetime, *, show_region: bool = False) -> str:
    """``2026-11-26 03:00:25Z  sir-…  i-…  fulfilled -> marked-for-termination  (meaning)``."""
    parts = [utc_text(now)]
    if show_region:
        parts.append(change.region)
    parts += [change.request_id, change.instance_id or "-", f"{change.before} -> {change.after}"]
    line = _GAP.join(parts)
    if change.meaning:
        line += f"{_GAP}({change.meaning})"
    return line
