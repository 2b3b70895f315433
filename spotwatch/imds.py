"""The IMDS HTTP client: IMDSv2 tokens, fallback to IMDSv1, bounded retries.

One ``ImdsClient.get`` is one logical read of IMDS. It never outlasts its time
budget (so a poll never overruns the poll interval), retries only what is
worth retrying (connection faults, timeouts, 5xx, 429) with exponential backoff
and jitter, and raises ``ImdsError`` with a stable ``kind`` and advice for the
operator otherwise. A 404 is an answer, not an error: monitors read it as "no
notice". The client logs only mode changes (v2 <-> v1); reporting faults, once
each, is the caller's job.

The transport is ``clouds.metadata_http``: one deadline per request for connect, headers
and body together, whatever the server sends. ``poll_window`` makes every get()
of one poll share the poll's budget, fallbacks included.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    wait_exponential,
    wait_random,
)

from spotwatch.clouds import metadata_http
from spotwatch.clouds.metadata_http import (
    ADVICE_BAD_BODY,
    ADVICE_BAD_STATUS,
    ADVICE_DROPPED,
    ADVICE_FORBIDDEN,
    ADVICE_REDIRECT,
    ADVICE_SERVER,
    ADVICE_THROTTLED,
    ADVICE_TIMEOUT,
    ADVICE_TOKEN_MISSING,
    ADVICE_TOO_LARGE,
    ADVICE_UNAUTHORIZED,
    ADVICE_UNREACHABLE,
    ERROR_KINDS,
    V2_RETRY_SECONDS,
    ImdsError,
    advice_unreachable,
)
from spotwatch.logs import get_logger
from spotwatch.notice import Identity

if TYPE_CHECKING:
    from spotwatch.stopper import StopFlag

__all__ = [
    "ADVICE_BAD_BODY",
    "ADVICE_BAD_STATUS",
    "ADVICE_DROPPED",
    "ADVICE_FORBIDDEN",
    "ADVICE_REDIRECT",
    "ADVICE_SERVER",
    "ADVICE_THROTTLED",
    "ADVICE_TIMEOUT",
    "ADVICE_TOKEN_MISSING",
    "ADVICE_TOO_LARGE",
    "ADVICE_UNAUTHORIZED",
    "ADVICE_UNREACHABLE",
    "ERROR_KINDS",
    "V2_RETRY_SECONDS",
    "ImdsClient",
    "ImdsError",
    "ImdsResponse",
    "parse_identity",
    "read_identity",
]

DEFAULT_BASE_URL = "http://169.254.169.254"
TOKEN_PATH = "/latest/api/token"
IDENTITY_PATH = "/latest/dynamic/instance-identity/document"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TOKEN_TTL = 21600
# A retry needs at least this much of the budget left to be worth starting.
MIN_ATTEMPT_SECONDS = 0.1
# Belt and braces: even a clock that never moves cannot make get() loop forever.
MAX_ATTEMPTS = 12
# A timeout this close to the end of the budget was the budget running out.
BUDGET_EDGE = 0.01
# The token PUT gets at most this share of what is left, so that the GET
# without a token still fits in the same poll when the token service hangs.
TOKEN_SHARE = 0.5
TOKEN_MAX_BODY = 8192

# A token goes back in a header: printable ASCII without spaces, or it is unusable.
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]{1,4096}")


@dataclass(frozen=True)
class ImdsResponse:
    """An answer from IMDS: 2xx with its body, or 404 (body may be empty)."""

    status: int
    body: bytes


@dataclass(frozen=True)
class _Raw:
    status: int
    body: bytes
    location: str
    too_large: bool = False


class _Call:
    """State of one get(): its deadline and the last failure seen."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.last_error: ImdsError | None = None


class ImdsClient:
    """A small, defensive IMDS client. Thread-safe: calls are serialised.

    ``clock`` (monotonic seconds) drives token expiry and the time budget;
    ``stop``, when set, cuts short the backoff sleeps between retries and any
    wait on a stuck server (within ``metadata_http.STOP_SLICE``).
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
        self._lock = threading.RLock()
        self._token: str | None = None
        self._token_renew_at = 0.0
        self._mode = "v2"
        self._v2_retry_at = 0.0
        self._window_end: float | None = None
        self._log = get_logger(component="imds")
        self._session = metadata_http.Session(stop=stop, clock=clock)
        self._advice_unreachable = advice_unreachable(self._base)

    @property
    def mode(self) -> str:
        """``"v2"`` (tokens) or ``"v1"`` (plain GETs after the token endpoint failed)."""
        return self._mode

    @property
    def budget(self) -> float:
        """Default time budget of one get(), and of one poll_window(), in seconds."""
        return self._budget

    @property
    def base_url(self) -> str:
        return self._base

    def close(self) -> None:
        with self._lock:
            self._session.close()

    def __enter__(self) -> ImdsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def poll_window(self, seconds: float | None = None) -> Iterator[None]:
        """Every get() inside shares one deadline: ``seconds`` (the budget) from now.

        One poll asks several paths (a fallback, other sources); together they
        must still fit the budget the README states.
        """
        limit = self._budget if seconds is None else seconds
        with self._lock:
            self._window_end = self._clock() + limit
            try:
                yield
            finally:
                self._window_end = None

    def remaining(self) -> float:
        """Seconds left in the current poll window (the budget outside one)."""
        if self._window_end is None:
            return self._budget
        return max(0.0, self._window_end - self._clock())

    def get(self, path: str, *, budget: float | None = None) -> ImdsResponse:
        """GET ``path``; a 2xx or 404 answer, or ImdsError within ``budget`` seconds
        (and within the poll window, inside one)."""
        if not path.startswith("/"):
            raise ValueError(f"IMDS path must start with '/', not {path!r}")
        limit = self._budget if budget is None else budget
        with self._lock:
            deadline = self._clock() + limit
            if self._window_end is not None:
                deadline = min(deadline, self._window_end)
            call = _Call(deadline)
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
        token, token_fault = self._token_for(call)
        raw = self._request("GET", path, call, token)
        if raw.status == 401:
            if token_fault is not None:
                # IMDSv2 is required and the token service failed: a server error
                # is worth a retry; anything else is the operator's to fix.
                if token_fault.kind in ("server-error", "throttled"):
                    raise token_fault
                raise ImdsError(
                    "unauthorized",
                    f"GET {path} got 401 (IMDSv2 required) and {token_fault.detail}",
                    ADVICE_UNAUTHORIZED,
                )
            raw = self._retry_unauthorized(path, call, token)
        elif token_fault is not None:
            # The token service failed but a plain GET works (hop limit, a v1-only
            # metadata endpoint, a broken token service): use v1 for a while.
            self._fall_back(f"PUT {TOKEN_PATH}: {token_fault.detail}")
        return self._answer(path, raw)

    def _retry_unauthorized(self, path: str, call: _Call, used: str | None) -> _Raw:
        """401: drop the token, get a fresh one (even in v1 mode), retry once."""
        self._token = None
        token, fault = self._token_for(call, force=True)
        if token is None:
            why = f"failed ({fault.detail})" if fault is not None else "gave no token"
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
        if 200 <= status < 300:
            if raw.too_large:
                raise ImdsError(
                    "too-large",
                    f"GET {path} sent more than the {self._max_body}-byte cap",
                    ADVICE_TOO_LARGE,
                )
            return ImdsResponse(status, raw.body)
        if status == 404:
            return ImdsResponse(status, raw.body)  # an odd 404 page is still "nothing there"
        if 300 <= status < 400:
            where = f" to {raw.location}" if raw.location else ""
            raise ImdsError(
                "redirect", f"GET {path} was redirected ({status}){where}", ADVICE_REDIRECT
            )
        raise metadata_http.status_error(f"GET {path}", status)

    # -- tokens ------------------------------------------------------------------

    def _token_for(
        self, call: _Call, *, force: bool = False
    ) -> tuple[str | None, ImdsError | None]:
        """(token, or None for v1; the token service's fault when it failed just now).

        Whatever the token service does (no answer, 5xx, a redirect, a huge or
        garbled answer, a hang), the GET goes ahead without a token in the same
        poll: the notice never depends on the token service.
        """
        now = self._clock()
        if self._token is not None and now < self._token_renew_at:
            return self._token, None
        if self._mode == "v1" and not force and now < self._v2_retry_at:
            return None, None
        self._token = None
        # In v1 mode this is the periodic try for v2: whatever goes wrong, stay v1.
        retrying_v2 = self._mode == "v1" and not force
        fault = self._fetch_token(call)
        if fault is None:
            assert self._token is not None
            self._token_renew_at = now + self._token_ttl - min(60.0, self._token_ttl / 4)
            if self._mode == "v1":
                self._mode = "v2"
                self._log.info("imds.mode_changed", mode="v2", reason="token endpoint works again")
            return self._token, None
        if retrying_v2:
            self._v2_retry_at = now + V2_RETRY_SECONDS
            return None, None
        return None, fault

    def _fetch_token(self, call: _Call) -> ImdsError | None:
        """PUT for a token (kept in ``self._token``); the fault, or None when it worked."""
        what = f"PUT {TOKEN_PATH}"
        # A share of what is left, so that a hanging token service leaves time for the GET.
        share = max(0.05, (call.deadline - self._clock()) * TOKEN_SHARE)
        try:
            raw = self._request(
                "PUT", TOKEN_PATH, call, None, {TTL_HEADER: str(self._token_ttl)},
                seconds=min(share, self._connect_timeout + self._read_timeout),
                max_body=TOKEN_MAX_BODY,
            )  # fmt: skip
        except ImdsError as err:
            if err.kind == metadata_http.KIND_STOPPED:
                raise
            return err
        if raw.status == 200 and not raw.too_large:
            token = raw.body.strip().decode("ascii", "replace")
            if _TOKEN_CHARS.fullmatch(token):
                self._token = token
                return None
            return ImdsError("bad-body", f"{what} answered an unusable token", ADVICE_BAD_BODY)
        if raw.too_large:
            return ImdsError(
                "too-large", f"{what} sent more than {TOKEN_MAX_BODY} bytes", ADVICE_TOO_LARGE
            )
        if 300 <= raw.status < 400:
            return ImdsError("redirect", f"{what} was redirected ({raw.status})", ADVICE_REDIRECT)
        return metadata_http.status_error(what, raw.status)

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
        *,
        seconds: float | None = None,
        max_body: int | None = None,
    ) -> _Raw:
        remaining = call.deadline - self._clock()
        # One attempt: connect and read once each at most, never past the budget.
        limit = self._connect_timeout + self._read_timeout if seconds is None else seconds
        headers = dict(extra or {})
        if token is not None:
            headers[TOKEN_HEADER] = token
        try:
            answer = self._session.request(
                method,
                self._base + path,
                headers=headers,
                seconds=max(0.0, min(limit, remaining)),
                what=f"{method} {path}",
                limits=metadata_http.Limits(
                    max_body=self._max_body if max_body is None else max_body,
                    connect_seconds=self._connect_timeout,
                    body_seconds=None,
                ),
            )
        except ImdsError as err:
            if err.kind == "unreachable":
                raise ImdsError(err.kind, err.detail, self._advice_unreachable) from None
            raise
        return _Raw(
            answer.status, answer.body, answer.headers.get("location", ""), answer.too_large
        )

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


def _is_retryable(err: BaseException) -> bool:
    return isinstance(err, ImdsError) and err.retryable


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
