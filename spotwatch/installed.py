"""How the installed service runs: its unit (and drop-ins) and settings file, read
the way systemd reads them, for ``spotwatch drill --installed``.

Parsing is pure (``parse_unit``, ``parse_env_file``, ``service_environment``);
``read_service`` reads the files under a root. What is taken: ``ExecStart=``'s
program, ``User=``, ``Group=``, ``WorkingDirectory=``, ``Environment=`` and
``EnvironmentFile=`` (whose values win over ``Environment=``, as in systemd),
and the ``PATH`` systemd gives a service that sets none. The sandboxing
directives (``ProtectSystem=``, ...) are not reproduced.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spotwatch.errors import SpotwatchError

UNIT_PATH = "/etc/systemd/system/spotwatch.service"
DROPIN_DIR = "/etc/systemd/system/spotwatch.service.d"
# What systemd sets PATH to for a service whose unit sets none.
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Unit:
    """The [Service] settings that shape a hook's world, after every drop-in."""

    program: str = ""
    user: str = ""
    group: str = ""
    working_directory: str = ""
    environment: tuple[tuple[str, str], ...] = ()
    environment_files: tuple[str, ...] = ()  # "-" prefix kept: optional
    files: tuple[str, ...] = field(default=())  # the unit files read, in order


def parse_unit(texts: Sequence[tuple[str, str]]) -> Unit:
    """The unit from ``(path, text)`` pairs: the unit, then its drop-ins in order.

    As systemd: a later assignment wins; an empty ``Environment=`` or
    ``EnvironmentFile=`` clears the list so far.
    """
    values: dict[str, str] = {}
    environment: dict[str, str] = {}
    env_files: list[str] = []
    for _, text in texts:
        section = ""
        for raw in _logical_lines(text):
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                continue
            if section != "Service" or "=" not in line:
                continue
            key, _, value = line.partition("=")
            key, value = key.strip(), value.strip()
            if key == "Environment":
                if not value:
                    environment.clear()
                for word in _words(value):
                    name, sep, setting = word.partition("=")
                    if sep and name:
                        environment[name] = setting
            elif key == "EnvironmentFile":
                if not value:
                    env_files.clear()
                else:
                    env_files.append(value)
            elif key in ("ExecStart", "User", "Group", "WorkingDirectory"):
                values[key] = value
    program = ""
    words = _words(values.get("ExecStart", ""))
    if words:
        program = words[0].lstrip("-@:+!")
    return Unit(
        program=program,
        user=values.get("User", ""),
        group=values.get("Group", ""),
        working_directory=values.get("WorkingDirectory", ""),
        environment=tuple(environment.items()),
        environment_files=tuple(env_files),
        files=tuple(path for path, _ in texts),
    )


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines as systemd's EnvironmentFile= reads them (comments with
    ``#`` or ``;``, quotes around a value removed)."""
    out: dict[str, str] = {}
    for raw in _logical_lines(text):
        line = raw.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        name, _, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if name:
            out[name] = value
    return out


def service_environment(
    unit: Unit, env_files: Mapping[str, str], account: Mapping[str, str]
) -> dict[str, str]:
    """The environment the service starts with: systemd's PATH, the account's
    USER/LOGNAME/HOME/SHELL when ``User=`` is set, ``Environment=``, then each
    EnvironmentFile= (by its path in ``env_files``, already read) over it."""
    env = {"PATH": SYSTEMD_PATH, **account}
    env.update(dict(unit.environment))
    for path in unit.environment_files:
        env.update(parse_env_file(env_files.get(path.lstrip("-"), "")))
    return env


@dataclass(frozen=True)
class Service:
    """The installed service as a drill reproduces it."""

    unit: Unit
    environment: dict[str, str]
    working_directory: Path
    settings_files: tuple[Path, ...]  # the EnvironmentFile= files that exist
    uid: int | None  # None: as whoever runs the drill (root for a system service)
    gid: int | None
    groups: tuple[int, ...] = ()


def read_service(root: Path) -> Service:
    """Read the installed unit, drop-ins and settings file under ``root``."""
    unit_file = _under(root, UNIT_PATH)
    if not unit_file.is_file():
        raise SpotwatchError(
            f"no installed service: {unit_file} does not exist; run 'spotwatch install' "
            "first, or rehearse without --installed",
            exit_code=2,
        )
    dropins = sorted(_under(root, DROPIN_DIR).glob("*.conf"))
    unit = parse_unit([(str(p), p.read_text()) for p in (unit_file, *dropins)])
    files: dict[str, str] = {}
    found: list[Path] = []
    for entry in unit.environment_files:
        path = _under(root, entry.lstrip("-"))
        try:
            files[entry.lstrip("-")] = path.read_text()
            found.append(path)
        except FileNotFoundError:
            if not entry.startswith("-"):
                raise SpotwatchError(
                    f"the unit's EnvironmentFile={entry} is missing ({path}): the "
                    "service would not start",
                    exit_code=2,
                ) from None
        except OSError as exc:
            raise SpotwatchError(f"cannot read {path}: {exc.strerror or exc}") from None
    account, uid, gid, groups = _account(unit.user, unit.group)
    env = service_environment(unit, files, account)
    workdir = unit.working_directory.lstrip("-") or "/"
    if workdir == "~":
        workdir = account.get("HOME", "/")
    return Service(unit, env, _under(root, workdir), tuple(found), uid, gid, groups)


def _account(user: str, group: str) -> tuple[dict[str, str], int | None, int | None,
                                             tuple[int, ...]]:  # fmt: skip
    if not user:
        return {}, None, None, ()
    import grp
    import os
    import pwd

    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise SpotwatchError(f"the unit's User={user} does not exist here", exit_code=2) from None
    gid = entry.pw_gid
    if group:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise SpotwatchError(
                f"the unit's Group={group} does not exist here", exit_code=2
            ) from None
    groups = tuple(os.getgrouplist(entry.pw_name, gid))
    account = {"USER": entry.pw_name, "LOGNAME": entry.pw_name, "HOME": entry.pw_dir,
               "SHELL": entry.pw_shell}  # fmt: skip
    return account, entry.pw_uid, gid, groups


def _under(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def _logical_lines(text: str) -> list[str]:
    """Lines with systemd's trailing-backslash continuations joined."""
    out: list[str] = []
    pending = ""
    for line in text.splitlines():
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    if pending:
        out.append(pending)
    return out


def _words(value: str) -> list[str]:
    try:
        return shlex.split(value)
    except ValueError:
        return value.split()
