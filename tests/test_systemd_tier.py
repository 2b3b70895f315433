"""The real-systemd tier: spotwatch installed from its one file under a real systemd.

One container per session (tests/container.py): systemd boots in an overlay of
/ with no network; spotwatch is installed the way a user would, from the .pyz,
by the system python3; the IMDS simulator, a moto server and a webhook
listener run inside as transient units. The steps build on each other (install
first, uninstall last), so they are one test, run in order: a worker of
pytest-xdist takes a test, not a chain of them. (xdist's ``xdist_group`` would
keep separate tests together, but 3.8 no longer does under pytest 9.)

Skipped, with the reason, where a container cannot boot (not root, no
systemd-nspawn, no overlayfs). The file comes from the ``pyz`` fixture
(conftest.py): SPOTWATCH_TEST_PYZ, or built by tools/build-pyz.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.container import Container, why_not
from tests.helpers import wait_until
from tests.pyz_helpers import with_build_id

REPO = Path(__file__).resolve().parent.parent
_WHY_NOT = why_not()
# Set by .ci/run (root): there the tier must run, and cannot skip unseen.
_REQUIRED = os.environ.get("SPOTWATCH_REQUIRE_SYSTEMD_TIER") == "1"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.systemd,
    pytest.mark.skipif(_WHY_NOT is not None and not _REQUIRED, reason=f"systemd tier: {_WHY_NOT}"),
    pytest.mark.timeout(180),
]

PY = sys.executable  # the test venv's Python: imdssim, moto, the listener (not spotwatch)
HOOKS = "/etc/spotwatch/hooks.d"
UNIT = "spotwatch.service"
DROPIN = "/etc/systemd/system/spotwatch.service.d/test.conf"
IMDS_PORT = 1338
MOTO_PORT = 5000
WEBHOOK_PORT = 8080
# The tests' hooks append a word here each time they run (writable under both hardenings).
RUNS = "/var/log/spotwatch/runs"
STATE = "/var/lib/spotwatch"
RESUME = "/etc/spotwatch/resume.d"
# A directory of the host's, bound inside at every boot: hooks record here what they did,
# and it is there after the container has powered off.
RECORDS = "/records"
# The simulator of the shutdown steps, ordered (by the test drop-in) to stop after spotwatch.
SHUTDOWN_IMDS = "spotwatch-imds.service"
GCP_DROPIN = "/etc/systemd/system/spotwatch.service.d/gcp.conf"
# One line when a hook starts (its name, event, phase, shutdown, deadline, the time), one
# when it ends.
RECORD_HOOK = """#!/bin/sh
echo "{name} start $SPOTWATCH_EVENT $SPOTWATCH_PHASE ${{SPOTWATCH_SHUTDOWN:--}}" \\
    "$SPOTWATCH_DEADLINE $(date +%s)" >> /records/runs
{extra}
echo "{name} end $?" >> /records/runs
"""

TEST_DROPIN = f"""[Service]
Environment=SPOTWATCH_IMDS_URL=http://127.0.0.1:{IMDS_PORT} SPOTWATCH_INTERVAL=0.5
Environment=SPOTWATCH_S3_BUCKET=spot-logs SPOTWATCH_SHIP_PATHS=/var/log/app
Environment=AWS_ENDPOINT_URL=http://127.0.0.1:{MOTO_PORT} AWS_DEFAULT_REGION=us-east-1
Environment=AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
Environment=SPOTWATCH_WEBHOOK_URL=http://127.0.0.1:{WEBHOOK_PORT}/hook
# The tests' records, bound from the host: they outlive the container.
ReadWritePaths=-{RECORDS}
# What the hooks need at a shutdown, as an operator orders their own service: it
# stops only after spotwatch has.
[Unit]
After=moto.service webhook-listener.service {SHUTDOWN_IMDS}
"""

LISTENER = f"""
import http.server

class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open("/root/webhook.log", "ab") as out:
            out.write(body + b"\\n")
        self.send_response(200)
        self.end_headers()

http.server.HTTPServer(("127.0.0.1", {WEBHOOK_PORT}), Handler).serve_forever()
"""

# What a hook can do under the unit's sandbox, one "name=yes/no" line each.
PROBE = """#!/bin/sh
out=/var/log/spotwatch/probe
: > "$out"
for dir in /usr /etc /srv /root /var/lib/spotwatch /var/log/spotwatch; do
    if touch "$dir/.probe" 2>/dev/null; then w=yes; rm -f "$dir/.probe"; else w=no; fi
    echo "write:$dir=$w" >> "$out"
done
echo "nonewprivs=$(awk '/^NoNewPrivs/ {print $2}' /proc/self/status)" >> "$out"
echo "home=${HOME-unset}" >> "$out"
"""


class Box:
    """The booted container with spotwatch installed, and what the tests need of it."""

    def __init__(self, container: Container, pyz: Path, tmp: Path) -> None:
        self.c = container
        self.pyz = pyz
        self.tmp = tmp
        self.imds_runs = 0
        self.records_dir = container.binds[0][0] if container.binds else tmp

    # -- records and boots (the shutdown steps) -------------------------------------

    def record_hooks(self, directory: str, hooks: dict[str, str]) -> None:
        """Recording hooks (RECORD_HOOK; the value: shell run between start and end)."""
        scripts = {n: RECORD_HOOK.format(name=n, extra=extra) for n, extra in hooks.items()}
        if directory == HOOKS:
            self.hooks(scripts)
            return
        target = self.c.path(directory)
        for entry in target.iterdir():  # examples/ stays: spotwatch never runs from it
            if not entry.name.endswith(".disabled") and not entry.is_dir():
                entry.unlink()
        for name, body in scripts.items():
            self.c.write(f"{directory}/{name}", body, 0o755)

    def records(self) -> list[list[str]]:
        """The hooks' lines, read on the host (the container may be gone)."""
        try:
            text = (self.records_dir / "runs").read_text()
        except FileNotFoundError:
            return []
        return [line.split() for line in text.splitlines() if line.strip()]

    def recorded(self, what: str) -> list[str]:
        """The hooks, in order, with a ``what`` (start or end) line."""
        return [r[0] for r in self.records() if r[1:2] == [what]]

    def clear_records(self) -> None:
        (self.records_dir / "runs").unlink(missing_ok=True)

    def imds(self, *args: str, unit: str = SHUTDOWN_IMDS) -> None:
        """A simulator under ``unit`` (by default the one ordered after spotwatch)."""
        self.c.run("systemctl", "stop", "spotwatch-imds*.service", check=False)
        self.c.run("systemd-run", f"--unit={unit}", "--collect", PY, "-m", "spotwatch.imdssim",
                   "--port", str(IMDS_PORT), *args)  # fmt: skip

    def services(self) -> None:
        """What the tests talk to: the webhook listener and moto (again after a boot)."""
        self.c.run("systemd-run", "--unit=webhook-listener", "--collect", PY, "/root/listener.py")
        self.c.run("systemd-run", "--unit=moto", "--collect", PY, "-m", "moto.server",
                   "-H", "127.0.0.1", "-p", str(MOTO_PORT))  # fmt: skip
        wait_until(
            lambda: self.sh(f"curl -s -o /dev/null -w '%{{http_code}}' "
                            f"http://127.0.0.1:{MOTO_PORT}/", check=False) == "200",
            30, "moto", step=0.2,
        )  # fmt: skip
        self.sh(f"curl -sf -X PUT http://127.0.0.1:{MOTO_PORT}/spot-logs")

    def boot_again(self) -> None:
        self.c.boot_again()
        self.services()

    def events_this_boot(self) -> list[dict[str, Any]]:
        return self._events("-b", "0")

    def events_last_boot(self) -> list[dict[str, Any]]:
        return self._events("-b", "-1")

    def _events(self, *args: str) -> list[dict[str, Any]]:
        text = self.c.run("journalctl", "-u", UNIT, "-o", "cat", "--no-pager", *args).stdout
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def sh(self, script: str, check: bool = True, timeout: float = 60.0) -> str:
        return self.c.run("sh", "-c", script, check=check, timeout=timeout).stdout

    def show(self, *props: str) -> dict[str, str]:
        args = [f"-p{p}" for p in props]
        text = self.c.run("systemctl", "show", UNIT, *args).stdout
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def events(self) -> list[dict[str, Any]]:
        """spotwatch's JSON log lines from journalctl -u spotwatch, in order."""
        text = self.c.run("journalctl", "-u", UNIT, "-o", "cat", "--no-pager").stdout
        out = []
        for line in text.splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def diagnostics(self, lines: int = 80) -> str:
        """What to read when a step fails: the unit's state and the end of its journal."""
        try:
            state = self.c.run("systemctl", "status", UNIT, "--no-pager", "-n", "0",
                               check=False, timeout=15).stdout  # fmt: skip
            journal = self.c.run("journalctl", "-u", UNIT, "-o", "short-monotonic",
                                 "--no-pager", "-n", str(lines), check=False,
                                 timeout=15).stdout  # fmt: skip
        except Exception as err:  # the container may be gone; the failure still counts
            return f"(no diagnostics: {err!r})"
        return (
            f"--- systemctl status {UNIT}\n{state}"
            f"--- journalctl -u {UNIT} (last {lines})\n{journal}"
        )

    def journal_text(self) -> str:
        return self.c.run("journalctl", "-u", UNIT, "-o", "cat", "--no-pager").stdout

    def hooks(self, scripts: dict[str, str]) -> None:
        """Make the hooks directory hold exactly these hooks (others are parked)."""
        hooks_dir = self.c.path(HOOKS)
        parked = self.c.path("/root/parked")
        parked.mkdir(exist_ok=True)
        for entry in hooks_dir.iterdir():
            entry.rename(parked / entry.name)
        for name, body in scripts.items():
            self.c.write(f"{HOOKS}/{name}", body, 0o755)

    def runs(self) -> list[str]:
        try:
            return self.c.path(RUNS).read_text().split()
        except FileNotFoundError:
            return []

    def notice(self, action: str = "terminate") -> int:
        """A new spot interruption notice (a new simulator); returns how many events
        the journal held before it, so the caller can look at what came after."""
        before = len(self.events())
        self.c.run("systemctl", "stop", "spotwatch-imds*.service", check=False)
        self.imds_runs += 1
        self.c.run(
            "systemd-run", f"--unit=spotwatch-imds-{self.imds_runs}", "--collect",
            PY, "-m", "spotwatch.imdssim", "--port", str(IMDS_PORT), "--notice-in", "0.3",
            "--action", action,
        )  # fmt: skip
        return before

    def new_instance(self) -> None:
        """Start over as on a fresh instance: no notice served, spotwatch stopped, its
        state directory emptied, started again. The fold rule keys on the journal: a
        notice that ends the instance, seen before the previous one's deadline (the
        simulator's 2 minutes) has passed, is folded into it and runs no hooks. So a
        step that wants its notice's hooks to run needs a new instance first."""
        self.c.run("systemctl", "stop", "spotwatch-imds*.service", check=False)
        self.c.run("systemctl", "stop", UNIT, timeout=60)
        for entry in self.c.path(STATE).iterdir():
            entry.unlink()
        self.c.run("systemctl", "start", UNIT)
        self.active()

    def handled(self, before: int, timeout: float = 45.0) -> list[dict[str, Any]]:
        """The events since ``before`` once a notice.handled is among them."""

        def done() -> list[dict[str, Any]] | None:
            new = self.events()[before:]
            return new if any(e["event"] == "notice.handled" for e in new) else None

        result: list[dict[str, Any]] = wait_until(done, timeout, "notice.handled", step=0.2)
        return result

    def active(self) -> None:
        wait_until(
            lambda: self.show("ActiveState")["ActiveState"] == "active",
            30, "the service to be active", step=0.2,
        )  # fmt: skip


@pytest.fixture(scope="session")
def container() -> Iterator[Container]:
    if _WHY_NOT is not None:
        pytest.fail(f"SPOTWATCH_REQUIRE_SYSTEMD_TIER=1, but the tier cannot run: {_WHY_NOT}")
    records = Path(tempfile.mkdtemp(prefix="spotwatch-records-"))
    box = Container(f"spotwatch-tier-{uuid.uuid4().hex[:8]}", binds=[(records, RECORDS)])
    try:
        box.boot()
        yield box
    finally:
        box.close()
        shutil.rmtree(records, ignore_errors=True)


@pytest.fixture(scope="session")
def box(container: Container, pyz: Path, tmp_path_factory: pytest.TempPathFactory) -> Box:
    """Services the tests talk to, the test settings, then the one-file install."""
    b = Box(container, pyz, tmp_path_factory.mktemp("tier"))
    c = container
    c.write("/root/listener.py", LISTENER)
    c.write(DROPIN, TEST_DROPIN)
    c.write("/var/log/app/app.log", "the application's log\n")
    shutil_copy(pyz, c.path(f"/root/{pyz.name}"))
    # As a user would, offline: the system python3 runs the file.
    result = c.run("python3", f"/root/{pyz.name}", "install", timeout=120)
    b.install_output = result.stdout  # type: ignore[attr-defined]
    b.services()
    return b


def shutil_copy(src: Path, dst: Path) -> None:
    import shutil

    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


# -- the steps, in order ---------------------------------------------------------------


def step_install_from_the_pyz_writes_enables_and_starts_the_unit(box: Box) -> None:
    out = box.install_output  # type: ignore[attr-defined]
    assert "created /etc/systemd/system/spotwatch.service" in out
    assert "enabled and started spotwatch.service" in out
    assert box.c.run("systemctl", "is-enabled", UNIT).stdout.strip() == "enabled"
    box.active()
    props = box.show("Type", "ExecStart", "MainPID", "StatusText", "NotifyAccess")
    # Type=notify: systemd calls it active only once the daemon sent READY=1.
    assert props["Type"] == "notify" and props["NotifyAccess"] == "main"
    assert "/opt/spotwatch/bin/spotwatch" in props["ExecStart"]
    wait_until(lambda: "watching" in box.show("StatusText")["StatusText"], 30,
               "a watching status", step=0.2)  # fmt: skip
    pid = props["MainPID"]
    # The system python3 runs the file, with no HOME and no write to a home directory.
    exe = box.sh(f"readlink /proc/{pid}/exe").strip()
    assert exe.startswith("/usr/bin/python3"), exe
    env = box.sh(f"tr '\\0' '\\n' < /proc/{pid}/environ")
    assert "SHIV_ROOT=/opt/spotwatch/lib" in env and "\nHOME=" not in f"\n{env}"
    assert "spotwatch.started" in {e["event"] for e in box.events()}


def step_a_notice_runs_the_example_hooks_under_the_default_hardening(box: Box) -> None:
    for name in ("50-ship-logs.sh", "90-notify-webhook.sh"):
        box.c.path(f"{HOOKS}/{name}.disabled").rename(box.c.path(f"{HOOKS}/{name}"))
    box.c.write(f"{HOOKS}/20-probe", PROBE, 0o755)
    before = box.notice()
    new = box.handled(before)
    finished = {e["hook"]: e["outcome"] for e in new if e["event"] == "hook.finished"}
    assert finished == {"20-probe": "ok", "50-ship-logs.sh": "ok", "90-notify-webhook.sh": "ok"}
    probe = box.c.path("/var/log/spotwatch/probe").read_text()
    # ProtectSystem=full: /usr and /etc read-only; homes, /srv and the state writable.
    for line in ("write:/usr=no", "write:/etc=no", "write:/srv=yes", "write:/root=yes",
                 "write:/var/lib/spotwatch=yes", "nonewprivs=1", "home=unset"):  # fmt: skip
        assert line in probe, probe
    keys = box.sh(
        f"{PY} -c \"import boto3; print(' '.join(o['Key'] for o in boto3.client('s3', "
        f"endpoint_url='http://127.0.0.1:{MOTO_PORT}', region_name='us-east-1', "
        "aws_access_key_id='t', aws_secret_access_key='t')"
        ".list_objects_v2(Bucket='spot-logs').get('Contents', [])))\""
    ).split()
    assert any(k.endswith("app.log.gz") or "app.log" in k for k in keys), keys
    posted = box.c.path("/root/webhook.log").read_text().splitlines()
    assert len(posted) == 1 and "i-" in posted[0], posted


def step_a_notice_runs_the_example_hooks_under_the_strict_dropin(box: Box) -> None:
    out = box.c.run("/opt/spotwatch/bin/spotwatch", "install", "--strict").stdout
    assert "created /etc/systemd/system/spotwatch.service.d/strict.conf" in out
    box.c.run("systemctl", "restart", UNIT)
    box.active()
    # The previous notice's deadline is still ahead: this one is the same end of the
    # instance, folded into it from the journal across the restart; no hook runs.
    first = [e["notice_id"] for e in box.events() if e["event"] == "notice.handled"][-1]
    before = box.notice()
    folded = wait_until(
        lambda: [e for e in box.events()[before:] if e["event"] == "notice.folded"],
        30, "notice.folded", step=0.2,
    )  # fmt: skip
    assert folded[0]["into"] == first, folded
    assert not [e for e in box.events()[before:] if e["event"] == "hook.started"]
    # The status line says so, and counts the first run's hooks (not "no notice").
    def still_out() -> str | None:
        text = box.show("StatusText")["StatusText"]
        return text if "still out" in text else None

    status: str = wait_until(still_out, 30, "a 'still out' status line", step=0.2)
    assert f"folded into {first}" in status and "(3/3 hooks ok)" in status, status
    box.new_instance()
    before = box.notice()
    new = box.handled(before)
    finished = {e["hook"]: e["outcome"] for e in new if e["event"] == "hook.finished"}
    assert finished == {"20-probe": "ok", "50-ship-logs.sh": "ok", "90-notify-webhook.sh": "ok"}
    probe = box.c.path("/var/log/spotwatch/probe").read_text()
    # ProtectSystem=strict: only the state and log directories are writable.
    for line in ("write:/usr=no", "write:/etc=no", "write:/srv=no", "write:/root=no",
                 "write:/var/lib/spotwatch=yes", "write:/var/log/spotwatch=yes"):  # fmt: skip
        assert line in probe, probe
    assert len(box.c.path("/root/webhook.log").read_text().splitlines()) == 2


def step_an_upgrade_restarts_the_service_on_the_new_file_and_removes_the_old(box: Box) -> None:
    pyz, tmp_path = box.pyz, box.tmp
    pid = box.show("MainPID")["MainPID"]
    starts = [e["event"] for e in box.events()].count("spotwatch.started")
    newer = with_build_id(pyz, tmp_path / pyz.name, "e" * 64)
    shutil_copy(newer, box.c.path(f"/root/new/{pyz.name}"))
    out = box.c.run("python3", f"/root/new/{pyz.name}", "install", "--strict").stdout
    assert "installed /opt/spotwatch/spotwatch.pyz" in out
    assert "restarted spotwatch.service" in out and "an older version" in out, out
    box.active()
    assert box.show("MainPID")["MainPID"] != pid
    assert [e["event"] for e in box.events()].count("spotwatch.started") == starts + 1
    lib = box.c.path("/opt/spotwatch/lib")
    assert [p.name for p in lib.iterdir() if p.is_dir()] == ["spotwatch.pyz_" + "e" * 64]


def step_stop_during_a_hook_lets_it_finish_and_start_runs_only_the_rest(box: Box) -> None:
    box.hooks({
        "10-slow": f"#!/bin/sh\necho slow-start >> {RUNS}\nsleep 3\necho slow-done >> {RUNS}\n",
        "20-rest": f"#!/bin/sh\necho rest >> {RUNS}\n",
    })  # fmt: skip
    box.new_instance()
    before = box.notice()
    wait_until(lambda: "slow-start" in box.runs(), 30, "the slow hook to start", step=0.2)
    box.c.run("systemctl", "stop", UNIT, timeout=60)
    assert box.runs() == ["slow-start", "slow-done"]
    stopped = [e for e in box.events()[before:] if e["event"] == "hooks.stopped"]
    assert stopped and stopped[0]["not_started"] == ["20-rest"], stopped
    box.c.run("systemctl", "start", UNIT)
    new = box.handled(before)
    assert box.runs() == ["slow-start", "slow-done", "rest"]
    assert any(e["event"] == "journal.resumed" for e in new)


def step_a_frozen_daemon_is_restarted_by_the_watchdog_and_reruns_no_finished_hook(
    box: Box,
) -> None:
    box.c.path(RUNS).unlink()
    box.c.write("/etc/systemd/system/spotwatch.service.d/watchdog.conf",
                "[Service]\nWatchdogSec=2\n")  # fmt: skip
    box.c.run("systemctl", "daemon-reload")
    box.new_instance()
    box.hooks({
        "10-first": f"#!/bin/sh\necho first >> {RUNS}\n",
        # Waits for the test's go-ahead: the daemon is frozen meanwhile.
        "20-gate": "#!/bin/sh\nwhile [ ! -e /root/gate ]; do sleep 0.1; done\n"
        f"echo gate >> {RUNS}\n",
        "30-last": f"#!/bin/sh\necho last >> {RUNS}\n",
    })  # fmt: skip
    restarts = int(box.show("NRestarts")["NRestarts"])
    before = box.notice()
    wait_until(
        lambda: any(e["event"] == "hook.started" and e["hook"] == "20-gate"
                    for e in box.events()[before:]),
        30, "the gate hook to start", step=0.2,
    )  # fmt: skip
    pid = box.show("MainPID")["MainPID"]
    box.c.run("kill", "-STOP", pid)
    wait_until(
        lambda: int(box.show("NRestarts")["NRestarts"]) > restarts,
        30, "the watchdog's restart", step=0.2,
    )  # fmt: skip
    assert "watchdog timeout" in box.journal_text().lower()
    box.c.write("/root/gate", "")
    box.handled(before)
    runs = box.runs()
    assert runs.count("first") == 1 and runs.count("last") == 1, runs
    box.c.path("/etc/systemd/system/spotwatch.service.d/watchdog.conf").unlink()
    box.c.run("systemctl", "daemon-reload")


def step_a_chatty_hook_leaves_every_event_of_spotwatch_in_the_journal(box: Box) -> None:
    box.hooks({
        "10-chatty": "#!/bin/sh\nseq 1 100000\n",
        "20-after": "#!/bin/sh\necho after-the-chatty-one\n",
    })  # fmt: skip
    box.new_instance()
    before = box.notice()
    new = box.handled(before)
    names = [e["event"] for e in new]
    for event in ("notice.detected", "hook.output_truncated", "notice.handled"):
        assert event in names, names
    started = [e["hook"] for e in new if e["event"] == "hook.started"]
    finished = [e["hook"] for e in new if e["event"] == "hook.finished"]
    assert started == finished == ["10-chatty", "20-after"]
    output = [e["line"] for e in new if e["event"] == "hook.output"]
    assert output[:2] == ["1", "2"] and "100000" in output and "after-the-chatty-one" in output
    assert len(output) == 100 + 100 + 1
    truncated = next(e for e in new if e["event"] == "hook.output_truncated")
    assert truncated["lines_left_out"] == 100000 - 200
    assert "Suppressed" not in box.sh("journalctl -o cat --no-pager -t systemd-journald",
                                      check=False)  # fmt: skip


def step_a_failing_hook_is_in_journalctl_priority_warning(box: Box) -> None:
    box.hooks({
        "10-fails": "#!/bin/sh\necho cannot-checkpoint >&2\nexit 3\n",
        "20-fine": "#!/bin/sh\necho fine\n",
    })  # fmt: skip
    box.new_instance()
    before = box.notice()
    box.handled(before)
    text = box.c.run("journalctl", "-u", UNIT, "-p", "warning", "-o", "cat", "--no-pager").stdout
    warned = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    failed = [e for e in warned if e["event"] == "hook.finished" and e["hook"] == "10-fails"]
    assert failed and failed[-1]["exit_code"] == 3, text[-2000:]
    # Priority filters: info events (a hook that went fine, a start) are not there,
    # and no line keeps its "<N>" prefix.
    assert not [e for e in warned if e["event"] in ("hook.started", "spotwatch.started")]
    assert not [e for e in warned if e["event"] == "hook.finished" and e["hook"] == "20-fine"]
    assert "<4>" not in box.journal_text() and "<6>" not in box.journal_text()


def step_stop_while_idle_runs_no_hook(box: Box) -> None:
    box.record_hooks(HOOKS, {"10-first": ""})
    box.new_instance()
    box.clear_records()
    box.c.run("systemctl", "stop", UNIT, timeout=60)
    # An operator's stop: systemd is running, no shutdown job is queued.
    assert box.recorded("start") == []
    assert "shutdown.detected" not in {e["event"] for e in box.events_this_boot()}
    assert any(e["event"] == "stop.requested" for e in box.events_this_boot())
    box.c.run("systemctl", "start", UNIT)
    box.active()


# The example hooks (parked by box.hooks) run as they would be, their exit status recorded.
SHIP = "/root/parked/50-ship-logs.sh > /records/ship.out 2>&1"
NOTIFY = "/root/parked/90-notify-webhook.sh > /records/notify.out 2>&1"


def step_idle_poweroff_runs_every_hook_once_as_shutdown_and_the_boot_comes_back(
    box: Box,
) -> None:
    box.new_instance()
    box.imds()  # no notice
    box.record_hooks(HOOKS, {"10-first": "", "50-ship": SHIP, "90-notify": NOTIFY})
    box.record_hooks(RESUME, {"10-back": ""})
    box.clear_records()
    posted = len(box.c.path("/root/webhook.log").read_text().splitlines())
    box.c.shut_down("poweroff")
    # The container is gone; each hook recorded its end before it went.
    assert box.recorded("start") == box.recorded("end") == ["10-first", "50-ship", "90-notify"]
    for row in box.records():
        if row[1] == "start":
            assert row[2:5] == ["shutdown", "end", "poweroff"], row
            # TimeoutStopSec (150 s), read from systemd, less the 2 s reserve.
            assert 130 <= int(row[5]) - int(row[6]) <= 148, row
        else:
            assert row[2] == "0", row
    shipped = (box.records_dir / "ship.out").read_text()
    assert "app.log" in shipped or "shipped 1" in shipped, shipped
    webhook = box.c.path("/root/webhook.log").read_text().splitlines()
    assert len(webhook) == posted + 1 and "shutting down (poweroff), no notice" in webhook[-1]
    box.boot_again()
    # The same instance boots: how the last boot ended, and the way back, once.
    wait_until(lambda: "10-back" in box.recorded("end"), 30, "the resume hook", step=0.2)
    back = [r for r in box.records() if r[0] == "10-back" and r[1] == "start"]
    assert len(back) == 1 and back[0][2:5] == ["shutdown", "resume", "poweroff"], back
    ends = [e for e in box.events_this_boot() if e["event"] == "boot.previous_end"]
    assert len(ends) == 1 and ends[0]["end"] == "shut-down", ends
    assert ends[0]["shutdown"] == "poweroff"


def step_google_preempted_and_poweroff_at_once_run_the_hooks_as_the_preemption(
    box: Box,
) -> None:
    box.c.write(GCP_DROPIN, "[Service]\nEnvironment=SPOTWATCH_CLOUD=gcp\n")
    box.c.run("systemctl", "daemon-reload")
    box.record_hooks(HOOKS, {"10-first": "", "20-second": "", "30-third": ""})
    box.new_instance()
    box.imds("--cloud", "gcp", "--notice-in", "3")
    box.clear_records()
    # Google's ACPI soft-off comes at the moment preempted turns TRUE.
    box.c.run("sh", "-c", "until curl -sf -H 'Metadata-Flavor: Google' "
              f"http://127.0.0.1:{IMDS_PORT}/computeMetadata/v1/instance/preempted "
              "| grep -q TRUE; do sleep 0.01; done; systemctl poweroff --no-block",
              timeout=30)  # fmt: skip
    assert box.c.proc is not None
    box.c.proc.wait(timeout=120)
    box.c.proc = None
    starts = [r for r in box.records() if r[1] == "start"]
    assert [r[0] for r in starts] == ["10-first", "20-second", "30-third"], box.records()
    assert box.recorded("end") == ["10-first", "20-second", "30-third"]
    for row in starts:
        assert row[2:4] == ["spot-interruption", "end"], row
        assert int(row[5]) - int(row[6]) <= 30, row  # Google's 30 s
    box.c.path(GCP_DROPIN).unlink()
    box.boot_again()


def step_poweroff_during_the_first_of_three_hooks_runs_all_three_once(box: Box) -> None:
    box.record_hooks(HOOKS, {"10-slow": "sleep 2", "20-next": "", "30-last": ""})
    box.new_instance()
    box.clear_records()
    box.notice()
    wait_until(lambda: "10-slow" in box.recorded("start"), 30, "the first hook", step=0.1)
    box.c.shut_down("poweroff")
    assert box.recorded("start") == box.recorded("end") == ["10-slow", "20-next", "30-last"]
    assert {r[2] for r in box.records() if r[1] == "start"} == {"spot-interruption"}
    box.boot_again()


def step_reboot_after_a_handled_stop_notice_runs_the_resume_hooks_after_the_boot(
    box: Box,
) -> None:
    box.record_hooks(HOOKS, {"10-first": ""})
    box.record_hooks(RESUME, {"10-back": ""})
    box.new_instance()
    box.handled(box.notice(action="stop"))
    box.clear_records()
    status = box.c.shut_down("reboot")
    assert status == 133, status  # nspawn's "reboot requested"
    # The end's hooks had run: the shutdown runs nothing more.
    assert box.records() == []
    box.boot_again()
    last = {e["event"] for e in box.events_last_boot()}
    assert "shutdown.detected" in last and "shutdown.after_notice" in last
    wait_until(lambda: "10-back" in box.recorded("end"), 30, "the resume hook", step=0.2)
    back = [r for r in box.records() if r[1] == "start"]
    assert [r[0] for r in back] == ["10-back"] and back[0][2:4] == ["spot-interruption", "resume"]
    events = box.events_this_boot()
    ends = [e for e in events if e["event"] == "boot.previous_end"]
    assert len(ends) == 1 and ends[0]["end"] == "shut-down" and ends[0]["shutdown"] == "reboot"
    assert [e["event"] for e in events].count("resume.handled") == 1
    box.c.path(f"{RESUME}/10-back").unlink()


def step_uninstall_leaves_the_users_files_and_nothing_else(box: Box) -> None:
    # The operator's own hook, and an example they enabled, stay; all else goes.
    box.hooks({"10-mine": "#!/bin/sh\necho mine\n"})
    box.c.path("/root/parked/50-ship-logs.sh").rename(box.c.path(f"{HOOKS}/50-ship-logs.sh"))
    shiv = box.c.path("/root/.shiv")
    assert any(p.name.startswith("spotwatch") for p in shiv.iterdir())  # install ran the file
    out = box.c.run("/opt/spotwatch/bin/spotwatch", "uninstall").stdout
    assert "left 3 file(s); remove them by hand if you want:" in out, out
    for line in ("/etc/spotwatch/hooks.d/10-mine: your hook (not installed by spotwatch)",
                 "/etc/spotwatch/hooks.d/50-ship-logs.sh: an example hook you enabled",
                 "/etc/systemd/system/spotwatch.service.d/test.conf: a drop-in of yours"):
        assert f"\n  {line}" in out, out
    # The unpack cache of the one file run by hand (python3 spotwatch.pyz install) goes too.
    assert not [p.name for p in shiv.iterdir() if "spotwatch" in p.name]
    assert box.show("LoadState")["LoadState"] == "not-found"
    for gone in ("/opt/spotwatch", "/usr/local/bin/spotwatch",
                 "/etc/systemd/system/spotwatch.service",
                 "/etc/systemd/system/spotwatch.service.d/strict.conf",
                 "/etc/spotwatch/spotwatch.env",
                 "/etc/systemd/system/multi-user.target.wants/spotwatch.service"):  # fmt: skip
        assert not os.path.lexists(box.c.path(gone)), gone
    # What the container changed, from the overlay's upper layer: files and
    # symlinks (not whiteouts, the marks of deletions) spotwatch-related or new.
    upper = box.c.upper
    left = sorted(
        str(p.relative_to(upper))
        for top in ("etc/spotwatch", "etc/systemd", "opt", "usr/local", "var/lib/spotwatch")
        if (upper / top).exists()
        for p in (upper / top).rglob("*")
        if p.is_symlink() or p.is_file()
    )
    assert left == sorted([
        "etc/spotwatch/hooks.d/10-mine",
        "etc/spotwatch/hooks.d/50-ship-logs.sh",
        "etc/systemd/system/spotwatch.service.d/test.conf",
    ]), left  # fmt: skip


STEPS: tuple[Callable[[Box], None], ...] = (
    step_install_from_the_pyz_writes_enables_and_starts_the_unit,
    step_a_notice_runs_the_example_hooks_under_the_default_hardening,
    step_a_notice_runs_the_example_hooks_under_the_strict_dropin,
    step_an_upgrade_restarts_the_service_on_the_new_file_and_removes_the_old,
    step_stop_during_a_hook_lets_it_finish_and_start_runs_only_the_rest,
    step_a_frozen_daemon_is_restarted_by_the_watchdog_and_reruns_no_finished_hook,
    step_a_chatty_hook_leaves_every_event_of_spotwatch_in_the_journal,
    step_a_failing_hook_is_in_journalctl_priority_warning,
    step_stop_while_idle_runs_no_hook,
    step_idle_poweroff_runs_every_hook_once_as_shutdown_and_the_boot_comes_back,
    step_google_preempted_and_poweroff_at_once_run_the_hooks_as_the_preemption,
    step_poweroff_during_the_first_of_three_hooks_runs_all_three_once,
    step_reboot_after_a_handled_stop_notice_runs_the_resume_hooks_after_the_boot,
    step_uninstall_leaves_the_users_files_and_nothing_else,
)


def test_spotwatch_as_a_service_under_a_real_systemd(box: Box) -> None:
    """Every step above, in order; a failure names its step. Prints each step's time."""
    for step in STEPS:
        started = time.monotonic()
        try:
            step(box)
        except AssertionError as exc:
            raise AssertionError(f"{step.__name__}: {exc}\n{box.diagnostics()}") from exc
        print(f"{step.__name__}: {time.monotonic() - started:.1f} s")
