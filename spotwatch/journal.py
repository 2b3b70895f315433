"""Hooks run once per notice, even across restarts: the journal in the state directory.

``STATE_DIR/journal.json`` (mode 0600) records, per notice id, which hooks
finished (with their outcome), which hook was started and not finished, and
whether the notice is complete. It keeps the last ``KEEP_NOTICES`` notices, so
a notice IMDS still shows after its hooks are done never runs them again.

Every change is written atomically: a temp file in the same directory,
fsync, ``os.replace``, fsync of the directory. A crash at any point leaves
either the old journal or the new one, never a torn one.

Failure policy: an unusable state directory at start is a ``JournalError``
(the daemon turns it into a one-line error). A corrupt journal is moved aside
and replaced by a fresh one (hooks run again: better than not at all). A write
that fails later is logged as ``journal.write_failed`` and the journal goes on
in memory: losing the record must never stop the hooks.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from spotwatch.atomicfile import remove_stale_temps, write_atomically
from spotwatch.errors import SpotwatchError
from spotwatch.logs import get_logger
from spotwatch.notice import REBALANCE_RECOMMENDATION, Notice

if TYPE_CHECKING:
    from spotwatch.hooks import Hook
    from spotwatch.runner import HookResult

JOURNAL_NAME = "journal.json"
FORMAT_VERSION = 1
KEEP_NOTICES = 100


class JournalError(SpotwatchError):
    """The state directory cannot hold the journal."""


class Journal:
    """Which hooks already ran for which notice; persisted on every change."""

    def __init__(
        self,
        state_dir: Path,
        *,
        log: Any = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / JOURNAL_NAME
        self._log = log if log is not None else get_logger()
        self._wall_clock = wall_clock
        self._write_failed = False
        self._prepare_dir()
        self._notices: dict[str, dict[str, Any]] = self._load()

    # --- questions -----------------------------------------------------------

    def pending_hooks(self, notice: Notice, hooks: Sequence[Hook]) -> list[Hook]:
        """The hooks still to run for ``notice``, in the given order.

        All of them for a notice never seen; none for a completed one; for one
        seen before, those that did not finish (a hook interrupted mid-run runs
        again).
        """
        entry = self._notices.get(notice.id)
        if entry is None:
            return list(hooks)
        if entry.get("complete"):
            return []
        finished = entry.get("finished", {})
        return [hook for hook in hooks if hook.name not in finished]

    def is_complete(self, notice_id: str) -> bool:
        entry = self._notices.get(notice_id)
        return bool(entry and entry.get("complete"))

    def is_known(self, notice_id: str) -> bool:
        return notice_id in self._notices

    def finished_hooks(self, notice_id: str) -> dict[str, dict[str, Any]]:
        """name -> {"outcome", "description", "ended_at"} for the hooks that finished."""
        entry = self._notices.get(notice_id)
        return dict(entry.get("finished", {})) if entry else {}

    def unfinished(self, now: float) -> list[Notice]:
        """Notices begun and not complete whose deadline is still ahead of ``now``.

        A restarted daemon resumes them at once, without waiting for IMDS to show
        the notice again (it may be unreachable just then).
        """
        out = []
        for notice_id, entry in self._notices.items():
            if entry.get("complete"):
                continue
            notice = _notice_of(notice_id, entry)
            if notice is not None and notice.deadline > now:
                out.append(notice)
        return out

    def end_in_progress(self, now: float) -> Notice | None:
        """The latest notice that ends the instance and whose deadline is still ahead of
        ``now`` (complete or not, folded ones aside): a further end folds into it."""
        for notice_id in reversed(list(self._notices)):
            entry = self._notices[notice_id]
            if entry.get("folded_into") or not entry.get("ends_instance", _ends(entry)):
                continue
            notice = _notice_of(notice_id, entry)
            if notice is not None and _last_deadline(entry) > now:
                return notice
        return None

    def folded_into(self, notice_id: str) -> str | None:
        entry = self._notices.get(notice_id)
        into = entry.get("folded_into") if entry else None
        return into if isinstance(into, str) else None

    def running_hook(self, notice_id: str) -> str | None:
        """The hook started and not finished for ``notice_id`` (interrupted by a restart)."""
        entry = self._notices.get(notice_id)
        running = entry.get("running") if entry else None
        return running if isinstance(running, str) else None

    def running_group(self, notice_id: str) -> dict[str, Any] | None:
        """The process group recorded for the running hook (see ``hook_started``)."""
        entry = self._notices.get(notice_id)
        group = entry.get("running_group") if entry else None
        return group if isinstance(group, dict) else None

    # --- changes (each one written to disk) ----------------------------------

    def begin(self, notice: Notice) -> None:
        """Record ``notice``; a no-op for one already recorded (a restart keeps its progress)."""
        if notice.id in self._notices:
            return
        self._notices[notice.id] = self._new_entry(notice)
        self._trim()
        # No fsync: on the path to the first hook's start, and a notice with no
        # finished hook reruns all its hooks whether or not it was recorded.
        self._save(durable=False)

    def fold(self, notice: Notice, into: str) -> None:
        """Record that ``notice`` announces the same end as ``into``: it never runs hooks
        of its own (complete, ``folded_into``), and ``into``'s deadline becomes the
        earlier of the two, so a restart resumes with it and folds the same way."""
        owner = self._entry(into)
        # The end is still under way while any notice in it is out: a notice whose
        # time moves on every poll stays one end, however long it moves.
        owner["last_deadline"] = max(_last_deadline(owner), notice.deadline)
        owner["deadline"] = min(float(owner.get("deadline", notice.deadline)), notice.deadline)
        if notice.action == "terminate":
            owner["action"] = "terminate"  # a restart resumes with the end's action
        owner.setdefault("folded", []).append(notice.id)
        self._notices[notice.id] = {
            **self._new_entry(notice),
            "complete": True,
            "folded_into": into,
        }
        self._trim()
        self._save()

    def _new_entry(self, notice: Notice) -> dict[str, Any]:
        """A notice's record before any hook ran."""
        return {
            "kind": notice.kind,
            "action": notice.action,
            "raw_time": notice.raw_time,
            "deadline": notice.deadline,
            "source": notice.source,
            "ends_instance": notice.ends_instance,
            "env": [list(pair) for pair in notice.env],
            "begun_at": self._wall_clock(),
            "finished": {},
            "running": None,
            "complete": False,
        }

    def hook_started(
        self, notice_id: str, name: str, group: dict[str, Any] | None = None
    ) -> None:
        """``group``: the hook's process group (spotwatch.orphans.group_record), so a
        restart can wait for a hook that outlived the daemon instead of running it twice."""
        entry = self._entry(notice_id)
        entry["running"] = name
        entry["running_group"] = group
        # Only informative (an unfinished hook reruns whether or not it was marked
        # running), so no fsync here: it would delay every hook's start by ~10 ms.
        self._save(durable=False)

    def hook_finished(self, notice_id: str, result: HookResult) -> None:
        entry = self._entry(notice_id)
        entry["finished"][result.name] = {
            "outcome": result.outcome,
            "description": result.description,
            "ended_at": result.ended_at,
        }
        if entry.get("running") == result.name:
            entry["running"] = None
            entry["running_group"] = None
        self._save()

    def complete(self, notice_id: str) -> None:
        entry = self._entry(notice_id)
        entry["complete"] = True
        entry["running"] = None
        entry["running_group"] = None
        entry["completed_at"] = self._wall_clock()
        self._save()

    # --- storage -------------------------------------------------------------

    def _trim(self) -> None:
        """Forget the oldest notices past KEEP_NOTICES, but never one whose end may not
        have come yet (its deadline ahead), nor one such a notice folds into: that
        would let the same end run the hooks again."""
        excess = len(self._notices) - KEEP_NOTICES
        if excess <= 0:
            return
        now = self._wall_clock()
        live = {i for i, e in self._notices.items() if _last_deadline(e) > now}
        owners = {self._notices[i].get("folded_into") for i in live}
        keep = live | {o for o in owners if isinstance(o, str)}
        for notice_id in [i for i in self._notices if i not in keep][:excess]:
            del self._notices[notice_id]

    def _entry(self, notice_id: str) -> dict[str, Any]:
        entry = self._notices.get(notice_id)
        if entry is None:
            # Callers begin() first; tolerate a slip rather than lose the record.
            self._log.warning("journal.unknown_notice", notice_id=notice_id)
            entry = {
                "finished": {},
                "running": None,
                "complete": False,
                "begun_at": self._wall_clock(),
            }
            self._notices[notice_id] = entry
        return entry

    def _prepare_dir(self) -> None:
        from spotwatch import statedir

        try:
            statedir.make(self.state_dir)
        except OSError as exc:
            raise JournalError(
                f"cannot create state directory {self.state_dir}: {exc.strerror or exc}"
                " (create it, or pass --state-dir)"
            ) from exc
        problem = statedir.unusable(self.state_dir)
        if problem is not None:
            raise JournalError(problem)
        remove_stale_temps(self.path)

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return {}
        except IsADirectoryError:
            self._set_aside("corrupt: a directory, not a file")
            return {}
        except OSError as exc:
            self._set_aside_unreadable(exc)
            return {}
        try:
            data = json.loads(raw.decode("utf-8"))
            return _validate(data)
        except (ValueError, UnicodeDecodeError) as exc:
            self._set_aside(f"corrupt: {exc}")
            return {}

    def _set_aside(self, problem: str) -> None:
        aside = self.path.with_name(f"{JOURNAL_NAME}.corrupt-{int(self._wall_clock())}")
        try:
            os.replace(self.path, aside)
            moved_to: str | None = str(aside)
        except OSError:
            moved_to = None
        self._log.error(
            "journal.corrupt",
            path=str(self.path),
            problem=problem,
            moved_to=moved_to,
            advice="starting a fresh journal: hooks of a notice in progress run again;"
            " inspect the saved copy and delete it when done",
        )

    def _set_aside_unreadable(self, exc: OSError) -> None:
        # Not corrupt: the file could not be read at all (permissions, an I/O error).
        aside = self.path.with_name(f"{JOURNAL_NAME}.unreadable-{int(self._wall_clock())}")
        try:
            os.replace(self.path, aside)
            moved_to: str | None = str(aside)
        except OSError:
            moved_to = None
        self._log.error(
            "journal.unreadable",
            path=str(self.path),
            error=exc.strerror or str(exc),
            uid=os.geteuid(),
            moved_to=moved_to,
            advice="give the journal to the user spotwatch runs as (chown, chmod 0600) or "
            "check the disk; starting a fresh journal: hooks of a notice in progress run again",
        )

    def _save(self, durable: bool = True) -> None:
        data = {"version": FORMAT_VERSION, "notices": self._notices}
        payload = json.dumps(data, indent=1, sort_keys=False).encode("utf-8") + b"\n"
        try:
            write_atomically(self.path, payload, durable=durable)
        except OSError as exc:
            # The hooks matter more than the record of them: go on in memory.
            if not self._write_failed:
                self._log.error(
                    "journal.write_failed",
                    path=str(self.path),
                    error=exc.strerror or str(exc),
                    advice="free space or fix permissions in the state directory;"
                    " until then a restart may run this notice's hooks again",
                )
            self._write_failed = True
            return
        if self._write_failed:
            self._log.info("journal.write_recovered", path=str(self.path))
            self._write_failed = False


def _last_deadline(entry: dict[str, Any]) -> float:
    """The latest deadline of a notice and those folded into it (-inf if unknown)."""
    try:
        return max(float(entry.get("deadline", "-inf")), float(entry.get("last_deadline", "-inf")))
    except (TypeError, ValueError):
        return float("-inf")


def _ends(entry: dict[str, Any]) -> bool:
    # Entries written before ends_instance was recorded: only a rebalance did not.
    return entry.get("kind") != REBALANCE_RECOMMENDATION


def _notice_of(notice_id: str, entry: dict[str, Any]) -> Notice | None:
    """The Notice a journal entry records (source "journal"); None if malformed."""
    try:
        env = tuple((str(k), str(v)) for k, v in entry.get("env", ()))
        return Notice(
            kind=str(entry["kind"]),
            action=str(entry["action"]),
            raw_time=str(entry.get("raw_time", "")),
            time=None,
            deadline=float(entry["deadline"]),
            id=notice_id,
            source="journal",
            ends_instance=bool(entry.get("ends_instance", _ends(entry))),
            env=env,
        )
    except (KeyError, TypeError, ValueError):
        return None


def _validate(data: Any) -> dict[str, dict[str, Any]]:
    """The notices in a parsed journal; ValueError when it is not one we wrote."""
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        raise ValueError(f"not a version {FORMAT_VERSION} spotwatch journal")
    notices = data.get("notices")
    if not isinstance(notices, dict):
        raise ValueError("no 'notices' object")
    for notice_id, entry in notices.items():
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("finished"), dict)
            or not isinstance(entry.get("complete"), bool)
        ):
            raise ValueError(f"malformed entry for notice {notice_id}")
    return notices
