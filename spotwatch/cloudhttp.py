"""Plain HTTP to Google's and Azure's metadata servers: the same care as the IMDS client.

No proxies, no redirects followed, answers read up to a cap, every transport
failure mapped to an ``ImdsError`` with a stable ``kind`` (the watcher logs each
fault once, whatever the cloud).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import requests

from spotwatch import __version__
from spotwatch.imds import (
    _TRANSPORT_ERRORS,
    ADVICE_REDIRECT,
    ADVICE_TOO_LARGE,
    ImdsError,
    _transport_error,
)

MAX_BODY = 256 * 1024


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: Mapping[str, str]  # names lower-cased


def new_session() -> requests.Session:
    """A session that sends only what we chose and never uses HTTP_PROXY or .netrc."""
    session = requests.Session()
    session.trust_env = False
    session.headers.clear()
    session.headers.update(
        {
            "User-Agent": f"spotwatch/{__version__}",
            "Accept": "*/*",
            "Accept-Encoding": "identity",
        }
    )
    return session


def request(
    session: requests.Session,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    timeout: tuple[float, float],
    what: str,
    data: bytes | None = None,
    max_body: int = MAX_BODY,
) -> Answer:
    """One request; the answer whatever its status, or ImdsError when there was none."""
    try:
        resp = session.request(
            method,
            url,
            headers=dict(headers),
            data=data,
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        )
    except _TRANSPORT_ERRORS as err:
        raise _transport_error(what, err, timeout) from err
    try:
        if 300 <= resp.status_code < 400:
            raise ImdsError(
                "redirect", f"{what} was redirected ({resp.status_code})", ADVICE_REDIRECT
            )
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in resp.iter_content(chunk_size=8192):
                size += len(chunk)
                if size > max_body:
                    raise ImdsError(
                        "too-large", f"{what} sent more than {max_body} bytes", ADVICE_TOO_LARGE
                    )
                chunks.append(chunk)
        except _TRANSPORT_ERRORS as err:
            raise _transport_error(what, err, timeout) from err
        found = {k.lower(): v for k, v in resp.headers.items()}
        return Answer(resp.status_code, b"".join(chunks), found)
    finally:
        resp.close()
