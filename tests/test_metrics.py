"""Metrics for node_exporter's textfile collector: the rendering, the recorder, the
atomic file, and ``spotwatch run --metrics-file`` end to end against the IMDS simulator."""

from __future__ import annotations

import math
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from spotwatch import __version__, config, metrics
from spotwatch.errors import UsageError
from spotwatch.imdssim import INSTANCE_ACTION_PATH, ImdsSimulator
from spotwatch.metrics import (
    DaemonMetrics,
    Family,
    FleetMetrics,
    Histogram,
    MetricsFile,
    Sample,
    render,
)
from spotwatch.notice import SPOT_INTERRUPTION, Notice
from spotwatch.runner import HookResult
from tests.helpers import REPO, Daemons, wait_until, write_hook
from tests.helpers import daemons_fixture as daemons_fixture
from tests.helpers import hooks_dir_fixture as hooks_dir_fixture
from tests.helpers import sim_fixture as sim_fixture
from tests.prom_text import parse, value
from tests.watch_helpers import Fault, Harness

pytestmark = pytest.mark.timeout(90)


class Clocks:
    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = 1_800_000_000.0

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


def result(name: str, outcome: str, seconds: float) -> HookResult:
    return HookResult(name, f"/h/{name}", 1000.0, 1000.0 + seconds, outcome, 0, None, outcome)


def spot_notice(seen: float, lead: float = 115.0) -> Notice:
    return Notice(SPOT_INTERRUPTION, "stop", "t", seen + lead, seen + lead, "n1", "test")


# -- rendering ------------------------------------------------------------------------
def test_render_is_the_text_format_with_escaped_labels() -> None:
    text = render([
        Family("x_total", "counter", "Things.\nMore.", (
            Sample("", (("hook", 'a"b\\c\nd'), ("outcome", "ok")), 3),
        )),
        Family("y", "gauge", "Nothing yet."),
        Family("z", "gauge", "Odd values.", (
            Sample("", (("v", "nan"),), math.nan), Sample("", (("v", "inf"),), math.inf),
            Sample("", (("v", "big"),), 1_800_000_000.25), Sample("", (("v", "neg"),), -2.0),
        )),
    ])  # fmt: skip
    assert text == (
        "# HELP x_total Things.\\nMore.\n"
        "# TYPE x_total counter\n"
        'x_total{hook="a\\"b\\\\c\\nd",outcome="ok"} 3\n'
        "# HELP y Nothing yet.\n"
        "# TYPE y gauge\n"
        "# HELP z Odd values.\n"
        "# TYPE z gauge\n"
        'z{v="nan"} NaN\n'
        'z{v="inf"} +Inf\n'
        'z{v="big"} 1800000000.25\n'
        'z{v="neg"} -2\n'
    )
    families = parse(text)
    assert value(families, "x_total", hook='a"b\\c\nd', outcome="ok") == 3


def test_histogram_is_cumulative_with_inf_sum_and_count() -> None:
    h = Histogram((1.0, 5.0))
    for seconds in (0.5, 1.0, 3.0, 7.0):
        h.observe(seconds)
    text = render([Family("d_seconds", "histogram", "D.", tuple(h.samples((("hook", "a"),))))])
    assert 'd_seconds_bucket{hook="a",le="1"} 2\n' in text
    assert 'd_seconds_bucket{hook="a",le="5"} 3\n' in text
    assert 'd_seconds_bucket{hook="a",le="+Inf"} 4\n' in text
    families = parse(text)
    assert value(families, "d_seconds", "_sum", hook="a") == 11.5
    assert value(families, "d_seconds", "_count", hook="a") == 4


def fed_recorder(clocks: Clocks, out: MetricsFile | None = None) -> DaemonMetrics:
    m = DaemonMetrics(out, wall_clock=lambda: clocks.wall, clock=lambda: clocks.mono)
    m.listener("poll.done", {"faults": [], "notices": 0})
    clocks.advance(5)
    m.listener("poll.done", {"faults": [("spot-interruption", "timeout")], "notices": 0})
    clocks.advance(5)
    m.listener("poll.done", {"faults": [("spot-interruption", "timeout")], "notices": 0})
    clocks.advance(5)
    m.listener("poll.done", {"faults": [], "notices": 1})
    n = spot_notice(clocks.wall)
    m.listener("notice.detected", {
        "notice_id": n.id, "kind": n.kind, "action": n.action, "deadline": n.deadline,
        "seen_at": clocks.wall, "notice": n,
    })  # fmt: skip
    m.listener("hook.started", {"hook": "10-a"})
    m.listener("hook.finished", {"hook": "10-a", "result": result("10-a", "ok", 0.3)})
    m.listener("hook.finished", {"hook": "20-b", "result": result("20-b", "timed-out", 61)})
    m.listener("notice.handled", {"notice_id": n.id, "seconds_left": 50, "failed": ["20-b"]})
    return m


def test_the_recorder_counts_polls_faults_notices_and_hooks() -> None:
    clocks = Clocks()
    m = fed_recorder(clocks)
    families = parse(m.text())
    assert value(families, "spotwatch_build_info", version=__version__,
                 python=".".join(map(str, sys.version_info[:3]))) == 1
    assert value(families, "spotwatch_polls_total") == 4
    assert value(families, "spotwatch_imds_faults_total", source="spot-interruption",
                 kind="timeout") == 2
    assert value(families, "spotwatch_imds_up") == 1
    assert value(families, "spotwatch_last_successful_poll_timestamp_seconds") == clocks.wall
    assert value(families, "spotwatch_last_successful_poll_age_seconds") == 0
    labels = {"event": "spot-interruption", "action": "stop"}
    assert value(families, "spotwatch_notices_total", **labels) == 1
    assert value(families, "spotwatch_notices_handled_total", **labels) == 1
    assert value(families, "spotwatch_hooks_total", hook="10-a", outcome="ok") == 1
    assert value(families, "spotwatch_hooks_total", hook="20-b", outcome="timed-out") == 1
    assert value(families, "spotwatch_hook_duration_seconds", "_sum", hook="20-b") == 61
    assert value(families, "spotwatch_hook_duration_seconds", "_bucket", hook="10-a",
                 le="0.5") == 1
    # Deadline 115 s away: AWS issued it 120 s before, so it was seen 5 s after.
    assert value(families, "spotwatch_last_notice_detection_latency_seconds") == 5
    assert value(families, "spotwatch_last_notice_lead_seconds") == 115
    assert value(families, "spotwatch_last_notice_timestamp_seconds") == clocks.wall
    assert families.keys() == {f.name for f in m.families()}


def test_while_polls_fail_the_age_grows_and_imds_is_down() -> None:
    clocks = Clocks()
    m = DaemonMetrics(None, wall_clock=lambda: clocks.wall, clock=lambda: clocks.mono)
    m.listener("poll.done", {"faults": [("spot-interruption", "server-error")]})
    clocks.advance(5)
    families = parse(m.text())
    # Never a successful poll: the timestamp is 0 and the age counts from the start.
    assert value(families, "spotwatch_last_successful_poll_timestamp_seconds") == 0
    assert value(families, "spotwatch_last_successful_poll_age_seconds") == 5
    m.listener("poll.done", {"faults": []})
    ok_at = clocks.wall
    clocks.advance(5)
    m.listener("poll.done", {"faults": [("spot-interruption", "server-error")]})
    clocks.advance(2)
    families = parse(m.text())
    assert value(families, "spotwatch_imds_up") == 0
    assert value(families, "spotwatch_last_successful_poll_timestamp_seconds") == ok_at
    assert value(families, "spotwatch_last_successful_poll_age_seconds") == 7


def test_detection_latency_where_the_issue_time_is_known_and_not() -> None:
    assert metrics.detection_latency("spot-interruption", 1120.0, 1003.5) == 3.5
    assert metrics.detection_latency("rebalance-recommendation", 1000.0, 1002.0) == 2
    # A longer lead than two minutes is not a negative latency.
    assert metrics.detection_latency("spot-interruption", 1300.0, 1003.0) == 0
    assert math.isnan(metrics.detection_latency("spot-interruption", None, 1003.0))
    assert math.isnan(metrics.detection_latency("scheduled-maintenance", 1.0, 2.0))


def test_output_parses_with_prometheus_client_too() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    m = fed_recorder(Clocks())
    f = FleetMetrics(wall_clock=lambda: 1_800_000_000.0)
    f.receive_ok(1)
    f.started()
    f.hook_results([result("10-x", "failed", 2.0)])
    f.finished("failed")
    for text in (m.text(), render(f.families())):
        names = {fam.name for fam in parser.text_string_to_metric_families(text)}
        assert "spotwatch_build_info" in names
    fams = {fam.name: fam for fam in parser.text_string_to_metric_families(m.text())}
    # prometheus_client names counters without _total; the samples keep it.
    hooks = [s for s in fams["spotwatch_hooks"].samples if s.name == "spotwatch_hooks_total"]
    assert {(s.labels["hook"], s.labels["outcome"], s.value) for s in hooks} == {
        ("10-a", "ok", 1.0), ("20-b", "timed-out", 1.0)
    }
    assert fams["spotwatch_hook_duration_seconds"].type == "histogram"


# -- the watcher feeds it ---------------------------------------------------------------
def test_the_watcher_reports_each_poll_with_its_faults_and_the_notice() -> None:
    h = Harness({"spot-interruption": [Fault("timeout"), None, None]}, stop_after_polls=3)
    n = spot_notice(h.clock.wall + 10.3)
    h.monitors[0].script[2] = n
    h.watcher.run()
    polls = [f for e, f in h.events if e == "poll.done"]
    assert [p["faults"] for p in polls] == [[("spot-interruption", "timeout")], [], []]
    detected = [f for e, f in h.events if e == "notice.detected"]
    assert detected[0]["notice"] is n


def test_a_fault_in_the_recorder_is_logged_once_and_never_raises() -> None:
    m = DaemonMetrics(None)
    with capture_logs() as logs:
        m.listener("hook.finished", {"result": None})
        m.listener("notice.detected", {})
        m.listener("poll.done", {"faults": []})
    assert [e["event"] for e in logs] == ["metrics.failed"]
    assert m.polls == 1


# -- when to write ----------------------------------------------------------------------
class CountingFile(MetricsFile):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.texts: list[str] = []

    def write(self, text: str) -> bool:
        self.texts.append(text)
        return super().write(text)


def test_routine_polls_are_written_at_most_every_period_and_changes_at_once(
    tmp_path: Path,
) -> None:
    clocks = Clocks()
    out = CountingFile(tmp_path / "s.prom")
    m = DaemonMetrics(out, wall_clock=lambda: clocks.wall, clock=lambda: clocks.mono,
                      routine_period=15.0)
    for _ in range(7):  # 0, 5, ..., 30 s
        m.listener("poll.done", {"faults": []})
        clocks.advance(5)
    assert len(out.texts) == 3  # at 0, 15 and 30 s
    # A fault is written at once, and every poll while it lasts (the age moves).
    m.listener("poll.done", {"faults": [("spot-interruption", "timeout")]})
    clocks.advance(5)
    m.listener("poll.done", {"faults": [("spot-interruption", "timeout")]})
    assert len(out.texts) == 5
    clocks.advance(5)
    m.listener("poll.done", {"faults": []})  # the recovery too
    assert len(out.texts) == 6
    # notice.detected waits for its first hook to start; hooks and handling at once.
    n = spot_notice(clocks.wall)
    m.listener("notice.detected", {"notice_id": "n1", "kind": n.kind, "action": n.action,
                                   "deadline": n.deadline, "seen_at": clocks.wall, "notice": n})
    assert len(out.texts) == 6
    m.listener("hook.started", {"hook": "10-a"})
    m.listener("hook.finished", {"hook": "10-a", "result": result("10-a", "ok", 1)})
    m.listener("notice.handled", {"notice_id": "n1"})
    assert len(out.texts) == 9
    families = parse((tmp_path / "s.prom").read_text())
    assert value(families, "spotwatch_polls_total") == 10
    assert value(families, "spotwatch_notices_handled_total", event="spot-interruption",
                 action="stop") == 1


# -- the file -------------------------------------------------------------------------
def test_the_file_is_0644_whatever_the_umask_and_no_temp_file_stays(tmp_path: Path) -> None:
    path = tmp_path / "s.prom"
    old = os.umask(0o077)
    try:
        assert MetricsFile(path).write("a 1\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["s.prom"]


def test_a_symlink_planted_at_a_temp_name_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    out = MetricsFile(tmp_path / "s.prom")
    planted = tmp_path / ".s.prom.12345.tmp"
    planted.symlink_to(victim)
    assert out.write("a 1\n")
    assert not os.path.lexists(planted)  # removed as a stale temp file, not written through
    assert victim.read_text() == "precious\n"
    assert (tmp_path / "s.prom").read_text() == "a 1\n"
    assert not (tmp_path / "s.prom").is_symlink()


def test_same_text_is_not_rewritten(tmp_path: Path) -> None:
    out = MetricsFile(tmp_path / "s.prom")
    assert out.write("a 1\n") and out.write("a 1\n") and out.write("a 2\n")
    assert out.writes == 2


def test_a_write_failure_is_logged_once_with_the_fix_and_recovery_once(tmp_path: Path) -> None:
    directory = tmp_path / "textfile"
    directory.mkdir()
    out = MetricsFile(directory / "s.prom")
    with capture_logs() as logs:
        assert out.write("a 1\n")
        directory.joinpath("s.prom").unlink()
        directory.rmdir()
        assert not out.write("a 2\n")
        assert not out.write("a 3\n")
        assert not out.write("a 4\n")
        directory.mkdir()
        assert out.write("a 4\n")  # the same text as the failed write: written now
    assert [e["event"] for e in logs] == ["metrics.write_failed", "metrics.write_recovered"]
    failed = logs[0]
    assert failed["path"] == str(directory / "s.prom")
    assert f"mkdir -p {directory}" in failed["fix"]
    assert (directory / "s.prom").read_text() == "a 4\n"
    assert [p.name for p in directory.iterdir()] == ["s.prom"]


def test_readers_only_ever_see_whole_files(tmp_path: Path) -> None:
    path = tmp_path / "s.prom"
    # Large, different sizes: a reader of a file being written in place would see
    # a short or mixed one.
    texts = [f"# {i}\n" + ("x" * (200_000 + 5_000 * i)) + f"\n# end {i}\n" for i in range(4)]
    out = MetricsFile(path)
    out.write(texts[0])
    stop = threading.Event()
    seen: list[int] = []
    bad: list[str] = []

    def read() -> None:
        while not stop.is_set():
            data = path.read_text()
            if data in texts:
                seen.append(texts.index(data))
            else:
                bad.append(data[:20] + "..." + data[-20:])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(400):
            assert out.write(texts[i % len(texts)])
    finally:
        stop.set()
        reader.join()
    assert not bad
    assert len(set(seen)) > 1  # the reader did see the file change


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("metrics.txt", "reads only *.prom files"),
        ("missing/s.prom", "mkdir -p"),
        ("adir.prom", "is a directory"),
    ],
)
def test_a_bad_path_is_a_usage_error_saying_what_to_do(
    tmp_path: Path, name: str, message: str
) -> None:
    (tmp_path / "adir.prom").mkdir()
    with pytest.raises(UsageError, match=message.replace("*", r"\*")) as info:
        metrics.check_path(tmp_path / name)
    assert "\n" not in str(info.value)


def test_a_directory_spotwatch_cannot_write_names_the_systemd_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As root (the service) only a read-only mount says no: stand in for one.
    monkeypatch.setattr(metrics.os, "access", lambda path, mode: False)
    with pytest.raises(UsageError, match=f"ReadWritePaths={tmp_path} in a drop-in"):
        metrics.check_path(tmp_path / "s.prom")


def test_the_run_setting_comes_from_the_flag_or_the_environment() -> None:
    env = {"SPOTWATCH_METRICS_FILE": "/var/lib/nx/a.prom"}
    assert config.resolve({}, env).metrics_file == Path("/var/lib/nx/a.prom")
    flags = {"--metrics-file": "/b.prom"}
    assert config.resolve(flags, env).metrics_file == Path("/b.prom")
    assert config.resolve({}, {"SPOTWATCH_METRICS_FILE": ""}).metrics_file is None


# -- spotwatch run --metrics-file, end to end ------------------------------------------


def read_metrics(path: Path) -> dict[str, Any]:
    return parse(path.read_text()) if path.exists() else {}


@pytest.mark.slow
def test_the_daemon_writes_whole_files_that_count_faults_notices_and_hooks(
    sim: ImdsSimulator, hooks_dir: Path, tmp_path: Path, daemons: Daemons
) -> None:
    write_hook(hooks_dir, "10-ok", "exit 0")
    write_hook(hooks_dir, "20-fails", "exit 3")
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    prom = textfile / "spotwatch.prom"
    daemon = daemons.start(sim.url, hooks_dir, "--metrics-file", str(prom), interval=0.2)

    # Every read during the whole run must be a complete, valid file.
    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            try:
                parse(prom.read_text())
                reads[0] += 1
            except FileNotFoundError:
                pass
            except ValueError as exc:
                problems.append(str(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        wait_until(lambda: read_metrics(prom).get("spotwatch_polls_total"), 20, "the first file")
        first = read_metrics(prom)
        assert value(first, "spotwatch_imds_up") == 1
        assert stat.S_IMODE(prom.stat().st_mode) == 0o644

        sim.inject("500", count=None)
        fault = daemon.wait_for_event("imds.fault")[0]
        kind, source = fault["kind"], fault["source"]

        def faults_counted() -> bool:
            m = read_metrics(prom)
            try:
                return value(m, "spotwatch_imds_up") == 0 and value(
                    m, "spotwatch_imds_faults_total", source=source, kind=kind
                ) >= 2
            except KeyError:
                return False

        wait_until(faults_counted, 20, f"2 {kind} faults in the file")
        sim.clear_faults()
        wait_until(lambda: value(read_metrics(prom), "spotwatch_imds_up") == 1, 20,
                   "imds_up back to 1")

        sim.schedule_notice("terminate")
        daemon.wait_for_event("notice.handled")

        def hooks_counted() -> dict[str, Any] | None:
            m = read_metrics(prom)
            try:
                value(m, "spotwatch_notices_handled_total", event="spot-interruption",
                      action="terminate")
            except KeyError:
                return None
            return m

        m = wait_until(hooks_counted, 20, "the handled notice in the file")
    finally:
        stop.set()
        thread.join()
    labels = {"event": "spot-interruption", "action": "terminate"}
    assert value(m, "spotwatch_notices_total", **labels) == 1
    assert value(m, "spotwatch_hooks_total", hook="10-ok", outcome="ok") == 1
    assert value(m, "spotwatch_hooks_total", hook="20-fails", outcome="failed") == 1
    assert value(m, "spotwatch_hook_duration_seconds", "_count", hook="20-fails") == 1
    # The simulator's notice time is 120 s after it appeared: detected within a few polls.
    assert 0 <= value(m, "spotwatch_last_notice_detection_latency_seconds") < 10
    assert value(m, "spotwatch_polls_total") >= value(first, "spotwatch_polls_total") + 3
    assert not problems, problems[:3]
    assert reads[0] > 10
    assert [p.name for p in textfile.iterdir()] == ["spotwatch.prom"]


@pytest.mark.slow
def test_a_bad_metrics_path_stops_the_start_with_one_line(
    sim: ImdsSimulator, hooks_dir: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "nope"
    proc = subprocess.run(
        [sys.executable, "-m", "spotwatch", "run", "--imds-url", sim.url,
         "--hooks-dir", str(hooks_dir), "--state-dir", str(tmp_path / "state"),
         "--metrics-file", str(missing / "spotwatch.prom")],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"mkdir -p {missing}" in proc.stderr
    assert sim.count(INSTANCE_ACTION_PATH) == 0


@pytest.mark.slow
def test_a_directory_that_goes_away_is_logged_once_and_the_daemon_keeps_watching(
    sim: ImdsSimulator, hooks_dir: Path, tmp_path: Path, daemons: Daemons
) -> None:
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    prom = textfile / "spotwatch.prom"
    daemon = daemons.start(sim.url, hooks_dir, "--metrics-file", str(prom), interval=0.2)
    wait_until(prom.exists, 20, "the first file")
    prom.unlink()
    textfile.rmdir()
    # A fault is written at once, and at every poll while it lasts: many failed writes.
    sim.inject("500", count=None)
    failed = daemon.wait_for_event("metrics.write_failed")[0]
    assert "mkdir -p" in failed["fix"]
    before = sim.count(INSTANCE_ACTION_PATH)
    sim.wait_for_requests(INSTANCE_ACTION_PATH, before + 5, timeout=20)
    assert len(daemon.events("metrics.write_failed")) == 1
    textfile.mkdir()
    daemon.wait_for_event("metrics.write_recovered")
    wait_until(prom.exists, 20, "the file again")
    assert daemon.proc.poll() is None
