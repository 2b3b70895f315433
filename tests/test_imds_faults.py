"""The IMDS client against the real simulator over HTTP, one injected fault at a time."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from spotwatch.imds import ImdsClient, ImdsError, read_identity
from spotwatch.imdssim import (
    IDENTITY_PATH,
    INSTANCE_ACTION_PATH,
    TOKEN_PATH,
    ImdsSimulator,
)
from tests.helpers import free_port

# The simulator over real HTTP, with hangs and budgets waited out: server tests.
pytestmark = pytest.mark.slow

TOKEN = "x-aws-ec2-metadata-token"
# Generous: the machine is shared with other test runs.
SLACK = 1.5


@pytest.fixture
def sim() -> Iterator[ImdsSimulator]:
    with ImdsSimulator(require_token=True, hang_seconds=5.0) as simulator:
        yield simulator


def make_client(sim: ImdsSimulator, **kwargs: object) -> ImdsClient:
    kwargs.setdefault("connect_timeout", 0.5)
    kwargs.setdefault("read_timeout", 0.5)
    kwargs.setdefault("budget", 2.0)
    return ImdsClient(sim.url, **kwargs)  # type: ignore[arg-type]


def gets(sim: ImdsSimulator, path: str = INSTANCE_ACTION_PATH) -> int:
    return sim.count(path, "GET")


def test_v2_only_works_and_every_get_carries_the_token(sim: ImdsSimulator) -> None:
    with make_client(sim) as imds:
        assert imds.get(INSTANCE_ACTION_PATH).status == 404
        sim.schedule_notice("stop", notice_time="2031-01-01T00:00:00Z")
        resp = imds.get(INSTANCE_ACTION_PATH)
        assert imds.mode == "v2"
    assert resp.status == 200
    assert b'"stop"' in resp.body
    assert sim.count(TOKEN_PATH, "PUT") == 1
    put = sim.requests(TOKEN_PATH, "PUT")[0]
    assert put.headers["x-aws-ec2-metadata-token-ttl-seconds"] == "21600"
    assert all(r.headers.get(TOKEN) for r in sim.requests(method="GET"))
    assert all("x-forwarded-for" not in r.headers for r in sim.requests())


@pytest.mark.parametrize("fault", ["500", "503", "429", "drop", "reset"])
def test_transient_faults_are_retried_until_success(sim: ImdsSimulator, fault: str) -> None:
    sim.inject(fault, count=2, path=INSTANCE_ACTION_PATH)
    assert make_client(sim).get(INSTANCE_ACTION_PATH).status == 404
    assert [r.fault for r in sim.requests(INSTANCE_ACTION_PATH)] == [fault, fault, ""]


@pytest.mark.parametrize(
    "fault,kind",
    [
        ("500", "server-error"),
        ("503", "server-error"),
        ("429", "throttled"),
        ("drop", "dropped"),
        ("reset", "dropped"),
    ],
)
def test_persistent_faults_end_within_the_budget_with_their_kind(
    sim: ImdsSimulator, fault: str, kind: str
) -> None:
    sim.inject(fault, count=None, path=INSTANCE_ACTION_PATH)
    started = time.monotonic()
    with pytest.raises(ImdsError) as caught:
        make_client(sim, budget=1.0).get(INSTANCE_ACTION_PATH)
    assert time.monotonic() - started < 1.0 + SLACK
    assert caught.value.kind == kind
    assert caught.value.advice
    assert gets(sim) >= 2


@pytest.mark.timeout(60)
def test_a_timeout_at_the_end_of_the_budget_does_not_hide_the_500s_before_it(
    sim: ImdsSimulator,
) -> None:
    """The last retry gets what is left of the budget; when that runs out mid-answer
    (here a hang; on a loaded machine, a slow answer), the caller still hears what
    IMDS said before: the 500s, not a timeout of our own making.

    What is asserted is the decision, not the pace: a budget of 3 s leaves room for
    both 500s and their backoff (~0.3 s) even on a loaded machine, so the hang is
    reached; were it not, the 500s are still what the caller must hear. The hang
    (30 s) and the read timeout (30 s) are far past the budget, so ending well
    before them shows the last attempt was cut to fit it."""
    budget = 3.0
    sim.hang_seconds = 30.0
    sim.inject("500", count=2, path=INSTANCE_ACTION_PATH)
    sim.inject("hang", count=None, path=INSTANCE_ACTION_PATH)
    started = time.monotonic()
    with pytest.raises(ImdsError) as caught:
        make_client(sim, read_timeout=30.0, budget=budget).get(INSTANCE_ACTION_PATH)
    assert time.monotonic() - started < budget + 5 * SLACK
    assert caught.value.kind == "server-error"
    assert "500" in caught.value.detail
    # What IMDS was asked, in order: normally all three; on a machine loaded past
    # the budget, fewer, but never anything else.
    faults = [r.fault for r in sim.requests(INSTANCE_ACTION_PATH)]
    assert faults[:1] == ["500"] and faults == ["500", "500", "hang"][: len(faults)], faults


@pytest.mark.timeout(30)
def test_one_hang_is_a_timeout_then_a_retry_succeeds(sim: ImdsSimulator) -> None:
    sim.inject("hang", count=1, path=INSTANCE_ACTION_PATH)
    started = time.monotonic()
    assert make_client(sim).get(INSTANCE_ACTION_PATH).status == 404
    assert time.monotonic() - started < 2.0 + SLACK
    assert [r.fault for r in sim.requests(INSTANCE_ACTION_PATH)] == ["hang", ""]


@pytest.mark.timeout(30)
def test_a_persistent_hang_is_a_timeout_within_the_budget(sim: ImdsSimulator) -> None:
    sim.inject("hang", count=None)  # the token endpoint hangs too
    started = time.monotonic()
    with pytest.raises(ImdsError) as caught:
        make_client(sim, budget=1.5).get(INSTANCE_ACTION_PATH)
    assert time.monotonic() - started < 1.5 + SLACK
    assert caught.value.kind == "timeout"
    assert "hop-limit" in caught.value.advice


def test_unreachable_imds() -> None:
    imds = ImdsClient(f"http://127.0.0.1:{free_port()}", budget=0.5)
    started = time.monotonic()
    with pytest.raises(ImdsError) as caught:
        imds.get(INSTANCE_ACTION_PATH)
    assert time.monotonic() - started < 0.5 + SLACK
    assert caught.value.kind == "unreachable"
    assert "--http-endpoint enabled" in caught.value.advice


@pytest.mark.parametrize("fault", ["invalid-json", "no-time"])
def test_malformed_notice_bodies_are_returned_as_they_are(sim: ImdsSimulator, fault: str) -> None:
    sim.inject(fault)
    resp = make_client(sim).get(INSTANCE_ACTION_PATH)
    assert resp.status == 200
    assert resp.body in (b'{"action": "terminate", "time": ', b'{"action": "stop"}')


def test_revoked_tokens_get_401_then_a_new_token_then_success(sim: ImdsSimulator) -> None:
    imds = make_client(sim)
    imds.get(INSTANCE_ACTION_PATH)
    sim.revoke_tokens()
    assert imds.get(INSTANCE_ACTION_PATH).status == 404
    assert [r.status for r in sim.requests(INSTANCE_ACTION_PATH)] == [404, 401, 404]
    assert sim.count(TOKEN_PATH, "PUT") == 2
    first, second, third = (r.headers[TOKEN] for r in sim.requests(INSTANCE_ACTION_PATH))
    assert first == second != third


def test_an_expired_token_is_renewed_before_use() -> None:
    clock = [0.0]
    with ImdsSimulator(require_token=True, clock=lambda: clock[0]) as sim:
        imds = ImdsClient(sim.url, token_ttl=120, clock=lambda: clock[0])
        imds.get(INSTANCE_ACTION_PATH)
        clock[0] += 119  # the client renews within the last quarter of the TTL
        assert imds.get(INSTANCE_ACTION_PATH).status == 404
        assert [r.status for r in sim.requests(INSTANCE_ACTION_PATH)] == [404, 404]
        assert sim.count(TOKEN_PATH, "PUT") == 2


@pytest.mark.parametrize("fault", ["token-404", "token-405"])
def test_missing_token_endpoint_falls_back_to_v1(sim: ImdsSimulator, fault: str) -> None:
    sim.require_token = False
    sim.inject(fault, count=None)
    imds = make_client(sim)
    assert imds.get(INSTANCE_ACTION_PATH).status == 404
    assert imds.mode == "v1"
    sim.schedule_notice("terminate")
    assert imds.get(INSTANCE_ACTION_PATH).status == 200
    assert read_identity(imds).instance_id == "i-0123456789abcdef0"
    assert sim.count(TOKEN_PATH, "PUT") == 1
    assert all(TOKEN not in r.headers for r in sim.requests(method="GET"))


def test_v2_required_and_no_token_endpoint_is_a_clear_error(sim: ImdsSimulator) -> None:
    sim.inject("token-404", count=None)
    with pytest.raises(ImdsError) as caught:
        make_client(sim).get(INSTANCE_ACTION_PATH)
    err = caught.value
    assert err.kind == "unauthorized"
    assert "401" in err.detail
    assert TOKEN_PATH in err.detail
    assert "hop-limit" in err.advice


def test_redirect_is_an_error_and_not_followed(sim: ImdsSimulator) -> None:
    sim.inject("redirect", path=INSTANCE_ACTION_PATH)
    with pytest.raises(ImdsError) as caught:
        make_client(sim).get(INSTANCE_ACTION_PATH)
    assert caught.value.kind == "redirect"
    assert sim.requests("/latest/redirected") == []
    assert gets(sim) == 1


def test_oversize_body_is_an_error(sim: ImdsSimulator) -> None:
    sim.inject("oversize", path=INSTANCE_ACTION_PATH)
    with pytest.raises(ImdsError) as caught:
        make_client(sim).get(INSTANCE_ACTION_PATH)
    assert caught.value.kind == "too-large"
    assert gets(sim) == 1


def test_proxy_variables_are_never_used(
    sim: ImdsSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    # Control: an ordinary session would go through the dead proxy and fail.
    with pytest.raises(requests.exceptions.ProxyError):
        requests.get(sim.url + IDENTITY_PATH, timeout=2)
    assert make_client(sim).get(IDENTITY_PATH).status == 200


def test_polls_reuse_one_connection(sim: ImdsSimulator) -> None:
    imds = make_client(sim)
    for _ in range(20):
        imds.get(INSTANCE_ACTION_PATH)
    with sim._cond:  # the simulator's open connections
        open_connections = len(sim._conns)
    assert open_connections == 1
