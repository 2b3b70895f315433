"""``spotwatch drill --installed``: the rehearsal in the installed service's world
(its program, user, PATH, Environment= and EnvironmentFile=), on a tree that
``spotwatch install --root`` wrote, as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spotwatch.installed import SYSTEMD_PATH, parse_env_file, parse_unit
from tests.helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

HOOKS = "etc/spotwatch/hooks.d"
ENV = "etc/spotwatch/spotwatch.env"
DROPINS = "etc/systemd/system/spotwatch.service.d"


def spotwatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spotwatch", *args],
        cwd=REPO, capture_output=True, text=True, timeout=90, env=env,
    )  # fmt: skip


@pytest.fixture
def root(tmp_path: Path) -> Path:
    tree = tmp_path / "image"
    done = spotwatch("install", "--root", str(tree))
    assert done.returncode == 0, done.stderr
    return tree


def hook(root: Path, name: str, body: str) -> Path:
    path = root / HOOKS / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def drill(root: Path, *args: str, env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return spotwatch("drill", "--installed", "--root", str(root), "--in", "0.5", "--lead", "30",
                     "--deadline-margin", "2", *args, env=env)  # fmt: skip


def test_hooks_see_the_services_environment_not_the_callers(root: Path) -> None:
    hook(root, "20-env", 'echo "path=$PATH mine=${MY_SETTING:-unset} '
                         'caller=${SWTEST_CALLER:-unset} timeout=$SPOTWATCH_HOOK_TIMEOUT"\n')
    with open(root / ENV, "a") as f:
        f.write("MY_SETTING=from-the-settings-file\nSPOTWATCH_HOOK_TIMEOUT=7\n")
    proc = drill(root, env=dict(os.environ, SWTEST_CALLER="1", MY_SETTING="from-the-shell"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first, second = proc.stdout.splitlines()[:2]
    assert first.startswith("spotwatch drill --installed: as the service runs: unit "
                            f"{root}/etc/systemd/system/spotwatch.service, settings {root / ENV}")
    assert f"PATH={SYSTEMD_PATH}" in first
    assert second.endswith(f"hooks from {root / HOOKS}")
    assert (f"| out: path={SYSTEMD_PATH} mine=from-the-settings-file caller=unset timeout=7"
            in proc.stdout), proc.stdout  # fmt: skip


def test_a_tool_only_the_caller_has_fails_as_the_service_would(
    root: Path, tmp_path: Path
) -> None:
    """The issue's case: PASS from the shell, exit 127 under the service's PATH."""
    tools = tmp_path / "my-bin"
    tools.mkdir()
    (tools / "swtest-notify").write_text("#!/bin/sh\necho sent\n")
    (tools / "swtest-notify").chmod(0o755)
    hook(root, "90-notify", "# Tools: swtest-notify\nswtest-notify\n")
    env = dict(os.environ, PATH=f"{tools}{os.pathsep}{os.environ['PATH']}")
    plain = spotwatch("drill", "--hooks-dir", str(root / HOOKS), "--in", "0.5", env=env)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    installed = drill(root, "--json", env=env)
    assert installed.returncode == 1, installed.stdout + installed.stderr
    assert installed.stderr.startswith("spotwatch drill --installed: as the service runs")
    report = json.loads(installed.stdout)
    (entry,) = report["hooks"]
    assert entry["name"] == "90-notify" and entry["exit_code"] == 127
    listed = spotwatch("hooks", "--hooks-dir", str(root / HOOKS),
                       env=dict(os.environ, PATH=SYSTEMD_PATH))  # fmt: skip
    assert "90-notify  missing swtest-notify" in listed.stdout


def test_flags_given_still_win(root: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.d"
    other.mkdir()
    other.chmod(0o755)
    proc = drill(root, "--hooks-dir", str(other), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["hooks_dir"] == str(other)


def test_the_units_user_runs_the_hooks(pyz: Path) -> None:
    """User=nobody: the one-file spotwatch (run by the system's python3, which nobody
    can reach, unlike this venv's) rehearses as nobody, as the service would run."""
    import pwd
    import shutil
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("switching users needs root")
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3")
    nobody = pwd.getpwnam("nobody")
    place = Path(tempfile.mkdtemp(prefix="swtest-user-"))
    try:
        place.chmod(0o755)
        shutil.copy(pyz, place / "spotwatch.pyz")
        (place / "shiv").mkdir()
        os.chown(place / "shiv", nobody.pw_uid, nobody.pw_gid)
        program = place / "spotwatch"
        program.write_text(f'#!/bin/sh\nSHIV_ROOT={place}/shiv exec {python} '
                           f'{place}/spotwatch.pyz "$@"\n')  # fmt: skip
        program.chmod(0o755)
        root = place / "image"
        assert spotwatch("install", "--root", str(root)).returncode == 0
        (root / DROPINS).mkdir(exist_ok=True)
        (root / DROPINS / "user.conf").write_text(
            f"[Service]\nUser=nobody\nExecStart=\nExecStart={program} run\n")
        hook(root, "20-who", 'echo "uid=$(id -u) user=$USER home=$HOME"\n')
        proc = drill(root)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        first = proc.stdout.splitlines()[0]
        assert "+ 1 drop-in(s)" in first and "user nobody" in first and str(program) in first
        assert f"| out: uid={nobody.pw_uid} user=nobody home={nobody.pw_dir}" in proc.stdout
    finally:
        shutil.rmtree(place, ignore_errors=True)


def test_a_user_who_cannot_run_the_program_is_one_line(root: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("switching users needs root")
    (root / DROPINS).mkdir(exist_ok=True)
    (root / DROPINS / "user.conf").write_text("[Service]\nUser=nobody\n")
    (root / "etc/spotwatch").chmod(0o700)  # nobody cannot even reach the hooks
    proc = drill(root)
    assert proc.returncode in (1, 2)
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("spotwatch drill: error: cannot"), proc.stderr


def test_nothing_installed_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = spotwatch("drill", "--installed", "--root", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "run 'spotwatch install' first" in proc.stderr
    lone = spotwatch("drill", "--root", str(tmp_path))
    assert lone.returncode == 2 and "--root goes with --installed" in lone.stderr


def test_units_and_settings_files_parse_as_systemd_reads_them() -> None:
    unit = parse_unit([
        ("a", "[Unit]\nEnvironment=NOT=service\n[Service]\nExecStart=-/opt/x/spotwatch run\n"
              'Environment=A=1 "B=two words"\nEnvironmentFile=-/etc/x.env\nUser=1\n'),
        ("b", "[Service]\nEnvironment=\nEnvironment=C=3 \\\n  D=4\nUser=svc\n"
              "WorkingDirectory=/srv\n"),
    ])  # fmt: skip
    assert unit.program == "/opt/x/spotwatch"
    assert dict(unit.environment) == {"C": "3", "D": "4"}  # an empty one clears the list
    assert unit.environment_files == ("-/etc/x.env",)
    assert (unit.user, unit.working_directory) == ("svc", "/srv")
    assert parse_env_file("# c\n; c\nA=1\nB='two words'\nC=\"3\"\n bad line\n") == {
        "A": "1", "B": "two words", "C": "3"}  # fmt: skip
