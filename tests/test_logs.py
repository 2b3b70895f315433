"""The log set-up: JSON lines as journald gets them, console lines on a TTY."""

from __future__ import annotations

import datetime
import io
import json
import re
from pathlib import Path

import pytest
import structlog
import structlog.testing

from spotwatch import logs

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_have_event_level_timestamp_and_the_fields() -> None:
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    log = logs.get_logger(component="test")
    log.info("hook.started", hook="10-a", pid=42, seconds_left=None)
    log.warning("imds.fault", reason="timeout")
    log.debug("not.shown")
    first, second = json_lines(out)
    assert first == {
        "component": "test",
        "hook": "10-a",
        "pid": 42,
        "seconds_left": None,
        "event": "hook.started",
        "level": "info",
        "timestamp": first["timestamp"],
    }
    assert ISO_UTC.match(str(first["timestamp"])), first["timestamp"]
    assert second["level"] == "warning" and second["reason"] == "timeout"


def test_an_exception_is_logged_as_error_with_its_traceback_in_one_line() -> None:
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    try:
        raise RuntimeError("journal on fire")
    except RuntimeError:
        logs.get_logger().exception("hooks.callback_failed", callback="on_finish")
    (line,) = out.getvalue().splitlines()  # the traceback is inside the JSON string
    event = json.loads(line)
    assert event["level"] == "error"
    assert "RuntimeError: journal on fire" in str(event["exception"])


def test_values_json_cannot_hold_are_logged_as_their_repr() -> None:
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    logs.get_logger().info("hook.planned", path=Path("/etc/spotwatch/hooks.d"))
    assert json_lines(out)[0]["path"] == repr(Path("/etc/spotwatch/hooks.d"))


@pytest.mark.parametrize(
    "epoch",
    [0.0, 1_764_135_824.0, 1_764_135_824.5, 1_764_135_824.000001, 1_764_135_825.999999],
)
def test_utc_timestamp_matches_datetime(epoch: float) -> None:
    expected = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    stamp = logs.utc_timestamp(epoch)
    assert ISO_UTC.match(stamp), stamp
    parsed = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc
    )
    assert abs((parsed - expected).total_seconds()) < 2e-6


def test_the_cached_second_never_leaks_into_the_next() -> None:
    assert logs.utc_timestamp(1_764_135_824.25).startswith("2025-11-26T05:43:44.25")
    assert logs.utc_timestamp(1_764_135_825.75).startswith("2025-11-26T05:43:45.75")
    assert logs.utc_timestamp(1_764_135_824.5).startswith("2025-11-26T05:43:44.5")


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_on_a_tty_json_elsewhere_and_the_flag_wins() -> None:
    assert logs.choose_format(None, FakeTty()) == "console"
    assert logs.choose_format(None, io.StringIO()) == "json"
    assert logs.choose_format("json", FakeTty()) == "json"
    tty = FakeTty()
    logs.configure(None, "info", stream=tty)
    logs.get_logger().info("watch.started", interval=5)
    text = tty.getvalue()
    assert "watch.started" in text and "interval" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_the_line_is_what_json_dumps_would_write() -> None:
    """The encoder made once for every line writes the same bytes as json.dumps."""
    events = [
        {"event": "hook.output", "line": 'naïve "quoted"\n\ttab', "stream": "stdout"},
        {"event": "x", "n": None, "ok": True, "f": 1.5, "big": 10**30, "nan": float("nan")},
        {"event": "x", "nested": {"list": [1, "two", {"three": 3}], "tuple": (4, 5)}},
        {"event": "x", "path": Path("/var/lib/spotwatch"), "error": OSError(5, "I/O")},
    ]
    for event in events:
        assert logs._encode(dict(event)) == json.dumps(event, default=repr)


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error", "critical"])
def test_the_direct_json_path_writes_what_structlog_s_general_path_writes(
    level: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The JSON logger's shortcut and structlog's processor chain give the same line,
    key order included (the timestamp pinned so the two can be compared)."""
    monkeypatch.setattr(logs, "utc_timestamp", lambda epoch: "2026-11-26T08:00:00.000000Z")
    lines = {}
    for path in ("direct", "general"):
        out = io.StringIO()
        logs.configure("json", "debug", stream=out)
        if path == "general":
            structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(10))
        log = logs.get_logger(component="test").bind(run=7)
        getattr(log, level)("hook.finished", hook="10-a", exit_code=None, duration=0.25)
        log.info("interpolated %s", "once")  # positional arguments take the general path
        lines[path] = out.getvalue()
    assert lines["direct"] == lines["general"]
    first, second = lines["direct"].splitlines()
    assert list(json.loads(first)) == [
        "component", "run", "hook", "exit_code", "duration", "event", "level", "timestamp"
    ]
    assert json.loads(first)["level"] == level
    assert json.loads(second)["event"] == "interpolated once"


def test_captured_logs_still_see_json_configured_events() -> None:
    """structlog.testing.capture_logs swaps the processors: the shortcut steps aside."""
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    log = logs.get_logger()
    with structlog.testing.capture_logs() as captured:
        log.info("hook.started", hook="10-a")
        log.debug("not.shown")
    assert captured == [{"event": "hook.started", "hook": "10-a", "log_level": "info"}]
    assert out.getvalue() == ""


def test_on_the_journals_stream_each_line_carries_its_syslog_priority(tmp_path: Path) -> None:
    import os

    target = tmp_path / "stream"
    with open(target, "w") as out:
        st = os.fstat(out.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert logs.is_journal_stream(out, env)
        assert not logs.is_journal_stream(out, {"JOURNAL_STREAM": "1:2"})
        assert not logs.is_journal_stream(io.StringIO(), env)
        old = os.environ.get("JOURNAL_STREAM")
        os.environ["JOURNAL_STREAM"] = env["JOURNAL_STREAM"]
        try:
            logs.configure("json", "debug", stream=out)
        finally:
            if old is None:
                del os.environ["JOURNAL_STREAM"]
            else:
                os.environ["JOURNAL_STREAM"] = old
        log = logs.get_logger()
        log.debug("a.debug")
        log.info("an.info")
        log.warning("a.warning")
        log.error("an.error")
        log.log(40, "a.logged_error")
    lines = target.read_text().splitlines()
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>", "<3>"]
    assert [json.loads(line[3:])["event"] for line in lines] == [
        "a.debug", "an.info", "a.warning", "an.error", "a.logged_error"
    ]


def test_elsewhere_no_priority_prefix_is_written() -> None:
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    logs.get_logger().warning("a.warning")
    assert out.getvalue().startswith("{")
