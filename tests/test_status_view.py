"""Rendering of `spotwatch status`: table, JSON, change lines (pure functions)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from spotwatch.spot_codes import SpotRequest
from spotwatch.status_view import (
    APPEARED,
    GONE,
    JSON_FIELDS,
    ago,
    changes,
    order,
    record,
    render_change,
    render_json,
    render_summary,
    render_table,
    snapshot,
    utc_text,
)

NOW = datetime(2026, 11, 26, 3, 2, 25, tzinfo=timezone.utc)


def req(rid: str, code: str, *, minutes_ago: float = 5, region: str = "us-east-1",
        instance: str | None = "i-0123456789abcdef0", state: str = "active",
        message: str = "", instance_state: str | None = None) -> SpotRequest:
    return SpotRequest(rid, region, state, code, message,
                       NOW - timedelta(minutes=minutes_ago), instance, instance_state)


def test_times_are_utc_with_a_z_and_an_age() -> None:
    eastern = timezone(timedelta(hours=-5))
    assert utc_text(datetime(2026, 11, 25, 22, 0, 25, tzinfo=eastern)) == "2026-11-26 03:00:25Z"
    assert utc_text(None) == "-"
    assert ago(NOW - timedelta(seconds=45), NOW) == "45s"
    assert ago(NOW - timedelta(minutes=2, seconds=1), NOW) == "2m"
    assert ago(NOW - timedelta(hours=5), NOW) == "5h"
    assert ago(NOW - timedelta(days=3), NOW) == "3d"
    assert ago(NOW + timedelta(seconds=30), NOW) == "0s"  # a clock ahead of ours


def test_urgent_requests_come_first_then_most_recent() -> None:
    rows = [
        req("sir-healthy", "fulfilled", minutes_ago=1),
        req("sir-waiting", "capacity-not-available"),
        req("sir-unknown", "brand-new-code"),
        req("sir-old-interrupted", "instance-terminated-by-price", minutes_ago=90),
        req("sir-new-interrupted", "instance-terminated-by-service", minutes_ago=3),
        req("sir-failed", "bad-parameters"),
        req("sir-marked", "marked-for-termination", minutes_ago=60),
        req("sir-ended", "instance-terminated-by-user"),
    ]
    assert [r.request_id for r in order(rows)] == [
        "sir-marked", "sir-new-interrupted", "sir-old-interrupted", "sir-failed",
        "sir-unknown", "sir-waiting", "sir-healthy", "sir-ended",
    ]


def test_table_has_one_row_per_request_with_meaning_and_message() -> None:
    rows = [
        req("sir-aaaa1111", "fulfilled", minutes_ago=30, message="Your spot request is fulfilled."),
        req("sir-bbbb2222", "marked-for-termination", minutes_ago=2,
            message="Spot Instance marked\nfor termination"),
        req("sir-cccc3333", "price-too-low", instance=None, state="open"),
    ]
    lines = render_table(rows, NOW).splitlines()
    assert lines[0].split() == [
        "REQUEST", "INSTANCE", "STATE", "STATUS", "UPDATED", "MEANING", "MESSAGE",
    ]
    assert len(lines) == 4
    assert lines[1].startswith("sir-bbbb2222  i-0123456789abcdef0  active  marked-for-termination")
    assert "2026-11-26 03:00:25Z (2m ago)" in lines[1]
    assert "interrupting: AWS terminates it within 2 min" in lines[1]
    assert lines[1].endswith("Spot Instance marked for termination")  # one line per row
    assert lines[2].split()[:3] == ["sir-cccc3333", "-", "open"]  # waiting before healthy
    assert lines[3].startswith("sir-aaaa1111")
    # Columns line up: STATUS starts at the same offset on every line.
    offsets = {line.index(word) for line, word in zip(
        lines, ["STATUS", "marked-for-termination", "price-too-low", "fulfilled"])}
    assert len(offsets) == 1


def test_table_shows_regions_when_asked_and_fits_a_terminal() -> None:
    rows = [req("sir-1", "fulfilled", region="eu-west-1", message="x" * 300)]
    lines = render_table(rows, NOW, show_region=True, width=80).splitlines()
    assert lines[0].startswith("REGION     REQUEST")
    assert lines[1].startswith("eu-west-1  sir-1")
    assert all(len(line) <= 80 for line in lines)
    assert lines[1].endswith("…")
    assert len(render_table(rows, NOW).splitlines()[1]) > 300  # no cut when not a terminal


def test_json_has_stable_field_names_and_utc_times() -> None:
    rows = [
        req("sir-1", "fulfilled"),
        req("sir-2", "instance-terminated-no-capacity", minutes_ago=1, instance_state="running"),
    ]
    data = json.loads(render_json(rows))
    assert [list(item) for item in data] == [list(JSON_FIELDS)] * 2
    assert data[0] == {
        "request_id": "sir-2",
        "instance_id": "i-0123456789abcdef0",
        "state": "active",
        "status_code": "instance-terminated-no-capacity",
        "status_message": "",
        "updated": "2026-11-26T03:01:25Z",
        "class": "interrupting",
        "meaning": "interrupting: capacity reclaimed, ends within 2 min",
        "instance_state": "running",
        "region": "us-east-1",
    }
    assert data[1]["instance_state"] is None
    assert record(SpotRequest("sir-3", "us-east-1", "open", "", ""))["updated"] is None
    assert "\n" not in render_json(rows, compact=True)


def test_summary_counts_classes_in_urgency_order() -> None:
    rows = [req("sir-1", "fulfilled"), req("sir-2", "marked-for-stop"), req("sir-3", "fulfilled")]
    assert render_summary(rows) == "3 requests: 1 interrupting, 2 healthy"
    assert render_summary(rows[:1]) == "1 request: 1 healthy"
    assert render_summary([]) == "0 requests"


def test_changes_between_polls() -> None:
    before = snapshot([
        req("sir-same", "fulfilled"),
        req("sir-marked", "fulfilled"),
        req("sir-going", "fulfilled"),
        req("sir-reclaim", "instance-terminated-no-capacity", instance_state="running"),
    ])
    after = snapshot([
        req("sir-same", "fulfilled", minutes_ago=1),  # newer time, same code: no change
        req("sir-marked", "marked-for-termination"),
        req("sir-new", "pending-evaluation", instance=None),
        req("sir-reclaim", "instance-terminated-no-capacity", instance_state="terminated"),
    ])
    found = changes(before, after)
    assert [(c.request_id, c.before, c.after) for c in found] == [
        ("sir-marked", "fulfilled", "marked-for-termination"),
        ("sir-reclaim", "instance-terminated-no-capacity (interrupting)",
         "instance-terminated-no-capacity (interrupted)"),
        ("sir-new", APPEARED, "pending-evaluation"),
        ("sir-going", "fulfilled", GONE),
    ]
    assert changes(after, after) == []


def test_a_change_line_names_the_time_request_instance_and_codes() -> None:
    before = snapshot([req("sir-abc", "fulfilled")])
    after = snapshot([req("sir-abc", "marked-for-termination")])
    (change,) = changes(before, after)
    assert render_change(change, NOW) == (
        "2026-11-26 03:02:25Z  sir-abc  i-0123456789abcdef0  "
        "fulfilled -> marked-for-termination  (interrupting: AWS terminates it within 2 min)"
    )
    assert " us-east-1  sir-abc " in render_change(change, NOW, show_region=True)
