"""The IMDS simulator itself, probed with plain requests (not spotwatch's client)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from spotwatch.imdssim import (
    FAULTS,
    IDENTITY_PATH,
    INSTANCE_ACTION_PATH,
    REBALANCE_PATH,
    TERMINATION_TIME_PATH,
    TOKEN_PATH,
    ImdsSimulator,
    format_time,
)

TTL = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN = "X-aws-ec2-metadata-token"


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(1_800_000_000.0)


@pytest.fixture
def mono() -> FakeClock:
    return FakeClock(100.0)


@pytest.fixture
def sim(wall: FakeClock, mono: FakeClock) -> Iterator[ImdsSimulator]:
    with ImdsSimulator(clock=mono, wall_clock=wall, hang_seconds=3.0) as simulator:
        yield simulator


@pytest.fixture
def http() -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False
    yield session
    session.close()


def get(http: requests.Session, sim: ImdsSimulator, path: str, **headers: str) -> requests.Response:
    return http.get(sim.url + path, headers=headers, timeout=2, allow_redirects=False)


def put_token(http: requests.Session, sim: ImdsSimulator, ttl: str = "60") -> requests.Response:
    return http.put(sim.url + TOKEN_PATH, headers={TTL: ttl}, timeout=2)


# -- notices -------------------------------------------------------------------


def test_notice_is_404_until_its_moment_then_served(
    sim: ImdsSimulator, http: requests.Session, wall: FakeClock
) -> None:
    assert get(http, sim, INSTANCE_ACTION_PATH).status_code == 404
    sim.schedule_notice("terminate", appear_at=wall.now + 10)
    assert get(http, sim, INSTANCE_ACTION_PATH).status_code == 404
    assert get(http, sim, TERMINATION_TIME_PATH).status_code == 404
    assert sim.first_notice_served_at is None
    wall.now += 10
    resp = get(http, sim, INSTANCE_ACTION_PATH)
    assert resp.status_code == 200
    expected_time = format_time(wall.now + 120)
    assert resp.json() == {"action": "terminate", "time": expected_time}
    assert get(http, sim, TERMINATION_TIME_PATH).text == expected_time
    assert sim.notice_visible_at == wall.now
    assert sim.first_notice_served_at == wall.now
    sim.clear_notice()
    assert get(http, sim, INSTANCE_ACTION_PATH).status_code == 404
    assert sim.notice_visible_at is None


@pytest.mark.parametrize("action", ["stop", "hibernate"])
def test_termination_time_only_for_terminate(
    sim: ImdsSimulator, http: requests.Session, action: str
) -> None:
    sim.schedule_notice(action, notice_time="2031-01-02T03:04:05Z")
    assert get(http, sim, INSTANCE_ACTION_PATH).json() == {
        "action": action,
        "time": "2031-01-02T03:04:05Z",
    }
    assert get(http, sim, TERMINATION_TIME_PATH).status_code == 404


def test_first_served_is_the_first_notice_read_not_a_later_one(
    sim: ImdsSimulator, http: requests.Session, wall: FakeClock
) -> None:
    sim.schedule_notice(appear_at=wall.now)
    first = wall.now
    get(http, sim, INSTANCE_ACTION_PATH)
    wall.now += 5
    get(http, sim, INSTANCE_ACTION_PATH)
    assert sim.first_notice_served_at == first
    assert sim.wait_for_notice_served(timeout=1) == first


def test_rebalance_and_identity(
    sim: ImdsSimulator, http: requests.Session, wall: FakeClock
) -> None:
    assert get(http, sim, REBALANCE_PATH).status_code == 404
    sim.schedule_rebalance(appear_at=wall.now + 1, notice_time="2031-01-01T00:00:00Z")
    assert get(http, sim, REBALANCE_PATH).status_code == 404
    wall.now += 1
    assert get(http, sim, REBALANCE_PATH).json() == {"noticeTime": "2031-01-01T00:00:00Z"}
    sim.clear_rebalance()
    assert get(http, sim, REBALANCE_PATH).status_code == 404
    doc = get(http, sim, IDENTITY_PATH).json()
    assert doc["instanceId"] == "i-0123456789abcdef0"
    assert doc["region"] == "us-east-1"
    assert doc["availabilityZone"] == "us-east-1a"
    sim.set_identity(instanceId="i-abc", region="eu-west-1")
    doc = get(http, sim, IDENTITY_PATH).json()
    assert (doc["instanceId"], doc["region"]) == ("i-abc", "eu-west-1")


# -- tokens --------------------------------------------------------------------


@pytest.mark.parametrize("ttl", ["", "0", "21601", "abc", "-5"])
def test_token_ttl_is_validated(sim: ImdsSimulator, http: requests.Session, ttl: str) -> None:
    headers = {TTL: ttl} if ttl else {}
    resp = http.put(sim.url + TOKEN_PATH, headers=headers, timeout=2)
    assert resp.status_code == 400


def test_require_token_and_expiry_on_the_injected_clock(
    sim: ImdsSimulator, http: requests.Session, mono: FakeClock
) -> None:
    sim.require_token = True
    assert get(http, sim, INSTANCE_ACTION_PATH).status_code == 401
    resp = put_token(http, sim, "21600")
    assert resp.status_code == 200
    assert resp.headers[TTL] == "21600"
    token = resp.text
    assert get(http, sim, INSTANCE_ACTION_PATH, **{TOKEN: token}).status_code == 404
    mono.now += 21599
    assert get(http, sim, INSTANCE_ACTION_PATH, **{TOKEN: token}).status_code == 404
    mono.now += 1
    assert get(http, sim, INSTANCE_ACTION_PATH, **{TOKEN: token}).status_code == 401


def test_optional_mode_accepts_plain_gets_but_not_bad_tokens(
    sim: ImdsSimulator, http: requests.Session
) -> None:
    assert get(http, sim, INSTANCE_ACTION_PATH).status_code == 404
    assert get(http, sim, INSTANCE_ACTION_PATH, **{TOKEN: "forged"}).status_code == 401


def test_revoke_tokens(sim: ImdsSimulator, http: requests.Session) -> None:
    sim.require_token = True
    token = put_token(http, sim).text
    assert get(http, sim, IDENTITY_PATH, **{TOKEN: token}).status_code == 200
    sim.revoke_tokens()
    assert get(http, sim, IDENTITY_PATH, **{TOKEN: token}).status_code == 401
    fresh = put_token(http, sim).text
    assert get(http, sim, IDENTITY_PATH, **{TOKEN: fresh}).status_code == 200


def test_x_forwarded_for_is_refused(sim: ImdsSimulator, http: requests.Session) -> None:
    assert get(http, sim, IDENTITY_PATH, **{"X-Forwarded-For": "10.0.0.1"}).status_code == 403
    resp = http.put(
        sim.url + TOKEN_PATH, headers={TTL: "60", "X-Forwarded-For": "10.0.0.1"}, timeout=2
    )
    assert resp.status_code == 403


def test_wrong_methods(sim: ImdsSimulator, http: requests.Session) -> None:
    assert http.get(sim.url + TOKEN_PATH, timeout=2).status_code == 405
    assert http.put(sim.url + INSTANCE_ACTION_PATH, timeout=2).status_code == 405


# -- faults --------------------------------------------------------------------


@pytest.mark.parametrize("status", ["500", "503", "429"])
def test_status_faults_for_the_next_n_requests(
    sim: ImdsSimulator, http: requests.Session, status: str
) -> None:
    sim.inject(status, count=2)
    codes = [get(http, sim, IDENTITY_PATH).status_code for _ in range(3)]
    assert codes == [int(status), int(status), 200]
    assert [r.fault for r in sim.requests(IDENTITY_PATH)] == [status, status, ""]


def test_fault_only_for_its_path_and_until_cleared(
    sim: ImdsSimulator, http: requests.Session
) -> None:
    sim.inject("500", count=None, path=INSTANCE_ACTION_PATH)
    for _ in range(3):
        assert get(http, sim, INSTANCE_ACTION_PATH).status_code == 500
        assert get(http, sim, IDENTITY_PATH).status_code == 200
    sim.clear_faults()
    assert get(http, sim, INSTANCE_ACTION_PATH).status_code == 404


@pytest.mark.parametrize("fault", ["drop", "reset"])
def test_connection_faults_give_no_answer(
    sim: ImdsSimulator, http: requests.Session, fault: str
) -> None:
    sim.inject(fault)
    with pytest.raises(requests.ConnectionError):
        get(http, sim, INSTANCE_ACTION_PATH)
    assert sim.requests(INSTANCE_ACTION_PATH)[0].status == 0
    assert get(http, sim, INSTANCE_ACTION_PATH).status_code == 404  # only the next one


@pytest.mark.timeout(30)
def test_hang_outlasts_the_client_timeout_and_stop_releases_it() -> None:
    sim = ImdsSimulator(hang_seconds=60.0).start()
    try:
        sim.inject("hang")
        with pytest.raises(requests.ReadTimeout):
            requests.get(sim.url + INSTANCE_ACTION_PATH, timeout=(1, 0.5))
        # A second hanging request: stop() must not wait out the 60 s.
        sim.inject("hang")
        errors: list[BaseException] = []

        def hang() -> None:
            try:
                requests.get(sim.url + INSTANCE_ACTION_PATH, timeout=(1, 30))
            except requests.RequestException as err:
                errors.append(err)

        thread = threading.Thread(target=hang, daemon=True)
        thread.start()
        sim.wait_for_requests(INSTANCE_ACTION_PATH, 2, timeout=10)
    finally:
        started = time.monotonic()
        sim.stop()
    thread.join(timeout=10)
    assert time.monotonic() - started < 5
    assert not thread.is_alive()
    assert errors and isinstance(errors[0], requests.ConnectionError)


def test_body_faults_on_instance_action_by_default(
    sim: ImdsSimulator, http: requests.Session
) -> None:
    sim.inject("invalid-json")
    sim.inject("no-time")
    assert get(http, sim, IDENTITY_PATH).status_code == 200  # not its path
    first = get(http, sim, INSTANCE_ACTION_PATH)
    assert first.status_code == 200
    with pytest.raises(ValueError):
        json.loads(first.content)
    second = get(http, sim, INSTANCE_ACTION_PATH)
    assert second.status_code == 200
    assert "time" not in second.json()
    assert get(http, sim, INSTANCE_ACTION_PATH).status_code == 404


def test_redirect_fault(sim: ImdsSimulator, http: requests.Session) -> None:
    sim.inject("redirect")
    resp = get(http, sim, INSTANCE_ACTION_PATH)
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith(sim.url)


def test_oversize_fault(sim: ImdsSimulator, http: requests.Session) -> None:
    sim.oversize_bytes = 100_000
    sim.inject("oversize")
    resp = get(http, sim, INSTANCE_ACTION_PATH)
    assert (resp.status_code, len(resp.content)) == (200, 100_000)


@pytest.mark.parametrize("fault,status", [("token-404", 404), ("token-405", 405)])
def test_token_endpoint_faults_hit_only_the_put(
    sim: ImdsSimulator, http: requests.Session, fault: str, status: int
) -> None:
    sim.inject(fault, count=None)
    assert get(http, sim, IDENTITY_PATH).status_code == 200
    assert put_token(http, sim).status_code == status
    assert put_token(http, sim).status_code == status
    sim.clear_faults()
    assert put_token(http, sim).status_code == 200


def test_unknown_fault_and_bad_count_are_refused(sim: ImdsSimulator) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        sim.inject("explode")
    with pytest.raises(ValueError):
        sim.inject("500", count=0)
    assert "hang" in FAULTS


# -- log and waiting -------------------------------------------------------------


def test_request_log_records_method_path_headers_status_time(
    sim: ImdsSimulator, http: requests.Session, wall: FakeClock
) -> None:
    put_token(http, sim, "30")
    get(http, sim, INSTANCE_ACTION_PATH, **{"X-Probe": "yes"})
    put, poll = sim.requests()
    assert (put.method, put.path, put.status) == ("PUT", TOKEN_PATH, 200)
    assert put.headers[TTL.lower()] == "30"
    assert (poll.method, poll.path, poll.status, poll.fault) == (
        "GET",
        INSTANCE_ACTION_PATH,
        404,
        "",
    )
    assert poll.headers["x-probe"] == "yes"
    assert poll.wall_time == wall.now
    assert sim.count(TOKEN_PATH, "PUT") == 1
    assert sim.requests(method="PUT") == [put]


def test_wait_for_requests_returns_when_reached_and_times_out_otherwise(
    sim: ImdsSimulator, http: requests.Session
) -> None:
    timer = threading.Timer(0.2, lambda: [get(http, sim, INSTANCE_ACTION_PATH) for _ in range(2)])
    timer.start()
    try:
        seen = sim.wait_for_requests(INSTANCE_ACTION_PATH, 2, timeout=10)
    finally:
        timer.join()
    assert len(seen) == 2
    with pytest.raises(TimeoutError, match="saw 2 of 3"):
        sim.wait_for_requests(INSTANCE_ACTION_PATH, 3, timeout=0.2)


def test_lifecycle() -> None:
    sim = ImdsSimulator()
    with pytest.raises(RuntimeError):
        _ = sim.url
    with sim:
        url = sim.url
        assert url.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError):
            sim.start()
    sim.stop()  # twice is harmless
    with pytest.raises(requests.ConnectionError):
        requests.get(url + IDENTITY_PATH, timeout=2)


# -- standalone ----------------------------------------------------------------


@pytest.mark.timeout(60)
def test_standalone_serves_a_notice_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spotwatch.imdssim",
            "--port",
            "0",
            "--notice-in",
            "0",
            "--action",
            "stop",
            "--lead",
            "90",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        body = requests.get(url + INSTANCE_ACTION_PATH, timeout=5).json()
        assert body["action"] == "stop"
        assert body["time"] > format_time(time.time() + 60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_standalone_reports_a_busy_port() -> None:
    with ImdsSimulator() as sim:
        result = subprocess.run(
            [sys.executable, "-m", "spotwatch.imdssim", "--port", str(sim.port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert "cannot listen" in result.stderr
