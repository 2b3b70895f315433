"""Narrow unit tests of the IMDS client against a byte-level fake server on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping

import pytest
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
from tests import fault_servers as fs

PATH = "/latest/meta-data/spot/instance-action"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Mock:
    """Routes on a FaultServer, registered the way ``responses`` does: for one path,
    the first registered route that matches answers, and the last one keeps answering."""

    def __init__(self, server: fs.FaultServer) -> None:
        self.server = server
        self._routes: dict[tuple[str, str], list[fs.Route]] = {}

    def add(self, method: str, path: str, behaviour: fs.Behaviour,
            header: Mapping[str, str] | None = None) -> fs.Route:  # fmt: skip
        key = (method, path)
        found = fs.Route(method, path, behaviour, _header_match(header))
        self._routes.setdefault(key, []).append(found)
        if len(self._routes[key]) == 1:
            self.server.route(method, path, lambda c, r: self._dispatch(key, c, r))
        return found

    def reply(self, method: str, path: str, status: int = 200, body: bytes = b"",
              headers: Mapping[str, str] = {}, header: Mapping[str, str] | None = None
              ) -> fs.Route:  # fmt: skip
        return self.add(method, path, fs.reply(status, body, headers), header)

    def remove(self, route: fs.Route) -> None:
        for routes in self._routes.values():
            if route in routes:
                routes.remove(route)

    def _dispatch(self, key: tuple[str, str], conn: fs.Conn, req: fs.Request) -> None:
        routes = [r for r in self._routes.get(key, []) if r.match is None or r.match(req)]
        if not routes:
            fs.reply(404)(conn, req)
            return
        # Like responses: each registration answers once, in order; the last repeats.
        chosen = next((r for r in routes if r.call_count == 0), routes[-1])
        chosen.call_count += 1
        chosen.behaviour(conn, req)

    def calls(self, method: str, path: str) -> list[fs.Request]:
        return self.server.seen(path, method)


def _header_match(header: Mapping[str, str] | None) -> fs.Callable[[fs.Request], bool] | None:
    if header is None:
        return None
    return lambda req: all(req.headers.get(k) == v for k, v in header.items())


@pytest.fixture
def server() -> Iterator[fs.FaultServer]:
    with fs.FaultServer() as srv:
        yield srv


@pytest.fixture
def rsps(server: fs.FaultServer) -> Mock:
    return Mock(server)


def client(rsps: Mock, **kwargs: object) -> ImdsClient:
    kwargs.setdefault("budget", 2.0)
    return ImdsClient(rsps.server.url, **kwargs)  # type: ignore[arg-type]


def token_ok(rsps: Mock, token: str = "tok-1", ttl: int = 21600) -> None:
    rsps.reply("PUT", TOKEN_PATH, body=token.encode(), header={TTL_HEADER: str(ttl)})


# -- tokens --------------------------------------------------------------------


def test_token_is_fetched_once_and_sent_on_every_get(rsps: Mock) -> None:
    token_ok(rsps)
    rsps.reply("GET", PATH, status=404)
    with client(rsps) as imds:
        assert imds.get(PATH) == ImdsResponse(404, b"")
        assert imds.get(PATH).status == 404
        assert imds.mode == "v2"
    assert len(rsps.calls("PUT", TOKEN_PATH)) == 1
    gets = rsps.calls("GET", PATH)
    assert [g.headers[TOKEN_HEADER] for g in gets] == ["tok-1", "tok-1"]
    for req in gets + rsps.calls("PUT", TOKEN_PATH):
        assert "X-Forwarded-For" not in req.headers
        assert req.headers["Accept-Encoding"] == "identity"


def test_token_is_renewed_before_it_expires(rsps: Mock) -> None:
    clock = FakeClock()
    rsps.reply("PUT", TOKEN_PATH, body=b"tok-1")
    rsps.reply("PUT", TOKEN_PATH, body=b"tok-2")
    rsps.reply("GET", PATH, status=404)
    imds = client(rsps, clock=clock, token_ttl=600)
    imds.get(PATH)
    clock.now += 600 - 61  # not yet within a minute of expiry
    imds.get(PATH)
    clock.now += 2  # now it is
    imds.get(PATH)
    tokens = [g.headers[TOKEN_HEADER] for g in rsps.calls("GET", PATH)]
    assert tokens == ["tok-1", "tok-1", "tok-2"]
    assert rsps.calls("PUT", TOKEN_PATH)[0].headers[TTL_HEADER] == "600"


def test_401_drops_the_token_and_retries_once_with_a_new_one(
    rsps: Mock,
) -> None:
    rsps.reply("PUT", TOKEN_PATH, body=b"old")
    rsps.reply("PUT", TOKEN_PATH, body=b"new")
    rsps.reply("GET", PATH, status=401, header={TOKEN_HEADER: "old"})
    rsps.reply("GET", PATH, body=b'{"action":"stop"}', header={TOKEN_HEADER: "new"})
    imds = client(rsps)
    assert imds.get(PATH) == ImdsResponse(200, b'{"action":"stop"}')
    assert len(rsps.calls("PUT", TOKEN_PATH)) == 2
    assert len(rsps.calls("GET", PATH)) == 2


def test_401_with_a_fresh_token_too_is_unauthorized_and_not_retried_further(
    rsps: Mock,
) -> None:
    token_ok(rsps)
    rsps.reply("GET", PATH, status=401)
    with pytest.raises(ImdsError) as caught:
        client(rsps).get(PATH)
    assert caught.value.kind == "unauthorized"
    assert not caught.value.retryable
    assert len(rsps.calls("GET", PATH)) == 2


@pytest.mark.parametrize("status", [403, 404, 405])
def test_token_endpoint_refusal_falls_back_to_v1_logged_once(
    rsps: Mock, status: int
) -> None:
    rsps.reply("PUT", TOKEN_PATH, status=status)
    rsps.reply("GET", PATH, status=404)
    clock = FakeClock()
    with capture_logs() as logs:
        imds = client(rsps, clock=clock)
        for _ in range(3):
            assert imds.get(PATH).status == 404
    assert imds.mode == "v1"
    assert len(rsps.calls("PUT", TOKEN_PATH)) == 1  # not again before the retry period
    assert all(TOKEN_HEADER not in g.headers for g in rsps.calls("GET", PATH))
    changes = [e for e in logs if e["event"] == "imds.mode_changed"]
    assert len(changes) == 1
    assert changes[0]["mode"] == "v1"
    assert str(status) in changes[0]["reason"]
    assert changes[0]["log_level"] == "warning"


def test_v1_tries_tokens_again_later_and_returns_to_v2(rsps: Mock) -> None:
    clock = FakeClock()
    failing = rsps.reply("PUT", TOKEN_PATH, status=405)
    rsps.reply("GET", PATH, status=404)
    imds = client(rsps, clock=clock)
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
    assert rsps.calls("GET", PATH)[-1].headers[TOKEN_HEADER] == "back"
    assert [e["mode"] for e in logs if e["event"] == "imds.mode_changed"] == ["v2"]


@pytest.mark.slow  # waits out a budget or a timeout
def test_unanswered_token_put_while_gets_work_falls_back_to_v1(
    rsps: Mock,
) -> None:
    rsps.add("PUT", TOKEN_PATH, fs.silence())  # hop limit 1: the answer never arrives
    rsps.reply("GET", PATH, status=404)
    imds = client(rsps)
    assert imds.get(PATH).status == 404
    assert imds.mode == "v1"


def test_unanswered_token_put_with_failing_gets_keeps_v2_and_reports_the_get(
    rsps: Mock,
) -> None:
    rsps.add("PUT", TOKEN_PATH, fs.hang_up())
    rsps.add("GET", PATH, fs.hang_up())
    imds = client(rsps, budget=0.5)
    with pytest.raises(ImdsError) as caught:
        imds.get(PATH)
    assert caught.value.kind == "dropped"
    assert imds.mode == "v2"  # IMDS is down, not v1-only


def test_v1_mode_meeting_401_tries_a_token_at_once(rsps: Mock) -> None:
    refused = rsps.reply("PUT", TOKEN_PATH, status=404)
    plain = rsps.reply("GET", PATH, status=404)
    imds = client(rsps)
    imds.get(PATH)
    assert imds.mode == "v1"
    # Now the instance requires IMDSv2 and the token endpoint is back.
    rsps.remove(refused)
    rsps.remove(plain)
    token_ok(rsps, "now")
    rsps.reply("GET", PATH, status=404, header={TOKEN_HEADER: "now"})
    rsps.reply("GET", PATH, status=401)
    assert imds.get(PATH).status == 404
    assert imds.mode == "v2"


def test_v1_mode_meeting_401_without_a_token_endpoint_is_unauthorized(
    rsps: Mock,
) -> None:
    rsps.reply("PUT", TOKEN_PATH, status=405)
    rsps.reply("GET", PATH, status=401)
    with pytest.raises(ImdsError) as caught:
        client(rsps).get(PATH)
    assert caught.value.kind == "unauthorized"
    assert "hop-limit" in caught.value.advice
    assert len(rsps.calls("GET", PATH)) == 1


# -- retries -------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_statuses_are_retried(rsps: Mock, status: int) -> None:
    token_ok(rsps)
    rsps.reply("GET", PATH, status=status)
    rsps.reply("GET", PATH, status=status)
    rsps.reply("GET", PATH, body=b"ok")
    assert client(rsps).get(PATH) == ImdsResponse(200, b"ok")
    assert len(rsps.calls("GET", PATH)) == 3


@pytest.mark.slow  # waits out a budget or a timeout
@pytest.mark.parametrize(
    "status,kind", [(500, "server-error"), (503, "server-error"), (429, "throttled")]
)
def test_persistent_transient_status_ends_within_the_budget(
    rsps: Mock, status: int, kind: str
) -> None:
    token_ok(rsps)
    rsps.reply("GET", PATH, status=status)
    started = time.monotonic()
    with pytest.raises(ImdsError) as caught:
        client(rsps, budget=0.8).get(PATH)
    elapsed = time.monotonic() - started
    assert caught.value.kind == kind
    assert caught.value.retryable
    assert caught.value.advice
    assert elapsed < 0.8 + 0.5
    assert 2 <= len(rsps.calls("GET", PATH)) < 12


def test_a_per_call_budget_overrides_the_default(rsps: Mock) -> None:
    token_ok(rsps)
    rsps.reply("GET", PATH, status=503)
    started = time.monotonic()
    with pytest.raises(ImdsError):
        client(rsps, budget=30.0).get(PATH, budget=0.3)
    # Far below the client's 30 s default, with slack for a loaded machine.
    assert time.monotonic() - started < 0.3 + 5


def test_token_endpoint_5xx_while_plain_gets_work_is_v1_in_the_same_get(rsps: Mock) -> None:
    rsps.reply("PUT", TOKEN_PATH, status=503)
    rsps.reply("GET", PATH, status=404)
    imds = client(rsps)
    assert imds.get(PATH).status == 404
    assert imds.mode == "v1"
    assert len(rsps.calls("PUT", TOKEN_PATH)) == 1
    assert TOKEN_HEADER not in rsps.calls("GET", PATH)[0].headers


def test_token_endpoint_5xx_with_v2_required_is_retried(rsps: Mock) -> None:
    rsps.reply("PUT", TOKEN_PATH, status=503)
    token_ok(rsps)
    rsps.reply("GET", PATH, status=404, header={TOKEN_HEADER: "tok-1"})
    rsps.reply("GET", PATH, status=401)
    imds = client(rsps)
    assert imds.get(PATH).status == 404
    assert imds.mode == "v2"
    assert rsps.calls("GET", PATH)[-1].headers[TOKEN_HEADER] == "tok-1"


@pytest.mark.parametrize(
    "behaviour",
    [
        fs.reply(500),
        fs.redirect("http://127.0.0.1:9/elsewhere"),
        fs.huge(5 * 1024 * 1024),
        fs.huge(5 * 1024 * 1024, content_length=False),
        fs.reply(200, b"\x00garbage \xff"),
        # These two wait out a timeout (a second each): the quick loop leaves them out.
        pytest.param(fs.silence(), marks=pytest.mark.slow),
        pytest.param(fs.drip(b"AQAE" * 10, 0.3), marks=pytest.mark.slow),
    ],
    ids=["500", "redirect", "5MB", "5MB-unframed", "garbage", "hang", "drip"],
)
def test_any_token_failure_means_a_plain_get_in_the_same_call(
    rsps: Mock, behaviour: fs.Behaviour
) -> None:
    rsps.add("PUT", TOKEN_PATH, behaviour)
    rsps.reply("GET", PATH, 200, b'{"action": "terminate", "time": "2026-01-01T00:00:00Z"}')
    imds = client(rsps, budget=2.0)
    started = time.monotonic()
    with capture_logs() as logs:
        answer = imds.get(PATH)
        imds.get(PATH)
    assert answer.status == 200
    assert time.monotonic() - started < 2.0 + 0.5
    assert imds.mode == "v1"
    assert len(rsps.calls("PUT", TOKEN_PATH)) == 1  # not again before the retry period
    changes = [e for e in logs if e["event"] == "imds.mode_changed"]
    assert len(changes) == 1 and "PUT /latest/api/token" in changes[0]["reason"]


@pytest.mark.parametrize("status", [400, 403, 418])
def test_other_statuses_are_not_retried(rsps: Mock, status: int) -> None:
    token_ok(rsps)
    rsps.reply("GET", PATH, status=status)
    with pytest.raises(ImdsError) as caught:
        client(rsps).get(PATH)
    assert caught.value.kind == "bad-status"
    assert len(rsps.calls("GET", PATH)) == 1
    if status == 403:
        assert "--http-endpoint enabled" in caught.value.advice


def test_stop_cuts_the_backoff_short(rsps: Mock) -> None:
    token_ok(rsps)
    rsps.reply("GET", PATH, status=503)
    stop = threading.Event()
    imds = client(rsps, budget=30.0, stop=stop)
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


@pytest.mark.slow  # waits out a budget or a timeout
def test_a_clock_that_never_moves_still_ends(rsps: Mock) -> None:
    token_ok(rsps)
    rsps.reply("GET", PATH, status=500)
    with pytest.raises(ImdsError):
        client(rsps, clock=lambda: 5.0, budget=0.15).get(PATH)
    assert len(rsps.calls("GET", PATH)) == 12  # MAX_ATTEMPTS


# -- what is never done ----------------------------------------------------------


def test_redirects_are_errors_and_not_followed(rsps: Mock) -> None:
    token_ok(rsps)
    elsewhere = rsps.server.url + "/x"
    rsps.reply("GET", PATH, status=301, headers={"Location": elsewhere})
    target = rsps.reply("GET", "/x", body=b"followed")
    with pytest.raises(ImdsError) as caught:
        client(rsps).get(PATH)
    assert caught.value.kind == "redirect"
    assert elsewhere in caught.value.detail
    assert target.call_count == 0
    assert len(rsps.calls("GET", PATH)) == 1


def test_body_over_the_cap_is_an_error(rsps: Mock) -> None:
    token_ok(rsps)
    rsps.reply("GET", PATH, body=b"x" * 11)
    with pytest.raises(ImdsError) as caught:
        client(rsps, max_body=10).get(PATH)
    assert caught.value.kind == "too-large"
    assert not caught.value.retryable


def test_body_at_the_cap_is_fine(rsps: Mock) -> None:
    token_ok(rsps)
    rsps.reply("GET", PATH, body=b"x" * 10)
    assert client(rsps, max_body=10).get(PATH).body == b"x" * 10


def test_streamed_body_without_length_is_capped_too(rsps: Mock) -> None:
    token_ok(rsps)

    rsps.add("GET", PATH, fs.huge(100_000, content_length=False))
    with pytest.raises(ImdsError) as caught:
        client(rsps, max_body=4096).get(PATH)
    assert caught.value.kind == "too-large"


def test_no_proxy_settings_are_used(rsps: Mock, monkeypatch: pytest.MonkeyPatch) -> None:
    token_ok(rsps)
    rsps.reply("GET", PATH, status=404)
    with fs.FaultServer() as proxy:
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert client(rsps).get(PATH).status == 404
        assert proxy.seen() == []


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


def test_read_identity(rsps: Mock) -> None:
    token_ok(rsps)
    rsps.reply("GET", IDENTITY_PATH, body=b'{"instanceId": "i-9"}')
    assert read_identity(client(rsps)).instance_id == "i-9"


@pytest.mark.parametrize(
    "status,body,kind", [(404, b"", "bad-status"), (200, b"<html>", "bad-body")]
)
def test_read_identity_errors(
    rsps: Mock, status: int, body: bytes, kind: str
) -> None:
    token_ok(rsps)
    rsps.reply("GET", IDENTITY_PATH, status=status, body=body)
    with pytest.raises(ImdsError) as caught:
        read_identity(client(rsps))
    assert caught.value.kind == kind


@pytest.mark.parametrize("token", ["tok en", "tök", ""])
def test_an_unusable_token_means_v1_not_a_crash(rsps: Mock, token: str) -> None:
    rsps.reply("PUT", TOKEN_PATH, body=token.encode())
    rsps.reply("GET", PATH, status=404)
    imds = client(rsps)
    assert imds.get(PATH).status == 404
    assert imds.mode == "v1"
    assert TOKEN_HEADER not in rsps.calls("GET", PATH)[0].headers


def test_periodic_v2_try_that_fails_oddly_stays_v1_and_still_answers(
    rsps: Mock,
) -> None:
    clock = FakeClock()
    refused = rsps.reply("PUT", TOKEN_PATH, status=404)
    rsps.reply("GET", PATH, status=404)
    imds = client(rsps, clock=clock)
    imds.get(PATH)
    rsps.remove(refused)
    broken = rsps.reply("PUT", TOKEN_PATH, status=503)
    clock.now += V2_RETRY_SECONDS
    assert imds.get(PATH).status == 404  # no error: v1 still works
    assert imds.mode == "v1"
    assert broken.call_count == 1
    imds.get(PATH)
    assert broken.call_count == 1  # and not again until the next period


@pytest.mark.parametrize(
    "behaviour,kind",
    [
        (fs.hang_up(), "dropped"),
        (lambda c, r: (c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"), c.close()),
         "dropped"),
        (lambda c, r: c.reset(), "dropped"),
        (lambda c, r: (c.send(b"SPDY/9 what\r\n\r\n"), c.close()), "dropped"),
        (lambda c, r: c.send(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"), "dropped"),
        (fs.silence(), "timeout"),
    ],
    ids=["closed", "short-body", "reset", "not-http", "bad-length", "silence"],
)
def test_low_level_failures_become_imds_errors(
    rsps: Mock, behaviour: fs.Behaviour, kind: str
) -> None:
    token_ok(rsps)
    rsps.add("GET", PATH, behaviour)
    with pytest.raises(ImdsError) as caught:
        client(rsps, budget=0.3).get(PATH)
    assert caught.value.kind == kind
