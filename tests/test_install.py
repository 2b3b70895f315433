"""spotwatch install / uninstall into a temporary root, and the packaged copies."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import pytest

from spotwatch import install as inst
from spotwatch import shipped
from spotwatch.errors import SpotwatchError, UsageError

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "spotwatch" / "data"
UNIT = "etc/systemd/system/spotwatch.service"
STRICT = "etc/systemd/system/spotwatch.service.d/strict.conf"
ENV = "etc/spotwatch/spotwatch.env"
HOOKS = "etc/spotwatch/hooks.d"
MANIFEST = "var/lib/spotwatch/install-manifest.json"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spotwatch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), mode(p))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def example_names() -> list[str]:
    return sorted(shipped.example_hooks())


# -- the packaged copies ------------------------------------------------------------


def test_one_copy_of_each_shipped_file() -> None:
    """The package's files are the only ones: the repository's hooks.d/ and systemd/ are
    links to them, so what people read is what every install ships."""
    for top in ("hooks.d", "systemd"):
        assert os.readlink(REPO / top) == f"spotwatch/data/{top}"
    for name in (shipped.UNIT, shipped.STRICT, shipped.ENV, shipped.FLEET_UNIT):
        assert shipped.read(name) == (DATA / name).read_bytes()


def test_example_hooks_are_packaged() -> None:
    names = example_names()
    assert "10-checkpoint.sh" in names and "90-notify-webhook.sh" in names


# -- install ------------------------------------------------------------------------


def test_install_into_a_root(tmp_path: Path) -> None:
    result = cli("install", "--root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""

    unit = (tmp_path / UNIT).read_text()
    exec_start = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    spotwatch = Path(sys.executable).parent / "spotwatch"
    assert exec_start == [f"ExecStart={spotwatch} run"]
    assert f"Environment=SPOTWATCH_BIN={spotwatch}\n" in unit  # for hooks calling spotwatch
    assert mode(tmp_path / UNIT) == 0o644

    assert mode(tmp_path / "etc/spotwatch") == 0o755
    assert mode(tmp_path / HOOKS) == 0o755
    assert (tmp_path / HOOKS).stat().st_uid == os.geteuid()
    env = tmp_path / ENV
    assert env.read_bytes() == (DATA / shipped.ENV).read_bytes()
    assert mode(env) == 0o600  # may hold a webhook URL
    installed = sorted(p.name for p in (tmp_path / HOOKS).iterdir() if p.is_file())
    assert installed == [f"{name}.disabled" for name in example_names()]
    for path in (tmp_path / HOOKS).iterdir():
        assert mode(path) == 0o755
    # The action and drain examples: in examples/ folders, which spotwatch never runs.
    for name in shipped.examples():
        copy = tmp_path / "etc/spotwatch" / name
        assert copy.read_bytes() == (DATA / name).read_bytes() and mode(copy) == 0o755
    assert (tmp_path / HOOKS / "examples" / "30-drain-kubernetes.sh").is_file()
    assert (tmp_path / "etc/spotwatch/resume.d/examples/30-uncordon-kubernetes.sh").is_file()
    # One way back into the load balancers: `spotwatch deregister --restore`, an example
    # like the rest, and no second script of its own in resume.d.
    resume = tmp_path / "etc/spotwatch/resume.d"
    assert [p.name for p in resume.iterdir() if p.is_file()] == []
    assert (resume / "examples" / "20-register.sh").is_file()
    assert not (tmp_path / STRICT).exists()

    manifest = json.loads((tmp_path / MANIFEST).read_text())["files"]
    assert set(manifest) == {"/" + p for p in snapshot(tmp_path) if p != MANIFEST}
    assert f"created {tmp_path / ENV}" in result.stdout


def test_installed_examples_are_disabled_until_renamed(tmp_path: Path) -> None:
    from spotwatch.hooks import plan_hooks

    inst.install(tmp_path, out=lambda line: None)
    hooks_dir = tmp_path / HOOKS
    assert plan_hooks(hooks_dir).hooks == ()
    (hooks_dir / "10-checkpoint.sh.disabled").rename(hooks_dir / "10-checkpoint.sh")
    assert [h.name for h in plan_hooks(hooks_dir).hooks] == ["10-checkpoint.sh"]


def test_second_install_changes_nothing_the_operator_edited(tmp_path: Path) -> None:
    assert cli("install", "--root", str(tmp_path)).returncode == 0
    first = snapshot(tmp_path)

    again = cli("install", "--root", str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert snapshot(tmp_path) == first
    assert "created" not in again.stdout

    # The operator edits the settings, edits one example, enables another,
    # adds a hook of their own and a drop-in of their own.
    env = tmp_path / ENV
    env.write_text(env.read_text() + "SPOTWATCH_WEBHOOK_URL=https://example.invalid/x\n")
    edited = tmp_path / HOOKS / "90-notify-webhook.sh.disabled"
    edited.write_text(edited.read_text() + "# mine\n")
    hooks_dir = tmp_path / HOOKS
    (hooks_dir / "10-checkpoint.sh.disabled").rename(hooks_dir / "10-checkpoint.sh")
    own = hooks_dir / "20-mine.sh"
    own.write_text("#!/bin/sh\necho mine\n")
    own.chmod(0o700)
    before = snapshot(tmp_path)

    third = cli("install", "--root", str(tmp_path))
    assert third.returncode == 0, third.stderr
    after = snapshot(tmp_path)
    for path in (ENV, f"{HOOKS}/90-notify-webhook.sh.disabled", f"{HOOKS}/20-mine.sh"):
        assert after[path] == before[path], path
    # Enabling an example is not undone by bringing back its disabled copy.
    assert f"{HOOKS}/10-checkpoint.sh.disabled" not in after
    assert f"kept {tmp_path / ENV}: changed by you" in third.stdout
    assert f"kept {edited}: changed by you" in third.stdout
    assert "10-checkpoint.sh is enabled" in third.stdout


def test_unchanged_file_is_updated_to_the_new_version(tmp_path: Path) -> None:
    inst.install(tmp_path, spotwatch_path="/opt/old/bin/spotwatch", out=lambda line: None)
    assert "ExecStart=/opt/old/bin/spotwatch run" in (tmp_path / UNIT).read_text()
    lines: list[str] = []
    inst.install(tmp_path, spotwatch_path="/opt/new/bin/spotwatch", out=lines.append)
    assert "ExecStart=/opt/new/bin/spotwatch run" in (tmp_path / UNIT).read_text()
    assert f"updated {tmp_path / UNIT}" in lines


def test_file_install_never_wrote_is_kept(tmp_path: Path) -> None:
    env = tmp_path / ENV
    env.parent.mkdir(parents=True)
    env.write_text("SPOTWATCH_INTERVAL=2\n")
    lines: list[str] = []
    inst.install(tmp_path, out=lines.append)
    assert env.read_text() == "SPOTWATCH_INTERVAL=2\n"
    assert f"kept {env}: not written by spotwatch install; the new version is not installed" in (
        lines
    )


def test_strict_dropin_comes_and_goes_with_the_flag(tmp_path: Path) -> None:
    inst.install(tmp_path, strict=True, out=lambda line: None)
    dropin = tmp_path / STRICT
    assert dropin.read_bytes() == (DATA / shipped.STRICT).read_bytes()
    assert mode(dropin) == 0o644
    lines: list[str] = []
    inst.install(tmp_path, out=lines.append)
    assert not dropin.exists() and not dropin.parent.exists()
    assert f"removed {dropin}: no --strict" in lines


def test_group_writable_hooks_dir_is_reported_not_changed(tmp_path: Path) -> None:
    hooks_dir = tmp_path / HOOKS
    hooks_dir.mkdir(parents=True)
    hooks_dir.chmod(0o775)
    lines: list[str] = []
    inst.install(tmp_path, out=lines.append)
    assert mode(hooks_dir) == 0o775
    assert any(line.startswith("warning:") and "chmod go-w" in line for line in lines)


# -- systemctl -------------------------------------------------------------------------


class Systemctl:
    def __init__(self, fail: Sequence[str] = ()) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, argv: Sequence[str], out: Callable[[str], None]) -> int:
        self.calls.append(list(argv))
        return 1 if any(word in argv for word in self.fail) else 0


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)


@pytest.mark.usefixtures("as_root")
def test_install_on_the_system_reloads_and_enables(tmp_path: Path) -> None:
    systemctl = Systemctl()
    inst.install(None, run=systemctl, out=lambda line: None, system_root=tmp_path)
    assert systemctl.calls == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "spotwatch.service"],
    ]
    assert (tmp_path / UNIT).exists()


@pytest.mark.usefixtures("as_root")
def test_no_enable_and_root_leave_systemctl_alone(tmp_path: Path) -> None:
    systemctl = Systemctl()
    lines: list[str] = []
    inst.install(None, enable=False, run=systemctl, out=lines.append, system_root=tmp_path)
    inst.install(tmp_path / "image", run=systemctl, out=lambda line: None)
    assert systemctl.calls == []
    assert "next: systemctl daemon-reload && systemctl enable --now spotwatch" in lines


@pytest.mark.usefixtures("as_root")
def test_failing_systemctl_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SpotwatchError, match=r"'systemctl enable --now spotwatch.service' failed"):
        inst.install(
            None, run=Systemctl(fail=["enable"]), out=lambda line: None, system_root=tmp_path
        )
    assert (tmp_path / UNIT).exists()  # the files are in place


@pytest.mark.slow
@pytest.mark.usefixtures("as_root")
def test_systemctls_own_lines_are_relayed_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A real (stand-in) systemctl that talks on stdout and stderr: its lines come back
    through spotwatch's output, tagged and in order, and never straight to the terminal."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemctl"
    fake.write_text(
        "#!/bin/sh\n"
        'echo "$* said on stdout"\n'
        'echo "Created symlink for $*" >&2\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    lines: list[str] = []
    inst.install(None, out=lines.append, system_root=tmp_path / "sys")
    captured = capfd.readouterr()
    assert "systemctl" not in captured.out + captured.err
    relayed = [line for line in lines if line.startswith("  systemctl: ")]
    assert relayed == [
        "  systemctl: daemon-reload said on stdout",
        "  systemctl: Created symlink for daemon-reload",
        "  systemctl: enable --now spotwatch.service said on stdout",
        "  systemctl: Created symlink for enable --now spotwatch.service",
    ]
    enabled = lines.index("enabled and started spotwatch.service: see 'systemctl status spotwatch'")
    assert lines.index(relayed[-1]) < enabled


@pytest.mark.usefixtures("as_root")
def test_uninstall_on_the_system_disables_first(tmp_path: Path) -> None:
    inst.install(None, enable=False, out=lambda line: None, system_root=tmp_path)
    systemctl = Systemctl()
    inst.uninstall(None, run=systemctl, out=lambda line: None, system_root=tmp_path)
    assert systemctl.calls == [
        ["systemctl", "disable", "--now", "spotwatch.service"],
        ["systemctl", "daemon-reload"],
    ]
    assert not (tmp_path / UNIT).exists()


def test_non_root_without_root_flag_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(UsageError, match=r"run it as root \(sudo\), or pass --root DIR"):
        inst.install(None, run=Systemctl(), out=lambda line: None)
    with pytest.raises(UsageError, match="run it as root"):
        inst.uninstall(None, run=Systemctl(), out=lambda line: None)


def test_non_root_cli_error_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from spotwatch.cli import main

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["install"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("spotwatch install: error:")


# -- uninstall -------------------------------------------------------------------------


def test_uninstall_leaves_the_operators_hooks(tmp_path: Path) -> None:
    assert cli("install", "--root", str(tmp_path), "--strict").returncode == 0
    hooks_dir = tmp_path / HOOKS
    (hooks_dir / "10-checkpoint.sh.disabled").rename(hooks_dir / "10-checkpoint.sh")
    own = hooks_dir / "20-mine.sh"
    own.write_text("#!/bin/sh\necho mine\n")
    own.chmod(0o700)
    env = tmp_path / ENV
    env.write_text(env.read_text() + "SPOTWATCH_INTERVAL=2\n")

    result = cli("uninstall", "--root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    left = set(snapshot(tmp_path))
    assert left == {f"{HOOKS}/10-checkpoint.sh", f"{HOOKS}/20-mine.sh", ENV, MANIFEST}
    assert f"kept {env}: changed by you" in result.stdout
    assert not (tmp_path / "etc/systemd/system/spotwatch.service.d").exists()

    # Installing again still knows the settings file was changed by the operator.
    again = cli("install", "--root", str(tmp_path))
    assert f"kept {env}: changed by you" in again.stdout


def test_uninstall_of_a_clean_install_leaves_nothing(tmp_path: Path) -> None:
    inst.install(tmp_path, strict=True, out=lambda line: None)
    inst.uninstall(tmp_path, out=lambda line: None)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert not (tmp_path / "etc/spotwatch").exists()
    lines: list[str] = []
    inst.uninstall(tmp_path, out=lines.append)
    assert lines == ["nothing to remove: spotwatch is not installed here"]


def test_uninstall_removes_an_edited_unit_but_says_so(tmp_path: Path) -> None:
    inst.install(tmp_path, out=lambda line: None)
    unit = tmp_path / UNIT
    unit.write_text(unit.read_text().replace("RestartSec=2", "RestartSec=9"))
    lines: list[str] = []
    inst.uninstall(tmp_path, out=lines.append)
    assert not unit.exists()
    assert f"removed {unit}: it had changes of yours" in lines


# -- pure parts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "word"),
    [
        ("/usr/local/bin/spotwatch", "/usr/local/bin/spotwatch"),
        ("/root/.local/bin/spotwatch", "/root/.local/bin/spotwatch"),
        ("/opt/my venv/bin/spotwatch", '"/opt/my venv/bin/spotwatch"'),
        ("/opt/100%/spotwatch", "/opt/100%%/spotwatch"),
        ("/opt/$x/spotwatch", "/opt/$x/spotwatch"),
        ("/opt/my $x 100%/spotwatch", '"/opt/my $x 100%%/spotwatch"'),
    ],
)
def test_exec_word(path: str, word: str) -> None:
    assert inst.exec_word(path) == word


@pytest.mark.parametrize(
    "path", ["spotwatch", "/opt/a\nb/spotwatch", '/opt/a"b/spotwatch', "/opt/a\\b/spotwatch"]
)
def test_exec_word_refuses(path: str) -> None:
    with pytest.raises(UsageError):
        inst.exec_word(path)


def test_plan_install_decisions() -> None:
    item = inst.Item("/etc/spotwatch/spotwatch.env", b"new", 0o600, inst.CONFIG)
    old = inst.sha256(b"old")

    def action(on_disk: inst.OnDisk | None, manifest: dict[str, str]) -> str:
        disk = {item.path: on_disk}
        return inst.plan_install([item], disk, manifest, strict=False)[0].action

    assert action(None, {}) == inst.CREATE
    assert action(inst.OnDisk(b"new"), {}) == inst.SAME
    assert action(inst.OnDisk(b"old"), {item.path: old}) == inst.UPDATE
    assert action(inst.OnDisk(b"edited"), {item.path: old}) == inst.KEEP
    assert action(inst.OnDisk(b"theirs"), {}) == inst.KEEP
    assert action(inst.OnDisk(None, "symlink"), {item.path: old}) == inst.KEEP


@pytest.mark.usefixtures("as_root")
def test_machine_without_systemd_is_told_to_use_no_enable(tmp_path: Path) -> None:
    with pytest.raises(SpotwatchError, match=r"systemctl not found.*--no-enable"):
        inst.install(None, run=lambda argv, out: 127, out=lambda line: None, system_root=tmp_path)


# -- install --print ------------------------------------------------------------------


@pytest.mark.parametrize("what", ["unit", "fleet-unit"])
def test_print_a_unit_runs_this_spotwatch(what: str) -> None:
    result = cli("install", "--print", what)
    assert result.returncode == 0, result.stderr
    spotwatch = Path(sys.executable).parent / "spotwatch"
    exec_start = [line for line in result.stdout.splitlines() if line.startswith("ExecStart=")]
    assert len(exec_start) == 1 and exec_start[0].startswith(f"ExecStart={spotwatch} ")
    if what == "unit":
        template = shipped.read(shipped.UNIT).decode()
        assert result.stdout == inst.render_unit(template, str(spotwatch))
    else:
        assert exec_start[0].endswith(" fleet watch --hooks-dir /etc/spotwatch/fleet-hooks.d"
                                      " --log-format json")  # fmt: skip


def test_print_env_strict_and_hooks_are_the_shipped_files() -> None:
    for what, name in (("env", shipped.ENV), ("strict", shipped.STRICT)):
        result = cli("install", "--print", what)
        assert result.returncode == 0 and result.stdout == (DATA / name).read_text()
    hooks = inst.printable("hooks", "")
    heads = [line for line in hooks.splitlines() if line.startswith("==> ")]
    assert heads == [f"==> {name} <==" for name in example_names()]
    assert (DATA / "hooks.d" / "50-ship-logs.sh").read_text() in hooks


def test_print_writes_nothing_and_takes_no_install_options(tmp_path: Path) -> None:
    result = cli("install", "--print", "env", "--root", str(tmp_path))
    assert result.returncode == 2 and "--print writes nothing" in result.stderr
    assert list(tmp_path.iterdir()) == []
    result = cli("install", "--print", "units")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_fleet_unit_rendering_keeps_the_arguments_and_quotes_the_path() -> None:
    template = shipped.read(shipped.FLEET_UNIT).decode()
    out = inst.render_fleet_unit(template, "/opt/my tools/spotwatch")
    assert '\nExecStart="/opt/my tools/spotwatch" fleet watch --hooks-dir' in out
    assert out.replace('"/opt/my tools/spotwatch"', "/usr/local/bin/spotwatch") == template


# -- what uninstall leaves, what a reinstall says, and --root --------------------------


def test_uninstall_lists_every_file_it_left_and_why(tmp_path: Path) -> None:
    inst.install(tmp_path, out=lambda line: None)
    hooks_dir = tmp_path / HOOKS
    (hooks_dir / "10-checkpoint.sh.disabled").rename(hooks_dir / "10-checkpoint.sh")
    (hooks_dir / "20-mine.sh").write_text("#!/bin/sh\n")
    env = tmp_path / ENV
    env.write_text(env.read_text() + "SPOTWATCH_INTERVAL=2\n")
    lines: list[str] = []
    inst.uninstall(tmp_path, out=lines.append)
    start = lines.index("left 4 file(s); remove them by hand if you want:")
    assert lines[start + 1:] == [
        f"  {hooks_dir}/10-checkpoint.sh: an example hook you enabled (yours now)",
        f"  {hooks_dir}/20-mine.sh: your hook (not installed by spotwatch)",
        f"  {env}: changed by you",
        f"  {tmp_path / MANIFEST}: the install manifest: it remembers which of these "
        "spotwatch wrote, so a reinstall keeps your changes",
    ]
    assert sorted(snapshot(tmp_path)) == sorted(
        [f"{HOOKS}/10-checkpoint.sh", f"{HOOKS}/20-mine.sh", ENV, MANIFEST]
    )


@pytest.mark.parametrize("where", ["settings file", "unit"])
def test_uninstall_removes_the_metrics_file_it_wrote(tmp_path: Path, where: str) -> None:
    inst.install(tmp_path, out=lambda line: None)
    prom = tmp_path / "var/lib/node_exporter/textfile_collector/spotwatch.prom"
    other = tmp_path / "var/lib/node_exporter/textfile_collector/other.prom"
    prom.parent.mkdir(parents=True)
    prom.write_text("# HELP spotwatch_up 1 while running\n# TYPE spotwatch_up gauge\n"
                    "spotwatch_up 1\n")  # fmt: skip
    other.write_text("# HELP node_thing x\n# TYPE node_thing gauge\nnode_thing 1\n")
    for path in (prom, other):
        setting = f"SPOTWATCH_METRICS_FILE=/{path.relative_to(tmp_path)}"
        if where == "unit":
            unit = tmp_path / UNIT
            unit.write_text(unit.read_text().replace(
                "[Service]\n", f"[Service]\nEnvironment={setting}\n"))  # fmt: skip
        else:
            env = tmp_path / ENV
            env.write_text(env.read_text() + setting + "\n")
    lines: list[str] = []
    inst.uninstall(tmp_path, out=lines.append)
    assert not prom.exists()
    assert f"removed {prom} (the metrics file spotwatch wrote)" in lines
    assert other.exists()  # not spotwatch's figures: left alone


@pytest.mark.usefixtures("as_root")
def test_uninstall_removes_the_one_file_unpack_cache(tmp_path: Path) -> None:
    inst.install(None, enable=False, out=lambda line: None, system_root=tmp_path / "sys")
    shiv = tmp_path / "home" / ".shiv"
    ours = shiv / "spotwatch-0.1.0.pyz_0123abcd"
    (ours / "site-packages" / "spotwatch").mkdir(parents=True)
    (ours / "site-packages" / "spotwatch" / "__init__.py").write_text("")
    lock = shiv / ".spotwatch-0.1.0.pyz_0123abcd_lock"
    lock.write_text("")
    theirs = shiv / "other-tool.pyz_0123abcd"
    theirs.mkdir()
    lines: list[str] = []
    inst.uninstall(None, run=Systemctl(), out=lines.append, system_root=tmp_path / "sys",
                   home=tmp_path / "home")  # fmt: skip
    assert not ours.exists() and not lock.exists()
    assert theirs.exists()
    assert f"removed {ours} (the one-file spotwatch unpacked there when run by hand)" in lines


def test_a_reinstall_says_which_example_hooks_are_enabled(tmp_path: Path) -> None:
    lines: list[str] = []
    inst.install(tmp_path, out=lines.append)
    hooks_dir = tmp_path / HOOKS
    assert (f"example hooks disabled in {hooks_dir}: 10-checkpoint.sh, 50-ship-logs.sh, "
            "90-notify-webhook.sh (enable one with 'mv NAME.disabled NAME' there)") in lines
    for name in ("10-checkpoint.sh", "50-ship-logs.sh", "90-notify-webhook.sh"):
        (hooks_dir / f"{name}.disabled").rename(hooks_dir / name)
    lines.clear()
    inst.install(tmp_path, out=lines.append)
    assert (f"example hooks enabled in {hooks_dir}: 10-checkpoint.sh, 50-ship-logs.sh, "
            "90-notify-webhook.sh") in lines
    assert not any(line.startswith(f"example hooks disabled in {hooks_dir}") for line in lines)


def test_every_message_under_root_names_paths_under_it(tmp_path: Path) -> None:
    import re

    root = tmp_path / "image"
    said = []
    for args in (["install", "--strict"], ["install"], ["uninstall"]):
        result = cli(*args, "--root", str(root))
        assert result.returncode == 0, result.stderr
        said.append(result.stdout + result.stderr)
    paths = re.findall(r"(?<![\w.~-])/[\w./-]+", "".join(said))
    assert paths, said
    outside = sorted({p for p in paths if not p.startswith(str(root))})
    assert outside == [], outside
