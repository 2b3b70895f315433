"""`spotwatch hooks` as a subprocess: what it prints and its exit statuses."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import hooks_dir_fixture as hooks_dir_fixture


def make(directory: Path, name: str, mode: int = 0o755) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(mode)
    return path


def spotwatch(
    cmd: list[str], *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "SPOTWATCH_HOOKS_DIR"}
    full_env.update(env or {})
    return subprocess.run(
        [*cmd, "hooks", *args], capture_output=True, text=True, env=full_env, timeout=60
    )


def test_lists_what_would_run_in_order_and_why_the_rest_would_not(
    spotwatch_cmd: list[str], hooks_dir: Path, tmp_path: Path
) -> None:
    make(hooks_dir, "90-notify")
    make(hooks_dir, "10-checkpoint")
    make(hooks_dir, "50-ship-logs.sh")
    make(hooks_dir, "20-draft", mode=0o644)
    make(hooks_dir, "10-checkpoint.dpkg-old")
    target = make(tmp_path, "shared-script")
    (hooks_dir / "60-linked").symlink_to(target)
    proc = spotwatch(spotwatch_cmd, "--hooks-dir", str(hooks_dir))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = proc.stdout
    assert f"Hooks directory: {hooks_dir}" in out
    order = [out.index(f". {name}") for name in
             ("10-checkpoint", "50-ship-logs.sh", "60-linked", "90-notify")]
    assert order == sorted(order)
    assert "1. 10-checkpoint" in out and "4. 90-notify" in out
    assert f"60-linked -> {target}" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    draft = rows["20-draft"]
    assert "skipped" in draft and "not executable" in draft
    assert f"chmod +x {hooks_dir / '20-draft'}" in draft
    assert "ignored" in rows["10-checkpoint.dpkg-old"]
    # Aligned columns: the STATUS column starts at the same place on every row.
    lines = out.splitlines()
    table = lines[lines.index("Would not run:") + 1 :]
    table = table[: table.index("")]
    assert len(table) == 3 and table[0].split() == ["NAME", "STATUS", "REASON", "FIX"]
    column = table[0].index("STATUS")
    assert [row[column:].split()[0] for row in table] == ["STATUS", "ignored", "skipped"]
    assert "4 would run; 0 refused, 1 skipped, 1 ignored." in out


def test_refused_hook_exits_1_with_the_fix(
    spotwatch_cmd: list[str], hooks_dir: Path
) -> None:
    make(hooks_dir, "10-ok")
    make(hooks_dir, "20-open", mode=0o777)
    proc = spotwatch(spotwatch_cmd, "--hooks-dir", str(hooks_dir))
    assert proc.returncode == 1
    line = next(x for x in proc.stdout.splitlines() if x.strip().startswith("20-open"))
    assert "refused" in line and "group-writable, world-writable" in line
    assert f"chmod go-w {hooks_dir / '20-open'}" in line
    assert "1. 10-ok" in proc.stdout


def test_unsafe_directory_exits_1_and_runs_nothing(
    spotwatch_cmd: list[str], hooks_dir: Path
) -> None:
    make(hooks_dir, "10-ok")
    hooks_dir.chmod(0o777)
    proc = spotwatch(spotwatch_cmd, "--hooks-dir", str(hooks_dir))
    assert proc.returncode == 1
    assert f"REFUSED: hooks directory {hooks_dir} is unsafe" in proc.stdout
    assert f"chmod go-w {hooks_dir}" in proc.stdout
    assert "Would run: nothing." in proc.stdout


def test_missing_directory_is_a_one_line_error_exit_2(
    spotwatch_cmd: list[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nope"
    proc = spotwatch(spotwatch_cmd, "--hooks-dir", str(missing))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"spotwatch hooks: error: hooks directory {missing} does not")
    assert "install -d" in proc.stderr


def test_empty_directory_is_fine(spotwatch_cmd: list[str], hooks_dir: Path) -> None:
    proc = spotwatch(spotwatch_cmd, "--hooks-dir", str(hooks_dir))
    assert proc.returncode == 0
    assert "Would run: nothing." in proc.stdout and "Would not run" not in proc.stdout


def test_hooks_dir_from_environment_and_the_flag_wins(
    spotwatch_cmd: list[str], hooks_dir: Path, tmp_path: Path
) -> None:
    make(hooks_dir, "10-from-env")
    proc = spotwatch(spotwatch_cmd, env={"SPOTWATCH_HOOKS_DIR": str(hooks_dir)})
    assert proc.returncode == 0 and "1. 10-from-env" in proc.stdout
    proc = spotwatch(
        spotwatch_cmd, "--hooks-dir", str(tmp_path / "other"),
        env={"SPOTWATCH_HOOKS_DIR": str(hooks_dir)},
    )
    assert proc.returncode == 2 and "other" in proc.stderr


def test_json_output(spotwatch_cmd: list[str], hooks_dir: Path) -> None:
    make(hooks_dir, "10-ok")
    make(hooks_dir, "20-open", mode=0o775)
    proc = spotwatch(spotwatch_cmd, "--hooks-dir", str(hooks_dir), "--json")
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert data["directory"] == str(hooks_dir)
    assert data["refused"] is True and data["problem"] is None
    assert data["hooks"] == [
        {"order": 1, "name": "10-ok", "path": str(hooks_dir / "10-ok"), "target": None,
         "needs": None, "missing": []}  # no "# Tools:" line
    ]
    assert data["rejected"] == [
        {
            "name": "20-open",
            "path": str(hooks_dir / "20-open"),
            "severity": "refused",
            "reason": "group-writable",
            "fix": f"chmod go-w {hooks_dir / '20-open'}",
            "needs": None,
            "missing": [],
        }
    ]


def test_help_mentions_exit_statuses(spotwatch_cmd: list[str]) -> None:
    proc = spotwatch(spotwatch_cmd, "--help")
    assert proc.returncode == 0
    assert "--hooks-dir" in proc.stdout and "--json" in proc.stdout
    assert "SPOTWATCH_HOOKS_DIR" in proc.stdout


def test_odd_file_names_are_escaped_not_crashing(
    spotwatch_cmd: list[str], hooks_dir: Path
) -> None:
    make(hooks_dir, "10-ok")
    for raw in (b"\xff-latin1", b"evil\nname", b"esc\x1b[31mred"):
        with open(os.path.join(os.fsencode(hooks_dir), raw), "wb") as handle:
            handle.write(b"#!/bin/sh\n")
    proc = spotwatch(spotwatch_cmd, "--hooks-dir", str(hooks_dir))
    assert proc.returncode == 0, proc.stderr
    assert "\\xff-latin1" in proc.stdout
    assert "evil\\nname" in proc.stdout
    assert "esc\\x1b[31mred" in proc.stdout
    assert "\x1b" not in proc.stdout
    assert "3 ignored" in proc.stdout
    data = json.loads(spotwatch(spotwatch_cmd, "--hooks-dir", str(hooks_dir), "--json").stdout)
    assert len(data["rejected"]) == 3


@pytest.mark.slow
def test_the_tools_a_hook_names_are_looked_up_on_path(
    spotwatch_cmd: list[str], hooks_dir: Path, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "curl"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    for name, tools in (("10-notify", "curl swtest-nothing"), ("20-fine", "curl"),
                        ("30-drain.disabled", "aws"), ("40-plain", "none")):  # fmt: skip
        path = hooks_dir / name
        path.write_text(f"#!/bin/sh\n# Tools: {tools}\nexit 0\n")
        path.chmod(0o755)
    proc = spotwatch(spotwatch_cmd, "--hooks-dir", str(hooks_dir), env={"PATH": str(bin_dir)})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Tools the hooks name (# Tools:) that are not on PATH:" in out
    assert re.search(r"^  10-notify +missing swtest-nothing$", out, re.M), out
    assert re.search(r"^  30-drain\.disabled +missing aws  \(would not run now\)$", out, re.M)
    assert "20-fine  " not in out.split("not on PATH:")[1] and "40-plain  " not in out
    assert f"PATH={bin_dir}: install them" in out

    data = json.loads(spotwatch(spotwatch_cmd, "--hooks-dir", str(hooks_dir), "--json",
                                env={"PATH": str(bin_dir)}).stdout)  # fmt: skip
    by_name = {h["name"]: h for h in data["hooks"] + data["rejected"]}
    assert by_name["10-notify"]["needs"] == ["curl", "swtest-nothing"]
    assert by_name["10-notify"]["missing"] == ["swtest-nothing"]
    assert by_name["20-fine"]["missing"] == [] and by_name["40-plain"]["needs"] == []
    assert by_name["30-drain.disabled"]["missing"] == ["aws"]


@pytest.mark.slow
def test_every_tool_found_says_so(spotwatch_cmd: list[str], hooks_dir: Path) -> None:
    path = hooks_dir / "10-a"
    path.write_text("#!/bin/sh\n# Tools: sh\nexit 0\n")
    path.chmod(0o755)
    proc = spotwatch(spotwatch_cmd, "--hooks-dir", str(hooks_dir))
    assert "Tools the hooks name (# Tools:): all found on PATH." in proc.stdout
