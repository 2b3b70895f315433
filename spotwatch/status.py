"""`spotwatch status`: ask EC2 for the bid status of spot requests, show it, exit by it.

The boto3 calls live here, at the edge: ``DescribeSpotInstanceRequests`` (its
paginator, server-side filters), ``DescribeInstances`` only for codes whose
meaning depends on the instance's state, ``DescribeRegions`` for
``--all-regions``. What the codes mean is :mod:`spotwatch.spot_codes`; how they
look is :mod:`spotwatch.status_view`. boto3 is imported only when a query runs.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from typing import Any, Callable, Protocol, TextIO

from spotwatch.ec2_lookup import PAGE_SIZE, chunks, describe_instances
from spotwatch.errors import SpotwatchError
from spotwatch.regions import no_region
from spotwatch.spot_codes import (
    EXIT_API,
    INSTANCE_GONE,
    UNKNOWN,
    SpotRequest,
    assess_request,
    exit_status,
    needs_instance_state,
)
from spotwatch.status_view import (
    changes,
    render_change,
    render_json,
    render_summary,
    render_table,
    snapshot,
    utc_text,
)
from spotwatch.stopper import StopFlag, Stopper

# Regions asked at once with --all-regions.
_MAX_WORKERS = 8
# --watch never polls faster than this, and backs off to at most this on faults.
MIN_INTERVAL = 1.0
MAX_BACKOFF = 300.0

_THROTTLED = frozenset({
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
    "RequestThrottled", "RequestThrottledException", "EC2ThrottledException",
    "PriorRequestNotComplete", "SlowDown",
})
_DENIED = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"})
_BAD_CREDENTIALS = frozenset({
    "AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch",
    "UnrecognizedClientException", "InvalidAccessKeyId",
})
_EXPIRED = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})
_SERVER_FAULTS = frozenset({
    "InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable",
})


class StatusApiError(SpotwatchError):
    """EC2 could not be asked (exit status 3). ``transient`` faults may pass on
    their own (throttling, network, 5xx): ``--watch`` backs off and keeps going."""

    exit_code = EXIT_API

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(" ".join(message.split()))
        self.transient = transient


@dataclass(frozen=True)
class StatusQuery:
    """What to ask: no ``ids`` and no filters means every request in the regions.

    ``regions`` empty means the default region of the boto3 chain.
    ``tags`` holds (key, value) pairs, value None for "any value".
    """

    ids: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    all_regions: bool = False
    tags: tuple[tuple[str, str | None], ...] = ()
    states: tuple[str, ...] = ()

    @property
    def filtered(self) -> bool:
        return bool(self.tags or self.states)


@dataclass(frozen=True)
class StatusResult:
    """One poll: the requests found, the regions asked, and IDs nobody knew."""

    requests: tuple[SpotRequest, ...]
    regions: tuple[str, ...]
    missing: tuple[str, ...] = ()

    @property
    def exit_status(self) -> int:
        """As for an unknown code, unknown IDs make it 3 only if no request found
        says 1 or 2: an interruption must not hide behind a typo'd or purged ID."""
        categories = [assess_request(r).category for r in self.requests]
        if self.missing:
            categories.append(UNKNOWN)
        return exit_status(categories)


class Clients(Protocol):
    """Where EC2 clients come from (boto3 in life, stubbed clients in tests)."""

    def default_region(self) -> str | None: ...

    def ec2(self, region: str) -> Any: ...


class Boto3Clients:
    """EC2 clients from one boto3 session: the usual credential and region chain,
    standard retry mode (bounded attempts, backoff on throttling), short timeouts."""

    def __init__(self) -> None:
        import boto3.session
        from botocore.config import Config

        self._session = boto3.session.Session()
        self._config = Config(
            retries={"mode": "standard"},
            connect_timeout=5,
            read_timeout=20,
            user_agent_extra="spotwatch-status",
        )

    def default_region(self) -> str | None:
        import os

        from spotwatch import regions

        found = regions.resolve(  # the one order every --region command uses
            None, os.environ, lambda: self._session.region_name,
            lambda: regions.instance_region(os.environ),
        )
        return found.name if found else None

    def ec2(self, region: str) -> Any:
        return self._session.client("ec2", region_name=region, config=self._config)


# ---------------------------------------------------------------------------
# Asking EC2


def fetch(query: StatusQuery, clients: Clients) -> StatusResult:
    """Ask every region of ``query``; raise :class:`StatusApiError` if any cannot be asked."""
    regions = _regions(query, clients)
    per_region = {}
    for region in regions:  # boto3 sessions are not thread-safe: clients made here
        per_region[region] = _guard(region, partial(clients.ec2, region))
    if len(regions) == 1:
        found = [_fetch_region(per_region[regions[0]], regions[0], query)]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(_MAX_WORKERS, len(regions))) as pool:
            futures = [pool.submit(_fetch_region, per_region[r], r, query) for r in regions]
            found = [future.result() for future in futures]  # first failure, in region order
    requests = tuple(request for batch in found for request in batch)
    missing: tuple[str, ...] = ()
    if query.ids and not query.filtered:
        known = {r.request_id for r in requests} | {r.instance_id for r in requests}
        missing = tuple(i for i in dict.fromkeys(query.ids) if i not in known)
    return StatusResult(requests, tuple(regions), missing)


def _regions(query: StatusQuery, clients: Clients) -> list[str]:
    if query.regions:
        return list(dict.fromkeys(query.regions))
    home = _guard("the default region", clients.default_region)
    if query.all_regions:
        asked = home or "us-east-1"
        client = _guard(asked, lambda: clients.ec2(asked))
        answer = _guard(asked, client.describe_regions)
        # Without AllRegions, EC2 lists the regions enabled for the account;
        # the opt-in check keeps that true of endpoints that list them all.
        names = sorted(
            str(r["RegionName"]) for r in answer.get("Regions", [])
            if r.get("OptInStatus") != "not-opted-in"
        )
        if not names:
            raise StatusApiError(f"DescribeRegions in {asked} listed no enabled regions")
        return names
    if not home:
        raise StatusApiError(no_region())
    return [home]


def _fetch_region(client: Any, region: str, query: StatusQuery) -> list[SpotRequest]:
    found: list[SpotRequest] = _guard(region, partial(_describe, client, region, query))
    return found


def _describe(client: Any, region: str, query: StatusQuery) -> list[SpotRequest]:
    found: dict[str, SpotRequest] = {}
    paginator = client.get_paginator("describe_spot_instance_requests")
    for filters in request_filters(query):
        kwargs: dict[str, Any] = {"PaginationConfig": {"PageSize": PAGE_SIZE}}
        if filters:
            kwargs["Filters"] = filters
        for page in paginator.paginate(**kwargs):
            for item in page.get("SpotInstanceRequests", []):
                request = spot_request(item, region)
                found[request.request_id] = request
    requests = list(found.values())
    wanted = sorted({
        r.instance_id for r in requests
        if r.instance_id and needs_instance_state(r.status_code)
    })
    if not wanted:
        return requests
    instances, _calls = describe_instances(client, wanted)
    states = {i: str(instance["State"]["Name"]) for i, instance in instances.items()}
    return [
        replace(r, instance_state=states.get(r.instance_id, INSTANCE_GONE))
        if r.instance_id in wanted else r
        for r in requests
    ]


def request_filters(query: StatusQuery) -> list[list[dict[str, Any]]]:
    """The ``Filters`` of each DescribeSpotInstanceRequests query ``query`` needs.

    Tags and states apply to every query. Request ids and instance ids go in
    separate queries (filters of different names are ANDed), as filters rather
    than ``SpotInstanceRequestIds`` so that an id unknown in one region does
    not fail the call for the others.
    """
    base: list[dict[str, Any]] = []
    values: dict[str, list[str]] = {}
    for key, value in query.tags:
        name, wanted = ("tag-key", key) if value is None else (f"tag:{key}", value)
        values.setdefault(name, [])
        if wanted not in values[name]:
            values[name].append(wanted)
    base += [{"Name": name, "Values": vals} for name, vals in values.items()]
    if query.states:
        base.append({"Name": "state", "Values": list(dict.fromkeys(query.states))})
    if not query.ids:
        return [base]
    ids = list(dict.fromkeys(query.ids))
    queries = []
    for name, prefix in (("spot-instance-request-id", "sir-"), ("instance-id", "i-")):
        chosen = [i for i in ids if i.startswith(prefix)]
        for chunk in chunks(chosen):
            queries.append([*base, {"Name": name, "Values": list(chunk)}])
    return queries


def spot_request(item: dict[str, Any], region: str) -> SpotRequest:
    """One ``SpotInstanceRequests`` item as plain data."""
    status = item.get("Status") or {}
    return SpotRequest(
        request_id=str(item.get("SpotInstanceRequestId", "")),
        region=region,
        state=str(item.get("State", "")),
        status_code=str(status.get("Code", "")),
        status_message=str(status.get("Message", "")),
        updated=_utc(status.get("UpdateTime")),
        instance_id=str(item["InstanceId"]) if item.get("InstanceId") else None,
    )


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _guard(region: str, call: Callable[[], Any]) -> Any:
    """Run ``call``; turn what boto3 raises into a one-line :class:`StatusApiError`."""
    try:
        return call()
    except StatusApiError:
        raise
    except Exception as exc:
        translated = describe_error(exc, region)
        if translated is None:
            raise
        raise translated from exc


def describe_error(exc: BaseException, region: str) -> StatusApiError | None:
    """What went wrong asking EC2 in ``region``, in one line; None if not boto3's."""
    from botocore import exceptions as bce

    if isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError)):
        return StatusApiError("no AWS credentials found: set AWS_PROFILE or run aws configure")
    if isinstance(exc, bce.NoRegionError):
        return StatusApiError(no_region())
    if isinstance(exc, bce.ProfileNotFound):
        return StatusApiError(f"{exc}: check AWS_PROFILE")
    if isinstance(exc, bce.InvalidRegionError):
        return StatusApiError(f"invalid region {region!r}: pass a region name like us-east-1")
    if isinstance(exc, (bce.EndpointConnectionError, bce.ConnectionClosedError,
                        bce.ConnectTimeoutError, bce.ReadTimeoutError)):
        return StatusApiError(
            f"could not reach EC2 in {region}: {exc}; check the region name and your network",
            transient=True,
        )
    if isinstance(exc, bce.ClientError):
        return _client_error(exc, region)
    from botocore.parsers import ResponseParserError

    if isinstance(exc, ResponseParserError):  # an HTML error page from a proxy or a 5xx
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return StatusApiError(f"EC2 in {region} sent an answer that could not be read: {first}",
                              transient=True)
    if isinstance(exc, bce.BotoCoreError):
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return StatusApiError(f"could not ask EC2 in {region}: {first}")
    return None


def _client_error(exc: Any, region: str) -> StatusApiError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = " ".join(str(error.get("Message", "")).split())
    operation = str(getattr(exc, "operation_name", "") or "the EC2 API")
    if code in _DENIED:
        return StatusApiError(
            f"access denied: the caller lacks permission ec2:{operation} in {region} ({code})"
        )
    if code in _THROTTLED:
        return StatusApiError(
            f"EC2 throttled {operation} in {region} even after retries ({code}): "
            "try again later or poll less often",
            transient=True,
        )
    if code in _BAD_CREDENTIALS:
        return StatusApiError(
            f"AWS rejected the credentials in {region} ({code}): "
            "check AWS_PROFILE or run aws configure"
        )
    if code in _EXPIRED:
        return StatusApiError(
            f"the AWS credentials have expired ({code}): refresh them (aws sso login, ...)"
        )
    if code.startswith(("InvalidSpotInstanceRequestID.", "InvalidInstanceID.")):
        return StatusApiError(f"unknown ID in {region}: {message} ({code})")
    if code == "OptInRequired":
        return StatusApiError(f"region {region} is not enabled for this account ({code})")
    transient = code in _SERVER_FAULTS
    detail = f": {message}" if message else ""
    return StatusApiError(f"EC2 {operation} failed in {region} ({code}){detail}",
                          transient=transient)


def missing_message(result: StatusResult) -> str:
    """The one-line error for IDs that no region knew."""
    noun = "ID" if len(result.missing) == 1 else "IDs"
    where = (", ".join(result.regions) if len(result.regions) <= 3
             else f"any of {len(result.regions)} regions")
    return f"unknown {noun} {', '.join(result.missing)}: no spot request for it in {where}"


# ---------------------------------------------------------------------------
# Showing it


@dataclass
class Output:
    """Where and how to write: the streams, the clock, and the terminal's width."""

    out: TextIO
    err: TextIO
    now: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))

    @property
    def tty(self) -> bool:
        isatty = getattr(self.out, "isatty", None)
        return bool(isatty and isatty())

    def width(self) -> int | None:
        if not self.tty:
            return None
        import shutil

        return shutil.get_terminal_size().columns

    def error(self, message: str) -> None:
        print(f"spotwatch status: error: {message}", file=self.err, flush=True)


def show(result: StatusResult, output: Output, *, as_json: bool) -> None:
    """Print one poll's result: the JSON list, or the table and a summary."""
    if as_json:
        print(render_json(result.requests), file=output.out, flush=True)
        return
    if result.requests:
        table = render_table(result.requests, output.now(),
                             show_region=len(result.regions) > 1, width=output.width())
        print(table, file=output.out)
        print(render_summary(result.requests), file=output.out, flush=True)
    else:
        where = ", ".join(result.regions) if len(result.regions) <= 3 else (
            f"{len(result.regions)} regions")
        print(f"no spot requests found in {where}", file=output.out, flush=True)


def run_status(
    query: StatusQuery,
    *,
    as_json: bool = False,
    watch: float | None = None,
    clients: Clients | None = None,
    output: Output | None = None,
    stop: StopFlag | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> int:
    """`spotwatch status`: one query (or a --watch loop); returns the exit status."""
    out = output or Output(sys.stdout, sys.stderr)
    source = clients or _guard("the AWS session", Boto3Clients)
    if watch is None:
        result = fetch(query, source)
        show(result, out, as_json=as_json)
        if result.missing:
            out.error(missing_message(result))
        return result.exit_status
    if stop is not None:
        return watch_status(query, source, watch, out, stop, as_json=as_json,
                            monotonic=monotonic)
    with Stopper() as signal_stop:  # SIGINT/SIGTERM end the watch between polls
        return watch_status(query, source, watch, out, signal_stop, as_json=as_json,
                            monotonic=monotonic)


# ---------------------------------------------------------------------------
# --watch


_CLEAR = "\x1b[H\x1b[2J"
_HISTORY = 10


def watch_status(
    query: StatusQuery,
    clients: Clients,
    interval: float,
    output: Output,
    stop: StopFlag,
    *,
    as_json: bool = False,
    monotonic: Callable[[], float] = time.monotonic,
) -> int:
    """Poll every ``interval`` seconds (at least :data:`MIN_INTERVAL`) until ``stop``.

    On a terminal the table is redrawn with the latest changes under it;
    otherwise the first table is printed, then one line per change. With JSON,
    the whole list is printed on one line whenever anything changed. Transient
    faults (throttling, network) are reported once and backed off from; others
    end the watch (exit 3). Returns the exit status of the last poll.
    """
    interval = max(MIN_INTERVAL, interval)
    delay = interval
    status = EXIT_API
    previous: dict[Any, SpotRequest] | None = None
    history: deque[str] = deque(maxlen=_HISTORY)
    last_fault = ""
    last_missing: tuple[str, ...] = ()
    while True:
        started = monotonic()
        try:
            result = fetch(query, clients)
        except StatusApiError as exc:
            if not exc.transient:
                raise
            status = EXIT_API
            delay = min(delay * 2, max(MAX_BACKOFF, interval))
            if str(exc) != last_fault:
                output.error(f"{exc} (backing off; next poll in {delay:g}s)")
                last_fault = str(exc)
        else:
            if last_fault:
                print(f"{utc_text(output.now())}  EC2 answers again", file=output.err,
                      flush=True)
                last_fault = ""
            delay = interval
            status = result.exit_status
            current = snapshot(result.requests)
            _show_poll(result, previous, current, output, history, interval,
                       as_json=as_json)
            if result.missing != last_missing and result.missing:
                output.error(missing_message(result))
            last_missing = result.missing
            previous = current
        if stop.wait(max(0.0, started + delay - monotonic())):
            return status


def _show_poll(
    result: StatusResult,
    previous: dict[Any, SpotRequest] | None,
    current: dict[Any, SpotRequest],
    output: Output,
    history: deque[str],
    interval: float,
    *,
    as_json: bool,
) -> None:
    now = output.now()
    show_region = len(result.regions) > 1
    found = [] if previous is None else changes(previous, current)
    if as_json:
        if previous is None or found:
            print(render_json(result.requests, compact=True), file=output.out, flush=True)
        return
    lines = [render_change(change, now, show_region=show_region) for change in found]
    if output.tty:
        history.extend(lines)
        output.out.write(f"{_CLEAR}spotwatch status: every {interval:g}s, {utc_text(now)}; "
                         "Ctrl-C to stop\n")
        show(result, output, as_json=False)
        if history:
            output.out.write("\nchanges:\n" + "\n".join(history) + "\n")
        output.out.flush()
        return
    if previous is None:
        show(result, output, as_json=False)
        return
    for line in lines:
        print(line, file=output.out, flush=True)
