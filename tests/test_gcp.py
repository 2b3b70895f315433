"""Google metadata: the simulator's protocol, the client, the monitors, over real HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import requests

from spotwatch.clouds import gcp
from spotwatch.imds import ImdsError
from spotwatch.imdssim_gcp import BASE_PATH, MAINTENANCE_EVENT, PREEMPTED, GceSimulator
from spotwatch.notice import SPOT_INTERRUPTION

FLAVOR = {"Metadata-Flavor": "Google"}


@pytest.fixture
def sim() -> Iterator[GceSimulator]:
    with GceSimulator() as s:
        yield s


def _url(sim: GceSimulator, path: str) -> str:
    return sim.url + BASE_PATH + path


# -- the simulator speaks Google's protocol ------------------------------------------


def test_sim_requires_the_header_and_sends_it(sim: GceSimulator) -> None:
    refused = requests.get(_url(sim, PREEMPTED), timeout=5)
    assert refused.status_code == 403
    ok = requests.get(_url(sim, PREEMPTED), headers=FLAVOR, timeout=5)
    assert (ok.status_code, ok.text) == (200, "FALSE")
    assert ok.headers["Metadata-Flavor"] == "Google"
    assert ok.headers["ETag"]


def test_sim_hanging_get_answers_on_change_or_after_timeout(sim: GceSimulator) -> None:
    etag = requests.get(_url(sim, PREEMPTED), headers=FLAVOR, timeout=5).headers["ETag"]
    hang = {"wait_for_change": "true", "last_etag": etag, "timeout_sec": "1"}
    started = time.monotonic()
    same = requests.get(_url(sim, PREEMPTED), headers=FLAVOR, params=hang, timeout=5)
    assert 0.9 <= time.monotonic() - started < 3
    assert (same.text, same.headers["ETag"]) == ("FALSE", etag)
    # A stale ETag answers at once.
    stale = dict(hang, last_etag="nope", timeout_sec="30")
    started = time.monotonic()
    requests.get(_url(sim, PREEMPTED), headers=FLAVOR, params=stale, timeout=5)
    assert time.monotonic() - started < 1
    # A change answers a waiting request at once.
    threading.Timer(0.3, sim.set_value, (PREEMPTED, "TRUE")).start()
    started = time.monotonic()
    changed = requests.get(
        _url(sim, PREEMPTED), headers=FLAVOR, params=dict(hang, timeout_sec="30"), timeout=10
    )
    assert time.monotonic() - started < 3
    assert changed.text == "TRUE" and changed.headers["ETag"] != etag


def test_sim_serves_503(sim: GceSimulator) -> None:
    sim.inject("503")
    assert requests.get(_url(sim, PREEMPTED), headers=FLAVOR, timeout=5).status_code == 503
    assert requests.get(_url(sim, PREEMPTED), headers=FLAVOR, timeout=5).status_code == 200


# -- the client ---------------------------------------------------------------------


def test_client_faults_have_kinds(sim: GceSimulator) -> None:
    client = gcp.GceMetadata(sim.url)
    sim.inject("no-header")
    with pytest.raises(ImdsError) as missing:
        client.get(PREEMPTED)
    assert missing.value.kind == "not-google"
    assert "Metadata-Flavor" in missing.value.advice
    sim.inject("503")
    with pytest.raises(ImdsError) as busy:
        client.get(PREEMPTED)
    assert busy.value.kind == "server-error" and busy.value.retryable
    sim.inject("garbled")
    with pytest.raises(ImdsError) as garbled:
        client.get(PREEMPTED)
    assert garbled.value.kind == "bad-body"
    assert client.get(PREEMPTED)[0] == "FALSE"


def test_identity(sim: GceSimulator) -> None:
    identity = gcp.read_identity(sim.url)
    assert identity.instance_id == "4520031799277581759"
    assert identity.instance_type == "e2-standard-4"
    assert (identity.region, identity.availability_zone) == ("us-central1", "us-central1-a")
    assert identity.account_id == "123456789012"


# -- pure parsing ----------------------------------------------------------------------


def test_preemption_notice() -> None:
    assert gcp.preemption_notice("FALSE", "e1", 1000.0, "b") is None
    notice = gcp.preemption_notice("TRUE\n", "e2", 1000.0, "b")
    assert notice is not None
    assert (notice.kind, notice.action, notice.deadline) == (SPOT_INTERRUPTION, "terminate", 1030.0)
    # Stable for the same answer on the same boot (a restart), new on another boot.
    assert gcp.preemption_notice("TRUE", "e2", 2000.0, "b").id == notice.id  # type: ignore[union-attr]
    assert gcp.preemption_notice("TRUE", "e2", 1000.0, "c").id != notice.id  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "migrate", "action"),
    [
        ("NONE", True, None),
        ("TERMINATE_ON_HOST_MAINTENANCE", False, "terminate"),
        ("SHUTDOWN_ON_HOST_MAINTENANCE", False, "terminate"),
        ("MIGRATE_ON_HOST_MAINTENANCE", False, None),
        ("MIGRATE_ON_HOST_MAINTENANCE", True, "migrate"),
    ],
)
def test_maintenance_notice(value: str, migrate: bool, action: str | None) -> None:
    notice = gcp.maintenance_notice(value, "e", 50.0, "b", migrate=migrate)
    assert (notice.action if notice else None) == action
    if notice is not None:
        assert notice.kind == "scheduled-maintenance" and notice.deadline == 110.0


def test_region_of() -> None:
    assert gcp.region_of("europe-west4-b") == "europe-west4"
    assert gcp.region_of("weird") == "weird"


# -- monitors over feeds: detection is immediate --------------------------------------


def test_monitor_sees_preemption_at_once_and_wakes_the_loop(sim: GceSimulator) -> None:
    woken = threading.Event()
    monitors = gcp.monitors(sim.url, frozenset({"spot"}), wake=woken.set, boot="b", hang=30)
    try:
        spot = monitors[0]
        assert spot.name == SPOT_INTERRUPTION
        # Both feeds read their first value, then sit in hanging GETs.
        assert sim.wait_for(lambda: sim.arrived(BASE_PATH + PREEMPTED) >= 2, 5)
        assert sim.wait_for(lambda: sim.arrived(BASE_PATH + MAINTENANCE_EVENT) >= 2, 5)
        assert spot.check() is None
        woken.clear()
        changed = time.time()
        sim.set_value(PREEMPTED, "TRUE")
        assert woken.wait(5)
        assert spot.has_news()
        notice = spot.check()
        assert notice is not None and notice.action == "terminate"
        assert time.time() - changed < 1.0
        assert notice.deadline == pytest.approx(changed + 30, abs=1.0)
    finally:
        for monitor in monitors:
            monitor.close()


def test_monitor_raises_faults_then_recovers(sim: GceSimulator) -> None:
    sim.inject("503", count=None, path=BASE_PATH + MAINTENANCE_EVENT)
    monitors = gcp.monitors(sim.url, frozenset(), boot="b", hang=30)
    (maintenance,) = monitors
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                maintenance.check()
            except ImdsError as err:
                assert err.kind == "server-error"
                break
            assert time.monotonic() < deadline, "no fault surfaced"
            time.sleep(0.05)
        sim.clear_faults()
        sim.set_value(MAINTENANCE_EVENT, "TERMINATE_ON_HOST_MAINTENANCE")
        deadline = time.monotonic() + 10
        while True:
            try:
                notice = maintenance.check()
            except ImdsError:
                notice = None
            if notice is not None:
                break
            assert time.monotonic() < deadline, "never recovered"
            time.sleep(0.05)
        assert (notice.kind, notice.action) == ("scheduled-maintenance", "terminate")
    finally:
        maintenance.close()
