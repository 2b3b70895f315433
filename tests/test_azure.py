"""Azure Scheduled Events: the simulator's protocol, parsing, monitors and approval."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator

import pytest
import requests

from spotwatch.clouds import azure
from spotwatch.imds import ImdsError
from spotwatch.imdssim_azure import EVENTS_PATH, AzureSimulator, rfc1123
from spotwatch.notice import SPOT_INTERRUPTION

API = {"api-version": "2020-07-01"}
HDR = {"Metadata": "true"}


@pytest.fixture
def sim() -> Iterator[AzureSimulator]:
    with AzureSimulator() as s:
        yield s


def _events(sim: AzureSimulator) -> dict[str, object]:
    resp = requests.get(sim.url + EVENTS_PATH, params=API, headers=HDR, timeout=5)
    assert resp.status_code == 200
    doc = resp.json()
    assert isinstance(doc, dict)
    return doc


# -- the simulator ----------------------------------------------------------------------


def test_sim_requires_header_and_tracks_incarnation(sim: AzureSimulator) -> None:
    assert requests.get(sim.url + EVENTS_PATH, params=API, timeout=5).status_code == 400
    first = _events(sim)
    assert first["Events"] == []
    mine = sim.add_event("Preempt")
    sim.add_event("Freeze", resources=["other-vm"])
    second = _events(sim)
    assert second["DocumentIncarnation"] > first["DocumentIncarnation"]  # type: ignore[operator]
    events = second["Events"]
    assert isinstance(events, list)
    assert [(e["EventType"], e["Resources"]) for e in events] == [
        ("Preempt", ["spot-vm-1"]),
        ("Freeze", ["other-vm"]),
    ]
    body = json.dumps({"StartRequests": [{"EventId": mine}]})
    posted = requests.post(sim.url + EVENTS_PATH, params=API, headers=HDR, data=body, timeout=5)
    assert posted.status_code == 200
    assert [eid for _, eid in sim.approvals] == [mine]
    started = _events(sim)["Events"]
    assert isinstance(started, list)
    assert (started[0]["EventStatus"], started[0]["NotBefore"]) == ("Started", "")


def test_sim_slow_first_answer() -> None:
    with AzureSimulator(first_answer_delay=0.8) as sim:
        started = time.monotonic()
        _events(sim)
        assert time.monotonic() - started >= 0.7
        started = time.monotonic()
        _events(sim)
        assert time.monotonic() - started < 0.5


# -- pure parsing ----------------------------------------------------------------------


def _event(event_type: str = "Preempt", not_before: str = "", resources: tuple[str, ...] = ("vm",)
           ) -> azure.Event:  # fmt: skip
    return azure.Event("E-1", event_type, resources, "Scheduled", not_before)


def test_parse_events_skips_odd_entries() -> None:
    body = json.dumps(
        {
            "DocumentIncarnation": 4,
            "Events": [
                {"EventId": "A", "EventType": "Preempt", "Resources": ["vm"], "NotBefore": ""},
                {"EventType": "Reboot"},
            ],
        }
    ).encode()
    incarnation, events, odd = azure.parse_events(body)
    assert incarnation == 4 and [e.event_id for e in events] == ["A"]
    assert "without an EventId" in odd
    with pytest.raises(ValueError):
        azure.parse_events(b'{"Events": [')


def test_deadline_from_not_before_or_thirty_seconds() -> None:
    now = 1_800_000_000.0
    ahead = azure.event_notice(_event(not_before=rfc1123(now + 90)), now, frozenset())
    assert ahead is not None and ahead.deadline == pytest.approx(now + 90, abs=1)
    empty = azure.event_notice(_event(), now, frozenset())
    assert empty is not None and empty.deadline == now + 30 and not empty.problem
    past = azure.event_notice(_event(not_before=rfc1123(now - 90)), now, frozenset())
    assert past is not None and past.deadline == now + 30 and "already past" in past.problem
    junk = azure.event_notice(_event(not_before="soon"), now, frozenset())
    assert junk is not None and junk.deadline == now + 30 and "unusable" in junk.problem


@pytest.mark.parametrize(
    ("event_type", "watch", "expected"),
    [
        ("Preempt", frozenset(), (SPOT_INTERRUPTION, "terminate")),
        ("Terminate", frozenset(), ("scheduled-maintenance", "terminate")),
        ("Reboot", frozenset(), None),
        ("Reboot", frozenset({"maintenance"}), ("scheduled-maintenance", "reboot")),
        ("Redeploy", frozenset({"maintenance"}), ("scheduled-maintenance", "redeploy")),
        ("Freeze", frozenset({"maintenance"}), ("scheduled-maintenance", "freeze")),
        ("Unknown", frozenset({"maintenance"}), None),
    ],
)
def test_event_mapping(event_type: str, watch: frozenset[str], expected: object) -> None:
    assert azure.kind_and_action(_event(event_type), watch) == expected


def test_notice_id_stable_per_event_id() -> None:
    a = azure.event_notice(_event(not_before=""), 1.0, frozenset())
    b = azure.event_notice(_event(not_before=rfc1123(2_000_000_000)), 500.0, frozenset())
    assert a is not None and b is not None and a.id == b.id


def test_ours_matches_this_vm_only() -> None:
    assert azure.ours(_event(resources=("VM", "other")), "vm")
    assert not azure.ours(_event(resources=("other",)), "vm")
    assert not azure.ours(_event(resources=("vm",)), "")


# -- monitors and the approver over HTTP ----------------------------------------------


def _wait_notice(monitor: azure.EventsMonitor, timeout: float = 5.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            notice = monitor.check()
        except ImdsError:
            notice = None
        if notice is not None:
            return notice
        time.sleep(0.05)
    return None


def test_only_this_vms_events_and_approval_names_the_event(sim: AzureSimulator) -> None:
    registry: dict[str, str] = {}
    monitors, feed = azure.monitors(sim.url, frozenset(), 0.1, registry)
    try:
        spot, maintenance = monitors
        sim.add_event("Preempt", resources=["another-vm"])
        sim.add_event("Terminate", resources=["another-vm"])
        # Two requests after the events: the feed has read them and asked again.
        polls = sim.arrived(EVENTS_PATH)
        assert sim.wait_for(lambda: sim.arrived(EVENTS_PATH) >= polls + 2, 5)
        assert spot.check() is None and maintenance.check() is None
        mine = sim.add_event("Preempt", lead=60)
        notice = _wait_notice(spot)
        assert notice is not None
        approver = azure.Approver(sim.url, registry, feed)
        assert approver.applies(notice)  # type: ignore[arg-type]
        approver.finished(notice, [])  # type: ignore[arg-type]
        approver.join(5)
        assert [eid for _, eid in sim.approvals] == [mine]
    finally:
        feed.close()


def test_approval_retried_until_it_goes_through(sim: AzureSimulator) -> None:
    registry: dict[str, str] = {}
    monitors, feed = azure.monitors(sim.url, frozenset(), 0.1, registry)
    try:
        mine = sim.add_event("Preempt", lead=60)
        notice = _wait_notice(monitors[0])
        assert notice is not None
        sim.inject("503", count=2, path=EVENTS_PATH)
        approver = azure.Approver(sim.url, registry, feed, retry_seconds=0.1)
        approver.finished(notice, [])  # type: ignore[arg-type]
        approver.join(5)
        assert [eid for _, eid in sim.approvals] == [mine]
    finally:
        feed.close()


def test_no_approval_when_turned_off_or_not_ours(sim: AzureSimulator) -> None:
    registry: dict[str, str] = {}
    approver = azure.Approver(sim.url, registry, enabled=False)
    notice = azure.event_notice(_event(), 1.0, frozenset())
    assert notice is not None
    registry[notice.id] = "E-1"
    assert not approver.applies(notice)
    approver.finished(notice, [])
    # A notice no Azure monitor made (no EventId in its env, none registered).
    foreign = dataclasses.replace(notice, env=(), source="spot/instance-action")
    stranger = azure.Approver(sim.url, {})
    assert not stranger.applies(foreign)
    stranger.finished(foreign, [])
    time.sleep(0.2)
    assert sim.approvals == []


def test_identity(sim: AzureSimulator) -> None:
    identity = azure.read_identity(sim.url)
    assert identity.instance_id == "02aab8a4-74ef-476e-8182-f6d2ba4166a6"
    assert identity.instance_type == "Standard_D2s_v3"
    assert (identity.region, identity.availability_zone) == ("westeurope", "westeurope-1")


def test_faults_surface_and_clear(sim: AzureSimulator) -> None:
    registry: dict[str, str] = {}
    monitors, feed = azure.monitors(sim.url, frozenset(), 0.1, registry)
    try:
        sim.inject("garbled", count=None, path=EVENTS_PATH)
        deadline = time.monotonic() + 5
        kind = None
        while kind is None and time.monotonic() < deadline:
            try:
                monitors[0].check()
            except ImdsError as err:
                kind = err.kind
            time.sleep(0.05)
        assert kind == "bad-body"
        sim.clear_faults()
        sim.add_event("Preempt")
        assert _wait_notice(monitors[0]) is not None
    finally:
        feed.close()


def test_events_are_polled_even_while_this_vms_name_cannot_be_read(sim: AzureSimulator) -> None:
    from spotwatch.imdssim_azure import COMPUTE_PATH

    sim.inject("500", count=None, path=COMPUTE_PATH)
    registry: dict[str, str] = {}
    monitors, feed = azure.monitors(sim.url, frozenset(), 0.1, registry)
    try:
        sim.add_event("Preempt")
        assert sim.wait_for(lambda: sim.arrived(EVENTS_PATH) >= 1, 5)  # the service turns on
        time.sleep(0.5)
        with pytest.raises(ImdsError):  # nothing is ours without the name: a fault, logged
            monitors[0].check()
        sim.clear_faults()
        assert _wait_notice(monitors[0]) is not None
    finally:
        feed.close()


# -- api-version 2024-07-09: the rebalance event, EventSource, DurationInSeconds ---------

NEW = {"api-version": "2024-07-09"}


def test_sim_speaks_both_versions_and_refuses_others() -> None:
    with AzureSimulator() as sim:
        sim.add_event("SpotRebalanceRecommendation", source="Platform", duration=0)
        sim.add_event("Preempt", source="User", duration=30)
        new = requests.get(sim.url + EVENTS_PATH, params=NEW, headers=HDR, timeout=5).json()
        assert [(e["EventType"], e["EventSource"], e["DurationInSeconds"])
                for e in new["Events"]] == [
            ("SpotRebalanceRecommendation", "Platform", 0), ("Preempt", "User", 30),
        ]  # fmt: skip
        # 2020-07-01 does not know the rebalance event.
        assert [e["EventType"] for e in _events(sim)["Events"]] == ["Preempt"]  # type: ignore[union-attr]
        refused = requests.get(sim.url + EVENTS_PATH, params={"api-version": "2099-01-01"},
                               headers=HDR, timeout=5)  # fmt: skip
        assert refused.status_code == 400 and "api-version" in refused.json()["error"]
    with AzureSimulator(versions=("2020-07-01",), refuse_status=404) as old:
        got = requests.get(old.url + EVENTS_PATH, params=NEW, headers=HDR, timeout=5)
        assert got.status_code == 404
        assert _events(old)["Events"] == []


def test_parse_reads_event_source_and_duration() -> None:
    body = json.dumps({"DocumentIncarnation": 4, "Events": [
        {"EventId": "a", "EventType": "Reboot", "Resources": ["vm"], "EventStatus": "Started",
         "NotBefore": "", "EventSource": "User", "DurationInSeconds": 0},
        {"EventId": "b", "EventType": "Freeze", "Resources": ["vm"], "EventStatus": "Scheduled",
         "NotBefore": "", "DurationInSeconds": "9"},
    ]}).encode()  # fmt: skip
    _, events, odd = azure.parse_events(body)
    assert odd == ""
    assert [(e.source, e.duration) for e in events] == [("User", 0), ("", -1)]
    env = dict(azure.event_env(events[0]))
    assert env["SPOTWATCH_AZURE_EVENT_SOURCE"] == "User"
    assert env["SPOTWATCH_AZURE_DURATION"] == "0"
    assert env["SPOTWATCH_AZURE_EVENT_STATUS"] == "Started"


@pytest.mark.parametrize(
    ("asked", "status", "body", "expected"),
    [
        ("2024-07-09", 404, b"", "2020-07-01"),
        ("2024-07-09", 400, b'{"error": "Bad request. api-version is invalid"}', "2020-07-01"),
        # Missing header: a fault of its own, not an old service.
        ("2024-07-09", 400, b'{"error": "Required metadata header not specified"}', None),
        ("2024-07-09", 503, b"", None),
        ("2020-07-01", 404, b"", None),
    ],
)
def test_fallback_version(asked: str, status: int, body: bytes, expected: str | None) -> None:
    assert azure.fallback_version(asked, status, body) == expected


def test_rebalance_recommendation_only_when_watched_and_two_minutes() -> None:
    event = azure.Event("r1", "SpotRebalanceRecommendation", ("vm",), "Scheduled",
                        rfc1123(1000.0 + 30), "Platform", -1)  # fmt: skip
    assert azure.event_notice(event, 1000.0, frozenset({"spot"})) is None
    notice = azure.event_notice(event, 1000.0, frozenset({"rebalance"}))
    assert notice is not None
    assert (notice.kind, notice.action, notice.ends_instance) == (
        "rebalance-recommendation", "rebalance", False,
    )  # fmt: skip
    assert notice.deadline == 1120.0


def test_client_falls_back_once_and_keeps_the_old_version() -> None:
    with AzureSimulator(versions=("2020-07-01",), refuse_status=404) as sim:
        client = azure.AzureMetadata(sim.url)
        try:
            for _ in range(3):
                client.events()
        finally:
            client.close()
        asked = [r.query["api-version"] for r in sim.requests(EVENTS_PATH, "GET")]
        assert asked == ["2024-07-09", "2020-07-01", "2020-07-01", "2020-07-01"]
        assert client.events_api == "2020-07-01"


def test_client_keeps_the_new_version_where_it_is_served(sim: AzureSimulator) -> None:
    client = azure.AzureMetadata(sim.url)
    try:
        client.events()
        client.events()
    finally:
        client.close()
    asked = [r.query["api-version"] for r in sim.requests(EVENTS_PATH, "GET")]
    assert asked == ["2024-07-09", "2024-07-09"]


def test_rebalance_is_not_approved(sim: AzureSimulator) -> None:
    registry: dict[str, str] = {}
    watch = frozenset({"spot", "rebalance"})
    monitors, feed = azure.monitors(sim.url, watch, 0.2, registry)
    try:
        sim.add_event("SpotRebalanceRecommendation")
        rebalance = next(m for m in monitors if m.name == "rebalance-recommendation")
        deadline = time.monotonic() + 10
        notice = None
        while notice is None and time.monotonic() < deadline:
            notice = rebalance.check()
            time.sleep(0.05)
        assert notice is not None
        approver = azure.Approver(sim.url, registry, feed, watch)
        assert not approver.applies(notice)
    finally:
        feed.close()


def test_a_404_after_the_new_version_answered_is_a_fault_not_a_fallback(
    sim: AzureSimulator,
) -> None:
    client = azure.AzureMetadata(sim.url)
    try:
        client.events()
        sim.versions = ("2020-07-01",)
        sim.refuse_status = 404
        with pytest.raises(ImdsError) as caught:
            client.events()
        assert "404" in caught.value.detail
        assert client.events_api == "2024-07-09"
    finally:
        client.close()
