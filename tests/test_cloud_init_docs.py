"""Every cloud-init example in the docs runs, so none can rot.

Each ```yaml block that starts with ``#cloud-config`` in README.md or docs/ is
parsed, its ``write_files`` written under a fake root (a temporary directory),
and each ``runcmd`` line run with ``sh -c`` as cloud-init would, its absolute
paths moved under that root. On PATH, stubs stand in for what would reach
the network or the real system (``aws``, ``gcloud``, ``curl`` fetch the real
one-file release; ``pipx`` installs this checkout; ``systemctl`` records), and
``spotwatch install`` gets ``--root``. The real one-file install runs.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
CLOUD_INIT = re.compile(r"^```ya?ml\n(#cloud-config\n.*?)^```", re.S | re.M)
# A path cloud-init would touch on the instance: not part of a URL or a longer path.
SYSTEM_PATH = re.compile(r"(?<![\w/.:-])(/(?:etc|root|opt|var|usr/local)/)")
KNOWN_KEYS = {"write_files", "runcmd", "packages", "package_update"}

FETCH = """#!/bin/sh
# A stand-in for {tool}: the last argument, or the one after -o, is where the file goes.
echo "{tool} $*" >> "$STUB_LOG"
dest=""
prev=""
for arg in "$@"; do
    [ "$prev" = "-o" ] && dest=$arg
    prev=$arg
done
[ -n "$dest" ] || dest=$arg
case "$*" in
    *spotwatch-*.pyz*) cp "$STUB_PYZ" "$dest" ;;
    *) echo "{tool} stub: fetches only the one-file release, not: $*" >&2; exit 1 ;;
esac
"""

PIPX = """#!/bin/sh
echo "pipx $*" >> "$STUB_LOG"
[ "$1" = install ] || {{ echo "pipx stub: only install" >&2; exit 1; }}
case "$2" in
    git+https://*|./*|/*|*.whl) ;;
    *) echo "pipx stub: '$2' is a name on the public index, where spotwatch is not" >&2; exit 1 ;;
esac
if [ -z "$PIPX_BIN_DIR" ] || [ -z "$PIPX_HOME" ]; then
    echo "pipx stub: set PIPX_HOME and PIPX_BIN_DIR" >&2; exit 1
fi
mkdir -p "$PIPX_BIN_DIR" "$PIPX_HOME"
printf '#!/bin/sh\\nexec {python} -m spotwatch "$@"\\n' > "$PIPX_BIN_DIR/spotwatch"
chmod 755 "$PIPX_BIN_DIR/spotwatch"
"""

SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >> "$STUB_LOG"
"""


def examples() -> list[tuple[str, str]]:
    out = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        for number, match in enumerate(CLOUD_INIT.finditer(page.read_text()), 1):
            out.append((f"{page.relative_to(REPO)}#{number}", match.group(1)))
    return out


def test_the_docs_have_a_cloud_init_example_per_cloud_and_for_pipx() -> None:
    found = examples()
    names = [name for name, _ in found]
    assert sum(name.startswith("README.md") for name in names) >= 3, names
    texts = "\n".join(text for _, text in found)
    for fetch in ("aws s3 cp", "gcloud storage cp", "curl "):
        assert fetch in texts
    assert "pipx install" in texts


def test_moving_paths_under_the_root_leaves_urls_alone() -> None:
    line = "curl -o /root/x.pyz https://host/opt/x && PIPX_HOME=/opt/pipx cd /etc/a"
    assert SYSTEM_PATH.sub(r"/R\1", line) == (
        "curl -o /R/root/x.pyz https://host/opt/x && PIPX_HOME=/R/opt/pipx cd /R/etc/a"
    )


def stub(bin_dir: Path, name: str, text: str) -> None:
    path = bin_dir / name
    path.write_text(text)
    path.chmod(0o755)


def under_root(line: str, root: Path) -> str:
    line = SYSTEM_PATH.sub(lambda m: str(root) + m.group(1), line)
    # spotwatch install (from the file or the pipx command) into the tree, never the host's.
    return re.sub(
        r"((?:\.pyz|\bspotwatch) install)\b", rf"\1 --root {shlex.quote(str(root))}", line
    )


def render(config: dict[str, Any], root: Path) -> None:
    for item in config.get("write_files", []):
        path = Path(item["path"])
        assert path.is_absolute(), item["path"]
        dest = root / path.relative_to("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(item["content"])
        dest.chmod(int(item.get("permissions", "0644"), 8))


@pytest.mark.parametrize("name,text", examples(), ids=[name for name, _ in examples()])
def test_cloud_init_example_runs(name: str, text: str, pyz: Path, tmp_path: Path) -> None:
    config = yaml.safe_load(text)
    assert isinstance(config, dict), name
    assert set(config) <= KNOWN_KEYS, f"{name}: keys this test does not know: {set(config)}"
    root = tmp_path / "root"
    for base in ("root", "etc", "opt", "tmp", "var/lib", "var/log", "usr/local/bin"):
        (root / base).mkdir(parents=True)  # what a fresh image already has
    render(config, root)
    written = {
        item["path"]: (root / item["path"].lstrip("/")).read_text()
        for item in config.get("write_files", [])
    }
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for tool in ("aws", "gcloud", "curl"):
        stub(stubs, tool, FETCH.format(tool=tool))
    stub(stubs, "pipx", PIPX.format(python=shlex.quote(sys.executable)))
    stub(stubs, "systemctl", SYSTEMCTL)
    log = tmp_path / "stubs.log"
    env = {
        "PATH": os.pathsep.join([str(stubs), str(root / "usr/local/bin"), "/usr/bin", "/bin"]),
        "HOME": str(root / "root"),
        "SHIV_ROOT": str(tmp_path / "shiv"),
        "STUB_LOG": str(log),
        "STUB_PYZ": str(pyz),
        "LANG": "C.UTF-8",
    }
    # python3 as the instance has it: this machine's own (behind a pyenv shim, the real one).
    python3 = subprocess.run(
        ["python3", "-c", "import sys; print(sys.executable)"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    (stubs / "python3").symlink_to(python3)
    for command in config.get("runcmd", []):
        assert isinstance(command, str), f"{name}: runcmd items are shell lines here"
        line = under_root(command, root)
        result = subprocess.run(
            ["sh", "-c", line], cwd=root, env=env, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip
        assert result.returncode == 0, (
            f"{name}: `{command}` exited {result.returncode}\n"
            f"{result.stdout}\n{result.stderr}"
        )

    hooks = root / "etc/spotwatch/hooks.d"
    assert (root / "etc/systemd/system/spotwatch.service").is_file(), name
    # The settings written first are kept by install.
    for path, content in written.items():
        assert (root / path.lstrip("/")).read_text() == content, f"{name}: {path} rewritten"
    enabled = [
        p for p in hooks.iterdir()
        if p.is_file() and not p.name.endswith(".disabled") and p.stat().st_mode & stat.S_IXUSR
    ]  # fmt: skip
    assert enabled, f"{name}: no hook enabled"
    # Each setting the example writes is one the enabled hooks or spotwatch read.
    readers = "".join(p.read_text() for p in enabled)
    readers += (REPO / "systemd" / "spotwatch.env").read_text()
    for content in written.values():
        for key in re.findall(r"^\s*(SPOTWATCH_[A-Z0-9_]+)=", content, re.M):
            assert key in readers, f"{name}: {key} is read by nothing enabled"
    calls = log.read_text() if log.exists() else ""
    for command in config.get("runcmd", []):
        if "systemctl enable" in command:
            assert "systemctl enable --now spotwatch" in calls
