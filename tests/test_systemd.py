"""The shipped systemd unit and strict drop-in: verify, security ratings, contracts."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from spotwatch import config
from spotwatch.install import render_unit

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "spotwatch.service"
STRICT = REPO / "systemd" / "spotwatch.service.d" / "strict.conf"
ENV = REPO / "systemd" / "spotwatch.env"
HOOKS = REPO / "hooks.d"

DEFAULT_MAX_EXPOSURE = 4.5
STRICT_MAX_EXPOSURE = 2.5

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian package 'systemd'; CI installs it)",
)


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=60, check=False
    )


def rendered(tmp_path: Path, spotwatch_path: str, strict: bool = False) -> Path:
    """The unit as install writes it, in a directory of its own (with the drop-in)."""
    unit = tmp_path / "spotwatch.service"
    unit.write_text(render_unit(UNIT.read_text(), spotwatch_path))
    if strict:
        dropins = tmp_path / "spotwatch.service.d"
        dropins.mkdir()
        shutil.copy(STRICT, dropins / "strict.conf")
    return unit


def fake_spotwatch(directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / "spotwatch"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    return str(exe)


def exposure(unit: Path) -> float:
    result = analyze("security", "--offline=true", str(unit))
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, f"no rating in systemd-analyze output:\n{result.stdout}\n{result.stderr}"
    return float(match.group(1))


def unit_settings(text: str) -> dict[str, list[str]]:
    """key -> values in order (systemd allows a key more than once)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


# -- systemd-analyze -----------------------------------------------------------


@needs_analyze
def test_rendered_unit_verifies_clean(tmp_path: Path) -> None:
    exe = fake_spotwatch(tmp_path / "bin")
    (tmp_path / "unit").mkdir()
    unit = rendered(tmp_path / "unit", exe)
    result = analyze("verify", str(unit))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # no ignored or unknown settings


@needs_analyze
def test_rendered_unit_with_strict_dropin_verifies_clean(tmp_path: Path) -> None:
    exe = fake_spotwatch(tmp_path / "bin")
    (tmp_path / "unit").mkdir()
    unit = rendered(tmp_path / "unit", exe, strict=True)
    result = analyze("verify", str(unit))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


@needs_analyze
def test_odd_spotwatch_path_is_quoted_so_systemd_finds_it(tmp_path: Path) -> None:
    exe = fake_spotwatch(tmp_path / "my venv" / "100%" / "$HOME" / "bin")
    (tmp_path / "unit").mkdir()
    unit = rendered(tmp_path / "unit", exe)
    result = analyze("verify", str(unit))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


@needs_analyze
def test_shipped_unit_verifies_but_for_its_placeholder_path() -> None:
    """The repo copy names /usr/local/bin/spotwatch; that may be missing, nothing else may."""
    result = analyze("verify", str(UNIT))
    complaints = [line for line in result.stderr.splitlines() if line.strip()]
    placeholder = "Command /usr/local/bin/spotwatch is not executable"
    assert all(placeholder in line for line in complaints), result.stderr
    if not complaints:
        assert result.returncode == 0


@needs_analyze
def test_security_rating_default_unit(tmp_path: Path) -> None:
    unit = rendered(tmp_path, "/usr/local/bin/spotwatch")
    assert exposure(unit) <= DEFAULT_MAX_EXPOSURE


@needs_analyze
def test_security_rating_strict_dropin(tmp_path: Path) -> None:
    (tmp_path / "default").mkdir()
    (tmp_path / "strict").mkdir()
    default = exposure(rendered(tmp_path / "default", "/usr/local/bin/spotwatch"))
    strict = exposure(rendered(tmp_path / "strict", "/usr/local/bin/spotwatch", strict=True))
    assert strict <= STRICT_MAX_EXPOSURE
    assert strict < default  # the drop-in was read, not ignored


# -- what the unit promises --------------------------------------------------------


def test_unit_contract() -> None:
    s = unit_settings(UNIT.read_text())
    assert s["Type"] == ["notify"]
    assert s["Restart"] == ["always"]
    assert s["KillMode"] == ["mixed"]
    assert s["StateDirectory"] == ["spotwatch"]
    assert s["EnvironmentFile"] == ["-/etc/spotwatch/spotwatch.env"]
    assert "network-online.target" in " ".join(s["After"]).split()
    assert "network-online.target" in " ".join(s["Wants"]).split()
    assert s["ExecStart"][0].endswith(" run")
    assert s["WantedBy"] == ["multi-user.target"]
    # Room for a whole notice (two minutes) when the machine shuts down during it.
    assert int(s["TimeoutStopSec"][0]) >= 120 + config.DEFAULT_DEADLINE_MARGIN
    # The loop pings at half the watchdog time and polls every interval.
    assert int(s["WatchdogSec"][0]) >= 4 * config.DEFAULT_INTERVAL
    assert s["StateDirectory"] == [Path(config.DEFAULT_STATE_DIR).name]


def test_default_unit_keeps_what_root_hooks_need() -> None:
    s = unit_settings(UNIT.read_text())
    families = " ".join(s["RestrictAddressFamilies"]).split()
    assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= set(families)  # IMDS, S3, systemd, docker
    assert s["ProtectSystem"] == ["full"]  # not strict: /var, /srv, /data stay writable
    assert s.get("ProtectHome", ["no"]) == ["no"]
    assert s.get("PrivateTmp", ["no"]) == ["no"]
    assert "PrivateNetwork" not in s and "IPAddressDeny" not in s
    assert "ReadOnlyPaths" not in s and "InaccessiblePaths" not in s
    caps = set(" ".join(s["CapabilityBoundingSet"]).split())
    assert {"CAP_KILL", "CAP_DAC_OVERRIDE", "CAP_CHOWN", "CAP_SETUID"} <= caps


def test_strict_dropin_resets_the_lists_it_narrows() -> None:
    """A list setting in a drop-in adds to the unit's unless first assigned empty."""
    s = unit_settings(STRICT.read_text())
    for key in ("RestrictAddressFamilies", "CapabilityBoundingSet"):
        assert s[key][0] == "", f"{key}= must be reset before it is narrowed"
    assert s["ProtectSystem"] == ["strict"]


# -- the settings file ---------------------------------------------------------------

SPEC_HOOK_VARIABLES = {
    "SPOTWATCH_EVENT", "SPOTWATCH_ACTION", "SPOTWATCH_NOTICE_TIME", "SPOTWATCH_DEADLINE",
    "SPOTWATCH_SECONDS_LEFT", "SPOTWATCH_NOTICE_ID", "SPOTWATCH_INSTANCE_ID",
    "SPOTWATCH_INSTANCE_TYPE", "SPOTWATCH_REGION", "SPOTWATCH_AZ", "SPOTWATCH_DRILL",
    "SPOTWATCH_HOOK_DEADLINE",  # set by the runner too
    "SPOTWATCH_SHUTDOWN", "SPOTWATCH_PHASE",  # a shutdown with no notice; end or resume
}  # fmt: skip


def env_template_settings() -> dict[str, str]:
    """Every commented-out ``#SPOTWATCH_X=default`` line of the template."""
    out = {}
    for line in ENV.read_text().splitlines():
        match = re.fullmatch(r"#(SPOTWATCH_[A-Z0-9_]+)=(.*)", line)
        if match:
            out[match.group(1)] = match.group(2)
    return out


def test_env_template_has_every_run_flag_at_its_default() -> None:
    settings = env_template_settings()
    defaults = config.RunConfig()
    for flag in config.RUN_FLAGS:
        name = config.env_name(flag)
        assert name in settings, f"{name} is missing from {ENV}"
        # What the template shows must parse to what spotwatch uses by default.
        # (The maintenance lead is refused without its source, so watch it too.)
        companion = {"SPOTWATCH_WATCH": "spot,maintenance"} if name.endswith(
            "_MAINTENANCE_LEAD") else {}
        parsed = config.resolve({}, {**companion, name: settings[name]})
        field = flag[2:].replace("-", "_")
        if field == "log_format":
            continue  # the default depends on the terminal; the template shows json
        assert getattr(parsed, field) == getattr(defaults, field), name


def test_env_template_documents_every_hook_setting() -> None:
    """A SPOTWATCH_* variable an example hook reads is documented, or is one spotwatch sets."""
    settings = env_template_settings()
    for hook in sorted(p for p in HOOKS.iterdir() if p.is_file()):  # examples/ is not run
        used = set(re.findall(r"\$\{(SPOTWATCH_[A-Z0-9_]+)", hook.read_text()))
        missing = used - SPEC_HOOK_VARIABLES - set(settings)
        assert not missing, f"{hook.name} reads {sorted(missing)}: document them in {ENV}"


def test_env_template_is_all_comments() -> None:
    """Installed as is, it changes nothing: every setting stays at its default."""
    for line in ENV.read_text().splitlines():
        assert line == "" or line.startswith("#"), line
