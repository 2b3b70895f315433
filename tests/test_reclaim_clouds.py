"""Alibaba Cloud and Tencent Cloud: the reclaim-time parsers (pure) and the metadata
client against their simulators on 127.0.0.1."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from spotwatch.clouds import alibaba, reclaim, tencent
from spotwatch.imds import ImdsError
from spotwatch.imdssim_reclaim import AlibabaSimulator, TencentSimulator, tencent_time
from spotwatch.notice import SPOT_INTERRUPTION

# 2018-08-18 12:05:33 in UTC+8 is 04:05:33 UTC.
TENCENT_EXAMPLE = datetime(2018, 8, 18, 4, 5, 33, tzinfo=timezone.utc).timestamp()


# -- parsers -----------------------------------------------------------------------


def test_tencent_time_is_read_in_utc_plus_8() -> None:
    assert tencent.parse_time("2018-08-18 12:05:33") == TENCENT_EXAMPLE
    assert tencent.parse_time("2018-08-18 12:05:33\n") == TENCENT_EXAMPLE
    # A time that names its zone is read in that zone, not shifted again.
    assert tencent.parse_time("2018-08-18T04:05:33Z") == TENCENT_EXAMPLE
    assert tencent.parse_time("2018-08-18 12:05:33+08:00") == TENCENT_EXAMPLE
    for bad in ("", "soon", "2018-08-18", "2018-02-31 12:00:00", "12:05:33"):
        assert tencent.parse_time(bad) is None, bad


def test_alibaba_time_is_utc() -> None:
    assert alibaba.CLOUD.parse_time("2018-08-18T04:05:33Z") == TENCENT_EXAMPLE
    assert alibaba.CLOUD.parse_time("garbage") is None


def test_notice_deadline_is_the_announced_time() -> None:
    seen = TENCENT_EXAMPLE - 100
    notice = reclaim.parse_notice(tencent.CLOUD, b"2018-08-18 12:05:33", seen)
    assert (notice.kind, notice.action) == (SPOT_INTERRUPTION, "terminate")
    assert notice.deadline == TENCENT_EXAMPLE
    assert notice.raw_time == "2018-08-18 12:05:33"  # as the cloud gave it
    assert notice.source == "tencent:spot/termination-time"
    assert notice.problem == ""
    # The same moment written by Alibaba (UTC) is the same notice id.
    ali = reclaim.parse_notice(alibaba.CLOUD, b"2018-08-18T04:05:33Z", seen)
    assert ali.id == notice.id and ali.source == "alibaba:instance/spot/termination-time"


def test_unusable_or_past_time_is_still_a_notice_with_the_clouds_lead() -> None:
    seen = 1_000_000.0
    odd = reclaim.parse_notice(alibaba.CLOUD, b"<html>oops</html>", seen)
    assert odd.deadline == seen + alibaba.LEAD_SECONDS
    assert "unusable reclaim time" in odd.problem and odd.time is None
    past = reclaim.parse_notice(tencent.CLOUD, b"1970-01-01 08:00:00", seen)
    assert past.time == 0.0
    assert past.deadline == seen + tencent.LEAD_SECONDS
    assert "already passed" in past.problem


# -- against the simulators ----------------------------------------------------------


@pytest.mark.slow
def test_tencent_simulator_serves_404_then_the_utc8_time() -> None:
    with TencentSimulator() as sim:
        monitor = reclaim.monitors(tencent.CLOUD, sim.url, ["spot"])[0]
        try:
            assert monitor.check() is None
            at = time.time() + 90
            written = sim.schedule_reclaim(reclaim_at=at)
            assert written == tencent_time(at)
            notice = None
            deadline = time.monotonic() + 5
            while notice is None and time.monotonic() < deadline:
                notice = monitor.check()
            assert notice is not None
            assert notice.deadline == pytest.approx(int(at), abs=0.01)
            assert notice.raw_time == written
            assert not any(r.method == "PUT" for r in sim.requests())  # no token on Tencent
        finally:
            monitor.close()
        identity = reclaim.read_identity(tencent.CLOUD, sim.url)
        assert identity.instance_id == "ins-sim0a1b2"
        assert (identity.region, identity.availability_zone) == ("ap-guangzhou", "ap-guangzhou-3")
        assert identity.instance_type == "S5.MEDIUM4"


@pytest.mark.slow
def test_alibaba_token_is_asked_once_sent_and_renewed_when_refused() -> None:
    with AlibabaSimulator(require_token=True) as sim:
        client = reclaim.ReclaimMetadata(alibaba.CLOUD, sim.url)
        monitor = reclaim.ReclaimMonitor(client)
        try:
            assert monitor.check() is None
            assert monitor.check() is None
            puts = sim.requests(alibaba.TOKEN_PATH, "PUT")
            assert len(puts) == 1
            assert puts[0].headers[alibaba.TOKEN_TTL_HEADER.lower()] == "21600"
            gets = sim.requests("/latest/meta-data/instance/spot/termination-time")
            assert all(alibaba.TOKEN_HEADER.lower() in r.headers for r in gets)
            sim.revoke_tokens()
            at = time.time() + 200
            sim.schedule_reclaim(reclaim_at=at)
            notice = None
            until = time.monotonic() + 5
            while notice is None and time.monotonic() < until:
                notice = monitor.check()
            assert notice is not None and notice.deadline == pytest.approx(int(at), abs=0.01)
            assert len(sim.requests(alibaba.TOKEN_PATH, "PUT")) == 2  # renewed after the 401
        finally:
            monitor.close()
        identity = reclaim.read_identity(alibaba.CLOUD, sim.url)
        assert (identity.instance_id, identity.region, identity.availability_zone) == (
            "i-bp67acfmxazb4ph1sim", "cn-hangzhou", "cn-hangzhou-i",
        )  # fmt: skip
        assert identity.account_id == "1234567890123456"


@pytest.mark.slow
def test_alibaba_without_a_token_service_reads_plainly() -> None:
    with AlibabaSimulator() as sim:
        sim.inject("500", count=None, path=alibaba.TOKEN_PATH)
        client = reclaim.ReclaimMetadata(alibaba.CLOUD, sim.url)
        try:
            sim.set_reclaim("2030-01-01T00:00:00Z")
            notice = reclaim.ReclaimMonitor(client).check()
            assert notice is not None and notice.raw_time == "2030-01-01T00:00:00Z"
            gets = sim.requests("/latest/meta-data/instance/spot/termination-time")
            assert gets and alibaba.TOKEN_HEADER.lower() not in gets[-1].headers
        finally:
            client.close()


@pytest.mark.slow
def test_server_errors_are_imds_errors_with_advice() -> None:
    with TencentSimulator() as sim:
        sim.inject("503", count=1)
        client = reclaim.ReclaimMetadata(tencent.CLOUD, sim.url)
        try:
            with pytest.raises(ImdsError) as caught:
                reclaim.ReclaimMonitor(client).check()
            assert caught.value.kind == "server-error"
            assert "Tencent Cloud CVM" in caught.value.advice
            assert reclaim.ReclaimMonitor(client).check() is None  # and then fine
        finally:
            client.close()


def test_the_margin_is_checked_against_two_minutes_on_both() -> None:
    from spotwatch.config import RunConfig, check_margin
    from spotwatch.errors import UsageError

    fine, too_long = RunConfig(deadline_margin=100.0), RunConfig(deadline_margin=150.0)
    for cloud in ("alibaba", "tencent"):
        check_margin(fine, cloud)
        with pytest.raises(UsageError, match=r"a reclaim on .* comes 120 s ahead"):
            check_margin(too_long, cloud)
