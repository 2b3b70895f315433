"""The fleet consumer loop's SQS bookkeeping, with an in-memory queue stand-in.

Real hooks run through the real planner and runner; only SQS is replaced, to
reach the faults moto's server cannot produce on demand (a receive that fails,
a message lost to another watcher, a batch cut short by a stop).
"""

from __future__ import annotations

import io
import json
import threading
import uuid
from pathlib import Path
from typing import Any

from spotwatch import hooks, runner
from spotwatch.clocks import Clocks
from spotwatch.fleet_settings import FleetWatchSettings
from spotwatch.fleet_watch import FleetWatcher
from spotwatch.fleet_wiring import FleetClients, FleetHooks, FleetReporting
from tests.fleet_helpers import FakeError, FakeSqs, Log, NoTags, body


def make_watcher(tmp_path: Path, sqs: FakeSqs, *, stop: threading.Event | None = None,
                 hook: str | None = "exit 0\n", max_messages: int | None = None,
                 run: Any = None, workers: int = 4,
                 backoff: Any = None) -> tuple[FleetWatcher, Log, io.StringIO]:
    hooks_dir = None
    if hook is not None:
        hooks_dir = tmp_path / "hooks"
        hooks_dir.mkdir(mode=0o755, exist_ok=True)
        path = hooks_dir / "10-hook"
        path.write_text("#!/bin/sh\n" + hook)
        path.chmod(0o755)
    log = Log()
    out = io.StringIO()
    watcher = FleetWatcher(
        FleetWatchSettings(queue_url="http://127.0.0.1:1/123456789012/q", hooks_dir=hooks_dir,
                      max_messages=max_messages, wait_seconds=0, hook_timeout=30,
                      workers=workers),
        clients=FleetClients(sqs=sqs, tags=NoTags()),
        hooks=FleetHooks(plan=hooks.plan_hooks, runner=run or runner.run_hooks,
                         workdir=tmp_path / "work"),
        stop=stop or threading.Event(),
        reporting=FleetReporting(out=out),
        backoff=backoff,
        clocks=Clocks(log=log),
    )
    return watcher, log, out


def test_deletes_go_in_one_batch_per_receive_without_hooks(tmp_path: Path) -> None:
    sqs = FakeSqs([[(n, body(f"i-{n}")) for n in range(10)]])
    watcher, _, out = make_watcher(tmp_path, sqs, hook=None, max_messages=10)
    assert watcher.run() == 0
    assert len(sqs.named("delete")) == 1
    assert sorted(sqs.deleted()) == sorted(f"r{n}" for n in range(10))
    assert len(out.getvalue().splitlines()) == 10
    assert sqs.named("receive")[0]["MaxNumberOfMessages"] == 10


def test_no_visibility_call_while_the_queue_timeout_has_time_left(tmp_path: Path) -> None:
    sqs = FakeSqs([[(0, body())]], visibility=60)
    watcher, _, _ = make_watcher(tmp_path, sqs, max_messages=1)
    watcher.run()
    assert sqs.named("visibility") == [] and sqs.named("visibility_batch") == []
    assert sqs.deleted() == ["r0"]


def test_a_short_visibility_timeout_is_extended_in_batches_while_hooks_run(
    tmp_path: Path,
) -> None:
    # 2 s timeouts, hooks of 2.5 s: each message is extended (to 6 s) at least once,
    # several messages per call, never one call per message.
    sqs = FakeSqs([[(n, body(f"i-{n}")) for n in range(4)]], visibility=2)
    watcher, _, _ = make_watcher(tmp_path, sqs, hook="sleep 2.5\n", max_messages=4)
    watcher.run()
    extended = sqs.batched_visibility()
    assert {receipt for receipt, _ in extended} == {"r0", "r1", "r2", "r3"}
    assert {seconds for _, seconds in extended} == {6}
    calls = sqs.named("visibility_batch")
    assert len(calls) < len(extended)
    assert sqs.named("visibility") == []
    assert sorted(sqs.deleted()) == ["r0", "r1", "r2", "r3"]


def test_a_message_lost_to_another_watcher_is_neither_acted_on_nor_deleted(
    tmp_path: Path,
) -> None:
    # Visibility 0: no message is surely ours until an extension says so; this one's
    # extension fails (another watcher holds it now).
    sqs = FakeSqs([[(0, body("i-0")), (1, body("i-1"))]], visibility=0)
    sqs.lose.add("r0")
    marker = tmp_path / "ran"
    watcher, log, _ = make_watcher(tmp_path, sqs, hook=f"echo $SPOTWATCH_INSTANCE_ID >> {marker}\n",
                                   max_messages=2)
    watcher.run()
    assert marker.read_text().split() == ["i-1"]
    assert sqs.deleted() == ["r1"]
    assert watcher.counts["lost"] == 1 and watcher.counts["done"] == 1
    assert log.events("fleet.lost_message")[0]["message_id"] == "m0"


def test_failed_hook_makes_the_message_visible_after_the_timeout(tmp_path: Path) -> None:
    sqs = FakeSqs([[(0, body())]], visibility=60)
    watcher, log, _ = make_watcher(tmp_path, sqs, hook="exit 4\n", max_messages=1)
    watcher.run()
    assert sqs.deleted() == []
    assert [kw["VisibilityTimeout"] for kw in sqs.named("visibility")] == [60]
    assert "10-hook: exit 4" in log.events("fleet.hooks_failed")[0]["failed"]


def test_a_refused_hook_fails_the_message_but_the_safe_ones_still_run(tmp_path: Path) -> None:
    sqs = FakeSqs([[(0, body())]])
    marker = tmp_path / "ran"
    watcher, log, _ = make_watcher(tmp_path, sqs, hook=f"touch {marker}\n", max_messages=1)
    unsafe = tmp_path / "hooks" / "20-unsafe"
    unsafe.write_text("#!/bin/sh\nexit 0\n")
    unsafe.chmod(0o777)  # world-writable: refused, never run
    watcher.run()
    assert marker.exists()
    assert sqs.deleted() == []
    failed = log.events("fleet.hooks_failed")[0]
    assert failed["refused"] and "20-unsafe" in failed["refused"][0]
    assert log.events("hook.refused")


def test_receive_errors_are_logged_once_and_backed_off(tmp_path: Path) -> None:
    throttled = FakeError("ThrottlingException")
    sqs = FakeSqs([throttled, throttled, throttled, [(0, body())]])
    slept: list[float] = []
    watcher, log, _ = make_watcher(tmp_path, sqs, hook=None, max_messages=1,
                                   backoff=slept.append)
    assert watcher.run() == 0
    assert len(log.events("fleet.receive_failed")) == 1
    assert slept == [1.0, 2.0, 4.0]
    assert log.events("fleet.receive_recovered")
    assert sqs.deleted() == ["r0"]


def test_stop_finishes_the_message_in_hand_and_releases_the_rest(tmp_path: Path) -> None:
    sqs = FakeSqs([[(n, body(f"i-{n}")) for n in range(3)]])
    stop = threading.Event()  # a StopFlag, as the Stopper is

    def run_and_stop(*args: Any, **kwargs: Any) -> Any:
        results = runner.run_hooks(*args, **kwargs)
        stop.set()  # SIGTERM arrives while the first message's hooks run
        return results

    watcher, log, _ = make_watcher(tmp_path, sqs, stop=stop, run=run_and_stop, workers=1)
    assert watcher.run() == 0
    assert sqs.deleted() == ["r0"]
    assert sqs.batched_visibility() == [("r1", 0), ("r2", 0)]
    assert watcher.released == 2
    assert log.events("fleet.stopped")[0]["reason"] == "signal"


def test_an_unexpected_error_in_one_message_does_not_stop_the_watcher(tmp_path: Path) -> None:
    sqs = FakeSqs([[(0, body("i-0")), (1, body("i-1"))]])
    calls = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return runner.run_hooks(*args, **kwargs)

    watcher, log, _ = make_watcher(tmp_path, sqs, run=flaky, max_messages=2, workers=1)
    assert watcher.run() == 0
    assert log.events("fleet.handle_failed")[0]["message_id"] == "m0"
    assert sqs.deleted() == ["r1"]


def test_duplicates_and_other_event_types_are_deleted_without_hooks(tmp_path: Path) -> None:
    same = str(uuid.uuid4())
    other = json.loads(body())
    other["detail-type"] = "EC2 AMI State Change"
    sqs = FakeSqs([[(0, body(event_id=same)), (1, body(event_id=same)),
                    (2, json.dumps(other))]])
    marker = tmp_path / "count"
    watcher, log, out = make_watcher(tmp_path, sqs, hook=f"echo x >> {marker}\n",
                                     max_messages=3)
    watcher.run()
    assert marker.read_text().splitlines() == ["x"]
    assert log.events("fleet.duplicate")[0]["event_id"] == same
    assert sorted(sqs.deleted()) == ["r0", "r1", "r2"]
    assert watcher.counts["duplicate"] == 1 and watcher.counts["ignored"] == 1
    assert len(out.getvalue().splitlines()) == 1


def test_a_status_line_every_few_seconds_on_a_terminal_not_with_json(tmp_path: Path) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def watcher_on(out: io.StringIO, json_output: bool) -> FleetWatcher:
        hooks_dir = tmp_path / f"hooks-{json_output}"
        hooks_dir.mkdir(mode=0o755)
        hook = hooks_dir / "10-hook"
        # The three hooks meet before they finish, so some status line sees all
        # three running however slowly a loaded machine starts them.
        met = tmp_path / f"met-{json_output}"
        met.mkdir()
        hook.write_text(f"#!/bin/sh\ntouch {met}/$$\nn=0\n"
                        f"while [ $(ls {met} | wc -l) -lt 3 ] && [ $n -lt 400 ]; do\n"
                        "  sleep 0.05; n=$((n+1))\ndone\nsleep 0.6\n")
        hook.chmod(0o755)
        return FleetWatcher(
            FleetWatchSettings(queue_url="http://127.0.0.1:1/123456789012/q", hooks_dir=hooks_dir,
                          max_messages=3, wait_seconds=0, json_output=json_output),
            clients=FleetClients(sqs=FakeSqs([[(n, body(f"i-{n}")) for n in range(3)]]),
                                 tags=NoTags()),
            hooks=FleetHooks(plan=hooks.plan_hooks, runner=runner.run_hooks,
                             workdir=tmp_path / "work"),
            stop=threading.Event(),
            reporting=FleetReporting(out=out, status_interval=0.2),
            clocks=Clocks(log=Log()),
        )

    terminal = Terminal()
    watcher_on(terminal, json_output=False).run()
    lines = terminal.getvalue().splitlines()
    status = [line for line in lines if line.startswith("status: ")]
    assert status and len(lines) == 3 + len(status)
    assert "3 running, 3 in hand" in "\n".join(status)  # three instances side by side
    assert all(" events/s, " in line and "oldest message" in line for line in status)

    piped = Terminal()
    watcher_on(piped, json_output=True).run()
    assert all(line.startswith("{") for line in piped.getvalue().splitlines())


def test_workers_setting_from_the_environment_and_bad_values_are_one_line(
    tmp_path: Path,
) -> None:
    import os
    import subprocess
    import sys

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "spotwatch", "fleet", "watch", "--queue-url",
             "http://127.0.0.1:9/123456789012/q", *args],
            capture_output=True, text=True, timeout=60, env={**os.environ, **env})

    zero = run("--workers", "0")
    assert zero.returncode == 2 and "--workers must be 1..1024" in zero.stderr
    bad_env = run(SPOTWATCH_FLEET_WORKERS="many")
    assert bad_env.returncode == 2
    assert "SPOTWATCH_FLEET_WORKERS='many' is not a whole number" in bad_env.stderr
    assert "Traceback" not in zero.stderr + bad_env.stderr


def test_a_bug_in_the_receiver_finishes_what_is_in_hand_and_exits_1(tmp_path: Path) -> None:
    class Broken(FakeSqs):
        def receive_message(self, **kwargs: Any) -> dict[str, Any]:
            if self.batches:
                return super().receive_message(**kwargs)
            return {"Messages": None}  # not a list: iterating it fails in our code

    sqs = Broken([[(0, body("i-0")), (1, body("i-1"))]])
    watcher, log, _ = make_watcher(tmp_path, sqs)
    assert watcher.run() == 1
    assert sorted(sqs.deleted()) == ["r0", "r1"]
    assert log.events("fleet.receiver_failed")
    assert log.events("fleet.stopped")[0]["reason"] == "error"


class SlowSqs(FakeSqs):
    """A queue whose receives take 0.1 s each: records how many were under way at once."""

    def __init__(self, batches: list[Any]) -> None:
        super().__init__(batches)
        self.lock = threading.Lock()
        self.under_way = 0
        self.most_at_once = 0

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        with self.lock:
            self.under_way += 1
            self.most_at_once = max(self.most_at_once, self.under_way)
        try:
            threading.Event().wait(0.1)
            with self.lock:
                return super().receive_message(**kwargs)
        finally:
            with self.lock:
                self.under_way -= 1


def test_a_backlog_is_received_by_several_receivers_at_once(tmp_path: Path) -> None:
    # 128 workers: four receivers; every receive comes back full, so all of them poll.
    sqs = SlowSqs([[(b * 10 + n, body(f"i-{b * 10 + n}")) for n in range(10)]
                   for b in range(30)])
    watcher, _, _ = make_watcher(tmp_path, sqs, hook=None, max_messages=300, workers=128)
    assert watcher.run() == 0
    assert watcher.counts["done"] == 300
    assert sorted(sqs.deleted()) == sorted(f"r{n}" for n in range(300))
    assert 2 <= sqs.most_at_once <= 4
    assert all(kw["MaxNumberOfMessages"] == 10 for kw in sqs.named("receive"))


def test_without_a_backlog_only_one_receiver_polls(tmp_path: Path) -> None:
    # Receives that come back short (3 of 10): the queue keeps up, the extra receivers wait.
    sqs = SlowSqs([[(b * 3 + n, body(f"i-{b * 3 + n}")) for n in range(3)] for b in range(8)])
    watcher, _, _ = make_watcher(tmp_path, sqs, hook=None, max_messages=24, workers=128)
    assert watcher.run() == 0
    assert watcher.counts["done"] == 24
    assert sqs.most_at_once == 1


def test_with_few_workers_one_receiver_even_in_a_backlog(tmp_path: Path) -> None:
    sqs = SlowSqs([[(b * 10 + n, body(f"i-{b * 10 + n}")) for n in range(10)]
                   for b in range(6)])
    watcher, _, _ = make_watcher(tmp_path, sqs, hook=None, max_messages=60, workers=16)
    assert watcher.run() == 0
    assert watcher.counts["done"] == 60
    assert sqs.most_at_once == 1
