"""``spotwatch drill --installed``: the drill, run the way the installed service runs.

The drill is started again as the unit's own program (``ExecStart=``), with the
service's user, working directory and environment (systemd's PATH, the unit's
``Environment=`` and ``EnvironmentFile=``) and nothing of the caller's, and with
the settings file's hooks directory, timeouts and sources as its flags. So a hook
that needs a tool missing from the service's PATH, a setting only the settings
file has, or a file only the service's user cannot read fails here as it would
at the real notice.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from spotwatch.config import DEFAULT_HOOKS_DIR, DEFAULT_RESUME_DIR
from spotwatch.errors import SpotwatchError
from spotwatch.installed import Service, read_service

# The settings file's variables that become the drill's flags, and how.
_PATHS = (("SPOTWATCH_HOOKS_DIR", "--hooks-dir", DEFAULT_HOOKS_DIR),
          ("SPOTWATCH_RESUME_DIR", "--resume-dir", DEFAULT_RESUME_DIR))  # fmt: skip
_VALUES = (("SPOTWATCH_HOOK_TIMEOUT", "--hook-timeout"),
           ("SPOTWATCH_DEADLINE_MARGIN", "--deadline-margin"),
           ("SPOTWATCH_WATCH", "--watch"))  # fmt: skip
_CLOUDS = ("aws", "gcp", "azure")


def service_flags(env: Mapping[str, str], root: Path) -> tuple[list[str], dict[str, str]]:
    """The drill flags the service's environment implies, and that environment with
    its directories under ``root`` (pure)."""
    flags: list[str] = []
    child = dict(env)
    for name, flag, default in _PATHS:
        value = env.get(name, "").strip() or default
        placed = str(root / value.lstrip("/")) if str(root) != "/" else value
        child[name] = placed
        flags += [flag, placed]
    for name, flag in _VALUES:
        value = env.get(name, "").strip()
        if value:
            flags += [flag, value]
    cloud = env.get("SPOTWATCH_CLOUD", "").strip()
    if cloud in _CLOUDS:
        flags += ["--cloud", cloud]
    return flags, child


def program_path(service: Service, root: Path) -> str:
    program = service.unit.program
    if not program.startswith("/"):
        raise SpotwatchError(
            f"the unit's ExecStart= has no absolute program ({program!r}): "
            f"see {service.unit.files[0]}",
            exit_code=2,
        )
    for candidate in (root / program.lstrip("/"), Path(program)):
        if os.access(candidate, os.X_OK) and candidate.is_file():
            return str(candidate)
    raise SpotwatchError(
        f"the unit's program {program} does not exist (ExecStart= in {service.unit.files[0]}): "
        "the service could not start; run 'spotwatch install' again",
        exit_code=2,
    )


def describe(service: Service, program: str) -> str:
    """The first line: that this is the installed service's world, and what it is."""
    unit = service.unit.files[0]
    dropins = len(service.unit.files) - 1
    settings = ", ".join(str(p) for p in service.settings_files) or "none"
    user = service.environment.get("USER") or "root (no User=)"
    return (
        f"spotwatch drill --installed: as the service runs: unit {unit}"
        f"{f' + {dropins} drop-in(s)' if dropins else ''}, settings {settings}, "
        f"user {user}, working directory {service.working_directory}, "
        f"program {program}, PATH={service.environment.get('PATH', '')}"
    )


def drill_installed(root: Path | None, own_args: Sequence[str], *, as_json: bool = False) -> int:
    base = root if root is not None else Path("/")
    service = read_service(base)
    program = program_path(service, base)
    flags, env = service_flags(service.environment, base)
    if service.uid is not None and os.geteuid() not in (0, service.uid):
        raise SpotwatchError(
            f"the service runs as {service.environment.get('USER')}: run the drill as root "
            "(sudo) to rehearse as that user",
            exit_code=2,
        )
    if not service.working_directory.is_dir():
        raise SpotwatchError(
            f"the unit's WorkingDirectory= {service.working_directory} does not exist: "
            "the service could not start",
            exit_code=2,
        )
    print(describe(service, program), file=sys.stderr if as_json else sys.stdout, flush=True)
    switch = service.uid is not None and service.uid != os.geteuid()
    try:
        proc = subprocess.run(
            [program, "drill", *flags, *own_args],
            env=env,
            cwd=service.working_directory,
            stdin=subprocess.DEVNULL,
            check=False,
            user=service.uid if switch else None,
            group=service.gid if switch else None,
            extra_groups=list(service.groups) if switch else None,
        )
    except OSError as exc:
        who = service.environment.get("USER") or "root"
        raise SpotwatchError(
            f"cannot run {program} as {who}: {exc.strerror or exc}; nor could the service"
        ) from None
    return proc.returncode
