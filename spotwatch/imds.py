"""The IMDS HTTP client: IMDSv2 tokens, fallback to IMDSv1, bounded retries.

One ``ImdsClient.get`` is one logical read of IMDS. It never outlasts its time
budget (so a poll never overruns the poll interval), retries only what is
worth retrying (connection faults, timeouts, 5xx, 429) with exponential backoff
and jitter, and raises ``ImdsError`` with a stable ``kind`` and advice for the
operator otherwise. A 404 is an answer, not an error: monitors read it as "no
notice". The client logs only mode changes (v2 <-> v1); reporting faults, once
each, is the caller's job.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import requests
import urllib3.exceptions
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    wait_exponential,
    wait_random,
)
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError

from spotwatch import __version__
from spotwatch.logs import get_logger
from spotwatch.notice import Identity

if TYPE_CHECKING:
    from spotwatch.stopper import StopFlag

DEFAULT_BASE_URL = "http://169.254.169.254"
TOKEN_PATH = "/latest/api/token"
IDENTITY_PATH = "/latest/dynamic/instance-identity/document"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TOKEN_TTL = 21600
# After falling back to IMDSv1, try for a token again this often.
V2_RETRY_SECONDS = 300.0
# A retry needs at least this much of the budget left to be worth starting.
MIN_ATTEMPT_SECONDS = 0.1
# Belt and braces: even a clock that never moves cannot make get() loop forever.
MAX_ATTEMPTS = 12
# A timeout this close to the end of the budget was the budget running out.
BUDGET_EDGE = 0.01

ADVICE_UNREACHABLE = (
    "check that this runs on EC2 and that IMDS is enabled "
    "(aws ec2 modify-instance-metadata-options --instance-id ID --http-endpoint enabled), "
    "and that no firewall or network namespace blocks 169.254.169.254; "
    "spotwatch keeps polling"
)
ADVICE_TIMEOUT = (
    "IMDS did not answer in time; in a container, answers can be dropped by the hop limit "
    "(aws ec2 modify-instance-metadata-options --instance-id ID "
    "--http-put-response-hop-limit 2); spotwatch keeps polling"
)
ADVICE_DROPPED = "the connection to IMDS was cut; usually transient, spotwatch keeps polling"
ADVICE_SERVER = "IMDS answered with a server error; usually transient, spotwatch keeps polling"
ADVICE_THROTTLED = (
    "IMDS is throttling this instance: other processes query it too often; "
    "have them cache their answers. spotwatch keeps polling"
)
ADVICE_UNAUTHORIZED = (
    "IMDS requires IMDSv2 tokens but none could be used: check that PUT /latest/api/token "
    "works from here (in a container, raise the hop limit: aws ec2 "
    "modify-instance-metadata-options --instance-id ID --http-put-response-hop-limit 2)"
)
ADVICE_REDIRECT = (
    "something between spotwatch and IMDS redirects requests; check --imds-url and any "
    "proxy or iptables rule in the way (redirects are never followed)"
)
ADVICE_TOO_LARGE = "the answer is far larger than any IMDS answer; check --imds-url"
ADVICE_BAD_STATUS = "unexpected answer from IMDS; check that --imds-url points at IMDS"
ADVICE_FORBIDDEN = (
    "IMDS refused the request; check that IMDS is enabled for this instance "
    "(aws ec2 modify-instance-metadata-options --instance-id ID --http-endpoint enabled)"
)
ADVICE_BAD_BODY = "IMDS sent a malformed answer; check --imds-url"
ADVICE_TOKEN_MISSING = (
    "IMDSv2 tokens are unavailable, so spotwatch uses IMDSv1 and tries tokens again every "
    f"{V2_RETRY_SECONDS:g} s; if the instance requires IMDSv2 in a container, raise the hop "
    "limit (aws ec2 modify-instance-metadata-options --instance-id ID "
    "--http-put-response-hop-limit 2)"
)

ERROR_KINDS = (
    "unreachable",
    "timeout",
    "dropped",
    "server-error",
    "throttled",
    "unauthorized",
    "redirect",
    "too-large",
    "bad-status",
    "bad-body",
)
# A token goes back in a header: printable ASCII without spaces, or it is unusable.
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]{1,4096}")
_RETRYABLE_KINDS = frozenset({"unreachable", "timeout", "dropped", "server-error", "throttled"})


@dataclass(frozen=True)
class ImdsResponse:
    """An answer from IMDS: 2xx with its body, or 404 (body may be empty)."""

    status: int
    body: bytes


class ImdsError(Exception):
    """IMDS could not give an answer. ``kind`` is a stable code (see ERROR_KINDS)."""

    def __init__(self, kind: str, detail: str, advice: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.advice = advice

    @property
    def retryable(self) -> bool:
        """True for faults that may go away on their own (worth another try)."""
        return self.kind in _RETRYABLE_KINDS

    def __str__(self) -> str:
        return f"IMDS {self.kind}: {self.detail}"


@dataclass(frozen=True)
class _Raw:
    status: int
    body: bytes
    location: str


class _Call:
    """State of one get(): its deadline and the last failure seen."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.last_error: ImdsError | None = None


class ImdsClient:
    """A small, defensive IMDS client. Thread-safe: calls are serialised.

    ``clock`` (monotonic seconds) drives token expiry and the time budget;
    ``stop``, when set, cuts short the backoff sleeps between retries.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        connect_timeout: float = 1.0,
        read_timeout: float = 1.0,
        budget: float = 4.0,
        token_ttl: int = MAX_TOKEN_TTL,
        max_body: int = 65536,
        clock: Callable[[], float] = time.monotonic,
        stop: StopFlag | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"IMDS URL must start with http:// or https://, not {base_url!r}")
        if not 1 <= token_ttl <= MAX_TOKEN_TTL:
            raise ValueError(f"token TTL must be 1..{MAX_TOKEN_TTL} seconds, not {token_ttl}")
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
            ("budget", budget),
            ("max_body", max_body),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
        self._base = base_url.rstrip("/")
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._budget = budget
        self._token_ttl = token_ttl
        self._max_body = max_body
        self._clock = clock
        self._stop = stop
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_renew_at = 0.0
        self._mode = "v2"
        self._v2_retry_at = 0.0
        self._log = get_logger(component="imds")
        session = requests.Session()
        session.trust_env = False  # never HTTP_PROXY & co., never .netrc
        # Replace the defaults wholesale: nothing we did not choose goes out
        # (identity encoding keeps the body cap honest: no decompression).
        session.headers.clear()
        session.headers.update(
            {
                "User-Agent": f"spotwatch/{__version__}",
                "Accept": "*/*",
                "Accept-Encoding": "identity",
            }
        )
        self._session = session

    @property
    def mode(self) -> str:
        """``"v2"`` (tokens) or ``"v1"`` (plain GETs after the token endpoint failed)."""
        return self._mode

    @property
    def budget(self) -> float:
        """Default time budget of one get(), in seconds."""
        return self._budget

    @property
    def base_url(self) -> str:
        return self._base

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> ImdsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: str, *, budget: float | None = None) -> ImdsResponse:
        """GET ``path``; a 2xx or 404 answer, or ImdsError within ``budget`` seconds."""
        if not path.startswith("/"):
            raise ValueError(f"IMDS path must start with '/', not {path!r}")
        limit = self._budget if budget is None else budget
        with self._lock:
            call = _Call(self._clock() + limit)
            retrying = Retrying(
                stop=self._out_of_time(call),
                wait=self._backoff(call),
                retry=retry_if_exception(_is_retryable),
                sleep=self._sleep,
                before_sleep=self._before_sleep(path),
                reraise=True,
            )
            return retrying(self._attempt, path, call)

    # -- one attempt ---------------------------------------------------------

    def _attempt(self, path: str, call: _Call) -> ImdsResponse:
        if call.last_error is not None and self._stopping():
            raise call.last_error  # shutdown cut the backoff short: give up now
        try:
            return self._attempt_once(path, call)
        except ImdsError as err:
            if (
                err.kind == "timeout"
                and call.last_error is not None
                and call.last_error.kind != "timeout"
                and self._clock() >= call.deadline - BUDGET_EDGE
            ):
                # This attempt only had the budget's last moments (its timeouts
                # are cut to fit): that it ran out says less than what IMDS
                # answered before, e.g. 500s, so that is what the caller hears.
                raise call.last_error from None
            call.last_error = err
            raise

    def _attempt_once(self, path: str, call: _Call) -> ImdsResponse:
        token, unanswered = self._token_for(call)
        raw = self._request("GET", path, call, token)
        if raw.status == 401:
            if unanswered:
                raise ImdsError(
                    "unauthorized",
                    f"GET {path} needs an IMDSv2 token and PUT {TOKEN_PATH} did not answer",
                    ADVICE_UNAUTHORIZED,
                )
            raw = self._retry_unauthorized(path, call, token)
        elif unanswered:
            # The PUT went unanswered but a plain GET works: hop limit or a
            # v1-only metadata endpoint. Use v1 for a while.
            self._fall_back(f"PUT {TOKEN_PATH} did not answer while GETs work")
        return self._answer(path, raw)

    def _retry_unauthorized(self, path: str, call: _Call, used: str | None) -> _Raw:
        """401: drop the token, get a fresh one (even in v1 mode), retry once."""
        self._token = None
        token, unanswered = self._token_for(call, force=True)
        if token is None:
            why = "did not answer" if unanswered else "gave no token"
            raise ImdsError(
                "unauthorized",
                f"GET {path} got 401 (IMDSv2 required) and PUT {TOKEN_PATH} {why}",
                ADVICE_UNAUTHORIZED,
            )
        raw = self._request("GET", path, call, token)
        if raw.status == 401:
            self._token = None
            had = "a fresh token" if used is not None else "a token"
            raise ImdsError(
                "unauthorized", f"GET {path} got 401 even with {had}", ADVICE_UNAUTHORIZED
            )
        return raw

    def _answer(self, path: str, raw: _Raw) -> ImdsResponse:
        status = raw.status
        if 200 <= status < 300 or status == 404:
            return ImdsResponse(status, raw.body)
        if 300 <= status < 400:
            where = f" to {raw.location}" if raw.location else ""
            raise ImdsError(
                "redirect", f"GET {path} was redirected ({status}){where}", ADVICE_REDIRECT
            )
        raise _status_error(f"GET {path}", status)

    # -- tokens ------------------------------------------------------------------

    def _token_for(self, call: _Call, *, force: bool = False) -> tuple[str | None, bool]:
        """(token or None for v1, whether the token endpoint failed to answer at all)."""
        now = self._clock()
        if self._token is not None and now < self._token_renew_at:
            return self._token, False
        if self._mode == "v1" and not force and now < self._v2_retry_at:
            return None, False
        self._token = None
        # In v1 mode this is the periodic try for v2: whatever goes wrong, stay v1.
        retrying_v2 = self._mode == "v1" and not force
        try:
            raw = self._request("PUT", TOKEN_PATH, call, None, {TTL_HEADER: str(self._token_ttl)})
        except ImdsError as err:
            if retrying_v2:
                self._v2_retry_at = now + V2_RETRY_SECONDS
                return None, False
            if err.kind not in ("timeout", "unreachable", "dropped"):
                raise
            return None, self._mode == "v2"
        token = raw.body.strip().decode("ascii", "replace") if raw.status == 200 else ""
        if _TOKEN_CHARS.fullmatch(token):
            self._token = token
            # Renew well before expiry so a token never dies between polls.
            self._token_renew_at = now + self._token_ttl - min(60.0, self._token_ttl / 4)
            if self._mode == "v1":
                self._mode = "v2"
                self._log.info("imds.mode_changed", mode="v2", reason="token endpoint works again")
            return token, False
        if retrying_v2:
            self._v2_retry_at = now + V2_RETRY_SECONDS
            return None, False
        if raw.status == 429 or raw.status >= 500:
            raise _status_error(f"PUT {TOKEN_PATH}", raw.status)
        if 300 <= raw.status < 400:
            raise ImdsError(
                "redirect", f"PUT {TOKEN_PATH} was redirected ({raw.status})", ADVICE_REDIRECT
            )
        detail = "an unusable token" if raw.status == 200 else str(raw.status)
        self._fall_back(f"PUT {TOKEN_PATH} answered {detail}")
        return None, False

    def _fall_back(self, reason: str) -> None:
        self._v2_retry_at = self._clock() + V2_RETRY_SECONDS
        if self._mode != "v1":
            self._mode = "v1"
            self._log.warning(
                "imds.mode_changed", mode="v1", reason=reason, advice=ADVICE_TOKEN_MISSING
            )

    # -- HTTP --------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        call: _Call,
        token: str | None,
        extra: dict[str, str] | None = None,
    ) -> _Raw:
        remaining = call.deadline - self._clock()
        timeout = (_clamp(self._connect_timeout, remaining), _clamp(self._read_timeout, remaining))
        headers = dict(extra or {})
        if token is not None:
            headers[TOKEN_HEADER] = token
        what = f"{method} {path}"
        try:
            resp = self._session.request(
                method,
                self._base + path,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
                stream=True,
            )
        except _TRANSPORT_ERRORS as err:
            raise _transport_error(what, err, timeout) from err
        try:
            status = resp.status_code
            body = b""
            if 200 <= status < 300:
                body = self._read_capped(what, resp, call, timeout)
            elif status == 404:
                try:
                    body = self._read_capped(what, resp, call, timeout)
                except ImdsError:
                    body = b""  # an odd 404 page is still "nothing there"
            return _Raw(status, body, resp.headers.get("Location", ""))
        finally:
            resp.close()

    def _read_capped(
        self, what: str, resp: requests.Response, call: _Call, timeout: tuple[float, float]
    ) -> bytes:
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self._max_body:
            raise ImdsError(
                "too-large",
                f"{what} announced {declared} bytes, more than the {self._max_body}-byte cap",
                ADVICE_TOO_LARGE,
            )
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in resp.iter_content(chunk_size=8192):
                size += len(chunk)
                if size > self._max_body:
                    raise ImdsError(
                        "too-large",
                        f"{what} sent more than the {self._max_body}-byte cap",
                        ADVICE_TOO_LARGE,
                    )
                chunks.append(chunk)
                if self._clock() > call.deadline:  # a slow drip must not beat the budget
                    raise ImdsError(
                        "timeout",
                        f"{what}: answer still arriving at the budget's end",
                        ADVICE_TIMEOUT,
                    )
        except _TRANSPORT_ERRORS as err:
            raise _transport_error(what, err, timeout) from err
        return b"".join(chunks)

    # -- retry plumbing ----------------------------------------------------------

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def _out_of_time(self, call: _Call) -> Callable[[RetryCallState], bool]:
        def stop(state: RetryCallState) -> bool:
            return (
                state.attempt_number >= MAX_ATTEMPTS
                or self._stopping()
                or call.deadline - self._clock() < MIN_ATTEMPT_SECONDS
            )

        return stop

    def _backoff(self, call: _Call) -> Callable[[RetryCallState], float]:
        base = wait_exponential(multiplier=0.1, max=1.0) + wait_random(0, 0.1)

        def wait(state: RetryCallState) -> float:
            # Leave at least half of what remains for the next attempt itself.
            remaining = call.deadline - self._clock()
            return max(0.0, min(float(base(state)), remaining / 2))

        return wait

    def _sleep(self, seconds: float) -> None:
        if self._stop is not None:
            self._stop.wait(seconds)
        else:
            time.sleep(seconds)

    def _before_sleep(self, path: str) -> Callable[[RetryCallState], None]:
        def note(state: RetryCallState) -> None:
            err = state.outcome.exception() if state.outcome is not None else None
            self._log.debug(
                "imds.retry",
                path=path,
                attempt=state.attempt_number,
                kind=getattr(err, "kind", type(err).__name__),
                detail=getattr(err, "detail", str(err)),
            )

        return note


# What a broken or hostile endpoint can make requests/urllib3 raise; never a crash.
_TRANSPORT_ERRORS = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
    ValueError,
)


def _is_retryable(err: BaseException) -> bool:
    return isinstance(err, ImdsError) and err.retryable


def _clamp(timeout: float, remaining: float) -> float:
    return max(0.05, min(timeout, remaining))


def _status_error(what: str, status: int) -> ImdsError:
    if status == 429:
        return ImdsError("throttled", f"{what} answered 429 Too Many Requests", ADVICE_THROTTLED)
    if status >= 500:
        return ImdsError("server-error", f"{what} answered {status}", ADVICE_SERVER)
    advice = ADVICE_FORBIDDEN if status == 403 else ADVICE_BAD_STATUS
    return ImdsError("bad-status", f"{what} answered {status}", advice)


def _caused_by(err: BaseException, types: tuple[type[BaseException], ...]) -> bool:
    """Whether ``err`` is or wraps (args, ``reason``, cause, context) one of ``types``."""
    seen: set[int] = set()
    todo: list[Any] = [err]
    while todo:
        cur = todo.pop()
        if not isinstance(cur, BaseException) or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, types):
            return True
        todo.extend(cur.args)
        todo.extend((getattr(cur, "reason", None), cur.__cause__, cur.__context__))
    return False


def _transport_error(what: str, err: BaseException, timeout: tuple[float, float]) -> ImdsError:
    """Map a requests/urllib3 failure to a stable kind."""
    # Connection failures first: urllib3 2 derives NewConnectionError from a timeout class.
    if isinstance(err, requests.exceptions.ConnectTimeout) or _caused_by(
        err, (NewConnectionError, ConnectTimeoutError)
    ):
        return ImdsError(
            "unreachable", f"{what}: cannot connect ({_root(err)})", ADVICE_UNREACHABLE
        )
    if isinstance(err, requests.exceptions.ReadTimeout) or _caused_by(
        err, (ReadTimeoutError, socket.timeout)
    ):
        return ImdsError("timeout", f"{what}: no answer within {timeout[1]:g} s", ADVICE_TIMEOUT)
    if isinstance(
        err,
        (
            requests.exceptions.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.ProtocolError,
            http.client.HTTPException,
            ConnectionError,
        ),
    ):
        return ImdsError("dropped", f"{what}: connection lost ({_root(err)})", ADVICE_DROPPED)
    return ImdsError("unreachable", f"{what}: {_root(err)}", ADVICE_UNREACHABLE)


def _root(err: BaseException) -> str:
    """The innermost useful message of a wrapped exception, one line."""
    cur: BaseException = err
    for _ in range(8):
        nxt = getattr(cur, "reason", None) or cur.__cause__ or cur.__context__
        if nxt is None and cur.args and isinstance(cur.args[-1], BaseException):
            nxt = cur.args[-1]
        if not isinstance(nxt, BaseException):
            break
        cur = nxt
    text = str(cur) or type(cur).__name__
    return " ".join(text.split())[:200]


# -- identity ------------------------------------------------------------------

_IDENTITY_FIELDS = (
    ("instanceId", "instance_id"),
    ("instanceType", "instance_type"),
    ("region", "region"),
    ("availabilityZone", "availability_zone"),
    ("accountId", "account_id"),
)


def parse_identity(body: bytes) -> Identity:
    """The identity document as an Identity; absent or odd fields read "unknown".

    Raises ValueError when the body is not a JSON object.
    """
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"identity document is not JSON: {err}") from err
    if not isinstance(doc, dict):
        raise ValueError("identity document is not a JSON object")
    fields: dict[str, str] = {}
    for key, attr in _IDENTITY_FIELDS:
        value = doc.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            fields[attr] = str(value).strip()
    return Identity(**fields)


def read_identity(client: ImdsClient) -> Identity:
    """GET the identity document; ImdsError if it cannot be had or parsed."""
    resp = client.get(IDENTITY_PATH)
    if resp.status != 200:
        raise ImdsError(
            "bad-status", f"GET {IDENTITY_PATH} answered {resp.status}", ADVICE_BAD_STATUS
        )
    try:
        return parse_identity(resp.body)
    except ValueError as err:
        raise ImdsError("bad-body", f"GET {IDENTITY_PATH}: {err}", ADVICE_BAD_BODY) from err
