"""A real systemd in a throwaway container, for the tests marked ``systemd``.

An overlay of ``/`` on a tmpfs, booted with ``systemd-nspawn -b`` and a
private network (a loopback of its own, no way out). Commands run inside with
``nsenter`` into its systemd (pid 1 inside), with a clean environment (no HOME,
a plain PATH), as a unit's would be. Everything written inside lands in the
tmpfs and is gone after ``close()``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def why_not() -> str | None:
    """Why the tier cannot run here (one line), or None."""
    if os.geteuid() != 0:
        return "not root: booting a systemd container needs root"
    if shutil.which("systemd-nspawn") is None:
        return "no systemd-nspawn (Debian package systemd-container)"
    if shutil.which("nsenter") is None:
        return "no nsenter (util-linux)"
    if not any(Path(p).exists() for p in ("/lib/systemd/systemd", "/usr/lib/systemd/systemd")):
        return "no systemd to boot (Debian package systemd)"
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        filesystems = ""
    if "overlay" not in filesystems:
        subprocess.run(["modprobe", "overlay"], capture_output=True, check=False)
        if "overlay" not in Path("/proc/filesystems").read_text():
            return "no overlayfs in this kernel"
    return None


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


def _umount(path: Path) -> None:
    for _ in range(20):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.25)
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


class Container:
    def __init__(self, name: str, binds: Sequence[tuple[Path, str]] = ()) -> None:
        """``binds``: (directory here, path inside) pairs, bound read-write at every boot,
        so what is written there outlives the container (a poweroff, a reboot)."""
        self.name = name
        self.binds = tuple(binds)
        self.base: Path | None = None
        self.root = Path("/nonexistent")
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader = 0
        self.console = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".console")[1])

    # -- life ------------------------------------------------------------------------

    def boot(self, timeout: float = 90.0) -> None:
        self._mount_root()
        self._start(timeout)

    def _mount_root(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        _mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(self.base))
        for sub in ("upper", "work", "root"):
            (self.base / sub).mkdir()
        self.root = self.base / "root"
        _mount(
            "-t", "overlay", "overlay", "-o",
            f"lowerdir=/,upperdir={self.base / 'upper'},workdir={self.base / 'work'}",
            str(self.root),
        )  # fmt: skip

    def _start(self, timeout: float) -> None:
        argv = [
            "systemd-nspawn", "-D", str(self.root), "-b", "--private-network",
            "--register=no", "--keep-unit", "-M", self.name, "--console=read-only",
        ]  # fmt: skip
        # The test's Python and the repository, where the container would not see
        # them: not on / (the overlay holds only the root file system), or under
        # /tmp or /var/tmp (nspawn mounts a fresh tmpfs on /tmp; a checkout there
        # would vanish).
        root_dev = os.stat("/").st_dev
        for path in sorted({sys.prefix, sys.base_prefix, str(Path(__file__).parent.parent)}):
            real = os.path.realpath(path)
            hidden = any(real == d or real.startswith(d + "/") for d in ("/tmp", "/var/tmp"))
            if hidden or os.stat(path).st_dev != root_dev:
                argv.append(f"--bind-ro={real}")
        for here, inside in self.binds:
            argv.append(f"--bind={here}:{inside}")
        self.leader = 0
        with open(self.console, "wb") as console:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT
            )
        end = time.monotonic() + timeout
        while not self.leader:
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"systemd-nspawn did not start:\n{self.console_text()}")
            self.leader = _container_init(self.proc.pid)
            if not self.leader:
                time.sleep(0.05)
        # Until systemd inside has started what it starts at boot.
        while True:
            state = self.run("systemctl", "is-system-running", "--wait", check=False,
                             timeout=max(1.0, end - time.monotonic())).stdout.strip()  # fmt: skip
            if state in ("running", "degraded"):
                return
            if time.monotonic() > end:
                raise RuntimeError(f"the container did not boot ({state}):\n{self.console_text()}")
            time.sleep(0.2)

    def shut_down(self, how: str = "poweroff", timeout: float = 120.0) -> int:
        """``systemctl poweroff`` (or ``reboot``, ``halt``) inside, as an operator or the
        platform would; waits for the container to be gone and returns nspawn's exit
        status (133 for a reboot). The root file system (the overlay) stays: ``boot_again``."""
        assert self.proc is not None
        self.run("systemctl", how, "--no-block", timeout=30)
        status = self.proc.wait(timeout=timeout)
        self.proc = None
        self.leader = 0
        return status

    def boot_again(self, timeout: float = 90.0) -> None:
        """Boot the same root again (what it wrote kept), as an instance comes back."""
        assert self.proc is None and self.base is not None
        self._start(timeout)

    def close(self) -> None:
        """Power off and unmount; safe to call after a failed boot, and twice."""
        if self.proc is not None and self.proc.poll() is None:
            if self.leader:
                self.run("systemctl", "poweroff", "--no-block", check=False, timeout=10)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # our systemd-nspawn, by its pid
                self.proc.wait(timeout=10)
        self.proc = None
        if self.base is not None:
            _umount(self.root)
            _umount(self.base)
            try:
                self.base.rmdir()
            except OSError:
                pass
            self.base = None
        try:
            self.console.unlink()
        except FileNotFoundError:
            pass

    def console_text(self) -> str:
        try:
            return self.console.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    # -- inside ----------------------------------------------------------------------

    def run(
        self, *argv: str, check: bool = True, timeout: float = 60.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside, in a clean environment; its output as text."""
        full = ["nsenter", "-t", str(self.leader), "-a", "/usr/bin/env", "-i", f"PATH={PATH}",
                *argv]  # fmt: skip
        result = subprocess.run(
            full, capture_output=True, text=True, timeout=timeout, input=input, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} -> exit {result.returncode}\n"
                f"stdout: {result.stdout[-3000:]}\nstderr: {result.stderr[-3000:]}"
            )
        return result

    @property
    def upper(self) -> Path:
        """The overlay's upper layer: what the container changed (deletions are whiteouts)."""
        assert self.base is not None
        return self.base / "upper"

    def path(self, inside: str) -> Path:
        """Where a path inside the container is, seen from here (to read or write files)."""
        return self.root / inside.lstrip("/")

    def write(self, inside: str, text: str, mode: int = 0o644) -> None:
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)


def _container_init(nspawn_pid: int) -> int:
    """The pid (on this side) of the container's init, or 0 while there is none yet.

    Not simply nspawn's first child: under load that may still be the short-lived
    outer child that sets the container up, and nsenter into it finds nothing.
    The init is the descendant that is pid 1 of its own pid namespace.
    """
    todo = [nspawn_pid]
    while todo:
        pid = todo.pop()
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            try:
                status = Path(f"/proc/{child}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                fields = line.split()
                # "NSpid: 12345 1": pid 1 in a namespace nested in ours.
                if fields[:1] == ["NSpid:"] and len(fields) > 2 and fields[-1] == "1":
                    return child
            todo.append(child)
    return 0
