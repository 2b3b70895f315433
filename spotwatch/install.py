"""``spotwatch install`` and ``uninstall``: the unit, the settings file, the example hooks.

Planning is pure: what should be on disk (``Item``) and what is there decide
what to do with each file (``Step``). Applying the plan, reading the disk and
running ``systemctl`` are the edges.

Never overwrite what the operator changed: a manifest records the sha256 of
every file install wrote; a file whose content no longer matches (or that
install never wrote) is kept and reported. An unchanged file may be updated.
Example hooks are installed as ``NAME.disabled`` (a name spotwatch skips), so
``mv NAME.disabled NAME`` enables one; an enabled one is the operator's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from spotwatch import shipped
from spotwatch.atomicfile import write_atomically
from spotwatch.config import DEFAULT_HOOKS_DIR, DEFAULT_RESUME_DIR
from spotwatch.errors import SpotwatchError, UsageError
from spotwatch.script_path import find_spotwatch

UNIT_NAME = "spotwatch.service"
UNIT_PATH = "/etc/systemd/system/spotwatch.service"
STRICT_PATH = "/etc/systemd/system/spotwatch.service.d/strict.conf"
CONFIG_DIR = "/etc/spotwatch"
HOOKS_DIR = DEFAULT_HOOKS_DIR
RESUME_DIR = DEFAULT_RESUME_DIR
ENV_PATH = "/etc/spotwatch/spotwatch.env"
METRICS_ENV = "SPOTWATCH_METRICS_FILE"
MANIFEST_PATH = "/var/lib/spotwatch/install-manifest.json"
DISABLED = ".disabled"

# Directories install creates when missing, with their modes; removed by
# uninstall only when empty.
DIRECTORIES: tuple[tuple[str, int], ...] = (
    ("/etc/systemd/system", 0o755),
    (CONFIG_DIR, 0o755),
    (HOOKS_DIR, 0o755),
    (RESUME_DIR, 0o755),
    ("/var/lib/spotwatch", 0o700),
)
STRICT_DIR = "/etc/systemd/system/spotwatch.service.d"

# Kinds of file: a unit file is removed by uninstall even when changed (the
# service must go); config and examples are left when the operator changed them.
UNIT = "unit"
CONFIG = "config"
EXAMPLE = "example"

# Step actions.
CREATE = "create"
UPDATE = "update"
SAME = "unchanged"
KEEP = "keep"
SKIP = "skip"
REMOVE = "remove"
ABSENT = "absent"

_PAST = {CREATE: "created", UPDATE: "updated", SAME: "unchanged", KEEP: "kept",
         SKIP: "skipped", REMOVE: "removed", ABSENT: "absent"}  # fmt: skip


@dataclass(frozen=True)
class Item:
    """A file install puts on the target system."""

    path: str  # absolute path on the target system
    content: bytes
    mode: int
    kind: str
    enabled_name: str = ""  # for an example hook: the name it has once enabled


@dataclass(frozen=True)
class Step:
    """What to do with one path, and why."""

    path: str
    action: str
    reason: str = ""
    item: Item | None = None


@dataclass(frozen=True)
class OnDisk:
    """What is at a path now: None when nothing; ``content`` None when not a regular file."""

    content: bytes | None
    what: str = "file"  # "file", "symlink", "directory", "special file"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the files ---------------------------------------------------------------


_PLAIN_WORD = re.compile(r"[A-Za-z0-9/._+@:,=%$-]+")


def exec_word(path: str) -> str:
    """``path`` written as the first word of an ExecStart= line.

    Checked against systemd-analyze verify: ``%`` must be doubled (specifiers),
    ``$`` stays as it is (no expansion in the program's path), a space needs
    double quotes, and systemd refuses backslashes and quotes in the path.
    """
    if not path.startswith("/"):
        raise UsageError(f"ExecStart= needs an absolute path, got {path!r}")
    if any(ord(ch) < 32 or ord(ch) == 127 or ch in "\\\"'" for ch in path):
        raise UsageError(
            f"systemd cannot run {path!r}: control characters, quotes and backslashes "
            "are not allowed in ExecStart=; install spotwatch under a plainer path"
        )
    text = path.replace("%", "%%")
    return text if _PLAIN_WORD.fullmatch(path) else f'"{text}"'


def render_unit(template: str, spotwatch_path: str) -> str:
    """The unit with ExecStart= running ``spotwatch_path run`` and SPOTWATCH_BIN set to it."""
    word = exec_word(spotwatch_path)
    # Environment= takes the same quoting; the quotes go around the whole assignment.
    binding = f"SPOTWATCH_BIN={word.strip(chr(34))}"
    if word.startswith('"'):
        binding = f'"{binding}"'
    replacements = {
        "ExecStart=": f"ExecStart={word} run\n",
        "Environment=SPOTWATCH_BIN=": f"Environment={binding}\n",
    }
    lines = template.splitlines(keepends=True)
    for prefix, line in replacements.items():
        where = [i for i, text in enumerate(lines) if text.startswith(prefix)]
        if len(where) != 1:
            raise SpotwatchError(f"the packaged unit file must have exactly one {prefix} line")
        lines[where[0]] = line
    return "".join(lines)


def planned_items(
    spotwatch_path: str,
    *,
    unit_template: str,
    strict_conf: bytes,
    env_template: bytes,
    hooks: Mapping[str, bytes],
    resume_hooks: Mapping[str, bytes] | None = None,
) -> list[Item]:
    """Every file install manages, strict drop-in included (the plan decides on it)."""
    items = [
        Item(UNIT_PATH, render_unit(unit_template, spotwatch_path).encode(), 0o644, UNIT),
        Item(STRICT_PATH, strict_conf, 0o644, UNIT),
        # 0600: it may hold a webhook URL, which is a secret.
        Item(ENV_PATH, env_template, 0o600, CONFIG),
    ]
    for name, content in sorted(hooks.items()):
        items.append(Item(f"{HOOKS_DIR}/{name}{DISABLED}", content, 0o755, EXAMPLE, name))
    for name, content in sorted((resume_hooks or {}).items()):
        items.append(Item(f"{RESUME_DIR}/{name}{DISABLED}", content, 0o755, EXAMPLE, name))
    return items


def enabled_path(item: Item) -> str:
    """Where an example hook is once enabled: its own directory, its enabled name."""
    return f"{item.path.rsplit('/', 1)[0]}/{item.enabled_name}"


def packaged_items(spotwatch_path: str) -> list[Item]:
    return planned_items(
        spotwatch_path,
        unit_template=shipped.read(shipped.UNIT).decode(),
        strict_conf=shipped.read(shipped.STRICT),
        env_template=shipped.read(shipped.ENV),
        hooks=shipped.example_hooks(),
        resume_hooks=shipped.example_hooks(shipped.RESUME),
    ) + example_items(shipped.examples())


def example_items(examples: Mapping[str, bytes]) -> list[Item]:
    """The action and drain examples, in ``examples/`` beside the hooks (a directory
    spotwatch never runs from): copy or link one up a level to enable it. Kept, as
    configuration is, once the operator changed it."""
    return [
        Item(f"{CONFIG_DIR}/{name}", content, 0o755, CONFIG)
        for name, content in sorted(examples.items())
    ]


def render_fleet_unit(template: str, spotwatch_path: str) -> str:
    """The fleet unit with its ExecStart= running ``spotwatch_path`` (its arguments kept)."""
    word = exec_word(spotwatch_path)
    lines = template.splitlines(keepends=True)
    where = [i for i, text in enumerate(lines) if text.startswith("ExecStart=")]
    if len(where) != 1:
        raise SpotwatchError("the packaged fleet unit must have exactly one ExecStart= line")
    _, _, arguments = lines[where[0]].partition(" ")
    lines[where[0]] = f"ExecStart={word} {arguments}"
    return "".join(lines)


PRINTABLE = ("unit", "env", "hooks", "fleet-unit", "strict")


def printable(what: str, spotwatch_path: str) -> str:
    """The shipped file ``what`` (one of PRINTABLE) as install writes it; units run
    ``spotwatch_path``. ``hooks`` is every example, each under a ``==> NAME <==`` line."""
    if what == "unit":
        return render_unit(shipped.read(shipped.UNIT).decode(), spotwatch_path)
    if what == "fleet-unit":
        return render_fleet_unit(shipped.read(shipped.FLEET_UNIT).decode(), spotwatch_path)
    if what == "env":
        return shipped.read(shipped.ENV).decode()
    if what == "strict":
        return shipped.read(shipped.STRICT).decode()
    if what == "hooks":
        return "\n".join(
            f"==> {name} <==\n{content.decode()}"
            for name, content in shipped.example_hooks().items()
        )
    raise UsageError(f"nothing to print called {what!r}: choose one of {', '.join(PRINTABLE)}")


def print_shipped(what: str, write: Callable[[str], object] = sys.stdout.write) -> int:
    """``spotwatch install --print WHAT``: writes nothing to disk."""
    program = unit_program() if what in ("unit", "fleet-unit") else ""
    write(printable(what, program))
    return 0


# -- decisions (pure) ----------------------------------------------------------


def plan_install(
    items: Sequence[Item],
    disk: Mapping[str, OnDisk | None],
    manifest: Mapping[str, str],
    *,
    strict: bool,
) -> list[Step]:
    """What install does with each item, given what is on disk and what it wrote before."""
    steps = []
    for item in items:
        here = disk.get(item.path)
        if item.path == STRICT_PATH and not strict:
            steps.append(_unwanted(item, here, manifest))
            continue
        if item.kind == EXAMPLE:
            enabled = enabled_path(item)
            if disk.get(enabled) is not None:
                steps.append(Step(item.path, SKIP, f"{item.enabled_name} is enabled", item))
                continue
        steps.append(_wanted(item, here, manifest))
    return steps


def _wanted(item: Item, here: OnDisk | None, manifest: Mapping[str, str]) -> Step:
    if here is None:
        return Step(item.path, CREATE, "", item)
    if here.content is None:
        return Step(item.path, KEEP, f"a {here.what} is there; left alone", item)
    current = sha256(here.content)
    if current == sha256(item.content):
        return Step(item.path, SAME, "", item)
    if manifest.get(item.path) == current:
        return Step(item.path, UPDATE, "", item)
    why = "changed by you" if item.path in manifest else "not written by spotwatch install"
    return Step(item.path, KEEP, f"{why}; the new version is not installed", item)


def _unwanted(item: Item, here: OnDisk | None, manifest: Mapping[str, str]) -> Step:
    """The strict drop-in without --strict: remove it only if install put it there unchanged."""
    if here is None:
        return Step(item.path, ABSENT, "", item)
    if here.content is not None and manifest.get(item.path) == sha256(here.content):
        return Step(item.path, REMOVE, "no --strict", item)
    return Step(item.path, KEEP, "not installed by this run's options; left alone", item)


def plan_uninstall(
    items: Sequence[Item],
    disk: Mapping[str, OnDisk | None],
    manifest: Mapping[str, str],
) -> list[Step]:
    """What uninstall does with each path install may have written."""
    steps = []
    for item in items:
        here = disk.get(item.path)
        if here is None:
            steps.append(Step(item.path, ABSENT, "", item))
            continue
        if here.content is None:
            steps.append(Step(item.path, KEEP, f"a {here.what} is there; left alone", item))
            continue
        current = sha256(here.content)
        recorded = manifest.get(item.path)
        if item.kind == UNIT:
            # The service goes, whatever was edited in its unit.
            changed = recorded is not None and recorded != current
            steps.append(
                Step(item.path, REMOVE, "it had changes of yours" if changed else "", item)
            )
        elif current in (recorded, sha256(item.content)):
            steps.append(Step(item.path, REMOVE, "", item))
        elif recorded is not None:
            steps.append(Step(item.path, KEEP, "changed by you", item))
        else:
            steps.append(Step(item.path, KEEP, "not written by spotwatch install", item))
    return steps


def new_manifest(steps: Sequence[Step], old: Mapping[str, str]) -> dict[str, str]:
    """The manifest after applying ``steps``: what install wrote or found identical."""
    out: dict[str, str] = {}
    for step in steps:
        if step.item is None:
            continue
        if step.action in (CREATE, UPDATE, SAME):
            out[step.path] = sha256(step.item.content)
        elif step.action == KEEP and step.path in old:
            out[step.path] = old[step.path]  # still ours, but changed: uninstall knows
    return out


def describe(step: Step, root: Path) -> str:
    where = str(target(root, step.path))
    line = f"{_PAST[step.action]} {where}"
    return f"{line}: {step.reason}" if step.reason else line


# -- the disk ----------------------------------------------------------------------


def target(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def read_disk(root: Path, paths: Sequence[str]) -> dict[str, OnDisk | None]:
    out: dict[str, OnDisk | None] = {}
    for path in paths:
        full = target(root, path)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            out[path] = None
            continue
        if stat.S_ISREG(st.st_mode):
            out[path] = OnDisk(full.read_bytes())
        elif stat.S_ISLNK(st.st_mode):
            out[path] = OnDisk(None, "symlink")
        elif stat.S_ISDIR(st.st_mode):
            out[path] = OnDisk(None, "directory")
        else:
            out[path] = OnDisk(None, "special file")
    return out


def read_manifest(root: Path) -> dict[str, str]:
    path = target(root, MANIFEST_PATH)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SpotwatchError(
            f"cannot read {path}: {exc}; move it aside to treat every file as yours"
        ) from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        raise SpotwatchError(f"{path} is not an install manifest; move it aside and run again")
    return {str(k): str(v) for k, v in files.items()}


def write_manifest(root: Path, files: Mapping[str, str]) -> None:
    path = target(root, MANIFEST_PATH)
    if not files:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    body = json.dumps({"version": 1, "files": dict(sorted(files.items()))}, indent=2) + "\n"
    write_atomically(path, body.encode(), 0o644)


def ensure_directories(
    root: Path, dirs: Sequence[tuple[str, int]], out: Callable[[str], None]
) -> None:
    for path, mode in dirs:
        full = target(root, path)
        if full.is_dir():
            continue
        full.mkdir(parents=True, exist_ok=True)
        full.chmod(mode)  # not subject to the umask
        out(f"created {full}/")


def warn_unsafe_hooks_dir(root: Path, out: Callable[[str], None]) -> None:
    full = target(root, HOOKS_DIR)
    try:
        mode = full.stat().st_mode
    except OSError:
        return
    if mode & 0o022:
        out(
            f"warning: {full} is group- or world-writable, so spotwatch will refuse to run "
            f"its hooks: chmod go-w {full}"
        )


def apply(root: Path, steps: Sequence[Step], out: Callable[[str], None]) -> None:
    for step in steps:
        full = target(root, step.path)
        if step.action in (CREATE, UPDATE) and step.item is not None:
            full.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(full, step.item.content, step.item.mode)
        elif step.action == REMOVE:
            full.unlink()
        if step.action != ABSENT:
            out(describe(step, root))


# -- systemctl and the spotwatch script ---------------------------------------------


# run(argv, out): the exit status; the command's own lines go through ``out``.
Runner = Callable[[Sequence[str], Callable[[str], None]], int]


def run_command(argv: Sequence[str], out: Callable[[str], None]) -> int:
    """Run ``argv`` and relay its output (stdout and stderr, in order) through ``out``,
    each line tagged with the program, so it never interleaves with ours."""
    try:
        proc = subprocess.run(list(argv), check=False, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    except FileNotFoundError:
        return 127
    for line in proc.stdout.decode(errors="replace").splitlines():
        if line.strip():
            out(f"  {argv[0]}: {line.rstrip()}")
    return proc.returncode


def unit_program() -> str:
    """What the units run: the one-file install's wrapper when this is the .pyz, else
    the installed spotwatch script."""
    from spotwatch import onefile

    return onefile.WRAPPER_PATH if onefile.running_pyz() is not None else find_spotwatch()


def _need_root(root: Path | None, command: str, system_root: Path) -> Path:
    if root is not None:
        return root
    if os.geteuid() != 0:
        raise UsageError(
            f"'spotwatch {command}' writes to /etc and runs systemctl: run it as root "
            "(sudo), or pass --root DIR to work on a directory tree instead"
        )
    return system_root


def _systemctl(run: Runner, out: Callable[[str], None], *args: str) -> None:
    argv = ["systemctl", *args]
    status = run(argv, out)
    if status == 127:
        raise SpotwatchError(
            "systemctl not found: this machine does not run systemd; the files are in "
            "place (use --no-enable to only write them)"
        )
    if status != 0:
        raise SpotwatchError(
            f"'{' '.join(argv)}' failed (exit {status}); the files are in place: "
            "see 'systemctl status spotwatch' and 'journalctl -u spotwatch'"
        )


# -- the commands ----------------------------------------------------------------------


def install(
    root: Path | None = None,
    *,
    enable: bool = True,
    strict: bool = False,
    spotwatch_path: str | None = None,
    run: Runner = run_command,
    out: Callable[[str], None] = print,
    system_root: Path = Path("/"),
) -> int:
    """Install unit, settings and example hooks under ``root`` (None: the system).

    ``system_root`` is where "the system" is: a seam for tests of the systemctl steps.
    """
    use_systemctl = root is None
    root = _need_root(root, "install", system_root)
    # Run from the one-file spotwatch (.pyz): its code goes to /opt/spotwatch first.
    from spotwatch import onefile

    pyz = onefile.running_pyz() if spotwatch_path is None else None
    code_changed = False
    if pyz is not None:
        code_changed = onefile.place(root, pyz, out=out)
        exe = onefile.WRAPPER_PATH
    else:
        exe = spotwatch_path or find_spotwatch()
    items = packaged_items(exe)
    manifest = read_manifest(root)
    disk = read_disk(root, [i.path for i in items] + _enabled_paths(items))
    steps = plan_install(items, disk, manifest, strict=strict)

    dirs = list(DIRECTORIES)
    if strict:
        dirs.append((STRICT_DIR, 0o755))
    ensure_directories(root, dirs, out)
    warn_unsafe_hooks_dir(root, out)
    apply(root, steps, out)
    if any(s.action == REMOVE for s in steps):
        _remove_empty_dirs(root, [STRICT_DIR])
    write_manifest(root, new_manifest(steps, manifest))

    fresh = any(s.path == UNIT_PATH and s.action == CREATE for s in steps)
    unit_changed = not fresh and any(
        s.path in (UNIT_PATH, STRICT_PATH) and s.action in (CREATE, UPDATE, REMOVE) for s in steps
    )
    if use_systemctl and enable:
        _systemctl(run, out, "daemon-reload")
        _systemctl(run, out, "enable", "--now", UNIT_NAME)
        out(f"enabled and started {UNIT_NAME}: see 'systemctl status spotwatch'")
        if code_changed and not fresh:
            # A new version of the one file: a running service still uses the old
            # one's unpacked code, which is about to go. (A stop lets a running hook
            # finish; the start resumes what was left.)
            _systemctl(run, out, "try-restart", UNIT_NAME)
            out(f"restarted {UNIT_NAME} (if it was running) to run the new version")
        elif unit_changed:
            out("the unit changed: 'systemctl restart spotwatch' to use it")
    elif use_systemctl:
        out("next: systemctl daemon-reload && systemctl enable --now spotwatch")
    if pyz is not None and (not use_systemctl or enable):
        onefile.prune(root, onefile.build_id(pyz), out)
    for line in example_hook_lines(root, items):
        out(line)
    out(f"resume hooks (the way back, when an end did not come) go in {target(root, RESUME_DIR)}")
    out(f"action and drain examples are in {target(root, HOOKS_DIR)}/examples (and "
        "resume.d/examples): 'spotwatch hooks --examples' says what each needs")
    return 0


def uninstall(
    root: Path | None = None,
    *,
    run: Runner = run_command,
    out: Callable[[str], None] = print,
    system_root: Path = Path("/"),
    home: Path | None = None,
) -> int:
    """Remove what install put under ``root``; leave the operator's hooks and changes.

    ``home`` is where the one-file spotwatch unpacked itself when install ran it
    (shiv's ``~/.shiv``); only on the system, never under ``--root``.
    """
    use_systemctl = root is None
    root = _need_root(root, "uninstall", system_root)
    # The unit is removed whatever its ExecStart=, so any path does here.
    items = packaged_items("/usr/local/bin/spotwatch")
    manifest = read_manifest(root)
    disk = read_disk(root, [i.path for i in items])
    steps = plan_uninstall(items, disk, manifest)
    metrics = metrics_files(root, disk)  # read before the settings file goes

    if use_systemctl and disk.get(UNIT_PATH) is not None:
        status = run(["systemctl", "disable", "--now", UNIT_NAME], out)
        if status != 0:
            out(f"warning: 'systemctl disable --now {UNIT_NAME}' failed (exit {status})")
    apply(root, steps, out)
    removed_more = _remove_metrics(metrics, out)
    removed_more |= _remove_state(root, out)
    write_manifest(root, {s.path: manifest[s.path] for s in steps
                          if s.action == KEEP and s.path in manifest})  # fmt: skip
    examples = [f"{CONFIG_DIR}/{d}" for d in shipped.EXAMPLE_DIRS]
    _remove_empty_dirs(root, [STRICT_DIR, *examples, HOOKS_DIR, RESUME_DIR, CONFIG_DIR,
                              "/var/lib/spotwatch"])  # fmt: skip
    if use_systemctl:
        _systemctl(run, out, "daemon-reload")
    left = left_behind(root, items, steps)
    caches = shiv_caches(home if home is not None else Path.home()) if use_systemctl else []
    from spotwatch import onefile

    # Last: this may be the code that is running now (nothing is imported after).
    code_removed = onefile.remove(root, out)
    for cache in caches:
        _remove_tree(cache)
        out(f"removed {cache} (the one-file spotwatch unpacked there when run by hand)")
    if left:
        out(f"left {len(left)} file(s); remove them by hand if you want:")
        for path, why in left:
            out(f"  {path}: {why}")
    elif not (code_removed or caches or removed_more
              or any(s.action == REMOVE for s in steps)):  # fmt: skip
        out("nothing to remove: spotwatch is not installed here")
    return 0


def metrics_files(root: Path, disk: Mapping[str, OnDisk | None]) -> list[Path]:
    """The metrics files the service was told to write (SPOTWATCH_METRICS_FILE in the
    settings file or an Environment= of the unit), under ``root``."""
    found: list[Path] = []
    for path in (ENV_PATH, UNIT_PATH):
        here = disk.get(path)
        if here is None or here.content is None:
            continue
        for line in here.content.decode(errors="replace").splitlines():
            line = line.strip()
            if path == UNIT_PATH:
                if not line.startswith("Environment="):
                    continue
                line = line[len("Environment="):].strip().strip('"')
            name, sep, value = line.partition("=")
            value = value.strip().strip("'\"")
            if sep and name.strip() == METRICS_ENV and value.startswith("/"):
                found.append(target(root, value))
    return found


def _remove_metrics(paths: Sequence[Path], out: Callable[[str], None]) -> bool:
    """Remove each metrics file spotwatch wrote, so node_exporter stops serving stale
    figures; a file that holds anything but spotwatch's metrics is left."""
    removed = False
    for path in dict.fromkeys(paths):
        try:
            if path.is_symlink() or not path.is_file():
                continue
            text = path.read_text(errors="replace")
        except OSError:
            continue
        names = {
            line.split()[2] for line in text.splitlines()
            if line.startswith(("# HELP ", "# TYPE ")) and len(line.split()) > 2
        }  # fmt: skip
        if names and all(name.startswith("spotwatch_") for name in names):
            path.unlink()
            out(f"removed {path} (the metrics file spotwatch wrote)")
            removed = True
    return removed


_SHIV_ENTRY = re.compile(r"^\.?spotwatch[^/]*\.pyz_[0-9a-f]+(_lock)?$")


def shiv_caches(home: Path) -> list[Path]:
    """What running a spotwatch .pyz by hand unpacked in ``home``'s ``.shiv`` (shiv's
    default SHIV_ROOT): its directory per build and their lock files."""
    cache = home / ".shiv"
    try:
        return sorted(p for p in cache.iterdir() if _SHIV_ENTRY.match(p.name))
    except OSError:
        return []


def _remove_tree(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


def left_behind(root: Path, items: Sequence[Item], steps: Sequence[Step]) -> list[tuple[Path, str]]:
    """Every file left in spotwatch's directories after an uninstall, and why."""
    kept = {s.path: s.reason for s in steps if s.action == KEEP}
    enabled = {enabled_path(i) for i in items if i.kind == EXAMPLE}
    out: list[tuple[Path, str]] = []
    for top in (CONFIG_DIR, STRICT_DIR, "/var/lib/spotwatch"):
        base = target(root, top)
        if not base.is_dir():
            continue
        for full in sorted(base.rglob("*")):
            if full.is_dir() and not full.is_symlink():
                continue
            path = "/" + str(full.relative_to(root))
            out.append((full, _why_left(path, kept, enabled)))
    return out


def _why_left(path: str, kept: Mapping[str, str], enabled: set[str]) -> str:
    if path in kept:
        return kept[path]
    if path in enabled:
        return "an example hook you enabled (yours now)"
    if path == MANIFEST_PATH:
        return ("the install manifest: it remembers which of these spotwatch wrote, "
                "so a reinstall keeps your changes")  # fmt: skip
    if path.startswith((HOOKS_DIR + "/", RESUME_DIR + "/")):
        return "your hook (not installed by spotwatch)"
    if path.startswith(STRICT_DIR + "/"):
        return "a drop-in of yours"
    return "not written by spotwatch install"


def _remove_state(root: Path, out: Callable[[str], None]) -> bool:
    """The hooks journal in the default state directory: spotwatch's, not the operator's
    (and a later install must not resume an old notice from it)."""
    from spotwatch.boot import BOOT_NAME
    from spotwatch.journal import JOURNAL_NAME

    state = target(root, "/var/lib/spotwatch")
    removed = False
    for name in (JOURNAL_NAME, BOOT_NAME):  # the boot record: how the last boot ended
        for entry in sorted(state.glob(f"*{name}*")) if state.is_dir() else []:
            if entry.name == name or entry.name.startswith(f".{name}."):
                entry.unlink()
                out(f"removed {entry}")
                removed = True
    from spotwatch.statedir import LOCK_NAME

    lock = state / LOCK_NAME  # the daemon's lock file (the service is stopped by now)
    if lock.is_file() and not lock.is_symlink():
        lock.unlink()
        out(f"removed {lock}")
        removed = True
    return removed


def example_hook_lines(root: Path, items: Sequence[Item]) -> list[str]:
    """The example hooks as they are on disk now, per directory: enabled or disabled."""
    lines = []
    for directory in (HOOKS_DIR, RESUME_DIR):
        examples = [i for i in items if i.kind == EXAMPLE and i.path.startswith(directory + "/")]
        on = [i.enabled_name for i in examples if os.path.lexists(target(root, enabled_path(i)))]
        off = [i.enabled_name for i in examples
               if i.enabled_name not in on and os.path.lexists(target(root, i.path))]  # fmt: skip
        where = target(root, directory)
        if on:
            lines.append(f"example hooks enabled in {where}: {', '.join(on)}")
        if off:
            lines.append(f"example hooks disabled in {where}: {', '.join(off)} "
                         f"(enable one with 'mv NAME{DISABLED} NAME' there)")  # fmt: skip
    return lines


def _enabled_paths(items: Sequence[Item]) -> list[str]:
    return [enabled_path(i) for i in items if i.kind == EXAMPLE]


def _remove_empty_dirs(root: Path, paths: Sequence[str]) -> None:
    for path in paths:
        try:
            target(root, path).rmdir()
        except OSError:
            pass  # not empty, or not there: leave it
