"""Narrow unit tests of the IMDS client with ``responses`` (no network)."""

from __future__ import annotations

import http.client
import io
import threading
import time
from collections.abc import Iterator

import pytest
import requests
import responses
import urllib3.exceptions
from responses import matchers
from structlog.testing import capture_logs

from spotwatch.imds import (
    IDENTITY_PATH,
    TOKEN_HEADER,
    TOKEN_PATH,
    TTL_HEADER,
    V2_RETRY_SECONDS,
    ImdsClient,
    ImdsError,
    ImdsResponse,
    parse_identity,
    read_identity,
)
from spotwatch.notice import Identity

BASE = "http://imds.test"
PATH = "/latest/meta-data/spot/instance-action"
URL = BASE + PATH
TOKEN_URL = BASE + TOKEN_PATH


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def client(**kwargs: object) -> ImdsClient:
    kwargs.setdefault("budget", 2.0)
    return ImdsClient(BASE, **kwargs)  # type: ignore[arg-type]


def token_ok(rsps: responses.RequestsMock, token: str = "tok-1", ttl: int = 21600) -> None:
    rsps.put(TOKEN_URL, body=token, match=[matchers.header_matcher({TTL_HEADER: str(ttl)})])


def calls(rsps: responses.RequestsMock, method: str, url: str) -> list[requests.PreparedRequest]:
    return [c.request for c in rsps.calls if c.request.method == method and c.request.url == url]


# -- tokens --------------------------------------------------------------------


def test_token_is_fetched_once_and_sent_on_every_get(rsps: responses.RequestsMock) -> None:
    token_ok(rsps)
    rsps.get(URL, status=404)
    with client() as imds:
        assert imds.get(PATH) == ImdsResponse(404, b"")
        assert imds.get(PATH).status == 404
        assert imds.mode == "v2"
    assert len(calls(rsps, "PUT", TOKEN_URL)) == 1
    gets = calls(rsps, "GET", URL)
    assert [g.headers[TOKEN_HEADER] for g in gets] == ["tok-1", "tok-1"]
    for req in gets + calls(rsps, "PUT", TOKEN_URL):
        assert "X-Forwarded-For" not in req.headers
        assert req.headers["Accept-Encoding"] == "identity"


def test_token_is_renewed_before_it_expires(rsps: responses.RequestsMock) -> None:
    clock = FakeClock()
    rsps.put(TOKEN_URL, body="tok-1")
    rsps.put(TOKEN_URL, body="tok-2")
    rsps.get(URL, status=404)
    imds = client(clock=clock, token_ttl=600)
    imds.get(PATH)
    clock.now += 600 - 61  # not yet within a minute of expiry
    imds.get(PATH)
    clock.now += 2  # now it is
    imds.get(PATH)
    tokens = [g.headers[TOKEN_HEADER] for g in calls(rsps, "GET", URL)]
    assert tokens == ["tok-1", "tok-1", "tok-2"]
    assert calls(rsps, "PUT", TOKEN_URL)[0].headers[TTL_HEADER] == "600"


def test_401_drops_the_token_and_retries_once_with_a_new_one(
    rsps: responses.RequestsMock,
) -> None:
    rsps.put(TOKEN_URL, body="old")
    rsps.put(TOKEN_URL, body="new")
    rsps.get(URL, status=401, match=[matchers.header_matcher({TOKEN_HEADER: "old"})])
    rsps.get(URL, body=b'{"action":"stop"}', match=[matchers.header_matcher({TOKEN_HEADER: "new"})])
    imds = client()
    assert imds.get(PATH) == ImdsResponse(200, b'{"action":"stop"}')
    assert len(calls(rsps, "PUT", TOKEN_URL)) == 2
    assert len(calls(rsps, "GET", URL)) == 2


def test_401_with_a_fresh_token_too_is_unauthorized_and_not_retried_further(
    rsps: responses.RequestsMock,
) -> None:
    token_ok(rsps)
    rsps.get(URL, status=401)
    with pytest.raises(ImdsError) as caught:
        client().get(PATH)
    assert caught.value.kind == "unauthorized"
    assert not caught.value.retryable
    assert len(calls(rsps, "GET", URL)) == 2


@pytest.mark.parametrize("status", [403, 404, 405])
def test_token_endpoint_refusal_falls_back_to_v1_logged_once(
    rsps: responses.RequestsMock, status: int
) -> None:
    rsps.put(TOKEN_URL, status=status)
    rsps.get(URL, status=404)
    clock = FakeClock()
    with capture_logs() as logs:
        imds = client(clock=clock)
        for _ in range(3):
            assert imds.get(PATH).status == 404
    assert imds.mode == "v1"
    assert len(calls(rsps, "PUT", TOKEN_URL)) == 1  # not again before the retry period
    assert all(TOKEN_HEADER not in g.headers for g in calls(rsps, "GET", URL))
    changes = [e for e in logs if e["event"] == "imds.mode_changed"]
    assert len(changes) == 1
    assert changes[0]["mode"] == "v1"
    assert str(status) in changes[0]["reason"]
    assert changes[0]["log_level"] == "warning"


def test_v1_tries_tokens_again_later_and_returns_to_v2(rsps: responses.RequestsMock) -> None:
    clock = FakeClock()
    failing = rsps.put(TOKEN_URL, status=405)
    rsps.get(URL, status=404)
    imds = client(clock=clock)
    imds.get(PATH)
    clock.now += V2_RETRY_SECONDS - 1
    imds.get(PATH)
    assert failing.call_count == 1
    clock.now += 1
    imds.get(PATH)
    assert failing.call_count == 2  # tried again, still failing: still v1
    assert imds.mode == "v1"
    rsps.remove(failing)
    token_ok(rsps, "back")
    clock.now += V2_RETRY_SECONDS
    with capture_logs() as logs:
        imds.get(PATH)
    assert imds.mode == "v2"
    assert calls(rsps, "GET", URL)[-1].headers[TOKEN_HEADER] == "back"
    assert [e["mode"] for e in logs if e["event"] == "imds.mode_changed"] == ["v2"]


def test_unanswered_token_put_while_gets_work_falls_back_to_v1(
    rsps: responses.RequestsMock,
) -> None:
    rsps.put(TOKEN_URL, body=requests.exceptions.ReadTimeout("hop limit"))
    rsps.get(URL, status=404)
    imds = client()
    assert imds.get(PATH).status == 404
    assert imds.mode == "v1"


def test_unanswered_token_put_with_failing_gets_keeps_v2_and_reports_the_get(
    rsps: responses.RequestsMock,
) -> None:
    rsps.put(TOKEN_URL, body=requests.exceptions.ConnectionError("refused"))
    rsps.get(URL, body=requests.exceptions.ConnectionError("refused"))
    imds = client(budget=0.5)
    with pytest.raises(ImdsError) as caught:
        imds.get(PATH)
    assert caught.value.kind == "dropped"
    assert imds.mode == "v2"  # IMDS is down, not v1-only


def test_v1_mode_meeting_401_tries_a_token_at_once(rsps: responses.RequestsMock) -> None:
    refused = rsps.put(TOKEN_URL, status=404)
    plain = rsps.get(URL, status=404)
    imds = client()
    imds.get(PATH)
    assert imds.mode == "v1"
    # Now the instance requires IMDSv2 and the token endpoint is back.
    rsps.remove(refused)
    rsps.remove(plain)
    token_ok(rsps, "now")
    rsps.get(URL, status=404, match=[matchers.header_matcher({TOKEN_HEADER: "now"})])
    rsps.get(URL, status=401)
    assert imds.get(PATH).status == 404
    assert imds.mode == "v2"


def test_v1_mode_meeting_401_without_a_token_endpoint_is_unauthorized(
    rsps: responses.RequestsMock,
) -> None:
    rsps.put(TOKEN_URL, status=405)
    rsps.get(URL, status=401)
    with pytest.raises(ImdsError) as caught:
        client().get(PATH)
    assert caught.value.kind == "unauthorized"
    assert "hop-limit" in caught.value.advice
    assert len(calls(rsps, "GET", URL)) == 1


# -- retries -------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_statuses_are_retried(rsps: responses.RequestsMock, status: int) -> None:
    token_ok(rsps)
    rsps.get(URL, status=status)
    rsps.get(URL, status=status)
    rsps.get(URL, body=b"ok")
    assert client().get(PATH) == ImdsResponse(200, b"ok")
    assert len(calls(rsps, "GET", URL)) == 3


@pytest.mark.parametrize(
    "status,kind", [(500, "server-error"), (503, "server-error"), (429, "throttled")]
)
def test_persistent_transient_status_ends_within_the_budget(
    rsps: responses.RequestsMock, status: int, kind: str
) -> None:
    token_ok(rsps)
    rsps.get(URL, status=status)
    started = time.monotonic()
    with pytest.raises(ImdsError) as caught:
        client(budget=0.8).get(PATH)
    elapsed = time.monotonic() - started
    assert caught.value.kind == kind
    assert caught.value.retryable
    assert caught.value.advice
    assert elapsed < 0.8 + 0.5
    assert 2 <= len(calls(rsps, "GET", URL)) < 12


def test_a_per_call_budget_overrides_the_default(rsps: responses.RequestsMock) -> None:
    token_ok(rsps)
    rsps.get(URL, status=503)
    started = time.monotonic()
    with pytest.raises(ImdsError):
        client(budget=30.0).get(PATH, budget=0.3)
    assert time.monotonic() - started < 0.3 + 0.5


def test_token_endpoint_5xx_is_retried_not_a_fallback(rsps: responses.RequestsMock) -> None:
    rsps.put(TOKEN_URL, status=503)
    token_ok(rsps)
    rsps.get(URL, status=404)
    imds = client()
    assert imds.get(PATH).status == 404
    assert imds.mode == "v2"
    assert calls(rsps, "GET", URL)[0].headers[TOKEN_HEADER] == "tok-1"


@pytest.mark.parametrize("status", [400, 403, 418])
def test_other_statuses_are_not_retried(rsps: responses.RequestsMock, status: int) -> None:
    token_ok(rsps)
    rsps.get(URL, status=status)
    with pytest.raises(ImdsError) as caught:
        client().get(PATH)
    assert caught.value.kind == "bad-status"
    assert len(calls(rsps, "GET", URL)) == 1
    if status == 403:
        assert "--http-endpoint enabled" in caught.value.advice


def test_stop_cuts_the_backoff_short(rsps: responses.RequestsMock) -> None:
    token_ok(rsps)
    rsps.get(URL, status=503)
    stop = threading.Event()
    imds = client(budget=30.0, stop=stop)
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(ImdsError) as caught:
            imds.get(PATH)
    finally:
        timer.cancel()
    assert caught.value.kind == "server-error"
    assert time.monotonic() - started < 3.0


def test_a_clock_that_never_moves_still_ends(rsps: responses.RequestsMock) -> None:
    token_ok(rsps)
    rsps.get(URL, status=500)
    with pytest.raises(ImdsError):
        client(clock=lambda: 5.0, budget=0.15).get(PATH)
    assert len(calls(rsps, "GET", URL)) == 12  # MAX_ATTEMPTS


# -- what is never done ----------------------------------------------------------


def test_redirects_are_errors_and_not_followed(rsps: responses.RequestsMock) -> None:
    token_ok(rsps)
    rsps.get(URL, status=301, headers={"Location": "http://elsewhere.test/x"})
    target = rsps.get("http://elsewhere.test/x", body=b"followed")
    with pytest.raises(ImdsError) as caught:
        client().get(PATH)
    assert caught.value.kind == "redirect"
    assert "elsewhere.test" in caught.value.detail
    assert target.call_count == 0
    assert len(calls(rsps, "GET", URL)) == 1


def test_body_over_the_cap_is_an_error(rsps: responses.RequestsMock) -> None:
    token_ok(rsps)
    rsps.get(URL, body=b"x" * 11)
    with pytest.raises(ImdsError) as caught:
        client(max_body=10).get(PATH)
    assert caught.value.kind == "too-large"
    assert not caught.value.retryable


def test_body_at_the_cap_is_fine(rsps: responses.RequestsMock) -> None:
    token_ok(rsps)
    rsps.get(URL, body=b"x" * 10)
    assert client(max_body=10).get(PATH).body == b"x" * 10


def test_streamed_body_without_length_is_capped_too(rsps: responses.RequestsMock) -> None:
    token_ok(rsps)

    body = io.BufferedReader(io.BytesIO(b"y" * 100_000))  # type: ignore[arg-type]
    rsps.get(URL, body=body, auto_calculate_content_length=False)
    with pytest.raises(ImdsError) as caught:
        client(max_body=4096).get(PATH)
    assert caught.value.kind == "too-large"


def test_no_proxy_settings_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    imds = client()
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("http_proxy", "http://proxy.test:3128")
    session = imds._session  # the one object whose settings matter here
    assert session.trust_env is False
    assert session.merge_environment_settings(URL, {}, True, None, None)["proxies"] == {}


def test_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="http"):
        ImdsClient("169.254.169.254")
    with pytest.raises(ValueError, match="TTL"):
        ImdsClient(token_ttl=0)
    with pytest.raises(ValueError, match="TTL"):
        ImdsClient(token_ttl=21601)
    with pytest.raises(ValueError, match="budget"):
        ImdsClient(budget=0)
    with pytest.raises(ValueError, match="path"):
        ImdsClient().get("latest/meta-data")


def test_error_text_names_kind_and_detail() -> None:
    err = ImdsError("timeout", "GET /x: no answer within 1 s", "wait")
    assert str(err) == "IMDS timeout: GET /x: no answer within 1 s"
    assert err.retryable


# -- identity ------------------------------------------------------------------


def test_parse_identity_reads_the_fields_and_tolerates_gaps() -> None:
    doc = (
        b'{"instanceId": "i-1", "instanceType": "c5.xlarge", "region": "eu-west-1",'
        b' "availabilityZone": "eu-west-1b", "accountId": "111122223333", "imageId": "ami-1"}'
    )
    assert parse_identity(doc) == Identity(
        "i-1", "c5.xlarge", "eu-west-1", "eu-west-1b", "111122223333"
    )
    assert parse_identity(b'{"instanceId": "i-2", "region": 5, "accountId": ""}') == Identity(
        instance_id="i-2", region="5"
    )
    for bad in (b"nope", b"[1]", b"\xff"):
        with pytest.raises(ValueError):
            parse_identity(bad)


def test_read_identity(rsps: responses.RequestsMock) -> None:
    token_ok(rsps)
    rsps.get(BASE + IDENTITY_PATH, body=b'{"instanceId": "i-9"}')
    assert read_identity(client()).instance_id == "i-9"


@pytest.mark.parametrize(
    "status,body,kind", [(404, b"", "bad-status"), (200, b"<html>", "bad-body")]
)
def test_read_identity_errors(
    rsps: responses.RequestsMock, status: int, body: bytes, kind: str
) -> None:
    token_ok(rsps)
    rsps.get(BASE + IDENTITY_PATH, status=status, body=body)
    with pytest.raises(ImdsError) as caught:
        read_identity(client())
    assert caught.value.kind == kind


@pytest.mark.parametrize("token", ["tok en", "tök", ""])
def test_an_unusable_token_means_v1_not_a_crash(rsps: responses.RequestsMock, token: str) -> None:
    rsps.put(TOKEN_URL, body=token.encode())
    rsps.get(URL, status=404)
    imds = client()
    assert imds.get(PATH).status == 404
    assert imds.mode == "v1"
    assert TOKEN_HEADER not in calls(rsps, "GET", URL)[0].headers


def test_periodic_v2_try_that_fails_oddly_stays_v1_and_still_answers(
    rsps: responses.RequestsMock,
) -> None:
    clock = FakeClock()
    refused = rsps.put(TOKEN_URL, status=404)
    rsps.get(URL, status=404)
    imds = client(clock=clock)
    imds.get(PATH)
    rsps.remove(refused)
    broken = rsps.put(TOKEN_URL, status=503)
    clock.now += V2_RETRY_SECONDS
    assert imds.get(PATH).status == 404  # no error: v1 still works
    assert imds.mode == "v1"
    assert broken.call_count == 1
    imds.get(PATH)
    assert broken.call_count == 1  # and not again until the next period


@pytest.mark.parametrize(
    "exc,kind",
    [
        (urllib3.exceptions.ProtocolError("boom"), "dropped"),
        (http.client.IncompleteRead(b"x"), "dropped"),
        (ConnectionResetError(104, "reset"), "dropped"),
        (ValueError("odd header"), "unreachable"),
    ],
)
def test_low_level_failures_become_imds_errors(
    rsps: responses.RequestsMock, exc: Exception, kind: str
) -> None:
    token_ok(rsps)
    rsps.get(URL, body=exc)
    with pytest.raises(ImdsError) as caught:
        client(budget=0.3).get(PATH)
    assert caught.value.kind == kind
