"""What each spot request status code means: class, plain words, exit status."""

from __future__ import annotations

import pytest

from spotwatch.spot_codes import (
    CLASSES,
    ENDED,
    EXIT_API,
    EXIT_INTERRUPTED,
    EXIT_INTERRUPTING,
    EXIT_OK,
    FAILED,
    HEALTHY,
    INSTANCE_GONE,
    INTERRUPTED,
    INTERRUPTING,
    UNKNOWN,
    WAITING,
    SpotRequest,
    assess,
    assess_request,
    exit_status,
    known_codes,
    needs_instance_state,
    urgency,
)

# AWS's Spot request status codes, by the class spotwatch gives each
# (docs/commands.md, `spotwatch status`).
SPEC_INTERRUPTING = ["marked-for-termination", "marked-for-stop", "marked-for-stop-by-experiment"]
SPEC_INTERRUPTED = [
    "instance-terminated-by-price", "instance-terminated-by-service",
    "instance-terminated-no-capacity", "instance-stopped-by-price",
    "instance-stopped-no-capacity", "instance-terminated-by-experiment",
    "instance-stopped-by-experiment", "instance-terminated-launch-group-constraint",
]
SPEC_HEALTHY = ["fulfilled", "request-canceled-and-instance-running"]
SPEC_WAITING = [
    "pending-evaluation", "pending-fulfillment", "capacity-not-available", "price-too-low",
    "not-scheduled-yet", "launch-group-constraint", "az-group-constraint",
    "placement-group-constraint",
]
SPEC_FAILED = [
    "bad-parameters", "system-error", "schedule-expired", "canceled-before-fulfillment",
    "constraint-not-fulfillable", "limit-exceeded",
]
SPEC_CODES = (
    [(c, INTERRUPTING, EXIT_INTERRUPTING) for c in SPEC_INTERRUPTING]
    + [(c, INTERRUPTED, EXIT_INTERRUPTED) for c in SPEC_INTERRUPTED]
    + [(c, HEALTHY, EXIT_OK) for c in SPEC_HEALTHY]
    + [(c, WAITING, EXIT_OK) for c in SPEC_WAITING]
    + [(c, FAILED, EXIT_INTERRUPTED) for c in SPEC_FAILED]
)


@pytest.mark.parametrize(("code", "category", "status"), SPEC_CODES)
def test_every_spec_code_has_its_class_and_exit_status(
    code: str, category: str, status: int
) -> None:
    assessment = assess(code)
    assert assessment.category == category
    assert exit_status([assessment.category]) == status
    # The meaning leads with the class, in words a person reads at a glance.
    assert assessment.meaning.split(":")[0] == category
    assert len(assessment.meaning) <= 60


def test_every_known_code_is_in_spec_or_ended_by_the_owner() -> None:
    spec = {code for code, _, _ in SPEC_CODES}
    extra = {code: c for code, c in known_codes().items() if code not in spec}
    assert set(extra.values()) == {ENDED}
    assert spec <= set(known_codes())


@pytest.mark.parametrize("code", ["instance-terminated-by-user", "instance-stopped-by-user",
                                  "spot-instance-terminated-by-user",
                                  "instance-terminated-by-schedule"])
def test_ended_by_the_owner_is_not_an_interruption(code: str) -> None:
    assessment = assess(code)
    assert assessment.category == ENDED
    assert exit_status([assessment.category]) == EXIT_OK


def test_an_unknown_code_is_shown_as_unknown_and_exits_3() -> None:
    assessment = assess("instance-teleported-by-wizard")
    assert assessment.category == UNKNOWN
    assert "read the message" in assessment.meaning
    assert exit_status([UNKNOWN]) == EXIT_API
    assert assess("").category == UNKNOWN


def test_other_group_constraints_are_waiting_but_a_terminated_launch_group_is_not() -> None:
    assert assess("tenancy-group-constraint").category == WAITING
    assert assess("instance-terminated-launch-group-constraint").category == INTERRUPTED


@pytest.mark.parametrize("state", ["pending", "running"])
def test_no_capacity_with_a_live_instance_is_an_interruption_under_way(state: str) -> None:
    assert needs_instance_state("instance-terminated-no-capacity")
    assessment = assess("instance-terminated-no-capacity", state)
    assert assessment.category == INTERRUPTING
    assert "2 min" in assessment.meaning


@pytest.mark.parametrize("state", ["shutting-down", "terminated", "stopped", INSTANCE_GONE, None])
def test_no_capacity_with_the_instance_gone_is_interrupted(state: str | None) -> None:
    assert assess("instance-terminated-no-capacity", state).category == INTERRUPTED


def test_instance_state_matters_only_where_the_code_needs_it() -> None:
    assert not needs_instance_state("marked-for-termination")
    assert not needs_instance_state("fulfilled")
    assert assess("fulfilled", "terminated").category == HEALTHY
    request = SpotRequest("sir-1", "us-east-1", "active", "instance-terminated-no-capacity",
                          instance_id="i-12345678", instance_state="running")
    assert assess_request(request).category == INTERRUPTING


@pytest.mark.parametrize(("classes", "status"), [
    ([], EXIT_OK),
    ([HEALTHY, WAITING, ENDED], EXIT_OK),
    ([HEALTHY, UNKNOWN], EXIT_API),  # unknown counts only if nothing else applies...
    ([UNKNOWN, FAILED], EXIT_INTERRUPTED),  # ...and failed/interrupted apply
    ([UNKNOWN, INTERRUPTED, HEALTHY], EXIT_INTERRUPTED),
    ([INTERRUPTED, INTERRUPTING, UNKNOWN], EXIT_INTERRUPTING),  # the most urgent wins
])
def test_exit_status_is_that_of_the_most_urgent_class(classes: list[str], status: int) -> None:
    assert exit_status(classes) == status


def test_urgency_orders_interruptions_first_and_healthy_last() -> None:
    assert sorted(CLASSES, key=urgency) == [
        INTERRUPTING, INTERRUPTED, FAILED, UNKNOWN, WAITING, HEALTHY, ENDED,
    ]
    assert urgency("no-such-class") == urgency(UNKNOWN)
