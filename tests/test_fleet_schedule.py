"""The fleet watcher's decisions over plain data: no AWS, no threads, no clock."""

from __future__ import annotations

from spotwatch.fleet_schedule import (
    MAX_BATCH,
    Slot,
    batches,
    capacity_for,
    flush_deletes,
    hold_for,
    next_to_run,
    rate,
    receivers_for,
    room,
    to_extend,
)


def slot(seq: int, key: str, *, running: bool = False, hidden_until: float = 100.0) -> Slot:
    return Slot(str(seq), key, seq, hidden_until, running)


def test_the_hand_holds_two_per_worker_and_never_less_than_one_receive() -> None:
    assert capacity_for(8) == 16
    assert capacity_for(64) == 128
    assert capacity_for(1) == MAX_BATCH


def test_room_is_bounded_by_the_hand_one_receive_and_max_messages() -> None:
    assert room(0, 16) == 10
    assert room(10, 16) == 6
    assert room(16, 16) == 0
    assert room(20, 16) == 0
    assert room(0, 16, limit=4, taken=1) == 3
    assert room(0, 16, limit=4, taken=4) == 0


def test_next_to_run_takes_arrival_order() -> None:
    slots = [slot(3, "c"), slot(1, "a"), slot(2, "b")]
    chosen = next_to_run(slots, 0.0)
    assert chosen is not None and chosen.seq == 1


def test_an_instance_with_a_running_event_waits_and_the_next_instance_goes() -> None:
    slots = [slot(1, "a", running=True), slot(2, "a"), slot(3, "b")]
    chosen = next_to_run(slots, 0.0)
    assert chosen is not None and chosen.seq == 3


def test_a_later_event_never_overtakes_an_earlier_one_of_its_instance() -> None:
    # seq 1 cannot start yet (about to be lost, waiting for its extension): seq 2 of
    # the same instance must wait behind it, while another instance may go.
    slots = [slot(1, "a", hidden_until=0.5), slot(2, "a"), slot(3, "b")]
    chosen = next_to_run(slots, 0.0)
    assert chosen is not None and chosen.seq == 3
    assert next_to_run([slot(1, "a", hidden_until=0.5), slot(2, "a")], 0.0) is None


def test_nothing_to_run_when_every_instance_is_busy() -> None:
    slots = [slot(1, "a", running=True), slot(2, "b", running=True), slot(3, "a")]
    assert next_to_run(slots, 0.0) is None
    assert next_to_run([], 0.0) is None


def test_a_message_not_surely_ours_is_not_started() -> None:
    assert next_to_run([slot(1, "a", hidden_until=10.5)], 10.0) is None
    assert next_to_run([slot(1, "a", hidden_until=11.0)], 10.0) is not None


def test_to_extend_picks_the_ones_running_low_waiting_or_running_most_urgent_first() -> None:
    slots = [slot(1, "a", hidden_until=12.0, running=True), slot(2, "b", hidden_until=30.0),
             slot(3, "c", hidden_until=11.0)]
    assert [s.seq for s in to_extend(slots, 10.0, renew_below=5.0)] == [3, 1]
    assert to_extend(slots, 0.0, renew_below=5.0) == []


def test_hold_is_the_queue_timeout_at_least_6_s_renewed_at_half() -> None:
    assert hold_for(60) == (60.0, 30.0)
    assert hold_for(2) == (6.0, 3.0)
    assert hold_for(0) == (6.0, 3.0)


def test_deletes_flush_at_a_full_batch_when_idle_or_after_the_delay() -> None:
    assert not flush_deletes(0, oldest_age=99.0, busy=False, max_delay=1.0)
    assert flush_deletes(10, oldest_age=0.0, busy=True, max_delay=1.0)
    assert flush_deletes(3, oldest_age=0.0, busy=False, max_delay=1.0)
    assert not flush_deletes(3, oldest_age=0.5, busy=True, max_delay=1.0)
    assert flush_deletes(3, oldest_age=1.0, busy=True, max_delay=1.0)


def test_batches_of_ten_and_the_rate() -> None:
    assert [len(b) for b in batches(list(range(23)))] == [10, 10, 3]
    assert batches([]) == []
    assert rate([1.0, 5.0, 9.0, 10.0], 10.0, 5.0) == 3 / 5


def test_an_extension_renews_what_held_and_loses_only_what_ran_out() -> None:
    """After one ChangeMessageVisibilityBatch: a renewed slot still in hand moves
    on; a failure after the slot's time ran out loses it; a failure before then,
    or a slot finished meanwhile, changes nothing."""
    from spotwatch.fleet_queue import Received, extension_outcome

    slots = {k: Slot(k, k, n, hidden_until=10.0 * n) for n, k in enumerate("abcd", 1)}
    gone = Slot("e", "e", 5, 0.0)  # finished meanwhile: no longer in the hand
    chunk = [(slots.get(k, gone), Received({"MessageId": k}, None, "", 0.0)) for k in "abcde"]
    failed = {1: "ReceiptHandleIsInvalid", 2: "Throttled", 4: "gone"}
    renewed, lost = extension_outcome(chunk, failed, slots, asked=25.0)
    assert [s.key for s in renewed] == ["a", "d"]
    assert [(s.key, item.message_id, error) for s, item, error in lost] == [
        ("b", "b", "ReceiptHandleIsInvalid")  # hidden until 20 <= 25; c's 30 is not yet
    ]


def test_one_receiver_per_32_workers_at_most_8() -> None:
    assert [receivers_for(w) for w in (1, 16, 32, 33, 64, 256, 1024)] == [1, 1, 1, 2, 2, 8, 8]
