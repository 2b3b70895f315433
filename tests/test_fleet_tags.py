"""Instance tags for `fleet watch` (spotwatch.fleet_tags): per-batch lookups and,
in a wave, one snapshot of the region, against moto's server over HTTP.

Snapshot tests use a region no other test makes instances in, since the moto
server is shared by the session. moto answers DescribeTags in one page whatever
MaxResults says, so paging is shown with a small stand-in client.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from spotwatch.clocks import Clocks
from spotwatch.fleet_tags import InstanceTags, TagLookup, TagTuning
from tests.fleet_helpers import Log
from tests.helpers import wait_until

WAVE_REGION = "eu-north-1"  # only these tests make instances here


def make_instances(region: str, count: int, tags: dict[str, str] | None) -> list[str]:
    ec2 = boto3.client("ec2", region_name=region)
    extra: dict[str, Any] = {}
    if tags:
        extra["TagSpecifications"] = [{"ResourceType": "instance", "Tags": [
            {"Key": k, "Value": v} for k, v in tags.items()]}]
    made = ec2.run_instances(ImageId="ami-12c6146b", MinCount=count, MaxCount=count,
                             InstanceType="t3.micro", **extra)["Instances"]
    return [i["InstanceId"] for i in made]


def ec2_for(region: str) -> Any:
    return boto3.client("ec2", region_name=region)


@pytest.mark.slow
def test_instance_tags_are_batched_cached_and_never_fail(aws_env: dict[str, str]) -> None:
    ids = make_instances("us-east-1", 2, {"Name": "db"})
    now = [0.0]
    tags = InstanceTags(ec2_for, tuning=TagTuning(ttl=300, unknown_ttl=60),
                        clocks=Clocks(monotonic=lambda: now[0]))
    tags.prefetch([("us-east-1", ids[0]), ("us-east-1", ids[1]), ("us-east-1", "i-0nope")])
    assert tags.calls == 1  # one DescribeInstances for the whole batch
    assert tags.get("us-east-1", ids[0]) == {"Name": "db"}
    assert tags.get("us-east-1", ids[1]) == {"Name": "db"}
    assert tags.get("us-east-1", "i-0nope") == {}
    assert tags.calls == 1  # all cached, the unknown one too
    now[0] = 120.0  # the unknown id's entry expired, the others not
    tags.get("us-east-1", "i-0nope")
    tags.get("us-east-1", ids[0])
    assert tags.calls == 2

    def broken(region: str) -> Any:
        raise RuntimeError("no route to EC2")

    failing = InstanceTags(broken)
    assert failing.get("us-east-1", ids[0]) == {}
    assert failing.get("unknown", "i-0abc") == {}


@pytest.mark.slow
def test_a_wave_reads_every_instance_tag_of_the_region_in_one_snapshot(
    aws_env: dict[str, str],
) -> None:
    tagged = make_instances(WAVE_REGION, 6, {"Name": "worker", "team": "batch"})
    bare = make_instances(WAVE_REGION, 1, None)[0]
    now = [1000.0]
    log = Log()
    tags = InstanceTags(ec2_for, tuning=TagTuning(snapshot_after=3, snapshot_window=60, ttl=300),
                        clocks=Clocks(monotonic=lambda: now[0], log=log))

    # Two batches of new instances: not a wave yet.
    tags.prefetch([(WAVE_REGION, tagged[0])])
    now[0] += 1
    tags.prefetch([(WAVE_REGION, tagged[1])])
    assert tags.snapshot_due() == []
    now[0] += 1
    tags.prefetch([(WAVE_REGION, "i-0000000000000dead")])  # the third: a wave
    assert tags.calls == 3
    assert tags.snapshot_due() == [WAVE_REGION]
    assert tags.snapshot_due() == []  # claimed: one snapshot at a time

    tags.snapshot(WAVE_REGION)
    assert tags.calls == 4  # one page here
    for instance_id in tagged[2:]:  # never looked up one by one
        assert tags.peek(WAVE_REGION, instance_id) == {"Name": "worker", "team": "batch"}
    assert tags.peek(WAVE_REGION, bare) is None  # no tags, so not in it: looked up per batch
    [done] = log.events("fleet.tags_snapshot")
    assert done["region"] == WAVE_REGION
    assert done["instances"] >= 6 and done["pages"] == 1
    tags.prefetch([(WAVE_REGION, tagged[2]), (WAVE_REGION, bare)])
    assert tags.calls == 5  # for the bare one only
    assert tags.get(WAVE_REGION, bare) == {}

    # Not again while it is fresh, however many batches come; again once it expired.
    for n in range(3):
        now[0] += 1
        tags.prefetch([(WAVE_REGION, f"i-00000000000000{n:02d}")])
    assert tags.snapshot_due() == []
    now[0] += 300
    assert tags.peek(WAVE_REGION, tagged[3]) is None
    for n in range(3):
        tags.prefetch([(WAVE_REGION, f"i-00000000000001{n:02d}")])
    assert tags.snapshot_due() == [WAVE_REGION]


@pytest.mark.slow
def test_a_warm_region_is_due_at_once_and_once(aws_env: dict[str, str]) -> None:
    tags = InstanceTags(ec2_for, warm=[WAVE_REGION])
    assert tags.snapshot_due() == [WAVE_REGION]  # no lookup needed first
    assert tags.snapshot_due() == []
    tags.snapshot(WAVE_REGION)
    assert tags.snapshot_due() == []
    assert tags.snapshots == 1


@pytest.mark.slow
def test_a_batch_now_and_then_is_no_wave(aws_env: dict[str, str]) -> None:
    now = [0.0]
    tuning = TagTuning(snapshot_after=3, snapshot_window=60, unknown_ttl=1)
    tags = InstanceTags(ec2_for, tuning=tuning,
                        clocks=Clocks(monotonic=lambda: now[0]))
    for n in range(10):  # one batch every 40 s: never 3 within a minute
        tags.prefetch([("us-east-1", f"i-00000000000002{n:02d}")])
        assert tags.snapshot_due() == []
        now[0] += 40


class PagedEc2:
    """DescribeTags in pages of ``MaxResults``, as EC2 pages it; records each request."""

    def __init__(self, tags: list[dict[str, str]], *, fail: str | None = None) -> None:
        self.tags = tags
        self.fail = fail
        self.requests: list[dict[str, Any]] = []

    def describe_tags(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        if self.fail:
            raise ClientError({"Error": {"Code": self.fail, "Message": "You are not "
                              "authorized to perform this operation."}}, "DescribeTags")
        start = int(request.get("NextToken", "0"))
        end = start + request["MaxResults"]
        page: dict[str, Any] = {"Tags": self.tags[start:end]}
        if end < len(self.tags):
            page["NextToken"] = str(end)
        return page


def instance_tags(count: int) -> list[dict[str, str]]:
    return [{"ResourceId": f"i-{n // 2:017x}", "ResourceType": "instance",
             "Key": ("Name", "team")[n % 2], "Value": f"v{n}"} for n in range(count)]


def due_now(tags: InstanceTags, region: str = "us-east-1") -> None:
    """Mark ``region`` as in a wave (``snapshot_after=1``) and claim its snapshot."""
    tags.prefetch([(region, "i-0fffffffffffffff0")])
    assert tags.snapshot_due() == [region]


def test_the_snapshot_follows_every_page() -> None:
    ec2 = PagedEc2(instance_tags(23))
    log = Log()
    tags = InstanceTags(lambda region: ec2, tuning=TagTuning(snapshot_after=1, page_size=5),
                        clocks=Clocks(log=log))
    tags._fetch = lambda region, ids: None  # type: ignore[method-assign]  # per-batch: not here
    due_now(tags)
    tags.snapshot("us-east-1")
    assert [r.get("NextToken") for r in ec2.requests] == [None, "5", "10", "15", "20"]
    assert all(r["Filters"] == [{"Name": "resource-type", "Values": ["instance"]}]
               and r["MaxResults"] == 5 for r in ec2.requests)
    assert tags.peek("us-east-1", f"i-{0:017x}") == {"Name": "v0", "team": "v1"}
    assert tags.peek("us-east-1", f"i-{11:017x}") == {"Name": "v22"}
    assert log.events("fleet.tags_snapshot")[0]["pages"] == 5


@pytest.mark.parametrize("case", ["too-many-tags", "denied", "throttled"])
def test_a_snapshot_that_cannot_be_had_is_said_once_and_not_tried_for_a_while(
    case: str,
) -> None:
    fail = {"denied": "UnauthorizedOperation", "throttled": "RequestLimitExceeded"}.get(case)
    ec2 = PagedEc2(instance_tags(40), fail=fail)
    now = [0.0]
    log = Log()
    tags = InstanceTags(lambda region: ec2,
                        tuning=TagTuning(snapshot_after=1, snapshot_pages=3, page_size=5,
                                         snapshot_retry=600),
                        clocks=Clocks(monotonic=lambda: now[0], log=log))
    tags._fetch = lambda region, ids: None  # type: ignore[method-assign]
    for _attempt in range(2):
        due_now(tags)
        tags.snapshot("us-east-1")
        assert tags.peek("us-east-1", f"i-{0:017x}") is None  # nothing half-read is kept
        tags.prefetch([("us-east-1", "i-0fffffffffffffff1")])
        assert tags.snapshot_due() == []  # not before the retry time
        now[0] += 601
    [skipped] = [r for r in log.records if r["event"] == "fleet.tags_snapshot_skipped"
                 and r["level"] == "warning"]  # the second time: debug only
    assert len(log.events("fleet.tags_snapshot_skipped")) == 2
    if case == "too-many-tags":
        assert skipped["reason"] == "more than 15 tags"
        assert len(ec2.requests) == 6  # 3 pages, twice: the cap holds
    else:
        assert skipped["reason"].startswith(f"{fail}: ")
        assert len(ec2.requests) == 2
    if case == "throttled":  # not the operator's to fix: tried again after a minute
        assert "ec2:DescribeTags" not in skipped["advice"]
        assert skipped["retry_in"] == 60
    else:
        assert ("ec2:DescribeTags" in skipped["advice"]) == (case == "denied")
        assert skipped["retry_in"] == 600


def test_a_worker_whose_tags_are_cached_never_waits_for_another_lookup() -> None:
    release = threading.Event()

    class SlowTags:
        def __init__(self) -> None:
            self.cache = {("us-east-1", "i-0cached"): {"Name": "web"}}
            self.asked: list[list[tuple[str, str]]] = []

        def prefetch(self, wanted: list[tuple[str, str]]) -> None:
            self.asked.append(list(wanted))
            release.wait(10)  # EC2 is slow today
            for key in wanted:
                self.cache[key] = {"Name": key[1]}

        def peek(self, region: str, instance_id: str) -> dict[str, str] | None:
            return self.cache.get((region, instance_id))

        def snapshot_due(self) -> list[str]:
            return []

        def snapshot(self, region: str) -> None:
            raise AssertionError("not due")

    tags = SlowTags()
    lookup = TagLookup(tags)
    lookup.start()
    try:
        lookup.want([("us-east-1", "i-0new1"), ("us-east-1", "i-0new2"),
                     ("us-east-1", "i-0cached")])
        started = time.monotonic()
        assert lookup.get("us-east-1", "i-0cached") == {"Name": "web"}
        assert time.monotonic() - started < 0.5
        assert lookup.get("us-east-1", "i-0new1", wait=0.2) == {}  # gives up, goes on
        release.set()
        assert lookup.get("us-east-1", "i-0new2") == {"Name": "i-0new2"}
        # One call for everything asked at once; the cached one was not asked again.
        assert tags.asked[0] == [("us-east-1", "i-0new1"), ("us-east-1", "i-0new2")]
    finally:
        release.set()
        lookup.close()


class WaveTags:
    """A tag source whose us-east-1 is due a snapshot at start (``warm``); the
    snapshot waits for ``go``; every prefetch is recorded with the moment it came."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, str], dict[str, str]] = {}
        self.due = ["us-east-1"]
        self.go = threading.Event()
        self.snapshot_done = 0.0
        self.asked: list[tuple[float, list[tuple[str, str]]]] = []

    def prefetch(self, wanted: list[tuple[str, str]]) -> None:
        self.asked.append((time.monotonic(), list(wanted)))

    def peek(self, region: str, instance_id: str) -> dict[str, str] | None:
        return self.cache.get((region, instance_id))

    def snapshot_due(self) -> list[str]:
        due, self.due = self.due, []
        return due

    def snapshot(self, region: str) -> None:
        self.go.wait(10)
        for n in range(100):
            self.cache[(region, f"i-{n:017x}")] = {"Name": f"n{n}"}
        self.snapshot_done = time.monotonic()

    def asked_for(self, key: tuple[str, str]) -> list[float]:
        return [when for when, keys in self.asked if key in keys]


def test_lookups_wait_for_their_regions_snapshot_under_way_and_others_go_on() -> None:
    tags = WaveTags()
    lookup = TagLookup(tags, snapshot_hold=10)
    lookup.start()
    try:
        held, elsewhere = ("us-east-1", f"i-{50:017x}"), ("eu-west-1", f"i-{7:017x}")
        lookup.want([held, elsewhere])
        wait_until(lambda: tags.asked_for(elsewhere), 5, "eu-west-1's lookup")  # goes on
        assert tags.asked_for(held) == []  # this one waits for the snapshot
        tags.go.set()
        assert lookup.get(*held, wait=5) == {"Name": "n50"}
        wait_until(lambda: tags.asked_for(held), 5, "the held lookup")  # the cache answers it
        assert tags.asked_for(held)[0] >= tags.snapshot_done
    finally:
        tags.go.set()
        lookup.close()


def test_a_slow_snapshot_holds_lookups_no_longer_than_the_hold() -> None:
    tags = WaveTags()
    lookup = TagLookup(tags, snapshot_hold=0.5)
    lookup.start()
    try:
        asked = time.monotonic()
        lookup.want([("us-east-1", f"i-{2:017x}")])
        wait_until(lambda: tags.asked_for(("us-east-1", f"i-{2:017x}")), 5, "the held lookup")
        waited = tags.asked_for(("us-east-1", f"i-{2:017x}"))[0] - asked
        assert 0.3 < waited < 3  # held for the 0.5 s, then looked up per batch
        assert tags.snapshot_done == 0.0  # the snapshot was still under way
    finally:
        tags.go.set()
        lookup.close()

