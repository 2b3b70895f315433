"""``spotwatch drill --with-examples``: the shipped examples against the stand-ins
(moto's server, a webhook receiver, recording CLIs), one run with the way back."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from spotwatch.rehearsal import HOOKS, RESUME_HOOKS, Call, parse_calls
from tests.helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_parse_calls_in_seconds_since_the_drill_began() -> None:
    log = "1000.5 nomad node drain -self\nnot a call\n1001.25 kubectl cordon n\n"
    assert parse_calls(log, 1000.0) == (Call(0.5, "nomad node drain -self"),
                                        Call(1.25, "kubectl cordon n"))  # fmt: skip


def test_one_run_deregisters_drains_ships_notifies_and_comes_back() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "spotwatch", "drill", "--with-examples", "--resume", "--in", "0.5",
         "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, (report["failures"], proc.stderr)
    names = [h["name"] for h in report["hooks"]]
    assert names == [name.rsplit("/", 1)[1] for name in HOOKS]
    assert [h["name"] for h in report["resume_hooks"]] == [
        name.rsplit("/", 1)[1] for name in sorted(RESUME_HOOKS, key=lambda n: n.rsplit("/")[-1])
    ]
    out = {h["name"]: " ".join(o["text"] for o in h["output"]) for h in report["hooks"]}
    # Deregistered from the group's target group and waited out its 3 s delay.
    assert "out of target group web (port 80); deregistration delay 3 s" in out["20-deregister.sh"]
    assert "drained in" in out["20-deregister.sh"]
    seen = report["stand_ins"]
    lines = [c["line"] for c in seen["calls"]]
    nomad = next(line for line in lines if line.startswith("nomad node drain -self -enable"))
    # The drain's deadline is the hook's time: its 60 s timeout less 2 s, less what passed.
    assert 50 <= int(nomad.rsplit(" ", 1)[1].rstrip("s")) <= 58, nomad
    assert "kubectl cordon rehearsal-node" in lines
    assert "scontrol requeue 4242" in lines and "scontrol requeue 4243" not in lines
    assert "nomad node drain -self -disable -yes" in lines  # the way back
    assert len(seen["objects"]) == 2
    [message] = seen["messages"]
    assert message.startswith("[drill] spot-interruption on " + seen["instance_id"])
    assert seen["tags"] == [f"spotwatch:ending=spot-interruption@{report['notice_time']}"]
    assert seen["targets_left"] == 1  # registered again by resume.d/examples/20-register.sh


def test_text_output_is_one_timeline() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "spotwatch", "drill", "--with-examples", "--in", "0.5"],
        cwd=REPO, capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    order = ["notice seen", "> 20-deregister.sh", "> 30-drain-nomad.sh", "> 50-ship-logs.sh",
             "> 90-notify-webhook.sh", "PASS", "stand-ins", "$ nomad node drain", "webhook: [drill]"]  # noqa: E501
    assert [text.index(word) for word in order] == sorted(text.index(word) for word in order)
    assert "werkzeug" not in proc.stderr and "POST / HTTP" not in proc.stderr


def test_with_examples_is_aws_only() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "spotwatch", "drill", "--with-examples", "--cloud", "gcp"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--with-examples rehearses the AWS examples" in proc.stderr
