"""The one-file spotwatch (tools/build-pyz) on the Pythons it is for: 3.9 and 3.11 here.

Each run unpacks into a SHIV_ROOT of its own with HOME unset, as under systemd.
The install into a real system, and an upgrade, are the systemd tier's
(test_systemd_tier.py); the layout's decisions are test_onefile.py's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from spotwatch import __version__

pytestmark = [pytest.mark.slow]

PYENV = Path.home() / ".pyenv" / "versions"


def interpreter(minor: str) -> str:
    """A bare Python 3.<minor> (pyenv's, or on PATH), else this one: a venv's
    packages would hide a dependency missing from the file."""
    found = sorted(PYENV.glob(f"3.{minor}.*/bin/python3"))
    if found:
        return str(found[-1])
    on_path = shutil.which(f"python3.{minor}")
    if on_path is not None:
        return on_path
    if sys.version_info[:2] == (3, int(minor)):
        return sys.executable
    pytest.skip(f"no Python 3.{minor} here (pyenv or PATH)")


def run_pyz(python: str, pyz: Path, shiv_root: Path, *args: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "HOME" and not k.startswith("SHIV_")}
    clean.update(env, SHIV_ROOT=str(shiv_root))
    result = subprocess.run(
        [python, str(pyz), *args], env=clean, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_file_holds_only_pure_python_distributions(pyz: Path) -> None:
    assert pyz.name == f"spotwatch-{__version__}.pyz"
    with zipfile.ZipFile(pyz) as archive:
        contents = json.loads(archive.read("site-packages/spotwatch/data/pyz-contents.json"))
        wheels = [n for n in archive.namelist() if n.endswith(".dist-info/WHEEL")]
        for name in wheels:
            tags = [t for t in archive.read(name).decode().splitlines() if t.startswith("Tag:")]
            assert tags and all(t.endswith("-none-any") for t in tags), (name, tags)
        # No compiled module anywhere: it runs on x86_64 and aarch64 alike.
        assert not [n for n in archive.namelist() if n.endswith((".so", ".pyd"))]
    names = {d.split("==")[0].lower() for d in contents["distributions"]}
    assert {"spotwatch", "boto3", "botocore", "structlog", "tenacity", "requests"} <= names
    assert "isal" not in names  # optional and compiled: ship falls back to zlib
    assert "typing_extensions" in names  # structlog needs it below Python 3.11
    # Every shipped file (units, settings, example hooks): install and --print need them.
    data = Path(__file__).resolve().parent.parent / "spotwatch" / "data"
    shipped = {f"site-packages/{p.relative_to(data.parent.parent)}" for p in data.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}  # fmt: skip
    with zipfile.ZipFile(pyz) as archive:
        assert shipped <= set(archive.namelist()), shipped - set(archive.namelist())


@pytest.mark.parametrize("minor", ["9", "11"])
def test_the_file_runs_and_installs_on_python(minor: str, pyz: Path, tmp_path: Path) -> None:
    python = interpreter(minor)
    shiv_root = tmp_path / "shiv"
    assert run_pyz(python, pyz, shiv_root, "--version").strip() == f"spotwatch {__version__}"
    probe = (
        "import sys, boto3, structlog, spotwatch.daemon, spotwatch.ship; "
        "boto3.client('s3', region_name='us-east-1'); "
        "print(sys.version_info[:2], boto3.__version__)"
    )
    out = run_pyz(python, pyz, shiv_root, "-c", probe, SHIV_INTERPRETER="1")
    assert out.startswith(f"(3, {minor})"), out
    # Into a directory tree: the code under opt/spotwatch, unpacked and compiled there.
    root = tmp_path / "root"
    out = run_pyz(python, pyz, shiv_root, "install", "--root", str(root))
    wrapper = (root / "opt/spotwatch/bin/spotwatch").read_text()
    assert f"exec {python} /opt/spotwatch/spotwatch.pyz" in wrapper
    assert "SHIV_ROOT=/opt/spotwatch/lib" in wrapper
    unpacked = list((root / "opt/spotwatch/lib").glob("spotwatch.pyz_*/site-packages"))
    assert len(unpacked) == 1 and (unpacked[0] / "boto3").is_dir()
    assert list((unpacked[0] / "spotwatch").glob("__pycache__/*.pyc"))
    unit = (root / "etc/systemd/system/spotwatch.service").read_text()
    assert "ExecStart=/opt/spotwatch/bin/spotwatch run" in unit
    fleet = run_pyz(python, pyz, shiv_root, "install", "--print", "fleet-unit")
    assert "\nExecStart=/opt/spotwatch/bin/spotwatch fleet watch " in fleet
    assert os.readlink(root / "usr/local/bin/spotwatch") == "/opt/spotwatch/bin/spotwatch"
    # Again: nothing to copy or unpack, and no other build left behind.
    again = run_pyz(python, pyz, shiv_root, "install", "--root", str(root))
    assert "installed" not in again and "removed" not in again, again
    out = run_pyz(python, pyz, shiv_root, "uninstall", "--root", str(root))
    assert not (root / "opt/spotwatch").exists()
    assert not os.path.lexists(root / "usr/local/bin/spotwatch")



@pytest.mark.parametrize("how", ["sim", "SHIV_MODULE"])
def test_the_simulator_runs_from_the_file(pyz: Path, tmp_path: Path, how: str) -> None:
    """``spotwatch sim`` from the one file: no venv, no ``python -m``; and the shiv way
    of running one module, ``SHIV_MODULE=spotwatch.imdssim``, does not crash."""
    import signal

    import requests

    from tests.helpers import free_port

    port = free_port()
    clean = {k: v for k, v in os.environ.items() if k != "HOME" and not k.startswith("SHIV_")}
    clean["SHIV_ROOT"] = str(tmp_path / "shiv")
    command = ["sim"]
    if how == "SHIV_MODULE":
        clean["SHIV_MODULE"] = "spotwatch.imdssim"
        command = []
    proc = subprocess.Popen(
        [interpreter("11"), str(pyz), *command, "--port", str(port), "--notice-in", "0"],
        env=clean, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}", proc.stderr.read() if proc.stderr else ""
        body = requests.get(url + "/latest/meta-data/spot/instance-action", timeout=5).json()
        assert body["action"] == "terminate"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
