"""`spotwatch fleet watch --metrics-file`: FleetMetrics alone, the worker pool with an
in-memory queue (tests/fleet_helpers.py's FakeSqs), and the command against moto's SQS and
EventBridge on 127.0.0.1."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import pytest
from structlog.testing import capture_logs

from spotwatch import hooks, runner
from spotwatch.clocks import Clocks
from spotwatch.fleet_settings import FleetWatchSettings
from spotwatch.fleet_watch import FleetWatcher
from spotwatch.fleet_wiring import FleetClients, FleetHooks, FleetReporting
from spotwatch.metrics import FleetMetrics, render
from spotwatch.runner import HookResult
from tests.fleet_helpers import (
    INTERRUPTION,
    FakeError,
    FakeSqs,
    Fleet,
    Log,
    NoTags,
    Watch,
    body,
    make_hooks,
    no_crash,
    watch_env,
)
from tests.fleet_helpers import make_fleet_fixture as make_fleet_fixture
from tests.fleet_helpers import watches_fixture as watches_fixture
from tests.helpers import wait_until
from tests.prom_text import parse, value

pytestmark = pytest.mark.timeout(120)


def test_counts_are_safe_from_several_threads() -> None:
    m = FleetMetrics()
    result = HookResult("10-a", "/h/10-a", 0.0, 1.0, "ok", 0, None, "exit 0")

    def work() -> None:
        for _ in range(500):
            m.receive_ok(1)
            m.started()
            m.hook_results([result])
            m.finished("done")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    families = parse(render(m.families()))
    assert value(families, "spotwatch_fleet_events_received_total") == 2000
    assert value(families, "spotwatch_fleet_events_handled_total", outcome="done") == 2000
    assert value(families, "spotwatch_fleet_events_handled_total", outcome="lost") == 0
    assert value(families, "spotwatch_fleet_hooks_total", hook="10-a", outcome="ok") == 2000
    assert value(families, "spotwatch_fleet_events_in_flight") == 0
    m.finished("lost", started=False)  # lost while it waited for a worker
    families = parse(render(m.families()))
    assert value(families, "spotwatch_fleet_events_handled_total", outcome="lost") == 1
    assert value(families, "spotwatch_fleet_events_in_flight") == 0


class _BrokenFile:
    def write(self, text: str) -> bool:
        raise RuntimeError("a bug in the writer")


def test_a_fault_in_the_recorder_is_logged_once_and_never_raises() -> None:
    # Workers call it: one that raised here would leave its message in hand for good.
    m = FleetMetrics(_BrokenFile())  # type: ignore[arg-type]
    with capture_logs() as logs:
        m.receive_ok(2)
        m.started()
        m.finished("done")
        m.finished("lost", started=False)
    assert [e["event"] for e in logs] == ["metrics.failed"]
    families = parse(render(m.families()))
    assert value(families, "spotwatch_fleet_events_handled_total", outcome="lost") == 1
    assert value(families, "spotwatch_fleet_events_in_flight") == 0


class _KeptFile:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def write(self, text: str) -> bool:
        self.texts.append(text)
        return True


def test_a_burst_is_written_once_a_period_and_the_rest_by_the_next_flush() -> None:
    now = [100.0]
    out = _KeptFile()
    m = FleetMetrics(out, clock=lambda: now[0], write_period=1.0)  # type: ignore[arg-type]
    m.receive_ok(10)  # after a quiet spell: at once
    assert len(out.texts) == 1
    for _ in range(10):
        m.started()
        m.finished("done")
    m.flush()
    assert len(out.texts) == 1  # a wave's messages do not each rewrite the file
    now[0] += 1.0
    m.flush()
    assert len(out.texts) == 2
    assert value(parse(out.texts[-1]), "spotwatch_fleet_events_handled_total",
                 outcome="done") == 10
    m.flush(force=True)
    assert len(out.texts) == 2  # nothing new to write
    m.finished("failed", started=False)
    m.flush(force=True)  # the watcher's last word, however recent the last write
    assert len(out.texts) == 3
    assert value(parse(out.texts[-1]), "spotwatch_fleet_events_handled_total",
                 outcome="failed") == 1


def test_the_worker_pool_reports_receives_hooks_and_a_message_lost_while_waiting(
    tmp_path: Path,
) -> None:
    # In-memory SQS (fleet_helpers' FakeSqs): a failed receive, then two messages with a
    # 0 s visibility timeout; r0's extension fails (another watcher has it) before any
    # worker took it, r1 runs its hook.
    sqs = FakeSqs([FakeError("ThrottlingException"), [(0, body("i-0")), (1, body("i-1"))]],
                  visibility=0)
    sqs.lose.add("r0")
    hooks_dir = tmp_path / "hooks"
    hooks_dir.mkdir()
    hook = hooks_dir / "10-hook"
    hook.write_text("#!/bin/sh\nexit 0\n")
    hook.chmod(0o755)
    m = FleetMetrics()
    watcher = FleetWatcher(
        FleetWatchSettings(queue_url="http://127.0.0.1:1/123456789012/q", hooks_dir=hooks_dir,
                      max_messages=2, wait_seconds=0, hook_timeout=30, workers=4),
        clients=FleetClients(sqs=sqs, tags=NoTags()),
        hooks=FleetHooks(plan=hooks.plan_hooks, runner=runner.run_hooks,
                         workdir=tmp_path / "work"),
        stop=threading.Event(),
        reporting=FleetReporting(metrics=m),
        backoff=lambda seconds: None,
        clocks=Clocks(log=Log()),
    )
    assert watcher.run() == 0
    assert watcher.counts["lost"] == 1 and watcher.counts["done"] == 1
    families = parse(render(m.families()))
    assert value(families, "spotwatch_fleet_receive_errors_total") == 1
    assert value(families, "spotwatch_fleet_receives_total") >= 1
    assert value(families, "spotwatch_fleet_events_received_total") == 2
    assert value(families, "spotwatch_fleet_events_handled_total", outcome="lost") == 1
    assert value(families, "spotwatch_fleet_events_handled_total", outcome="done") == 1
    assert value(families, "spotwatch_fleet_hooks_total", hook="10-hook", outcome="ok") == 1
    assert value(families, "spotwatch_fleet_events_in_flight") == 0


@pytest.mark.slow
def test_the_fleet_watcher_counts_events_outcomes_and_hooks(
    make_fleet: Callable[..., Fleet], watches: Callable[..., Watch], tmp_path: Path
) -> None:
    fleet = make_fleet()
    out = tmp_path / "out"
    out.mkdir()
    (out / "fail").touch()
    hooks = make_hooks(tmp_path, ("10-act", 'if [ -e "$OUT_DIR/fail" ]; then exit 3; fi\n'))
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    prom = textfile / "fleet.prom"
    fleet.put((INTERRUPTION, {"instance-id": "i-0f00", "instance-action": "stop"}))
    watch = watches(["--queue-url", fleet.queue_url, "--hooks-dir", str(hooks),
                     "--visibility-timeout", "2", "--wait-seconds", "1",
                     "--metrics-file", str(prom)], env=watch_env(out))

    def metrics() -> dict[str, Any]:
        return parse(prom.read_text()) if prom.exists() else {}

    watch.wait_for("fleet.hooks_failed")

    def failure_counted() -> dict[str, Any] | None:
        # The file is rewritten after the log line: wait for the count, not for the file.
        m = metrics()
        if "spotwatch_fleet_events_handled_total" not in m:
            return None
        failed = value(m, "spotwatch_fleet_events_handled_total", outcome="failed")
        return m if failed >= 1 else None

    m = wait_until(failure_counted, 20, "a failed event counted in the file")
    assert value(m, "spotwatch_fleet_hooks_total", hook="10-act", outcome="failed") >= 1
    (out / "fail").unlink()
    watch.wait_for("fleet.handled", timeout=40)

    def done() -> dict[str, Any] | None:
        m = metrics()
        try:
            handled = value(m, "spotwatch_fleet_events_handled_total", outcome="done")
        except KeyError:
            return None
        return m if handled == 1 else None

    m = wait_until(done, 20, "the success in the file")
    assert watch.terminate() == 0
    no_crash(watch)
    failures = value(m, "spotwatch_fleet_events_handled_total", outcome="failed")
    assert value(m, "spotwatch_fleet_events_received_total") == failures + 1
    assert value(m, "spotwatch_fleet_hooks_total", hook="10-act", outcome="ok") == 1
    assert value(m, "spotwatch_fleet_hook_duration_seconds", "_count", hook="10-act") == (
        failures + 1
    )
    assert value(m, "spotwatch_fleet_events_in_flight") == 0
    assert value(m, "spotwatch_fleet_receives_total") >= 2
    assert value(m, "spotwatch_fleet_last_receive_timestamp_seconds") > 0


@pytest.mark.slow
def test_a_bad_metrics_path_is_one_line_before_any_aws_call(
    watches: Callable[..., Watch], tmp_path: Path
) -> None:
    watch = watches(["--queue-url", "https://sqs.us-east-1.amazonaws.com/1/q",
                     "--metrics-file", str(tmp_path / "fleet.txt")])
    assert watch.wait(timeout=30) == 2
    err = watch.stderr_path.read_text()
    assert err.count("\n") == 1 and "reads only *.prom files" in err
