"""Azure Scheduled Events: Spot evictions and platform maintenance, and their approval.

A ``Feed`` thread polls ``/metadata/scheduledevents`` (every ``--interval``, 1 s
by default on Azure, as Microsoft recommends) with ``Metadata: true`` over one
keep-alive connection, which also keeps the service on (it turns itself off after
24 hours without calls). The first call turns the service on and may take up to
two minutes to answer: it gets a long read timeout of its own and is logged once
as ``azure.events_starting``, not as a fault on every poll.

Only events whose ``Resources`` name this VM count: the list is shared by the
availability set, and an event for another VM is someone else's. ``Preempt`` and
``Terminate`` are notices; ``Reboot``, ``Redeploy`` and ``Freeze`` only when
``maintenance`` is watched; ``SpotRebalanceRecommendation`` (an early warning,
nothing ends) only when ``rebalance`` is. When the hooks for an event are done
(failed or not) ``Approver`` posts ``StartRequests`` for its ``EventId`` so the
platform goes ahead now rather than idling until ``NotBefore``; a rebalance
recommendation is not approved (Microsoft: acknowledging one has no effect).

The newest version that carries the rebalance event (``2024-07-09``) is asked
first; a service that refuses it (400 or 404) is asked ``2020-07-01`` instead,
logged once as ``azure.api_fallback``, and the version that worked is kept.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Callable

from spotwatch.clouds import metadata_http
from spotwatch.clouds.base import Cloud, CloudSources, DrillSim, Rehearsal, SimRequest
from spotwatch.clouds.metadata_http import ADVICE_BAD_STATUS, ImdsError
from spotwatch.feed import Feed, FeedMonitor
from spotwatch.followup import FollowUpBase
from spotwatch.logs import get_logger
from spotwatch.notice import (
    DEFAULT_LEAD_SECONDS as REBALANCE_LEAD_SECONDS,
)
from spotwatch.notice import (
    REBALANCE_ACTION,
    REBALANCE_RECOMMENDATION,
    SCHEDULED_MAINTENANCE,
    SPOT_INTERRUPTION,
    Identity,
    Notice,
    notice_id,
)

if TYPE_CHECKING:
    from spotwatch.config import RunConfig
    from spotwatch.imdssim_azure import AzureSimulator
    from spotwatch.stopper import Stopper

EVENTS_PATH = "/metadata/scheduledevents"
EVENTS_API = "2024-07-09"  # the first with SpotRebalanceRecommendation
EVENTS_API_FALLBACK = "2020-07-01"
COMPUTE_PATH = "/metadata/instance/compute"
COMPUTE_API = "2021-02-01"
HEADER = "Metadata"
SOURCE = "azure:scheduledevents"
EVENT_ID_VARIABLE = "SPOTWATCH_AZURE_EVENT_ID"

# Preempt gives at least 30 s; used when NotBefore is empty (a Started event) or past.
# Every Azure VM carries this chassis asset tag (Hyper-V elsewhere does not).
AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"
DEFAULT_LEAD_SECONDS = 30.0
FIRST_ANSWER_TIMEOUT = 130.0  # the service may take up to two minutes to turn on
READ_TIMEOUT = 5.0
CONNECT_TIMEOUT = 1.0
# Between approval attempts; they stop at the event's deadline.
APPROVE_RETRY_SECONDS = 1.0

ENDING = {
    "Preempt": (SPOT_INTERRUPTION, "terminate"),
    "Terminate": (SCHEDULED_MAINTENANCE, "terminate"),
}
MAINTENANCE = {"Reboot": "reboot", "Redeploy": "redeploy", "Freeze": "freeze"}
REBALANCE = "SpotRebalanceRecommendation"



def advice_azure(base_url: str) -> str:
    """What to check when Azure's metadata service fails (the URL in use, named)."""
    return (
        f"check that this VM runs on Azure and that nothing blocks {base_url} "
        "(--imds-url / SPOTWATCH_IMDS_URL), or set --cloud; spotwatch keeps polling"
    )



@dataclass(frozen=True)
class Event:
    event_id: str
    event_type: str
    resources: tuple[str, ...]
    status: str
    not_before: str
    source: str = ""  # EventSource: Platform or User
    duration: int = -1  # DurationInSeconds: -1 unknown, 0 no impact


@dataclass(frozen=True)
class Events:
    """One answer of the service, with the name of this VM it was read for and the
    api-version that answered (an approval is posted with the same)."""

    vm_name: str
    incarnation: int
    events: tuple[Event, ...]
    api_version: str = EVENTS_API


# -- pure parsing --------------------------------------------------------------------


def parse_events(body: bytes) -> tuple[int, tuple[Event, ...], str]:
    """(DocumentIncarnation, events, what was odd) from a scheduledevents answer.

    Raises ValueError when the body is not a JSON object; odd events are skipped
    and named in the third element.
    """
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    raw_inc = doc.get("DocumentIncarnation", 0)
    incarnation = raw_inc if isinstance(raw_inc, int) and not isinstance(raw_inc, bool) else 0
    raw_events = doc.get("Events", [])
    if not isinstance(raw_events, list):
        raise ValueError("Events is not a list")
    found: list[Event] = []
    odd: list[str] = []
    for item in raw_events:
        if not isinstance(item, dict) or not isinstance(item.get("EventId"), str):
            odd.append(f"event without an EventId: {str(item)[:80]}")
            continue
        resources = item.get("Resources")
        names = (
            tuple(r for r in resources if isinstance(r, str)) if isinstance(resources, list) else ()
        )
        duration = item.get("DurationInSeconds")
        found.append(
            Event(
                event_id=item["EventId"],
                event_type=str(item.get("EventType", "")),
                resources=names,
                status=str(item.get("EventStatus", "")),
                not_before=str(item.get("NotBefore") or ""),
                source=str(item.get("EventSource") or ""),
                duration=duration
                if isinstance(duration, int) and not isinstance(duration, bool)
                else -1,
            )
        )
    return incarnation, tuple(found), "; ".join(odd)


def parse_not_before(raw: str) -> float | None:
    """RFC 1123 (``Mon, 19 Sep 2016 18:29:47 GMT``) -> epoch seconds; None if unusable."""
    if not raw.strip():
        return None
    try:
        moment = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    return moment.timestamp()


def ours(event: Event, vm_name: str) -> bool:
    """Whether ``event`` names this VM (names compare without case, as Azure's do)."""
    wanted = vm_name.strip().lower()
    return bool(wanted) and any(r.strip().lower() == wanted for r in event.resources)


def kind_and_action(event: Event, watch: frozenset[str]) -> tuple[str, str] | None:
    """What notice ``event`` is under ``watch``, or None when it is not watched."""
    if event.event_type in ENDING:
        return ENDING[event.event_type]
    if event.event_type in MAINTENANCE and "maintenance" in watch:
        return SCHEDULED_MAINTENANCE, MAINTENANCE[event.event_type]
    if event.event_type == REBALANCE and "rebalance" in watch:
        return REBALANCE_RECOMMENDATION, REBALANCE_ACTION
    return None


def fallback_version(asked: str, status: int, body: bytes = b"") -> str | None:
    """The api-version to ask instead when ``asked`` was refused with ``status``:
    2020-07-01 after a 400 or 404 to the newer one; None when there is none (or the
    400 is about the Metadata header, a fault of its own). Pure."""
    if asked == EVENTS_API_FALLBACK or status not in (400, 404):
        return None
    if status == 400 and b"metadata header" in body.lower():
        return None
    return EVENTS_API_FALLBACK


def event_env(event: Event) -> tuple[tuple[str, str], ...]:
    """The hook variables an event adds (SPOTWATCH_AZURE_*). Pure."""
    return (
        (EVENT_ID_VARIABLE, event.event_id),
        ("SPOTWATCH_AZURE_EVENT_TYPE", event.event_type),
        ("SPOTWATCH_AZURE_EVENT_SOURCE", event.source),
        ("SPOTWATCH_AZURE_DURATION", str(event.duration)),
        ("SPOTWATCH_AZURE_EVENT_STATUS", event.status),
    )


def event_notice(event: Event, seen_at: float, watch: frozenset[str]) -> Notice | None:
    """``event`` as a Notice (deadline: NotBefore, else 30 s from seen). Pure."""
    what = kind_and_action(event, watch)
    if what is None:
        return None
    kind, action = what
    parsed = parse_not_before(event.not_before)
    problem = ""
    if kind == REBALANCE_RECOMMENDATION:
        # Advisory, nothing ends at NotBefore: two minutes, as a rebalance on AWS.
        deadline = seen_at + REBALANCE_LEAD_SECONDS
    elif parsed is not None and parsed > seen_at + 1.0:
        deadline = parsed
    else:
        deadline = seen_at + DEFAULT_LEAD_SECONDS
        if event.not_before.strip():
            why = "unusable" if parsed is None else "already past"
            problem = f"NotBefore {event.not_before!r} {why}; allowing {DEFAULT_LEAD_SECONDS:g} s"
    return Notice(
        kind=kind,
        action=action,
        raw_time=event.not_before,
        time=parsed,
        deadline=deadline,
        id=notice_id(kind, action, "azure:" + event.event_id),
        source=SOURCE,
        problem=problem,
        ends_instance=action == "terminate",
        env=event_env(event),
    )


def parse_identity(body: bytes) -> tuple[str, Identity]:
    """(VM name, Identity) from the compute metadata; ValueError if it is not JSON."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")

    def text(key: str) -> str:
        value = doc.get(key)
        return value.strip() if isinstance(value, str) and value.strip() else "unknown"

    zone = text("zone")
    location = text("location")
    return text("name"), Identity(
        instance_id=text("vmId"),
        instance_type=text("vmSize"),
        region=location,
        # Azure zones are numbers ("1"); without one the VM is regional.
        availability_zone=f"{location}-{zone}" if zone != "unknown" else "unknown",
        account_id=text("subscriptionId"),
    )


# -- I/O ---------------------------------------------------------------------------


class AzureMetadata:
    def __init__(self, base_url: str, events_api: str = EVENTS_API) -> None:
        self._base = base_url.rstrip("/")
        self._advice = advice_azure(self._base)
        self._session: metadata_http.Session = metadata_http.new_session()
        # The Scheduled Events api-version in use: the newest until refused, then kept.
        # Once a version has answered, a later 400 or 404 is a fault, not an old service.
        self.events_api = events_api
        self._version_settled = False
        self._log = get_logger(cloud="azure")

    def close(self) -> None:
        self._session.close()

    def _call(self, method: str, path: str, api: str, *, read_timeout: float,
              data: bytes | None = None) -> bytes:  # fmt: skip
        answer = self._ask(method, path, api, read_timeout=read_timeout, data=data)
        # Only a read finds the version out; an approval uses the one the read found.
        asking = method == "GET" and path == EVENTS_PATH and not self._version_settled
        if asking and not 200 <= answer.status < 300:
            instead = fallback_version(api, answer.status, answer.body)
            if instead is not None and api == self.events_api:
                self._log.warning(
                    "azure.api_fallback",
                    refused=api,
                    status=answer.status,
                    using=instead,
                    note="this service predates api-version "
                    f"{api} (no SpotRebalanceRecommendation); asked once, "
                    f"{instead} from now on",
                )
                self.events_api = instead
                answer = self._ask(method, path, instead, read_timeout=read_timeout, data=data)
        if path == EVENTS_PATH and 200 <= answer.status < 300:
            self._version_settled = True
        return self._body(f"{method} {path}", answer)

    def _ask(self, method: str, path: str, api: str, *, read_timeout: float,
             data: bytes | None) -> metadata_http.Answer:  # fmt: skip
        what = f"{method} {path}"
        headers = {HEADER: "true"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            answer = metadata_http.request(
                self._session,
                method,
                f"{self._base}{path}?api-version={api}",
                headers=headers,
                timeout=(CONNECT_TIMEOUT, read_timeout),
                what=what,
                data=data,
            )
        except ImdsError as err:
            if err.kind == "unreachable":
                raise ImdsError(err.kind, err.detail, self._advice) from None
            raise
        return answer

    def _body(self, what: str, answer: metadata_http.Answer) -> bytes:
        if 200 <= answer.status < 300:
            return answer.body
        if answer.status >= 500 or answer.status == 429:
            status_error = metadata_http.status_error(what, answer.status)
            raise ImdsError(status_error.kind, status_error.detail, self._advice)
        if answer.status == 400:
            raise ImdsError(
                "bad-status",
                f"{what} answered 400 (a missing 'Metadata: true' header, or not Azure)",
                self._advice,
            )
        raise ImdsError("bad-status", f"{what} answered {answer.status}", self._advice)

    def events(self, *, read_timeout: float = READ_TIMEOUT) -> bytes:
        return self._call("GET", EVENTS_PATH, self.events_api, read_timeout=read_timeout)

    def compute(self) -> bytes:
        return self._call("GET", COMPUTE_PATH, COMPUTE_API, read_timeout=2.0)

    def approve(self, event_id: str) -> None:
        body = json.dumps({"StartRequests": [{"EventId": event_id}]}).encode()
        self._call("POST", EVENTS_PATH, self.events_api, read_timeout=READ_TIMEOUT, data=body)


def read_identity_named(client: AzureMetadata) -> tuple[str, Identity]:
    body = client.compute()
    try:
        return parse_identity(body)
    except ValueError as err:
        raise ImdsError("bad-body", f"GET {COMPUTE_PATH}: {err}", ADVICE_BAD_STATUS) from None


def read_identity(base_url: str) -> Identity:
    client = AzureMetadata(base_url)
    try:
        return read_identity_named(client)[1]
    finally:
        client.close()


class EventsStep:
    """One feed step: this VM's name (once), then one poll of the scheduled events."""

    def __init__(self, client: AzureMetadata, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._client = client
        self._interval = interval
        self._clock = clock
        self._vm_name = ""
        self._answered = False
        self._starting_logged = False
        self._odd_logged = False
        self._log = get_logger(cloud="azure")

    def __call__(self) -> tuple[Events, float]:
        name_error: ImdsError | None = None
        if not self._vm_name:
            try:
                self._vm_name = read_identity_named(self._client)[0]
            except ImdsError as err:
                # Poll the events anyway (the first call turns the service on); without
                # the name none can be ours, so the fault is raised below.
                name_error = err
        started = self._clock()
        if not self._answered and not self._starting_logged:
            self._starting_logged = True
            self._log.info(
                "azure.events_starting",
                note="the first call turns Scheduled Events on and may take up to two "
                "minutes to answer; not a fault",
            )
        body = self._client.events(
            read_timeout=READ_TIMEOUT if self._answered else FIRST_ANSWER_TIMEOUT
        )
        if not self._answered:
            self._answered = True
            self._log.info("azure.events_started", seconds=round(self._clock() - started, 2))
        try:
            incarnation, events, odd = parse_events(body)
        except ValueError as err:
            raise ImdsError(
                "bad-body", f"GET {EVENTS_PATH}: {err}", "a garbled answer; spotwatch keeps polling"
            ) from None
        if odd and not self._odd_logged:
            self._odd_logged = True
            self._log.warning("azure.events_odd", detail=odd)
        if name_error is not None:
            raise name_error
        pause = max(0.0, self._interval - (self._clock() - started))
        return Events(self._vm_name, incarnation, events, self._client.events_api), pause


class EventsMonitor(FeedMonitor[Events]):
    """This VM's watched events of the types in ``types``, as notices; never blocks."""

    def __init__(
        self,
        name: str,
        feed: Feed[Events],
        types: Sequence[str],
        watch: frozenset[str],
        registry: dict[str, str],
        wall_clock: Callable[[], float] = time.time,
        *,
        reports_faults: bool = True,
    ) -> None:
        super().__init__(name, feed)
        # Monitors sharing a feed: one reports its faults, so each is logged once.
        self._reports_faults = reports_faults
        self._types = frozenset(types)
        self._watch = watch
        self._registry = registry  # notice id -> EventId, for the approver
        self._wall = wall_clock
        self._seen: dict[str, float] = {}
        self._given: set[str] = set()

    def check(self) -> Notice | None:
        doc, error, _ = self.latest()
        if not self._reports_faults:
            error = None
        if doc is None:
            if error is not None:
                raise error
            return None
        notices: list[Notice] = []
        now = self._wall()
        for event in doc.events:
            if event.event_type not in self._types or not ours(event, doc.vm_name):
                continue
            seen = self._seen.setdefault(event.event_id, now)
            notice = event_notice(event, seen, self._watch)
            if notice is not None:
                self._registry[notice.id] = event.event_id
                notices.append(notice)
        if not notices:
            if error is not None:
                raise error
            return None
        # One per poll: one not given before (so a second event is not hidden
        # behind a handled first), else the most urgent.
        notices.sort(key=lambda n: n.deadline)
        for notice in notices:
            if notice.id not in self._given:
                self._given.add(notice.id)
                return notice
        return notices[0]


def monitors(
    base_url: str,
    watch: frozenset[str],
    interval: float,
    registry: dict[str, str],
    *,
    wake: Callable[[], None] = lambda: None,
) -> tuple[list[EventsMonitor], Feed[Events]]:
    """The Azure monitors (evictions; maintenance; rebalance) over one started feed."""
    feed: Feed[Events] = Feed(
        "azure-scheduledevents", EventsStep(AzureMetadata(base_url), interval), wake=wake
    )
    found = [
        EventsMonitor(SPOT_INTERRUPTION, feed, ["Preempt"], watch, registry),
        EventsMonitor(
            SCHEDULED_MAINTENANCE,
            feed,
            ["Terminate", *MAINTENANCE],
            watch,
            registry,
            reports_faults=False,
        ),
    ]
    if "rebalance" in watch:
        found.append(
            EventsMonitor(
                REBALANCE_RECOMMENDATION, feed, [REBALANCE], watch, registry, reports_faults=False
            )
        )
    feed.start()
    return found, feed


class Approver(FollowUpBase):
    """A follow-up (see INTERFACES item 2): approve an event once its hooks are done.

    ``registry`` maps notice ids to EventIds (filled by the monitors, which only
    register this VM's watched events: others are never approved). A notice
    resumed from the journal after a restart is found again in the feed's latest
    answer. The POST runs on a thread and is retried until the notice's deadline.
    """

    def __init__(
        self,
        base_url: str,
        registry: dict[str, str],
        feed: Feed[Events] | None = None,
        watch: frozenset[str] = frozenset(),
        *,
        enabled: bool = True,
        wall_clock: Callable[[], float] = time.time,
        retry_seconds: float = APPROVE_RETRY_SECONDS,
    ) -> None:
        self._base = base_url
        self._registry = registry
        self._feed = feed
        self._watch = watch
        self.enabled = enabled
        self._wall = wall_clock
        self._retry = retry_seconds
        self._threads: list[threading.Thread] = []
        self._log = get_logger(cloud="azure")

    def applies(self, notice: Notice) -> bool:
        return self.enabled and self._event_id(notice) is not None

    @staticmethod
    def _approvable(notice: Notice) -> bool:
        # Acknowledging a rebalance recommendation has no effect (Microsoft's docs).
        return notice.kind != REBALANCE_RECOMMENDATION

    def started(self, notice: Notice) -> None:
        pass

    def tick(self, notice: Notice) -> None:
        pass

    def finished(self, notice: Notice, results: Sequence[Any]) -> None:
        event_id = self._event_id(notice)
        if not self.enabled or event_id is None:
            return
        thread = threading.Thread(
            target=self._approve, args=(event_id, notice), name="azure-approve", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def join(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def _event_id(self, notice: Notice) -> str | None:
        if not self._approvable(notice):
            return None
        found = self._registry.get(notice.id) or dict(notice.env).get(EVENT_ID_VARIABLE)
        if found is not None or self._feed is None:
            return found
        doc = self._feed.snapshot()[0]
        if doc is None:
            return None
        for event in doc.events:
            if not ours(event, doc.vm_name):
                continue
            what = kind_and_action(event, self._watch | {"maintenance"})
            if what and notice_id(what[0], what[1], "azure:" + event.event_id) == notice.id:
                return event.event_id
        return None

    def _approve(self, event_id: str, notice: Notice) -> None:
        doc = self._feed.snapshot()[0] if self._feed is not None else None
        # Posted with the api-version the events were read with.
        client = AzureMetadata(self._base, doc.api_version if doc is not None else EVENTS_API)
        failed_logged = False
        attempts = 0
        try:
            while True:
                attempts += 1
                try:
                    client.approve(event_id)
                except ImdsError as err:
                    if not failed_logged:
                        failed_logged = True
                        self._log.warning(
                            "azure.approve_failed",
                            event_id=event_id,
                            notice_id=notice.id,
                            kind=err.kind,
                            detail=err.detail,
                            note="retried until the deadline; the platform starts the event "
                            "at NotBefore anyway",
                        )
                    if self._wall() + self._retry >= notice.deadline:
                        self._log.warning(
                            "azure.approve_gave_up", event_id=event_id, attempts=attempts
                        )
                        return
                    time.sleep(self._retry)
                    continue
                self._log.info(
                    "azure.approved", event_id=event_id, notice_id=notice.id, attempts=attempts
                )
                return
        finally:
            client.close()


# -- the adapter ---------------------------------------------------------------------


class AzureCloud(Cloud):
    """Azure: evictions and maintenance from Scheduled Events, each approved after its hooks."""

    name = "azure"
    title = "Azure"
    sources = ("spot", "rebalance", "maintenance", "shutdown")
    drill_events = ("spot", "rebalance", "maintenance", "shutdown")
    default_interval = 1.0  # Microsoft recommends polling Scheduled Events every second

    def from_dmi(self, read: Callable[[str], str]) -> str | None:
        vendor = read("sys_vendor")
        if vendor == "Microsoft Corporation" and read("chassis_asset_tag") == AZURE_ASSET_TAG:
            return f"DMI sys_vendor {vendor!r} with Azure's asset tag"
        return None

    def probe(self, base_url: str) -> str | None:
        from spotwatch.clouds.detect import ask

        url = f"{base_url}{COMPUTE_PATH}?api-version={COMPUTE_API}"
        answer = ask("GET", url, {HEADER: "true"})
        if answer is not None and answer.status == 200 and b"vmId" in answer.body:
            return f"{base_url} answered the Azure compute metadata"
        return None

    def leads(self, config: RunConfig) -> list[tuple[float, str]]:
        if not config.sources:
            return []
        return [(DEFAULT_LEAD_SECONDS, "an Azure eviction (as little as 30 s)")]

    def build(self, config: RunConfig, *, interval: float, stop: Stopper) -> CloudSources:
        base_url = config.imds_url
        chosen = frozenset(config.sources)
        registry: dict[str, str] = {}
        found, feed = monitors(base_url, chosen, interval, registry, wake=stop.wake)
        approver = Approver(base_url, registry, feed, chosen, enabled=not config.no_approve)
        return CloudSources(
            monitors=list(found),
            read_identity=lambda: read_identity(base_url),
            followups=[approver],
            feeds=[feed],
        )

    def serve(self, request: SimRequest) -> AzureSimulator:
        from spotwatch import imdssim_azure

        return imdssim_azure.serve(request.port, request.notice_in, "Preempt", request.lead)

    def drill(self, rehearsal: Rehearsal) -> DrillSim:
        """A Preempt (or, for maintenance, Terminate) event whose NotBefore is --lead
        after it appears; for rebalance a SpotRebalanceRecommendation, whose deadline
        is spotwatch's own two minutes from when it is seen (nothing ends)."""
        from spotwatch.imdssim_azure import AzureSimulator, rfc1123

        sim = AzureSimulator()
        kind = _drill_kind(rehearsal)

        def schedule(appear_at: float) -> tuple[float, str]:
            sim.add_event(kind, at=appear_at, lead=rehearsal.lead)
            lead = REBALANCE_LEAD_SECONDS if kind == REBALANCE else rehearsal.lead
            return appear_at + lead, rfc1123(appear_at + lead)

        return DrillSim(sim, schedule)

    def describe_drill(self, rehearsal: Rehearsal, notice_time: str) -> tuple[str, str]:
        kind = _drill_kind(rehearsal)
        if kind == REBALANCE:
            return "Azure rebalance recommendation", f"{kind} event (advisory: nothing ends)"
        return f"Azure {kind} event", f"{kind} event, NotBefore {notice_time}"


def _drill_kind(rehearsal: Rehearsal) -> str:
    if rehearsal.event == "rebalance":
        return REBALANCE
    return "Terminate" if rehearsal.event == "maintenance" else "Preempt"


ADAPTER = AzureCloud()
