"""One monitor per IMDS source; each check() is one poll returning a Notice or None.

The parsers are pure. They never refuse a 200: a body that is not JSON or has
no usable time is still a notice ("better a hook run than a missed
interruption"), with ``problem`` saying what was wrong.

Deadlines (``effective_deadline``): the notice time when it is still ahead,
else ``seen_at`` + two minutes. A notice time already passed while the
instance is plainly still running means the time is wrong or a clock jumped;
hooks get the standard two minutes rather than none. A rebalance
recommendation has no deadline of its own (its ``noticeTime`` is when it was
issued), so it also gets ``seen_at`` + two minutes.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from typing import Callable

from spotwatch.imds import ImdsClient, ImdsError
from spotwatch.logs import get_logger
from spotwatch.monitor import MonitorBase
from spotwatch.notice import (
    ACTIONS,
    DEFAULT_LEAD_SECONDS,
    REBALANCE_ACTION,
    REBALANCE_RECOMMENDATION,
    SPOT_INTERRUPTION,
    Notice,
    notice_id,
)

INSTANCE_ACTION_PATH = "/latest/meta-data/spot/instance-action"
TERMINATION_TIME_PATH = "/latest/meta-data/spot/termination-time"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
SOURCE_INSTANCE_ACTION = "spot/instance-action"
SOURCE_TERMINATION_TIME = "spot/termination-time"
SOURCE_REBALANCE = "events/recommendations/rebalance"
KEY_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# At most this share of a poll's budget is kept for the termination-time fallback.
FALLBACK_SHARE = 0.375
# A notice time must be at least this far ahead to be believed as a deadline.
MIN_AHEAD_SECONDS = 1.0

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?"
    r"([Zz]|[+-]\d{2}:?\d{2})?"
)


def parse_time(raw: str) -> float | None:
    """RFC 3339 (``Z``, ``+00:00`` or another offset, optional fraction) -> epoch seconds.

    No offset is read as UTC (IMDS speaks UTC). None when it does not parse.
    """
    m = _RFC3339.fullmatch(raw.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    try:
        # A leap second (:60) counts as :59; datetime rejects 2026-02-31 and 25:00.
        moment = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=timezone.utc)
    except ValueError:
        return None
    epoch = moment.timestamp()
    offset = m.group(8) or "Z"
    if offset not in ("Z", "z"):
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:])
        if hours > 23 or minutes > 59:
            return None
        epoch -= sign * (hours * 3600 + minutes * 60)
    return epoch + (float(m.group(7)) if m.group(7) else 0.0)


def effective_deadline(notice_time: float | None, seen_at: float) -> float:
    """The deadline hooks work to: the notice time if it is still ahead, else two minutes."""
    if notice_time is not None and notice_time > seen_at + MIN_AHEAD_SECONDS:
        return notice_time
    return seen_at + DEFAULT_LEAD_SECONDS


def _key(parsed: float | None, body: bytes) -> str:
    if parsed is not None:
        return time.strftime(KEY_FORMAT, time.gmtime(int(parsed)))
    return body.decode("utf-8", "replace").strip()


def _time_problem(raw: str, parsed: float | None, seen_at: float) -> str:
    if parsed is None:
        return f"unusable time {raw!r}; assuming {DEFAULT_LEAD_SECONDS:g} s from now"
    if parsed <= seen_at + MIN_AHEAD_SECONDS:
        return f"notice time {raw} already passed; allowing {DEFAULT_LEAD_SECONDS:g} s from now"
    return ""


def _load_object(body: bytes) -> tuple[dict[str, object], str]:
    """The JSON object in ``body``, or {} and why not."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}, f"body is not valid JSON: {_excerpt(body)}"
    if not isinstance(doc, dict):
        return {}, f"body is not a JSON object: {_excerpt(body)}"
    return doc, ""


def _excerpt(body: bytes) -> str:
    text = " ".join(body.decode("utf-8", "replace").split())
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


def _join(*problems: str) -> str:
    return "; ".join(p for p in problems if p)


def parse_instance_action(body: bytes, seen_at: float) -> Notice:
    """A 200 from spot/instance-action as a Notice, however malformed."""
    doc, body_problem = _load_object(body)
    action = doc.get("action")
    action_problem = ""
    if action not in ACTIONS:
        if not body_problem:
            what = "no action given" if action is None else f"unknown action {action!r}"
            action_problem = f"{what}; assuming terminate"
        action = "terminate"
    assert isinstance(action, str)
    raw = doc.get("time")
    raw_time = raw if isinstance(raw, str) else ""
    parsed = parse_time(raw_time) if raw_time else None
    time_problem = ""
    if body_problem:
        pass  # the body problem says it all
    elif raw is None:
        time_problem = f"no time given; assuming {DEFAULT_LEAD_SECONDS:g} s from now"
    else:
        time_problem = _time_problem(str(raw), parsed, seen_at)
    return Notice(
        kind=SPOT_INTERRUPTION,
        action=action,
        raw_time=raw_time,
        time=parsed,
        deadline=effective_deadline(parsed, seen_at),
        id=notice_id(SPOT_INTERRUPTION, action, _key(parsed, body)),
        source=SOURCE_INSTANCE_ACTION,
        problem=_join(body_problem, action_problem, time_problem),
    )


def parse_termination_time(body: bytes, seen_at: float) -> Notice:
    """A 200 from spot/termination-time (a bare timestamp; terminate only) as a Notice."""
    raw_time = body.decode("utf-8", "replace").strip()
    parsed = parse_time(raw_time)
    return Notice(
        kind=SPOT_INTERRUPTION,
        action="terminate",
        raw_time=raw_time,
        time=parsed,
        deadline=effective_deadline(parsed, seen_at),
        id=notice_id(SPOT_INTERRUPTION, "terminate", _key(parsed, body)),
        source=SOURCE_TERMINATION_TIME,
        problem=_time_problem(raw_time, parsed, seen_at),
    )


def parse_rebalance(body: bytes, seen_at: float) -> Notice:
    """A 200 from events/recommendations/rebalance as a Notice (deadline: two minutes)."""
    doc, problem = _load_object(body)
    raw = doc.get("noticeTime")
    raw_time = raw if isinstance(raw, str) else ""
    parsed = parse_time(raw_time) if raw_time else None
    if not problem and parsed is None:
        problem = "no noticeTime given" if raw is None else f"unusable noticeTime {raw!r}"
    return Notice(
        kind=REBALANCE_RECOMMENDATION,
        action=REBALANCE_ACTION,
        raw_time=raw_time,
        time=parsed,
        # noticeTime is when the recommendation was issued, not a deadline.
        deadline=seen_at + DEFAULT_LEAD_SECONDS,
        id=notice_id(REBALANCE_RECOMMENDATION, REBALANCE_ACTION, _key(parsed, body)),
        source=SOURCE_REBALANCE,
        problem=problem,
        ends_instance=False,
    )


class SpotInterruptionMonitor(MonitorBase):
    """Polls spot/instance-action; spot/termination-time only when that fails."""

    name = SPOT_INTERRUPTION

    def __init__(
        self,
        client: ImdsClient,
        wall_clock: Callable[[], float] = time.time,
        *,
        fallback_budget: float = 1.5,
    ) -> None:
        self._client = client
        self._wall = wall_clock
        self._fallback_budget = fallback_budget
        self._on_fallback = False
        self._log = get_logger(monitor=self.name)

    def check(self) -> Notice | None:
        """One poll: the notice, None when there is none; ImdsError when IMDS fails."""
        # Both reads fit the poll's budget: instance-action leaves the fallback its
        # share, and while on the fallback (instance-action known to fail) gets a
        # short budget itself.
        window = self._client.remaining()
        budget = window - min(self._fallback_budget, window * FALLBACK_SHARE)
        if self._on_fallback:
            budget = min(budget, self._fallback_budget)
        try:
            resp = self._client.get(INSTANCE_ACTION_PATH, budget=budget)
        except ImdsError as err:
            return self._fallback(err)
        if self._on_fallback:
            self._on_fallback = False
            self._log.info("monitor.fallback_ended", source=SOURCE_INSTANCE_ACTION)
        if resp.status == 404:
            return None
        return parse_instance_action(resp.body, self._wall())

    def _fallback(self, err: ImdsError) -> Notice | None:
        # The idle path stays one GET per poll: termination-time is only read
        # when instance-action fails, with a short budget of its own.
        budget = min(self._fallback_budget, self._client.remaining())
        try:
            resp = self._client.get(TERMINATION_TIME_PATH, budget=budget)
        except ImdsError:
            raise err from None
        if not self._on_fallback:
            self._on_fallback = True
            self._log.warning(
                "monitor.fallback",
                source=SOURCE_TERMINATION_TIME,
                kind=err.kind,
                detail=err.detail,
                advice="spot/termination-time shows terminate notices only; " + err.advice,
            )
        if resp.status == 404:
            return None
        return parse_termination_time(resp.body, self._wall())


class RebalanceMonitor(MonitorBase):
    """Polls events/recommendations/rebalance."""

    name = REBALANCE_RECOMMENDATION

    def __init__(self, client: ImdsClient, wall_clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._wall = wall_clock

    def check(self) -> Notice | None:
        """One poll: the recommendation, None when there is none; ImdsError on faults."""
        resp = self._client.get(REBALANCE_PATH)
        if resp.status == 404:
            return None
        return parse_rebalance(resp.body, self._wall())
