"""`spotwatch status --watch`: the poll loop, with botocore's Stubber and a fake clock."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from datetime import datetime, timezone

import pytest

from spotwatch.spot_codes import EXIT_API, EXIT_INTERRUPTING, EXIT_OK
from spotwatch.status import (
    MAX_BACKOFF,
    Output,
    StatusApiError,
    StatusQuery,
    watch_status,
)
from spotwatch.stopper import Stopper
from tests.status_helpers import StubClients, item, page

NOW = datetime(2026, 11, 26, 3, 2, 25, tzinfo=timezone.utc)


class Polls:
    """A Waiter that records each timeout and says stop after ``count`` polls."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.timeouts: list[float] = []

    def wait(self, timeout: float) -> bool:
        self.timeouts.append(timeout)
        return len(self.timeouts) >= self.count


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def respond(clients: StubClients, *codes: str | None) -> None:
    """One poll per code: a single request with that code; None is a throttled poll."""
    stub = clients.stub()
    for code in codes:
        if code is None:
            stub.add_client_error("describe_spot_instance_requests",
                                  service_error_code="RequestLimitExceeded",
                                  http_status_code=503)
        else:
            stub.add_response("describe_spot_instance_requests",
                              page(item("sir-watch1", code)), None)


def watch(clients: StubClients, polls: Polls, *, interval: float = 5, as_json: bool = False,
          out: io.StringIO | None = None, clock: float = 100.0) -> tuple[int, str, str]:
    out = out if out is not None else io.StringIO()
    err = io.StringIO()
    status = watch_status(StatusQuery(), clients, interval, Output(out, err, now=lambda: NOW),
                          polls, as_json=as_json, monotonic=lambda: clock)
    return status, out.getvalue(), err.getvalue()


def test_not_a_terminal_prints_the_table_then_one_line_per_change() -> None:
    clients = StubClients()
    respond(clients, "fulfilled", "fulfilled", "marked-for-termination", None, None,
            "marked-for-termination")
    polls = Polls(6)
    status, out, err = watch(clients, polls)
    clients.verify()
    assert status == EXIT_INTERRUPTING  # the last poll's
    lines = out.splitlines()
    assert lines[0].startswith("REQUEST")
    assert lines[1].startswith("sir-watch1")
    assert lines[2] == "1 request: 1 healthy"
    assert lines[3:] == [
        "2026-11-26 03:02:25Z  sir-watch1  i-0123456789abcdef0  "
        "fulfilled -> marked-for-termination  (interrupting: AWS terminates it within 2 min)"
    ]
    # Throttled twice: reported once, backed off (5 -> 10 -> 20), then back to 5 s.
    assert polls.timeouts == [5, 5, 5, 10, 20, 5]
    assert err.splitlines() == [
        "spotwatch status: error: EC2 throttled DescribeSpotInstanceRequests in us-east-1 even "
        "after retries (RequestLimitExceeded): try again later or poll less often "
        "(backing off; next poll in 10s)",
        "2026-11-26 03:02:25Z  EC2 answers again",
    ]


def test_json_prints_the_list_on_one_line_when_anything_changed() -> None:
    clients = StubClients()
    respond(clients, "fulfilled", "fulfilled", "marked-for-stop")
    status, out, _ = watch(clients, Polls(3), as_json=True)
    lines = out.splitlines()
    assert len(lines) == 2
    assert [json.loads(line)[0]["status_code"] for line in lines] == [
        "fulfilled", "marked-for-stop"]
    assert status == EXIT_INTERRUPTING


def test_a_terminal_is_redrawn_with_the_changes_under_the_table() -> None:
    clients = StubClients()
    respond(clients, "pending-fulfillment", "fulfilled")
    terminal = Terminal()
    status, out, _ = watch(clients, Polls(2), out=terminal)
    assert status == EXIT_OK
    screens = out.split("\x1b[H\x1b[2J")
    assert len(screens) == 3 and screens[0] == ""
    assert screens[1].startswith("spotwatch status: every 5s, 2026-11-26 03:02:25Z; Ctrl-C")
    assert "changes:" not in screens[1]
    assert "changes:\n2026-11-26 03:02:25Z  sir-watch1  i-0123456789abcdef0  " \
           "pending-fulfillment -> fulfilled" in screens[2]


def test_never_polls_faster_than_once_a_second() -> None:
    clients = StubClients()
    respond(clients, "fulfilled", "fulfilled", "fulfilled")
    polls = Polls(3)
    watch(clients, polls, interval=0.01)
    assert polls.timeouts == [1.0, 1.0, 1.0]


def test_the_wait_counts_from_the_start_of_the_poll() -> None:
    clients = StubClients()
    respond(clients, "fulfilled", "fulfilled")
    ticks = iter([100.0, 103.5, 200.0, 209.0])  # start, end of poll 1, start, end of poll 2
    polls = Polls(2)
    watch_status(StatusQuery(), clients, 5, Output(io.StringIO(), io.StringIO()), polls,
                 monotonic=lambda: next(ticks))
    assert polls.timeouts == [1.5, 0.0]


def test_backoff_is_capped() -> None:
    clients = StubClients()
    respond(clients, *([None] * 9))
    polls = Polls(9)
    status, _, err = watch(clients, polls, interval=2)
    assert status == EXIT_API
    assert polls.timeouts == [4, 8, 16, 32, 64, 128, 256, MAX_BACKOFF, MAX_BACKOFF]
    assert len(err.splitlines()) == 1  # the same fault is reported once


def test_a_fault_that_will_not_pass_ends_the_watch() -> None:
    clients = StubClients()
    respond(clients, "fulfilled")
    clients.stub().add_client_error("describe_spot_instance_requests",
                                    service_error_code="UnauthorizedOperation",
                                    http_status_code=403)
    with pytest.raises(StatusApiError, match="ec2:DescribeSpotInstanceRequests"):
        watch(clients, Polls(5))


def test_unknown_ids_are_reported_once_while_watching() -> None:
    clients = StubClients()
    for _ in range(3):
        clients.stub().add_response("describe_spot_instance_requests", page(), None)
    err = io.StringIO()
    status = watch_status(StatusQuery(ids=("sir-gone",)), clients, 1,
                          Output(io.StringIO(), err), Polls(3), monotonic=lambda: 0.0)
    assert status == EXIT_API
    assert err.getvalue() == (
        "spotwatch status: error: unknown ID sir-gone: no spot request for it in us-east-1\n")


def test_sigint_stops_the_wait_and_the_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGINT)
    with Stopper() as stop:
        assert not stop.wait(0.01)
        timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        started = time.monotonic()
        assert stop.wait(60)  # real signal, recorded by the handler
        assert time.monotonic() - started < 30
        timer.join()
    assert signal.getsignal(signal.SIGINT) is before
