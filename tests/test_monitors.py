"""Notice parsers (pure) and the monitors against the IMDS simulator."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

import spotwatch.imds as imds_module
from spotwatch.imds import ImdsClient, ImdsError
from spotwatch.imdssim import ImdsSimulator
from spotwatch.monitors import (
    INSTANCE_ACTION_PATH,
    REBALANCE_PATH,
    TERMINATION_TIME_PATH,
    RebalanceMonitor,
    SpotInterruptionMonitor,
    effective_deadline,
    parse_instance_action,
    parse_rebalance,
    parse_termination_time,
    parse_time,
)
from spotwatch.notice import (
    DEFAULT_LEAD_SECONDS,
    REBALANCE_ACTION,
    REBALANCE_RECOMMENDATION,
    SPOT_INTERRUPTION,
    notice_id,
)

# 2026-11-26T03:00:25Z
T = 1795662025.0
SEEN = T - 100  # seen 100 s before the notice time


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


# -- parse_time and effective_deadline --------------------------------------------


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("2026-11-26T03:00:25Z", T),
        ("2026-11-26T03:00:25z", T),
        ("2026-11-26T03:00:25+00:00", T),
        ("2026-11-26T03:00:25-00:00", T),
        ("2026-11-26T03:00:25.250Z", T + 0.25),
        ("2026-11-26T03:00:25.123456789+00:00", T + 0.123456789),
        ("2026-11-26T05:00:25+02:00", T),
        ("2026-11-25T22:30:25-0430", T),
        ("2026-11-26T03:00:25", T),  # no offset: IMDS speaks UTC
        ("2026-11-26 03:00:25Z", T),
        ("  2026-11-26T03:00:25Z\n", T),
    ],
)
def test_parse_time_accepts_rfc3339_forms(raw: str, expected: float) -> None:
    assert parse_time(raw) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "soon",
        "2026-11-26",
        "2026-13-01T00:00:00Z",
        "2026-02-31T00:00:00Z",
        "2026-11-26T24:00:00Z",
        "2026-11-26T03:00:25+25:00",
        "1795662025",
        "2026-11-26T03:00Z",
    ],
)
def test_parse_time_rejects_the_rest(raw: str) -> None:
    assert parse_time(raw) is None


def test_effective_deadline() -> None:
    assert effective_deadline(T, SEEN) == T
    assert effective_deadline(None, SEEN) == SEEN + DEFAULT_LEAD_SECONDS
    assert effective_deadline(SEEN - 3600, SEEN) == SEEN + DEFAULT_LEAD_SECONDS  # past
    assert effective_deadline(SEEN + 1, SEEN) == SEEN + DEFAULT_LEAD_SECONDS  # effectively now
    assert effective_deadline(SEEN + 1.5, SEEN) == SEEN + 1.5  # short, but real


# -- instance-action -------------------------------------------------------------


@pytest.mark.parametrize("action", ["terminate", "stop", "hibernate"])
def test_instance_action_each_action(action: str) -> None:
    notice = parse_instance_action(body(action=action, time="2026-11-26T03:00:25Z"), SEEN)
    assert notice.kind == SPOT_INTERRUPTION
    assert notice.action == action
    assert notice.raw_time == "2026-11-26T03:00:25Z"
    assert notice.time == T
    assert notice.deadline == T
    assert notice.source == "spot/instance-action"
    assert notice.problem == ""
    assert notice.id == notice_id(SPOT_INTERRUPTION, action, "2026-11-26T03:00:25Z")


@pytest.mark.parametrize("action", ["reboot", "", 7, None])
def test_instance_action_unknown_or_missing_action_means_terminate(action: object) -> None:
    fields: dict[str, object] = {"time": "2026-11-26T03:00:25Z"}
    if action is not None:
        fields["action"] = action
    notice = parse_instance_action(body(**fields), SEEN)
    assert notice.action == "terminate"
    assert notice.time == T
    assert "assuming terminate" in notice.problem


@pytest.mark.parametrize("raw", [b"", b"not json", b'{"action": "stop", ', b"[1, 2]", b"\xff\xfe"])
def test_instance_action_invalid_json_is_still_a_notice(raw: bytes) -> None:
    notice = parse_instance_action(raw, SEEN)
    assert notice.kind == SPOT_INTERRUPTION
    assert notice.action == "terminate"
    assert notice.time is None
    assert notice.raw_time == ""
    assert notice.deadline == SEEN + DEFAULT_LEAD_SECONDS
    assert "JSON" in notice.problem
    assert notice.id == notice_id(
        SPOT_INTERRUPTION, "terminate", raw.decode("utf-8", "replace").strip()
    )


def test_instance_action_missing_time() -> None:
    notice = parse_instance_action(body(action="hibernate"), SEEN)
    assert notice.action == "hibernate"  # a usable action is kept
    assert notice.time is None
    assert notice.deadline == SEEN + DEFAULT_LEAD_SECONDS
    assert "no time" in notice.problem


@pytest.mark.parametrize("raw_time", ["tomorrow", "", "2026-02-31T00:00:00Z"])
def test_instance_action_bad_time(raw_time: str) -> None:
    raw = body(action="stop", time=raw_time)
    notice = parse_instance_action(raw, SEEN)
    assert notice.time is None
    assert notice.raw_time == raw_time
    assert notice.deadline == SEEN + DEFAULT_LEAD_SECONDS
    assert "unusable time" in notice.problem
    assert notice.id == notice_id(SPOT_INTERRUPTION, "stop", raw.decode())


def test_instance_action_non_string_time() -> None:
    notice = parse_instance_action(body(action="stop", time=1795662025), SEEN)
    assert notice.time is None
    assert notice.raw_time == ""
    assert "unusable time" in notice.problem


def test_instance_action_time_in_the_past_keeps_the_time_but_gives_two_minutes() -> None:
    seen = T + 3600
    notice = parse_instance_action(body(action="terminate", time="2026-11-26T03:00:25Z"), seen)
    assert notice.time == T
    assert notice.raw_time == "2026-11-26T03:00:25Z"
    assert notice.deadline == seen + DEFAULT_LEAD_SECONDS
    assert "already passed" in notice.problem
    # The id does not depend on when it was seen.
    assert (
        notice.id
        == parse_instance_action(body(action="terminate", time="2026-11-26T03:00:25Z"), SEEN).id
    )


@pytest.mark.parametrize(
    "raw_time,expected",
    [("2026-11-26T03:00:25+00:00", T), ("2026-11-26T03:00:25.750Z", T + 0.75)],
)
def test_instance_action_offset_and_fraction_normalise_to_the_same_id(
    raw_time: str, expected: float
) -> None:
    notice = parse_instance_action(body(action="terminate", time=raw_time), SEEN)
    assert notice.raw_time == raw_time  # as IMDS gave it
    assert notice.time == pytest.approx(expected)
    assert notice.id == notice_id(SPOT_INTERRUPTION, "terminate", "2026-11-26T03:00:25Z")


def test_ids_differ_by_action_and_time() -> None:
    ids = {
        parse_instance_action(body(action=a, time=t), SEEN).id
        for a in ("terminate", "stop")
        for t in ("2026-11-26T03:00:25Z", "2026-11-26T03:00:26Z")
    }
    assert len(ids) == 4


# -- termination-time and rebalance ----------------------------------------------


def test_termination_time_matches_instance_action_id() -> None:
    legacy = parse_termination_time(b"2026-11-26T03:00:25Z\n", SEEN)
    modern = parse_instance_action(body(action="terminate", time="2026-11-26T03:00:25Z"), SEEN)
    assert legacy.id == modern.id
    assert (legacy.kind, legacy.action, legacy.time, legacy.deadline) == (
        SPOT_INTERRUPTION,
        "terminate",
        T,
        T,
    )
    assert legacy.raw_time == "2026-11-26T03:00:25Z"
    assert legacy.source == "spot/termination-time"
    assert legacy.problem == ""


@pytest.mark.parametrize("raw", [b"garbage", b"", b"  \n"])
def test_termination_time_garbage_is_still_a_terminate_notice(raw: bytes) -> None:
    notice = parse_termination_time(raw, SEEN)
    assert (notice.action, notice.time) == ("terminate", None)
    assert notice.deadline == SEEN + DEFAULT_LEAD_SECONDS
    assert "unusable time" in notice.problem
    assert notice.id == notice_id(SPOT_INTERRUPTION, "terminate", raw.decode().strip())


def test_termination_time_in_the_past() -> None:
    notice = parse_termination_time(b"2026-11-26T03:00:25Z", T + 10)
    assert notice.time == T
    assert notice.deadline == T + 10 + DEFAULT_LEAD_SECONDS


def test_rebalance() -> None:
    notice = parse_rebalance(body(noticeTime="2026-11-26T03:00:25Z"), T + 30)
    assert notice.kind == REBALANCE_RECOMMENDATION
    assert notice.action == REBALANCE_ACTION
    assert notice.time == T
    assert notice.deadline == T + 30 + DEFAULT_LEAD_SECONDS
    assert notice.source == "events/recommendations/rebalance"
    assert notice.problem == ""
    assert notice.id == notice_id(
        REBALANCE_RECOMMENDATION, REBALANCE_ACTION, "2026-11-26T03:00:25Z"
    )


@pytest.mark.parametrize(
    "raw,problem",
    [(b"<html>", "JSON"), (b"{}", "no noticeTime"), (body(noticeTime="later"), "unusable")],
)
def test_rebalance_malformed(raw: bytes, problem: str) -> None:
    notice = parse_rebalance(raw, SEEN)
    assert notice.kind == REBALANCE_RECOMMENDATION
    assert notice.time is None
    assert notice.deadline == SEEN + DEFAULT_LEAD_SECONDS
    assert problem in notice.problem


# -- monitors against the simulator -------------------------------------------------


@pytest.fixture
def sim() -> Iterator[ImdsSimulator]:
    with ImdsSimulator(require_token=True) as simulator:
        yield simulator


@pytest.fixture
def client(sim: ImdsSimulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[ImdsClient]:
    """One attempt per read, with time to spare. Retries and their budget are the
    client's business (tests/test_imds.py). With retries, the last one gets what is
    left of the budget, as little as 0.1 s, and on a loaded machine it timed out:
    the monitor then rightly reported a timeout, not the 500 the test set up."""
    monkeypatch.setattr(imds_module, "MAX_ATTEMPTS", 1)
    with ImdsClient(sim.url, connect_timeout=5.0, read_timeout=5.0, budget=10.0) as imds:
        yield imds


def test_spot_monitor_idle_is_none_with_one_get_per_poll(
    sim: ImdsSimulator, client: ImdsClient
) -> None:
    monitor = SpotInterruptionMonitor(client)
    assert monitor.name == SPOT_INTERRUPTION
    assert [monitor.check() for _ in range(3)] == [None, None, None]
    assert sim.count(INSTANCE_ACTION_PATH) == 3
    assert sim.count(TERMINATION_TIME_PATH) == 0


def test_spot_monitor_returns_the_notice(sim: ImdsSimulator, client: ImdsClient) -> None:
    sim.schedule_notice("hibernate", notice_time="2026-11-26T03:00:25Z")
    notice = SpotInterruptionMonitor(client, wall_clock=lambda: SEEN).check()
    assert notice is not None
    assert (notice.action, notice.time, notice.deadline) == ("hibernate", T, T)
    assert notice.source == "spot/instance-action"


def test_spot_monitor_malformed_notice_from_the_wire(
    sim: ImdsSimulator, client: ImdsClient
) -> None:
    sim.inject("no-time")
    notice = SpotInterruptionMonitor(client, wall_clock=lambda: SEEN).check()
    assert notice is not None
    assert notice.action == "stop"
    assert notice.deadline == SEEN + DEFAULT_LEAD_SECONDS
    assert notice.problem


def test_spot_monitor_falls_back_to_termination_time(
    sim: ImdsSimulator, client: ImdsClient
) -> None:
    sim.schedule_notice("terminate", notice_time="2026-11-26T03:00:25Z")
    direct = SpotInterruptionMonitor(client, wall_clock=lambda: SEEN).check()
    sim.inject("500", count=None, path=INSTANCE_ACTION_PATH)
    monitor = SpotInterruptionMonitor(client, wall_clock=lambda: SEEN)
    with capture_logs() as logs:
        fallback = monitor.check()
        again = monitor.check()
    assert fallback is not None and direct is not None
    assert fallback.source == "spot/termination-time"
    assert fallback.id == direct.id
    assert again == fallback
    assert sim.count(TERMINATION_TIME_PATH) == 2
    warnings = [e for e in logs if e["event"] == "monitor.fallback"]
    assert len(warnings) == 1  # once, not every poll
    assert warnings[0]["kind"] == "server-error"
    # instance-action recovers: back to it, and that is said once too.
    sim.clear_faults()
    with capture_logs() as logs:
        assert monitor.check() == direct
    assert [e["event"] for e in logs if e["event"].startswith("monitor.")] == [
        "monitor.fallback_ended"
    ]


def test_spot_monitor_fallback_404_is_none(sim: ImdsSimulator, client: ImdsClient) -> None:
    sim.inject("503", count=None, path=INSTANCE_ACTION_PATH)
    assert SpotInterruptionMonitor(client).check() is None
    assert sim.count(TERMINATION_TIME_PATH) == 1


def test_spot_monitor_raises_the_original_error_when_the_fallback_fails_too(
    sim: ImdsSimulator, client: ImdsClient
) -> None:
    sim.inject("500", count=None, path=INSTANCE_ACTION_PATH)
    sim.inject("redirect", count=None, path=TERMINATION_TIME_PATH)
    with pytest.raises(ImdsError) as caught:
        SpotInterruptionMonitor(client).check()
    assert caught.value.kind == "server-error"
    assert sim.count(TERMINATION_TIME_PATH) == 1


def test_rebalance_monitor(sim: ImdsSimulator, client: ImdsClient) -> None:
    monitor = RebalanceMonitor(client, wall_clock=lambda: SEEN)
    assert monitor.name == REBALANCE_RECOMMENDATION
    assert monitor.check() is None
    sim.schedule_rebalance(notice_time="2026-11-26T03:00:25Z")
    notice = monitor.check()
    assert notice is not None
    assert notice.kind == REBALANCE_RECOMMENDATION
    assert notice.deadline == SEEN + DEFAULT_LEAD_SECONDS
    assert sim.count(REBALANCE_PATH) == 2
    sim.inject("429", count=None, path=REBALANCE_PATH)
    with pytest.raises(ImdsError) as caught:
        monitor.check()
    assert caught.value.kind == "throttled"


def test_instance_action_empty_object_says_what_is_missing() -> None:
    notice = parse_instance_action(b"{}", SEEN)
    assert (notice.action, notice.time) == ("terminate", None)
    assert "no action given" in notice.problem
    assert "no time given" in notice.problem


def test_while_on_the_fallback_both_reads_fit_one_poll(sim: ImdsSimulator) -> None:
    sim.inject("500", count=None, path=INSTANCE_ACTION_PATH)
    imds = ImdsClient(sim.url, budget=2.0)
    monitor = SpotInterruptionMonitor(imds, fallback_budget=0.5)
    assert monitor.check() is None  # full budget on instance-action, then the fallback
    started = time.monotonic()
    assert monitor.check() is None
    # instance-action now gets the short budget too: well under the 2 s default.
    assert time.monotonic() - started < 1.6
    assert sim.count(TERMINATION_TIME_PATH) == 2
