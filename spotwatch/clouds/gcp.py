"""Google Compute Engine: preemption and host maintenance from the metadata server.

``instance/preempted`` and ``instance/maintenance-event`` are each read by a
``Feed`` thread with hanging GETs (``wait_for_change=true&last_etag=...``):
the server answers the moment the value changes, so a preemption is seen at
once rather than within one poll interval, and an idle VM costs one request
per ``HANG_SECONDS`` per value. The monitors only look at what the feeds last
read, so the watch loop never blocks (watchdog pings and SIGTERM stay prompt).

Every request carries ``Metadata-Flavor: Google``; an answer without it did not
come from Google's metadata server (a proxy, the wrong ``--imds-url``) and is a
fault that says so. 503 (maintenance on the metadata server) is retried.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlencode

from spotwatch.clouds import metadata_http
from spotwatch.clouds.base import Cloud, CloudSources, DrillSim, Rehearsal, SimRequest
from spotwatch.clouds.metadata_http import ADVICE_BAD_STATUS, ImdsError
from spotwatch.feed import Feed, FeedMonitor
from spotwatch.monitors import KEY_FORMAT
from spotwatch.notice import SCHEDULED_MAINTENANCE, SPOT_INTERRUPTION, Identity, Notice, notice_id

if TYPE_CHECKING:
    from spotwatch.config import RunConfig
    from spotwatch.imdssim_gcp import GceSimulator
    from spotwatch.stopper import Stopper

BASE_PATH = "/computeMetadata/v1/"
PREEMPTED = "instance/preempted"
MAINTENANCE_EVENT = "instance/maintenance-event"
FLAVOR_HEADER = "Metadata-Flavor"
FLAVOR = "Google"
SOURCE_PREEMPTED = "gce:" + PREEMPTED
SOURCE_MAINTENANCE = "gce:" + MAINTENANCE_EVENT

# Google gives about 30 s between preempted=TRUE and the stop, and about 60 s
# between maintenance-event and host maintenance.
PREEMPT_LEAD_SECONDS = 30.0
MAINTENANCE_LEAD_SECONDS = 60.0
# How long one hanging GET waits for a change. It runs on its own thread, so the
# watch loop pings the watchdog regardless; this bounds how long a connection that
# died silently goes unnoticed (the whole request's deadline is this plus
# READ_SLACK). Once the headers are in, the body gets metadata_http.BODY_SECONDS: a
# stalled or dripping answer is dropped and asked again within seconds.
HANG_SECONDS = 20
READ_SLACK = 3.0
CONNECT_TIMEOUT = 1.0

# The drill's name for instance/upcoming-maintenance, part of the maintenance source.
UPCOMING_EVENT = "upcoming-maintenance"

TERMINATING = ("TERMINATE_ON_HOST_MAINTENANCE", "SHUTDOWN_ON_HOST_MAINTENANCE")
MIGRATING = "MIGRATE_ON_HOST_MAINTENANCE"

ADVICE_NOT_GOOGLE = (
    "the answer lacks 'Metadata-Flavor: Google', so it did not come from Google's metadata "
    "server: check --imds-url / SPOTWATCH_IMDS_URL and any proxy in the way, or set --cloud "
    "to the cloud this VM runs on"
)
ADVICE_GCE_FORBIDDEN = (
    "the metadata server refused the request; something between spotwatch and it may strip "
    "the Metadata-Flavor header; spotwatch keeps trying"
)
ADVICE_GCE_SERVER = (
    "the metadata server answered with a server error (503 is normal during maintenance); "
    "spotwatch keeps trying"
)

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id(path: Path = _BOOT_ID) -> str:
    """This boot's id: a Spot VM that is stopped and started again is a new boot."""
    try:
        return path.read_text().strip() or "unknown-boot"
    except OSError:
        return "unknown-boot"


class GceMetadata:
    """GETs under ``/computeMetadata/v1/``, one session per instance (one per feed thread)."""

    def __init__(self, base_url: str) -> None:
        self._base = base_url.rstrip("/")
        self._session: metadata_http.Session = metadata_http.new_session()

    def close(self) -> None:
        self._session.close()

    def get(
        self, path: str, *, last_etag: str | None = None, hang: int | None = None
    ) -> tuple[str, str]:
        """The value at ``path`` and its ETag; with ``hang``, a hanging GET. ImdsError."""
        query: dict[str, str] = {}
        read_timeout = 2.0
        if hang is not None:
            query = {"wait_for_change": "true", "timeout_sec": str(hang)}
            if last_etag:
                query["last_etag"] = last_etag
            read_timeout = hang + READ_SLACK
        answer = self._ask(path, query, read_timeout)
        return self._text(path, answer), answer.headers.get("etag", "")

    def get_if_present(self, path: str, query: dict[str, str]) -> str | None:
        """The value at ``path`` asked with ``query`` (e.g. ``alt=json``); None on a 404."""
        # Read on the watch loop (about once a minute): a short wait, retried next tick.
        answer = self._ask(path, query, 1.0)
        return None if answer.status == 404 else self._text(path, answer)

    def _ask(self, path: str, query: dict[str, str], read_timeout: float) -> metadata_http.Answer:
        url = self._base + BASE_PATH + path + ("?" + urlencode(query) if query else "")
        what = f"GET {BASE_PATH}{path}"
        answer = metadata_http.request(
            self._session,
            "GET",
            url,
            headers={FLAVOR_HEADER: FLAVOR},
            timeout=(CONNECT_TIMEOUT, read_timeout),
            what=what,
        )
        if answer.headers.get(FLAVOR_HEADER.lower()) != FLAVOR:
            raise ImdsError(
                "not-google",
                f"{what} answered {answer.status} without '{FLAVOR_HEADER}: {FLAVOR}'",
                ADVICE_NOT_GOOGLE,
            )
        return answer

    def _text(self, path: str, answer: metadata_http.Answer) -> str:
        what = f"GET {BASE_PATH}{path}"
        if answer.status != 200:
            if answer.status == 403:
                raise ImdsError("bad-status", f"{what} answered 403", ADVICE_GCE_FORBIDDEN)
            if answer.status >= 500 or answer.status == 429:
                err = metadata_http.status_error(what, answer.status)
                raise ImdsError(err.kind, err.detail, ADVICE_GCE_SERVER)
            raise ImdsError("bad-status", f"{what} answered {answer.status}", ADVICE_BAD_STATUS)
        try:
            text = answer.body.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ImdsError(
                "bad-body", f"{what} sent a body that is not UTF-8", ADVICE_BAD_STATUS
            ) from None
        return text


class ValueStep:
    """One feed step for a value: a hanging GET from the last ETag.

    Value of the feed: (text, etag). Without an ETag (a server that sends none)
    it cannot hang, so it polls every ``poll_seconds`` instead.
    """

    def __init__(
        self, client: GceMetadata, path: str, *, hang: int = HANG_SECONDS, poll_seconds: float = 1.0
    ) -> None:
        self._client = client
        self._path = path
        self._hang = hang
        self._poll = poll_seconds
        self._etag: str | None = None

    def __call__(self) -> tuple[tuple[str, str], float]:
        # The first read does not hang: it learns the value and its ETag at once.
        hang = self._hang if self._etag else None
        text, etag = self._client.get(self._path, last_etag=self._etag, hang=hang)
        self._etag = etag or None
        return (text, etag), (0.0 if etag else self._poll)


def _seen_stamp(seen_at: float) -> str:
    return time.strftime(KEY_FORMAT, time.gmtime(seen_at))


def preemption_notice(value: str, etag: str, seen_at: float, boot: str) -> Notice | None:
    """``instance/preempted`` as a Notice when it reads TRUE; None otherwise. Pure."""
    if value.strip().upper() != "TRUE":
        return None
    return Notice(
        kind=SPOT_INTERRUPTION,
        action="terminate",
        raw_time=_seen_stamp(seen_at),
        time=None,
        deadline=seen_at + PREEMPT_LEAD_SECONDS,
        # Stable while the same answer stands (a restart mid-hooks), new on a later boot.
        id=notice_id(SPOT_INTERRUPTION, "terminate", f"gce:{boot}:{PREEMPTED}:{etag}"),
        source=SOURCE_PREEMPTED,
    )


def maintenance_notice(
    value: str, etag: str, seen_at: float, boot: str, *, migrate: bool
) -> Notice | None:
    """``instance/maintenance-event`` as a Notice: terminate always, migrate if asked. Pure."""
    text = value.strip().upper()
    if text in TERMINATING:
        action = "terminate"
    elif text == MIGRATING and migrate:
        action = "migrate"
    else:
        return None
    return Notice(
        kind=SCHEDULED_MAINTENANCE,
        action=action,
        raw_time=_seen_stamp(seen_at),
        time=None,
        deadline=seen_at + MAINTENANCE_LEAD_SECONDS,
        id=notice_id(
            SCHEDULED_MAINTENANCE, action, f"gce:{boot}:{MAINTENANCE_EVENT}:{etag}:{text}"
        ),
        source=SOURCE_MAINTENANCE,
        problem="" if text in (*TERMINATING, MIGRATING) else f"unknown value {value!r}",
        ends_instance=action == "terminate",
        env=(("SPOTWATCH_GCE_MAINTENANCE_EVENT", text),),
    )


class ValueMonitor(FeedMonitor[tuple[str, str]]):
    """A monitor over one value's feed: ``check`` never blocks; it raises the feed's last fault."""

    def __init__(
        self,
        name: str,
        feed: Feed[tuple[str, str]],
        parse: Callable[[str, str, float], Notice | None],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name, feed)
        self._parse = parse
        self._wall = wall_clock

    def check(self) -> Notice | None:
        value, error, changed_at = self.latest()
        if value is None:
            if error is not None:
                raise error
            return None
        notice = self._parse(value[0], value[1], changed_at or self._wall())
        if notice is None and error is not None:
            raise error
        # A notice already read stands even while the server fails: better the hooks.
        return notice


def monitors(
    base_url: str,
    watch: frozenset[str],
    *,
    wake: Callable[[], None] = lambda: None,
    boot: str | None = None,
    hang: int = HANG_SECONDS,
) -> list[ValueMonitor]:
    """The Google monitors for ``watch`` (their feeds started). ``spot``: preemption;
    host maintenance that ends the VM always; migration only with ``migrate``."""
    boot_key = boot if boot is not None else boot_id()
    found: list[ValueMonitor] = []
    if "spot" in watch:
        feed = Feed(
            "gce-preempted", ValueStep(GceMetadata(base_url), PREEMPTED, hang=hang), wake=wake
        )
        found.append(
            ValueMonitor(
                SPOT_INTERRUPTION,
                feed,
                lambda v, e, seen: preemption_notice(v, e, seen, boot_key),
            )
        )
    migrate = "migrate" in watch
    feed = Feed(
        "gce-maintenance-event",
        ValueStep(GceMetadata(base_url), MAINTENANCE_EVENT, hang=hang),
        wake=wake,
    )
    found.append(
        ValueMonitor(
            SCHEDULED_MAINTENANCE,
            feed,
            lambda v, e, seen: maintenance_notice(v, e, seen, boot_key, migrate=migrate),
        )
    )
    for monitor in found:
        monitor.start()
    return found


# -- identity ------------------------------------------------------------------------


def region_of(zone: str) -> str:
    """``us-central1-a`` -> ``us-central1``."""
    head, sep, _ = zone.rpartition("-")
    return head if sep and head else zone


def parse_identity(instance_id: str, machine_type: str, zone_path: str) -> Identity:
    """Identity from the metadata values (``projects/NUM/zones/ZONE`` forms). Pure."""
    zone = zone_path.rsplit("/", 1)[-1].strip()
    parts = zone_path.split("/")
    project = parts[1] if len(parts) >= 4 and parts[0] == "projects" else ""
    mtype = machine_type.rsplit("/", 1)[-1].strip()
    return Identity(
        instance_id=instance_id.strip() or "unknown",
        instance_type=mtype or "unknown",
        region=region_of(zone) if zone else "unknown",
        availability_zone=zone or "unknown",
        account_id=project or "unknown",
    )


def read_identity(base_url: str) -> Identity:
    """Read id, machine type and zone (name is logged); ImdsError when one fails."""
    client = GceMetadata(base_url)
    try:
        values = [
            client.get(p)[0] for p in ("instance/id", "instance/machine-type", "instance/zone")
        ]
    finally:
        client.close()
    return parse_identity(*values)


# -- the adapter ---------------------------------------------------------------------


class GoogleCloud(Cloud):
    """Google Compute Engine: preemption and host maintenance, from two hanging GETs."""

    name = "gcp"
    title = "Google"
    sources = ("spot", "maintenance", "migrate", "shutdown")
    drill_events = ("spot", "maintenance", UPCOMING_EVENT, "shutdown")
    # Google stops the VM about 30 s after the soft-off, whatever the unit says.
    shutdown_seconds = 30.0

    def from_dmi(self, read: Callable[[str], str]) -> str | None:
        vendor, product = read("sys_vendor"), read("product_name")
        if vendor == "Google" or product == "Google Compute Engine":
            return f"DMI sys_vendor {vendor!r}, product_name {product!r}"
        return None

    def probe(self, base_url: str) -> str | None:
        from spotwatch.clouds.detect import ask

        answer = ask("GET", base_url + BASE_PATH, {FLAVOR_HEADER: FLAVOR})
        if answer is not None and answer.headers.get("metadata-flavor") == FLAVOR:
            return f"{base_url} answered with Metadata-Flavor: Google"
        return None

    def leads(self, config: RunConfig) -> list[tuple[float, str]]:
        leads = []
        if "spot" in config.sources:
            leads.append((PREEMPT_LEAD_SECONDS, "a preemption on Google"))
        for source in ("maintenance", "migrate"):
            if source in config.sources:
                leads.append((MAINTENANCE_LEAD_SECONDS, f"{source} on Google"))
        return leads

    def build(self, config: RunConfig, *, interval: float, stop: Stopper) -> CloudSources:
        base_url = config.imds_url
        chosen = frozenset(config.sources)
        found: list[Any] = list(monitors(base_url, chosen, wake=stop.wake))
        if "maintenance" in chosen:
            from spotwatch.gce_upcoming import UpcomingMaintenanceMonitor

            found.append(
                UpcomingMaintenanceMonitor(
                    GceMetadata(base_url), lead=config.maintenance_lead, migrate="migrate" in chosen
                )
            )
        return CloudSources(
            monitors=found,
            read_identity=lambda: read_identity(base_url),
            feeds=found,
        )

    def serve(self, request: SimRequest) -> GceSimulator:
        from spotwatch import imdssim_gcp

        return imdssim_gcp.serve(request.port, request.notice_in, None, "")

    def drill_source(self, event: str) -> str:
        return "maintenance" if event == UPCOMING_EVENT else event

    def drill(self, rehearsal: Rehearsal) -> DrillSim:
        """preempted=TRUE (30 s to go, as Google gives); with ``--event maintenance``
        TERMINATE_ON_HOST_MAINTENANCE (60 s); with ``--event upcoming-maintenance`` a
        window announced from the start that opens --lead after the notice is due (the
        drill's --maintenance-lead is --lead)."""
        from spotwatch.imdssim_gcp import GceSimulator, upcoming_doc

        sim = GceSimulator()

        def schedule(appear_at: float) -> tuple[float, str]:
            if rehearsal.event == UPCOMING_EVENT:
                # Listed from the start, as Google announces days ahead. The window
                # starts on a whole second (as written), so the hooks are never due
                # before appear_at.
                doc = upcoming_doc(math.ceil(appear_at + rehearsal.lead))
                sim.set_upcoming(doc)
                return appear_at + rehearsal.lead, str(doc["window_start_time"])
            if rehearsal.event == "maintenance":
                sim.schedule(MAINTENANCE_EVENT, TERMINATING[0], appear_at)
                deadline = appear_at + MAINTENANCE_LEAD_SECONDS
            else:
                sim.schedule(PREEMPTED, "TRUE", appear_at)
                deadline = appear_at + PREEMPT_LEAD_SECONDS
            return deadline, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(deadline))

        return DrillSim(sim, schedule)

    def describe_drill(self, rehearsal: Rehearsal, notice_time: str) -> tuple[str, str]:
        if rehearsal.event == UPCOMING_EVENT:
            return (
                "Google upcoming maintenance",
                f"instance/upcoming-maintenance window_start_time {notice_time} "
                f"({rehearsal.lead:g} s lead)",
            )
        if rehearsal.event == "maintenance":
            what = f"{MAINTENANCE_EVENT} {TERMINATING[0]}"
            return "Google host maintenance", f"{what}, deadline {notice_time}"
        return "Google preemption", f"{PREEMPTED} TRUE, deadline {notice_time}"


ADAPTER = GoogleCloud()
