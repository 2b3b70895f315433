"""Plain HTTP/1.1 to the metadata servers (AWS IMDS, Google, Azure), one deadline per
request, and the one fault type of every cloud's client: ``ImdsError``, with a stable
``kind`` and advice for the operator.

A narrow client on raw sockets, because a metadata server that misbehaves must
never hold spotwatch up: connect, headers and body share ONE deadline, whatever
the server does (a body dripping a byte at a time, with or without
``Content-Length``; an endless body; headers, then silence). A library client
restarts its read timeout at every byte, so a drip could hold a poll for
minutes. Nothing else is needed from one: the metadata servers are on the link
(no proxy, ever: ``HTTP_PROXY`` and ``.netrc`` are never read), redirects are
answers, never followed, and bodies are read up to a small cap (``too_large``).

One :class:`Session` keeps one keep-alive connection; it is not thread-safe
(each feed thread has its own). With a ``stop`` flag, a wait on the server is
cut into slices so that a stop request (SIGTERM) ends the request within
``STOP_SLICE`` seconds: the signal handler only sets a flag, and Python would
otherwise resume the ``recv`` after it.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Union
from urllib.parse import urlsplit

from spotwatch import __version__

if TYPE_CHECKING:
    from spotwatch.stopper import StopFlag

# -- faults: one type for every cloud, with a stable kind and advice -------------

# After falling back to IMDSv1, try for a token again this often.
V2_RETRY_SECONDS = 300.0

ADVICE_UNREACHABLE = (
    "check --imds-url / SPOTWATCH_IMDS_URL and that no firewall or network namespace "
    "blocks it; spotwatch keeps polling"
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
_RETRYABLE_KINDS = frozenset({"unreachable", "timeout", "dropped", "server-error", "throttled"})


def advice_unreachable(base_url: str) -> str:
    """What to check when nothing answers at ``base_url`` (the URL in use, named)."""
    return (
        "check that this runs on EC2 and that IMDS is enabled "
        "(aws ec2 modify-instance-metadata-options --instance-id ID --http-endpoint enabled), "
        f"and that no firewall or network namespace blocks {base_url} "
        "(--imds-url / SPOTWATCH_IMDS_URL); spotwatch keeps polling"
    )


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


def status_error(what: str, status: int) -> ImdsError:
    """The fault for an answer with an unexpected ``status`` (429, 5xx, anything else)."""
    if status == 429:
        return ImdsError("throttled", f"{what} answered 429 Too Many Requests", ADVICE_THROTTLED)
    if status >= 500:
        return ImdsError("server-error", f"{what} answered {status}", ADVICE_SERVER)
    advice = ADVICE_FORBIDDEN if status == 403 else ADVICE_BAD_STATUS
    return ImdsError("bad-status", f"{what} answered {status}", advice)


# -- the client --------------------------------------------------------------------

MAX_BODY = 256 * 1024
MAX_HEAD = 16 * 1024  # status line and headers together
# With a stop flag, no single wait on the socket is longer than this.
STOP_SLICE = 0.25
# How long the body may take once the headers are in, unless told otherwise: a
# metadata answer is a few hundred bytes.
BODY_SECONDS = 2.0
KIND_STOPPED = "stopped"

Timeout = Union[float, "tuple[float, float]"]


@dataclass(frozen=True)
class Limits:
    """What one request may take within its deadline: the body's size, the connect
    step's share, and how long the body may take once the headers are in (None: as
    long as the deadline allows)."""

    max_body: int = MAX_BODY
    connect_seconds: float = 1.0
    body_seconds: float | None = BODY_SECONDS


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: Mapping[str, str]  # names lower-cased
    too_large: bool = False  # the body passed the cap; ``body`` is then empty


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def endpoint(url: str) -> tuple[Endpoint, str]:
    """(where to connect, the path with its query) for ``url``; ValueError when unusable."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"not an http:// or https:// URL: {url!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in {url!r}")
    port = parts.port  # ValueError when out of range or not a number
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Endpoint(scheme, host, port or (443 if scheme == "https" else 80)), path


class _Stopped(Exception):
    pass


class _Timeout(Exception):
    pass


class _Closed(Exception):
    """The peer closed the connection (or reset it) before the answer was complete."""


class Session:
    """One keep-alive connection to one metadata server at a time."""

    def __init__(
        self,
        *,
        stop: StopFlag | None = None,
        clock: Callable[[], float] = time.monotonic,
        user_agent: str = f"spotwatch/{__version__}",
    ) -> None:
        self._stop = stop
        self._clock = clock
        self._agent = user_agent
        self._sock: socket.socket | None = None
        self._where: Endpoint | None = None

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        seconds: float,
        what: str,
        data: bytes | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> Answer:
        """One request; the answer whatever its status, or ImdsError when there was none.

        ``seconds`` bounds everything (connect, sending, headers, body);
        ``limits.body_seconds`` also bounds the body once the headers are in (a hanging
        GET waits long for its headers, never for its body).
        """
        try:
            where, target = endpoint(url)
        except ValueError as err:
            raise ImdsError("unreachable", f"{what}: {err}", _unreachable(url)) from None
        deadline = self._clock() + max(0.0, seconds)
        message = _message(method, target, where, self._agent, headers, data)
        for fresh in (False, True):
            reused = self._sock is not None and self._where == where and not fresh
            if not reused:
                self.close()
            try:
                if not reused:
                    self._connect(where, deadline, limits.connect_seconds, what)
                elif _stale(self._sock):
                    self.close()
                    self._connect(where, deadline, limits.connect_seconds, what)
                    reused = False
                return self._exchange(
                    message, method, deadline, limits.body_seconds, limits.max_body
                )
            except _Closed as err:
                self.close()
                if reused and err.args and err.args[0] == 0:
                    continue  # a kept-alive connection the server had dropped: once more
                raise ImdsError(
                    "dropped", f"{what}: connection lost ({err.args[1]})", ADVICE_DROPPED
                ) from None
            except _Timeout:
                self.close()
                raise ImdsError(
                    "timeout", f"{what}: no complete answer within {seconds:g} s", ADVICE_TIMEOUT
                ) from None
            except _Stopped:
                self.close()
                raise ImdsError(KIND_STOPPED, f"{what}: cut short by a stop", "") from None
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- connection ------------------------------------------------------------------

    def _connect(self, where: Endpoint, deadline: float, limit: float, what: str) -> None:
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise _Timeout()
        if self._stop is not None and self._stop.is_set():
            raise _Stopped()
        try:
            sock = socket.create_connection((where.host, where.port), min(limit, remaining))
        except socket.timeout:
            raise ImdsError(
                "unreachable",
                f"{what}: cannot connect to {where.host_header} (no answer within "
                f"{min(limit, remaining):.2g} s)",
                _unreachable(where),
            ) from None
        except (OSError, UnicodeError) as err:
            raise ImdsError(
                "unreachable",
                f"{what}: cannot connect to {where.host_header} ({_why(err)})",
                _unreachable(where),
            ) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if where.scheme == "https":
                import ssl

                context = ssl.create_default_context()
                sock.settimeout(max(0.05, deadline - self._clock()))
                sock = context.wrap_socket(sock, server_hostname=where.host)
        except OSError as err:
            sock.close()
            raise ImdsError(
                "unreachable", f"{what}: TLS with {where.host_header} failed ({_why(err)})",
                _unreachable(where),
            ) from None  # fmt: skip
        self._sock = sock
        self._where = where

    # -- one exchange ----------------------------------------------------------------

    def _exchange(
        self,
        message: bytes,
        method: str,
        deadline: float,
        body_seconds: float | None,
        max_body: int,
    ) -> Answer:
        sock = self._sock
        assert sock is not None
        self._send(sock, message, deadline)
        reader = _Reader(self, sock, deadline)
        while True:
            status, headers, head_ok = _parse_head(reader.head())
            if not head_ok:
                raise _Closed(1, "malformed status line or headers")
            if 100 <= status < 200:
                continue  # 100 Continue and friends: the answer follows
            break
        if body_seconds is not None:
            reader.deadline = min(reader.deadline, self._clock() + body_seconds)
        keep = headers.get("connection", "").lower() != "close"
        if method == "HEAD" or status in (204, 304):
            body, too_large, framed = b"", False, True
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body, too_large = reader.chunked(max_body)
            framed = not too_large
        elif "content-length" in headers:
            length_text = headers["content-length"].strip()
            if not length_text.isdigit():
                raise _Closed(1, f"Content-Length {length_text[:20]!r}")
            length = int(length_text)
            if length > max_body:
                body, too_large, framed = b"", True, False
            else:
                body, too_large, framed = reader.exactly(length), False, True
        else:
            body, too_large = reader.until_close(max_body)
            framed = False
        if not (keep and framed) or reader.extra:
            self.close()
        return Answer(status, b"" if too_large else body, headers, too_large)

    def _send(self, sock: socket.socket, message: bytes, deadline: float) -> None:
        view = memoryview(message)
        while view:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise _Timeout()
            sock.settimeout(remaining)
            try:
                sent = sock.send(view)
            except socket.timeout:
                raise _Timeout() from None
            except OSError as err:
                raise _Closed(0, _why(err)) from None
            view = view[sent:]

    def _wait_slice(self, deadline: float) -> float:
        """Seconds the next socket wait may take; raises when out of time or stopping."""
        if self._stop is not None and self._stop.is_set():
            raise _Stopped()
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise _Timeout()
        return remaining if self._stop is None else min(remaining, STOP_SLICE)


class _Reader:
    """Reads an answer from ``sock``, never past ``deadline``."""

    def __init__(self, session: Session, sock: socket.socket, deadline: float) -> None:
        self._session = session
        self._sock = sock
        self.deadline = deadline
        self._buf = bytearray()
        self._got_any = False
        self.extra = False

    def _fill(self) -> bool:
        """Read more into the buffer; False at the end of the stream."""
        while True:
            self._sock.settimeout(self._session._wait_slice(self.deadline))
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                continue
            except OSError as err:
                raise _Closed(1 if self._got_any else 0, _why(err)) from None
            if not data:
                return False
            self._got_any = True
            self._buf += data
            return True

    def head(self) -> bytes:
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self._buf[:end])
                del self._buf[: end + 4]
                return head
            if len(self._buf) > MAX_HEAD:
                raise _Closed(1, f"headers longer than {MAX_HEAD} bytes")
            if not self._fill():
                raise _Closed(1 if self._got_any else 0, "closed before the headers ended")

    def exactly(self, length: int) -> bytes:
        while len(self._buf) < length:
            if not self._fill():
                raise _Closed(1, f"closed after {len(self._buf)} of {length} bytes")
        body = bytes(self._buf[:length])
        del self._buf[:length]
        self.extra = bool(self._buf)
        return body

    def until_close(self, cap: int) -> tuple[bytes, bool]:
        while len(self._buf) <= cap:
            if not self._fill():
                return bytes(self._buf), False
        return b"", True

    def _line(self) -> bytes:
        while True:
            end = self._buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 2]
                return line
            if len(self._buf) > 4096:
                raise _Closed(1, "a chunk header longer than 4096 bytes")
            if not self._fill():
                raise _Closed(1, "closed inside a chunked body")

    def chunked(self, cap: int) -> tuple[bytes, bool]:
        body = bytearray()
        while True:
            size_text = self._line().split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _Closed(1, f"bad chunk size {size_text[:20]!r}") from None
            if size < 0:
                raise _Closed(1, "bad chunk size")
            if size == 0:
                while self._line():  # trailers, up to the empty line
                    pass
                self.extra = bool(self._buf)
                return bytes(body), False
            if len(body) + size > cap:
                return b"", True
            body += self.exactly(size)
            self.extra = False
            if self._line():
                raise _Closed(1, "chunk not followed by CRLF")


def _message(
    method: str,
    target: str,
    where: Endpoint,
    agent: str,
    headers: Mapping[str, str],
    data: bytes | None,
) -> bytes:
    lines = [
        f"{method} {target} HTTP/1.1",
        f"Host: {where.host_header}",
        f"User-Agent: {agent}",
        "Accept: */*",
        "Accept-Encoding: identity",  # no decompression: the cap stays honest
    ]
    for name, value in headers.items():
        if any(c in name + value for c in "\r\n\0"):
            raise ValueError(f"header {name!r} has a line break or NUL")
        lines.append(f"{name}: {value}")
    if data is not None or method in ("PUT", "POST"):
        lines.append(f"Content-Length: {len(data or b'')}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (data or b"")


def _parse_head(head: bytes) -> tuple[int, dict[str, str], bool]:
    """(status, lower-cased headers, whether it parsed)."""
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return 0, {}, False
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            return status, headers, False
        key = name.strip().lower()
        value = value.strip()
        if key == "content-length" and key in headers and headers[key] != value:
            return status, headers, False  # two different lengths: no framing to trust
        headers[key] = value
    return status, headers, True


def _stale(sock: socket.socket | None) -> bool:
    """Whether a kept-alive socket was closed (or sent something) while idle."""
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _unreachable(where: Endpoint | str) -> str:
    url = where if isinstance(where, str) else f"{where.scheme}://{where.host_header}"
    return (
        f"nothing answered at {url}: check --imds-url / SPOTWATCH_IMDS_URL, that this runs "
        "on the cloud spotwatch watches, and that no firewall or network namespace blocks "
        "it; spotwatch keeps polling"
    )


def _why(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return " ".join(str(text).split())[:200]


def new_session(stop: StopFlag | None = None) -> Session:
    """A session that sends only what we chose and never uses a proxy or .netrc."""
    return Session(stop=stop)


def request(
    session: Session,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    timeout: Timeout,
    what: str,
    data: bytes | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Answer:
    """One request; the answer whatever its status, or ImdsError (also for 3xx and a body
    over the cap). ``timeout``: one deadline in seconds, or (connect, read) whose sum is
    (its connect part replaces ``limits.connect_seconds``)."""
    if isinstance(timeout, tuple):
        connect, read = timeout
        seconds = connect + read
    else:
        connect = seconds = float(timeout)
    answer = session.request(
        method, url, headers=headers, seconds=seconds, what=what, data=data,
        limits=replace(limits, connect_seconds=connect),
    )  # fmt: skip
    if 300 <= answer.status < 400:
        raise ImdsError("redirect", f"{what} was redirected ({answer.status})", ADVICE_REDIRECT)
    if answer.too_large:
        raise ImdsError(
            "too-large", f"{what} sent more than {limits.max_body} bytes", ADVICE_TOO_LARGE
        )
    return answer
