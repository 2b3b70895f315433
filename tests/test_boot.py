"""The boot record: a new boot id is a new boot; boot.previous_end says how the last ended."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spotwatch.boot import BootRecord, boot_key, read_boot_id
from tests.watch_helpers import notice


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    warning = error = info


def _record(tmp_path: Path, boot_id: str, log: Log | None = None) -> BootRecord:
    path = tmp_path / "boot_id"
    path.write_text(boot_id + "\n")
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    return BootRecord(state, boot_id_path=path, log=log or Log(), wall_clock=lambda: 100.0)


def _previous_end(tmp_path: Path, boot_id: str, finished: Any = ()) -> dict[str, Any] | None:
    log = Log()
    _record(tmp_path, boot_id, log).log_previous_end(lambda nid: list(finished))
    ends = [f for e, f in log.events if e == "boot.previous_end"]
    assert len(ends) <= 1
    return ends[0] if ends else None


def test_the_first_boot_and_a_restart_in_the_same_boot_log_nothing(tmp_path: Path) -> None:
    assert _previous_end(tmp_path, "b1") is None
    first = _record(tmp_path, "b1")
    first.identity("i-0abc")
    again = _record(tmp_path, "b1")
    assert again.previous is None
    data = json.loads((tmp_path / "state" / "boot.json").read_text())
    assert data["instance_id"] == "i-0abc"  # kept across the restart


def test_an_end_with_no_shutdown_run_is_power_lost_or_a_hard_stop(tmp_path: Path) -> None:
    _record(tmp_path, "b1").identity("i-0abc")
    fields = _previous_end(tmp_path, "b2")
    assert fields is not None and fields["end"] == "no-shutdown-run"
    assert fields["previous_boot_id"].startswith("b1:")


def test_a_shutdown_with_the_hooks_done(tmp_path: Path) -> None:
    rec = _record(tmp_path, "b1")
    rec.shutdown_began("poweroff", "sd-1", ["10-a", "20-b"])
    rec.shutdown_ended([])
    fields = _previous_end(tmp_path, "b2")
    assert fields is not None
    assert (fields["end"], fields["shutdown"], fields["notice_id"]) == ("shut-down", "poweroff",
                                                                         "sd-1")  # fmt: skip


def test_a_shutdown_cut_short_names_the_hooks_left(tmp_path: Path) -> None:
    rec = _record(tmp_path, "b1")
    rec.shutdown_began("reboot", "sd-1", ["10-a", "20-b", "30-c"])
    rec.shutdown_ended(["30-c"])
    fields = _previous_end(tmp_path, "b2", finished=["10-a", "20-b"])
    assert fields is not None and fields["end"] == "cut-short"
    assert fields["hooks_left"] == ["30-c"] and fields["hooks_finished"] == ["10-a", "20-b"]


def test_killed_during_the_shutdown_run_is_cut_short_from_the_journal(tmp_path: Path) -> None:
    _record(tmp_path, "b1").shutdown_began("poweroff", "sd-1", ["10-a", "20-b"])
    fields = _previous_end(tmp_path, "b2", finished=["10-a"])
    assert fields is not None and fields["end"] == "cut-short"
    assert fields["hooks_left"] == ["20-b"] and "killed" in fields["note"]


def test_the_previous_boot_gives_its_handled_end_and_instance(tmp_path: Path) -> None:
    rec = _record(tmp_path, "b1")
    rec.identity("i-0abc")
    rec.end_handled(notice(nid="stop-1"))
    new = _record(tmp_path, "b2")
    assert new.previous is not None
    assert new.previous.instance_id == "i-0abc"
    assert new.previous.last_end is not None and new.previous.last_end.id == "stop-1"
    # The new boot's record starts afresh: a third boot does not come back from it again.
    third = _record(tmp_path, "b3")
    assert third.previous is not None and third.previous.last_end is None


def test_boot_id_unreadable_or_state_corrupt(tmp_path: Path) -> None:
    assert read_boot_id(tmp_path / "none") is None
    state = tmp_path / "state"
    state.mkdir()
    (state / "boot.json").write_text("{not json")
    log = Log()
    rec = _record(tmp_path, "b1", log)
    assert rec.previous is None
    assert [e for e, _ in log.events] == ["boot.record_unreadable"]


def test_the_boot_key_is_the_boot_id_and_when_pid_1_started(tmp_path: Path) -> None:
    boot_id, stat = tmp_path / "boot_id", tmp_path / "stat"
    boot_id.write_text("b1\n")
    stat.write_text(
        "1 (systemd (x)) S 0 1 1 0 -1 4194560 2867 16166 1 7 8 6 12 9 20 0 1 0 230453 2\n"
    )
    assert boot_key(boot_id, stat) == "b1:230453"
    # In a container a sandboxed unit may see the host's boot id: pid 1's start tells.
    stat.write_text("1 (systemd) S 0 1 1 0 -1 4194560 2867 16166 1 7 8 6 12 9 20 0 1 0 999 2\n")
    assert boot_key(boot_id, stat) == "b1:999"
    assert boot_key(tmp_path / "none", tmp_path / "none") == "unknown:?"
