"""Which files in the hooks directory run, in what order, and with what environment.

The rules (README, "Writing hooks") are pure functions over names and stat results:
``name_problem`` and ``safety_problem``. ``plan_hooks`` is the thin layer that
reads the directory and stats each entry (following symlinks: a link counts as
its target) and returns a ``HookPlan``: the hooks that would run, in byte order
of their names, and every other entry with the reason and the fix.

Severity of a rejected entry:

- ``ignored``: not a hook at all (backup/package-manager file names, names
  starting with a dot or dash, directories, sockets, ...). Informational.
- ``skipped``: meant as a hook but cannot run (no execute bit, dangling link).
  A warning naming the fix.
- ``refused``: unsafe (group- or world-writable, or owned by someone other
  than root or the user spotwatch runs as), or inside an unsafe hooks
  directory. An error; never run.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spotwatch.hook_env import hook_environment
from spotwatch.notice import Identity, Notice

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
IGNORED_SUFFIXES = (
    "~",
    ".bak",
    ".orig",
    ".swp",
    ".disabled",
    ".dpkg-old",
    ".dpkg-new",
    ".dpkg-dist",
    ".dpkg-tmp",
    ".rpmnew",
    ".rpmsave",
    ".rpmorig",
)

IGNORED = "ignored"
SKIPPED = "skipped"
REFUSED = "refused"


@dataclass(frozen=True)
class Hook:
    """A hook that would run. ``path`` is the entry in the hooks directory (maybe a link)."""

    name: str
    path: Path


@dataclass(frozen=True)
class Rejected:
    """A directory entry that will not run, why, and what fixes it."""

    name: str
    path: Path
    reason: str
    fix: str
    severity: str  # IGNORED, SKIPPED or REFUSED


@dataclass(frozen=True)
class HookPlan:
    """What would run from ``directory``; ``problem`` set means nothing runs."""

    directory: Path
    hooks: tuple[Hook, ...]
    rejected: tuple[Rejected, ...]
    problem: str | None = None
    fix: str = ""
    missing: bool = False  # the directory does not exist, is not one, or cannot be listed

    @property
    def refused(self) -> bool:
        """True when the directory is unusable or any entry is refused as unsafe."""
        return self.problem is not None or any(r.severity == REFUSED for r in self.rejected)

    @property
    def warnings(self) -> tuple[Rejected, ...]:
        """The entries an operator should hear about (skipped or refused)."""
        return tuple(r for r in self.rejected if r.severity != IGNORED)


def log_plan(log: Any, plan: HookPlan) -> None:
    """Tell the operator what ``plan`` will not run, and how to fix it: one wording everywhere.

    An unusable directory and refused entries are errors, skipped ones warnings,
    ignored ones (backup files and the like) debug. ``log`` is a structlog logger.
    """
    if plan.problem:
        log.error("hooks.refused", directory=str(plan.directory), problem=plan.problem,
                  fix=plan.fix)
    for item in plan.rejected:
        level = {REFUSED: log.error, SKIPPED: log.warning}.get(item.severity, log.debug)
        level(f"hook.{item.severity}", hook=item.name, reason=item.reason, fix=item.fix)


def sort_key(name: str) -> bytes:
    """Byte order of names, as in the C locale."""
    return name.encode("utf-8", "surrogateescape")


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a hook name, or None when it is one."""
    if name.endswith(IGNORED_SUFFIXES):  # one call for all of them; then which one
        suffix = next(s for s in IGNORED_SUFFIXES if name.endswith(s))
        if suffix == ".disabled":  # how the example hooks ship, and how to turn one off
            return "disabled (name ends in '.disabled')"
        return f"name ends in '{suffix}' (backup or package-manager file)"
    if not NAME_PATTERN.fullmatch(name):  # fullmatch: "$" alone lets a final "\n" through
        return "name does not match ^[A-Za-z0-9][A-Za-z0-9_.-]*$"
    return None


def safety_problem(mode: int, uid: int, allowed_uids: frozenset[int]) -> str | None:
    """Why a file or directory with this mode and owner is unsafe, or None when safe."""
    if not mode & (stat.S_IWGRP | stat.S_IWOTH) and uid in allowed_uids:
        return None  # the usual answer, checked once per hook just before it runs
    problems = []
    if mode & stat.S_IWGRP:
        problems.append("group-writable")
    if mode & stat.S_IWOTH:
        problems.append("world-writable")
    if uid not in allowed_uids:
        problems.append(f"owned by uid {uid}")
    return ", ".join(problems) if problems else None


def safety_fix(path: Path, mode: int, uid: int, allowed_uids: frozenset[int]) -> str:
    """The commands that make ``path`` safe (empty when it already is)."""
    fixes = []
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        fixes.append(f"chmod go-w {_quote(path)}")
    if uid not in allowed_uids:
        fixes.append(f"chown root: {_quote(path)}")
    return " && ".join(fixes)


def default_allowed_uids() -> frozenset[int]:
    """Root and the user spotwatch runs as."""
    return frozenset({0, os.geteuid()})


def check_hook(path: Path, allowed_uids: frozenset[int] | None = None) -> Rejected | None:
    """Re-check one hook right before it runs: a Rejected if it is no longer runnable.

    One stat when all is well: its name passed the rule when it was planned, and
    if it lost the execute permission os.access would have seen, starting it
    fails and says so.
    """
    allowed = default_allowed_uids() if allowed_uids is None else allowed_uids
    try:
        st = os.stat(path)  # follows symlinks: a link counts as its target
    except OSError:
        pass  # the long way says why
    else:
        # The usual answer in one step; anything else goes the long way for its reason.
        mode = st.st_mode
        if (
            stat.S_ISREG(mode)
            and mode & 0o111
            and not mode & _GROUP_OR_OTHER_WRITE
            and st.st_uid in allowed
        ):
            return None
    return _check_entry(path.name, path, allowed, recheck=True)


_GROUP_OR_OTHER_WRITE = stat.S_IWGRP | stat.S_IWOTH


def plan_hooks(directory: Path, allowed_uids: frozenset[int] | None = None) -> HookPlan:
    """Read ``directory`` and decide what would run, in order, and why the rest would not.

    Hook paths are absolute: hooks run with ``/`` as their working directory, so a
    relative ``--hooks-dir hooks.d`` must not leave them unreachable.
    """
    allowed = default_allowed_uids() if allowed_uids is None else allowed_uids
    directory = directory.absolute()
    try:
        dir_stat = os.stat(directory)
    except FileNotFoundError:
        return HookPlan(
            directory,
            (),
            (),
            problem=f"hooks directory {directory} does not exist",
            fix=f"create it: install -d -m 0755 {_quote(directory)}; or pass --hooks-dir",
            missing=True,
        )
    except OSError as exc:
        return HookPlan(
            directory,
            (),
            (),
            problem=f"cannot read hooks directory {directory}: {exc.strerror or exc}",
            fix="check the path and its permissions",
            missing=True,
        )
    if not stat.S_ISDIR(dir_stat.st_mode):
        return HookPlan(
            directory,
            (),
            (),
            problem=f"hooks directory {directory} is not a directory",
            fix="point --hooks-dir at a directory",
            missing=True,
        )
    try:
        names = os.listdir(directory)
    except OSError as exc:
        return HookPlan(
            directory,
            (),
            (),
            problem=f"cannot list hooks directory {directory}: {exc.strerror or exc}",
            fix="check its permissions",
            missing=True,
        )

    dir_problem = safety_problem(dir_stat.st_mode, dir_stat.st_uid, allowed)
    dir_fix = safety_fix(directory, dir_stat.st_mode, dir_stat.st_uid, allowed)
    hooks: list[Hook] = []
    rejected: list[Rejected] = []
    for name in sorted(names, key=sort_key):
        path = directory / name
        verdict = _check_entry(name, path, allowed)
        if verdict is None and dir_problem is not None:
            verdict = Rejected(
                name, path, f"hooks directory is unsafe ({dir_problem})", dir_fix, REFUSED
            )
        if verdict is None:
            hooks.append(Hook(name, path))
        else:
            rejected.append(verdict)
    if dir_problem is not None:
        return HookPlan(
            directory,
            (),
            tuple(rejected),
            problem=f"hooks directory {directory} is unsafe: {dir_problem}",
            fix=dir_fix,
        )
    return HookPlan(directory, tuple(hooks), tuple(rejected))


def _check_entry(
    name: str, path: Path, allowed: frozenset[int], recheck: bool = False
) -> Rejected | None:
    problem = None if recheck else name_problem(name)
    if problem is not None:
        return Rejected(name, path, problem, "rename it to make it a hook", IGNORED)
    try:
        st = os.stat(path)  # follows symlinks: a link counts as its target
    except FileNotFoundError:
        target = _readlink(path)
        if target is not None:
            return Rejected(
                name,
                path,
                f"dangling symlink to {target}",
                f"fix the link's target or remove it (rm {_quote(path)})",
                SKIPPED,
            )
        return Rejected(name, path, "disappeared while reading", "none needed", IGNORED)
    except OSError as exc:
        return Rejected(
            name,
            path,
            f"cannot stat: {exc.strerror or exc}",
            f"check {_quote(path)} and its target",
            SKIPPED,
        )
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        return Rejected(name, path, kind, "move it out of the hooks directory", IGNORED)
    unsafe = safety_problem(st.st_mode, st.st_uid, allowed)
    executable = bool(st.st_mode & 0o111) and (recheck or os.access(path, os.X_OK))
    if unsafe is not None:
        reason, fix = unsafe, safety_fix(path, st.st_mode, st.st_uid, allowed)
        if not executable:
            reason += ", not executable"
            fix += f" && chmod +x {_quote(path)}"
        return Rejected(name, path, reason, fix, REFUSED)
    if not executable:
        return Rejected(name, path, "not executable", f"chmod +x {_quote(path)}", SKIPPED)
    return None


def _readlink(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _quote(path: Path) -> str:
    return shlex.quote(str(path))


def notice_environment(
    base_env: Mapping[str, str],
    notice: Notice,
    identity: Identity,
    *,
    drill: bool = False,
) -> dict[str, str]:
    """``base_env`` plus the SPOTWATCH_* variables that describe ``notice``.

    SPOTWATCH_SECONDS_LEFT is not here: the runner sets it at each hook's start.
    Stale SPOTWATCH_* values inherited from ``base_env`` are replaced or dropped
    (see ``hook_env.hook_environment``).
    """
    variables = {
        "SPOTWATCH_EVENT": notice.kind,
        "SPOTWATCH_ACTION": notice.action,
        "SPOTWATCH_NOTICE_TIME": notice.raw_time,
        "SPOTWATCH_DEADLINE": str(int(notice.deadline)),
        "SPOTWATCH_NOTICE_ID": notice.id,
        "SPOTWATCH_INSTANCE_ID": identity.instance_id,
        "SPOTWATCH_INSTANCE_TYPE": identity.instance_type,
        "SPOTWATCH_REGION": identity.region,
        "SPOTWATCH_AZ": identity.availability_zone,
        # hooks.d runs at the end; resume.d's run carries SPOTWATCH_PHASE=resume in env.
        "SPOTWATCH_PHASE": "end",
    }
    variables.update(notice.env)
    if drill:
        variables["SPOTWATCH_DRILL"] = "1"
    return hook_environment(base_env, variables, _NOTICE_VARIABLES)


_NOTICE_VARIABLES = frozenset(
    {
        "SPOTWATCH_EVENT",
        "SPOTWATCH_ACTION",
        "SPOTWATCH_NOTICE_TIME",
        "SPOTWATCH_DEADLINE",
        "SPOTWATCH_SECONDS_LEFT",
        "SPOTWATCH_HOOK_DEADLINE",
        "SPOTWATCH_NOTICE_ID",
        "SPOTWATCH_INSTANCE_ID",
        "SPOTWATCH_INSTANCE_TYPE",
        "SPOTWATCH_REGION",
        "SPOTWATCH_AZ",
        "SPOTWATCH_DRILL",
        "SPOTWATCH_ASG_NAME",
        "SPOTWATCH_MAINTENANCE_EVENT_ID",
        # Google and Azure notices.
        "SPOTWATCH_GCE_MAINTENANCE_EVENT",
        "SPOTWATCH_AZURE_EVENT_ID",
        "SPOTWATCH_AZURE_EVENT_TYPE",
        # A system shutdown with no notice, and the way back.
        "SPOTWATCH_SHUTDOWN",
        "SPOTWATCH_PHASE",
    }
)
