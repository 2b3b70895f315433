"""Unit tests of the pure planning behind `spotwatch ship`: keys, order, deadline, verdicts."""

from __future__ import annotations

import pytest

from spotwatch.ship_plan import (
    ABORTED,
    DEADLINE,
    NOT_SHIPPED,
    SHIPPED,
    Candidate,
    Estimator,
    Outcome,
    Report,
    exit_status,
    fits,
    judge_s3_error,
    key_base,
    likely_schedule,
    notice_stamp,
    object_key,
    smallest_first,
)

MiB = 1024 * 1024


# ---------------------------------------------------------------- keys


@pytest.mark.parametrize(
    ("raw", "stamp"),
    [
        ("2026-11-26T03:00:25Z", "20261126T030025Z"),
        ("2026-11-26T03:00:25.123Z", "20261126T030025Z"),
        ("2026-11-26T05:00:25+02:00", "20261126T030025Z"),
        ("2026-11-26 03:00:25", "20261126T030025Z"),
        (" 2026-11-26T03:00:25Z\n", "20261126T030025Z"),
    ],
)
def test_notice_stamp_normalises_rfc3339_to_utc_basic_format(raw: str, stamp: str) -> None:
    assert notice_stamp(raw, now=0.0) == stamp


def test_notice_stamp_without_a_notice_time_uses_now() -> None:
    assert notice_stamp("", now=1_795_000_000.0) == "20261118T110640Z"


def test_notice_stamp_keeps_an_unparseable_time_stable_and_key_safe() -> None:
    first = notice_stamp("soon / maybe", now=1.0)
    assert first == notice_stamp("soon / maybe", now=2.0) == "soon-maybe"
    assert notice_stamp("2026-13-45T99:00:00Z", now=0.0) == "2026-13-45T99-00-00Z"


@pytest.mark.parametrize(
    ("prefix", "base"),
    [
        ("", "i-0abc/20261126T030025Z/"),
        ("logs", "logs/i-0abc/20261126T030025Z/"),
        ("/logs/", "logs/i-0abc/20261126T030025Z/"),
        ("fleet//web/", "fleet/web/i-0abc/20261126T030025Z/"),
    ],
)
def test_key_base_is_prefix_instance_then_notice(prefix: str, base: str) -> None:
    assert key_base(prefix, "i-0abc", "20261126T030025Z") == base


def test_key_base_makes_odd_instance_ids_safe() -> None:
    assert key_base("", "", "T") == "unknown/T/"
    assert key_base("", "i-0abc/../x", "T") == "i-0abc-..-x/T/"


def test_object_key_is_the_absolute_path_under_the_base() -> None:
    base = "logs/i-0abc/20261126T030025Z/"
    assert object_key(base, "/var/log/app/x.log", True) == base + "var/log/app/x.log.gz"
    assert object_key(base, "/var/log/app/x.log", False) == base + "var/log/app/x.log"


def test_object_key_survives_a_name_that_is_not_utf8() -> None:
    path = b"/var/log/caf\xe9.log".decode("utf-8", "surrogateescape")
    key = object_key("b/", path, False)
    key.encode("utf-8")  # must not raise
    assert key == "b/var/log/caf\\xe9.log"


# ---------------------------------------------------------------- order and deadline


def test_smallest_first_orders_by_size_then_path() -> None:
    files = [Candidate("/b", 5), Candidate("/a", 5), Candidate("/c", 1), Candidate("/d", 900)]
    assert [c.path for c in smallest_first(files)] == ["/c", "/a", "/b", "/d"]


def test_estimator_starts_from_its_assumption() -> None:
    estimator = Estimator(latency=0.1, rate=10 * MiB)
    assert estimator.seconds_for(0) == pytest.approx(0.1)
    assert estimator.seconds_for(100 * MiB) == pytest.approx(10.1)


def test_estimator_learns_a_slower_link_from_big_uploads() -> None:
    estimator = Estimator(latency=0.1, rate=100 * MiB, prior_bytes=8 * MiB)
    for _ in range(5):
        estimator = estimator.observe(64 * MiB, 64.1)  # 1 MiB/s
    assert estimator.current_rate() == pytest.approx(328 / 320.08 * MiB, rel=0.01)
    assert estimator.seconds_for(10 * MiB) > 7.0


def test_estimator_barely_moves_on_tiny_uploads() -> None:
    estimator = Estimator(latency=0.1, rate=16 * MiB)
    for _ in range(50):
        estimator = estimator.observe(1024, 0.02)
    assert estimator.current_rate() == pytest.approx(16 * MiB, rel=0.05)
    assert estimator.current_latency() == pytest.approx(0.02)


def test_an_upload_starts_only_if_it_likely_ends_before_the_abort_point() -> None:
    estimator = Estimator(latency=0.0, rate=1 * MiB)
    assert fits(5 * MiB, now=100.0, abort_at=105.0, estimator=estimator)
    assert not fits(5 * MiB + 1, now=100.0, abort_at=105.0, estimator=estimator)
    assert fits(10**12, now=100.0, abort_at=None, estimator=estimator)


# ---------------------------------------------------------------- S3 errors


def test_access_denied_names_the_permission_from_the_operation() -> None:
    verdict = judge_s3_error("AccessDenied", "Access Denied", "PutObject", "logs", "a/b.gz", False)
    assert verdict.fatal and verdict.exit_code == 2
    assert verdict.message == (
        "access denied: the credentials need s3:PutObject on arn:aws:s3:::logs/a/b.gz"
    )
    multipart = judge_s3_error("AccessDenied", "", "CreateMultipartUpload", "l", "k", False)
    assert "s3:PutObject" in multipart.message


def test_access_denied_prefers_the_action_named_in_the_message() -> None:
    message = (
        "User: arn:aws:sts::1:assumed-role/app/i-0abc is not authorized to perform: "
        "kms:GenerateDataKey on resource: arn:aws:kms:us-east-1:1:key/k"
    )
    verdict = judge_s3_error("AccessDenied", message, "PutObject", "logs", "k", True)
    assert "kms:GenerateDataKey" in verdict.message and verdict.fatal


def test_kms_denial_without_a_named_action_points_at_generate_data_key() -> None:
    verdict = judge_s3_error(
        "AccessDenied",
        "The ciphertext refers to a KMS key you cannot use",
        "PutObject",
        "logs",
        "k",
        True,
    )
    assert "kms:GenerateDataKey" in verdict.message


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("NoSuchBucket", "does not exist"),
        ("InvalidAccessKeyId", "bad AWS credentials"),
        ("SignatureDoesNotMatch", "bad AWS credentials"),
        ("ExpiredToken", "bad AWS credentials"),
        ("InvalidStorageClass", "upload settings"),
        ("KMS.NotFoundException", "upload settings"),
    ],
)
def test_errors_every_upload_would_hit_are_fatal_bad_input(code: str, words: str) -> None:
    verdict = judge_s3_error(code, "msg", "PutObject", "logs", "k", False)
    assert verdict.fatal and verdict.exit_code == 2 and words in verdict.message
    assert "\n" not in verdict.message


def test_other_errors_fail_only_that_file() -> None:
    verdict = judge_s3_error(
        "InternalError", "We\nencountered  an error", "UploadPart", "b", "k", False
    )
    assert not verdict.fatal
    assert verdict.message == "InternalError: We encountered an error"


# ---------------------------------------------------------------- the verdict


def _outcome(status: str, reason: str = "", size: int = 10) -> Outcome:
    return Outcome("/p", "k", size, status, reason, bytes_sent=size // 2)


def test_exit_status() -> None:
    assert exit_status([_outcome(SHIPPED)], None, False) == 0
    assert exit_status([], None, False) == 0
    assert exit_status([_outcome(SHIPPED), _outcome(NOT_SHIPPED, DEADLINE)], None, False) == 1
    assert exit_status([_outcome(SHIPPED)], 1, False) == 1  # server unreachable
    assert exit_status([_outcome(SHIPPED)], 2, False) == 2
    assert exit_status([_outcome(SHIPPED)], None, True) == 2  # a PATH named nothing


def test_report_summary_and_json_say_what_went_and_why_not() -> None:
    report = Report(
        bucket="logs",
        base="p/i-0abc/T/",
        outcomes=(
            _outcome(SHIPPED, size=2048),
            _outcome(NOT_SHIPPED, DEADLINE, size=4096),
            _outcome(NOT_SHIPPED, ABORTED, size=4096),
            _outcome(NOT_SHIPPED, DEADLINE, size=4096),
        ),
        seconds=1.25,
        exit_code=1,
    )
    line = report.summary_line()
    assert line.startswith("shipped 1 of 4 files, 2.0 KiB (1.0 KiB sent) to s3://logs/p/i-0abc/T/")
    assert line.endswith("not shipped: 1 aborted, 2 deadline")
    data = report.as_dict()
    assert data["files"] == 4 and data["files_shipped"] == 1
    assert data["bytes_shipped"] == 2048 and data["bytes_sent"] == 1024
    assert data["not_shipped_by_reason"] == {"aborted": 1, "deadline": 2}
    assert data["shipped"][0] == {
        "path": "/p",
        "key": "k",
        "bytes": 2048,
        "bytes_sent": 1024,
        "seconds": 0.0,
    }
    assert data["not_shipped"][0]["reason"] == DEADLINE


def test_likely_schedule_fills_parallel_slots_until_the_abort_point() -> None:
    estimator = Estimator(latency=0.0, rate=1 * MiB)
    ordered = [Candidate(f"/{i}", 4 * MiB) for i in range(5)] + [Candidate("/big", 50 * MiB)]
    # Two slots, 10 s: two rounds of two 4 s uploads fit; the fifth would end at 12 s.
    verdicts = likely_schedule(ordered, 2, now=0.0, abort_at=10.0, estimator=estimator)
    assert verdicts == [True, True, True, True, False, False]
    assert all(likely_schedule(ordered, 2, now=0.0, abort_at=None, estimator=estimator))
