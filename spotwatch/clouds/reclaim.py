"""A reclaim time read from plain-text instance metadata: Alibaba Cloud and Tencent Cloud.

Both clouds publish one value for a spot (preemptible) instance: 404 while
nothing is scheduled, then the time the instance will be reclaimed as bare text.
They differ in the base URL, the path, the time's format and zone, the token
(Alibaba has an IMDSv2-like one, Tencent none) and the identity paths, so each
is a ``ReclaimCloud`` and this module does the rest: parse (pure), read (one GET
per poll, bounded), identity.

A 200 whose time does not parse is still a notice (better a hook run than a
missed reclaim) with the cloud's usual lead and the problem logged.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar

from spotwatch.clouds import metadata_http
from spotwatch.clouds.base import Cloud, CloudSources, DrillSim, Rehearsal, SimRequest
from spotwatch.clouds.metadata_http import ADVICE_BAD_STATUS, ImdsError
from spotwatch.clouds.metadata_http import status_error as _status_error
from spotwatch.logs import get_logger
from spotwatch.monitor import MonitorBase
from spotwatch.monitors import KEY_FORMAT, MIN_AHEAD_SECONDS
from spotwatch.notice import SPOT_INTERRUPTION, Identity, Notice, notice_id

if TYPE_CHECKING:
    from spotwatch.config import RunConfig
    from spotwatch.imdssim_reclaim import _ReclaimSimulator
    from spotwatch.stopper import Stopper

CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 2.0


@dataclass(frozen=True)
class ReclaimCloud:
    """What differs between the clouds that publish a bare reclaim time."""

    name: str  # as in --cloud and SPOTWATCH_CLOUD
    title: str  # for messages
    default_url: str
    path: str  # the reclaim time, under the base URL
    parse_time: Callable[[str], float | None]
    time_format: str  # for messages: what a good value looks like
    lead_seconds: float  # the usual lead, used when the time is unusable or past
    identity_paths: tuple[tuple[str, str], ...]  # (Identity field, path)
    token_path: str = ""  # empty: no token
    token_ttl_header: str = ""
    token_header: str = ""
    token_ttl: int = 21600

    @property
    def source(self) -> str:
        return f"{self.name}:{self.path.rsplit('/latest/meta-data/', 1)[-1]}"


def _key(parsed: float | None, raw: str) -> str:
    if parsed is not None:
        return time.strftime(KEY_FORMAT, time.gmtime(int(parsed)))
    return raw


def parse_notice(cloud: ReclaimCloud, body: bytes, seen_at: float) -> Notice:
    """A 200 from the reclaim-time path as a Notice, however malformed."""
    raw = body.decode("utf-8", "replace").strip()
    parsed = cloud.parse_time(raw) if raw else None
    problem = ""
    if parsed is None:
        problem = (
            f"unusable reclaim time {raw[:80]!r} (expected {cloud.time_format}); "
            f"assuming {cloud.lead_seconds:g} s from now"
        )
        deadline = seen_at + cloud.lead_seconds
    elif parsed <= seen_at + MIN_AHEAD_SECONDS:
        problem = f"reclaim time {raw} already passed; allowing {cloud.lead_seconds:g} s from now"
        deadline = seen_at + cloud.lead_seconds
    else:
        deadline = parsed
    return Notice(
        kind=SPOT_INTERRUPTION,
        action="terminate",
        raw_time=raw,
        time=parsed,
        deadline=deadline,
        id=notice_id(SPOT_INTERRUPTION, "terminate", _key(parsed, raw)),
        source=cloud.source,
        problem=problem,
    )


def advice(cloud: ReclaimCloud, base_url: str) -> str:
    return (
        f"check that this is a {cloud.title} instance and that {base_url} (--imds-url / "
        f"SPOTWATCH_IMDS_URL; default {cloud.default_url}) is reachable; spotwatch keeps trying"
    )


# -- I/O ---------------------------------------------------------------------------


class ReclaimMetadata:
    """GETs under the cloud's base URL over one keep-alive session, with its token if any.

    Alibaba's token is asked for once and kept until a GET is refused (401/403)
    or its TTL nears its end; a token service that does not answer (normal mode,
    or an older metadata server) means plain GETs, logged once.
    """

    def __init__(self, cloud: ReclaimCloud, base_url: str,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.cloud = cloud
        self._base = base_url.rstrip("/")
        self._advice = advice(cloud, self._base)
        self._session: metadata_http.Session = metadata_http.new_session()
        self._clock = clock
        self._token = ""
        self._token_until = 0.0
        self._tokenless_logged = False
        self._log = get_logger(cloud=cloud.name)

    def close(self) -> None:
        self._session.close()

    def _request(self, method: str, path: str, headers: dict[str, str]) -> metadata_http.Answer:
        try:
            return metadata_http.request(
                self._session, method, self._base + path, headers=headers,
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), what=f"{method} {path}",
            )  # fmt: skip
        except ImdsError as err:
            if err.kind == "unreachable":
                raise ImdsError(err.kind, err.detail, self._advice) from None
            raise

    def _headers(self) -> dict[str, str]:
        cloud = self.cloud
        if not cloud.token_path:
            return {}
        if not self._token or self._clock() >= self._token_until:
            ttl = {cloud.token_ttl_header: str(cloud.token_ttl)}
            answer = self._request("PUT", cloud.token_path, ttl)
            token = answer.body.decode("ascii", "replace").strip()
            if answer.status == 200 and token:
                self._token = token
                self._token_until = self._clock() + cloud.token_ttl * 0.9
            else:
                self._token = ""
                if not self._tokenless_logged:
                    self._tokenless_logged = True
                    self._log.warning(
                        "reclaim.token_unavailable",
                        status=answer.status,
                        advice="reading the metadata without a token (normal mode); in "
                        "security hardening mode every read will then be refused",
                    )
                return {}
        return {cloud.token_header: self._token}

    def get(self, path: str) -> metadata_http.Answer:
        """The answer for ``path``: 200 or 404; ImdsError for anything else."""
        answer = self._request("GET", path, self._headers())
        if answer.status in (401, 403) and self._token:
            self._token = ""  # expired or revoked: ask again once
            answer = self._request("GET", path, self._headers())
        if answer.status in (200, 404):
            return answer
        what = f"GET {path}"
        if answer.status >= 500 or answer.status == 429:
            err = _status_error(what, answer.status)
            raise ImdsError(err.kind, err.detail, self._advice)
        raise ImdsError("bad-status", f"{what} answered {answer.status}", self._advice)


def read_identity(cloud: ReclaimCloud, base_url: str) -> Identity:
    """Instance id, type, region and zone from the cloud's metadata; "unknown" where absent."""
    client = ReclaimMetadata(cloud, base_url)
    fields: dict[str, str] = {}
    try:
        for name, path in cloud.identity_paths:
            answer = client.get(path)
            value = answer.body.decode("utf-8", "replace").strip() if answer.status == 200 else ""
            if value:
                fields[name] = value
    finally:
        client.close()
    if "instance_id" not in fields:
        raise ImdsError(
            "bad-status", f"GET {cloud.identity_paths[0][1]} gave no instance id", ADVICE_BAD_STATUS
        )
    return Identity(**fields)


class ReclaimMonitor(MonitorBase):
    """One GET of the reclaim time per poll: the notice, or None on 404."""

    name = SPOT_INTERRUPTION

    def __init__(self, client: ReclaimMetadata,
                 wall_clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self._client = client
        self._wall = wall_clock
        self._first_seen: dict[str, float] = {}

    def check(self) -> Notice | None:
        answer = self._client.get(self._client.cloud.path)
        if answer.status == 404:
            return None
        raw = answer.body.decode("utf-8", "replace").strip()
        # An unusable time gets its lead from when it was first seen, not every poll.
        seen = self._first_seen.setdefault(raw, self._wall())
        return parse_notice(self._client.cloud, answer.body, seen)

    def close(self) -> None:
        self._client.close()


def monitors(cloud: ReclaimCloud, base_url: str, watch: Sequence[str]) -> list[ReclaimMonitor]:
    """The spot monitor when ``spot`` is watched (the only source these clouds publish)."""
    if "spot" not in watch:
        return []
    return [ReclaimMonitor(ReclaimMetadata(cloud, base_url))]


def cloud_named(name: str) -> ReclaimCloud:
    """Alibaba's or Tencent's description; KeyError for any other name."""
    from spotwatch.clouds import alibaba, tencent

    return {"alibaba": alibaba.CLOUD, "tencent": tencent.CLOUD}[name]


def base_url_for(cloud: ReclaimCloud, imds_url: str) -> str:
    """``--imds-url``, unless it is still AWS's default: then the cloud's own address."""
    from spotwatch.config import DEFAULT_IMDS_URL

    return cloud.default_url if imds_url.rstrip("/") == DEFAULT_IMDS_URL else imds_url


# -- the adapter ---------------------------------------------------------------------


class ReclaimAdapter(Cloud):
    """The adapter of a cloud that publishes only a bare reclaim time: spot and the
    system shutdown. Subclasses set ``description`` and say how the cloud is recognised."""

    description: ClassVar[ReclaimCloud]
    sources = ("spot", "shutdown")
    drill_events = ("spot", "shutdown")
    # Rank 0, listed after Google and Azure: asked before AWS, whose probe takes any
    # answer under /latest/meta-data.

    # The least time ahead --deadline-margin is checked against: neither cloud
    # documents one (Alibaba's "about five minutes" is unconfirmed), so a spot
    # notice's two minutes, as on AWS.
    least_lead: ClassVar[float] = 120.0

    def leads(self, config: RunConfig) -> list[tuple[float, str]]:
        if "spot" not in config.sources:
            return []
        return [(self.least_lead, f"a reclaim on {self.title}")]

    def build(self, config: RunConfig, *, interval: float, stop: Stopper) -> CloudSources:
        cloud = self.description
        base_url = base_url_for(cloud, config.imds_url)
        found = monitors(cloud, base_url, config.sources)
        return CloudSources(
            monitors=list(found),
            read_identity=lambda: read_identity(cloud, base_url),
            feeds=list(found),
        )

    def serve(self, request: SimRequest) -> _ReclaimSimulator:
        from spotwatch import imdssim_reclaim

        return imdssim_reclaim.serve(
            self.name, request.port, request.notice_in, request.lead, request.require_token
        )

    def drill(self, rehearsal: Rehearsal) -> DrillSim:
        """The reclaim time, --lead after it appears, as the cloud writes it; Alibaba's
        simulator requires its token, as security hardening mode does."""
        from spotwatch.imdssim_reclaim import simulator

        sim = simulator(self.name, require_token=True)

        def schedule(appear_at: float) -> tuple[float, str]:
            reclaim_at = appear_at + rehearsal.lead
            return reclaim_at, sim.schedule_reclaim(reclaim_at=reclaim_at, appear_at=appear_at)

        return DrillSim(sim, schedule)

    def describe_drill(self, rehearsal: Rehearsal, notice_time: str) -> tuple[str, str]:
        path = self.description.path
        return f"{self.title} spot reclaim", f"{path} {notice_time}"
