"""Which cloud this runs on: ``--cloud auto`` or one of the registry's names.

``auto`` reads the DMI strings first (``/sys/class/dmi/id``: no network, no
wait), and only when they say nothing known asks each metadata service once, at
``--imds-url``, with a short timeout. The decision and why are logged once as
``cloud.decided``. Nothing answered at all: AWS, spotwatch's first home, and
the watcher's faults then say what is wrong with IMDS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from spotwatch.clouds import metadata_http, registry
from spotwatch.clouds.metadata_http import ImdsError

DMI_DIR = Path("/sys/class/dmi/id")
PROBE_TIMEOUT = (0.5, 1.0)


@dataclass(frozen=True)
class Decision:
    cloud: str
    how: str  # "flag", "dmi", "probe" or "default"
    reason: str


def _read(dmi_dir: Path, name: str) -> str:
    try:
        return (dmi_dir / name).read_text(errors="replace").strip()
    except OSError:
        return ""


def from_dmi(dmi_dir: Path) -> Decision | None:
    """The cloud the DMI strings name, or None when they name none we know."""
    for adapter in registry.every():
        why = adapter.from_dmi(lambda name: _read(dmi_dir, name))
        if why is not None:
            return Decision(adapter.name, "dmi", why)
    return None


Probe = Callable[[str], "str | None"]


def ask(method: str, url: str, headers: dict[str, str]) -> metadata_http.Answer | None:
    """One short request for a probe: the answer whatever its status, or None."""
    session = metadata_http.new_session()
    try:
        return metadata_http.request(
            session, method, url, headers=headers, timeout=PROBE_TIMEOUT, what="probe",
            limits=metadata_http.Limits(max_body=65536),
        )  # fmt: skip
    except ImdsError:
        return None
    finally:
        session.close()


def ranked_probes() -> Sequence[tuple[str, Probe]]:
    """Each cloud's probe, in the order of their ``probe_rank``."""
    ranked = sorted(registry.every(), key=lambda adapter: adapter.probe_rank)
    return [(adapter.name, adapter.probe) for adapter in ranked]


def decide(
    choice: str,
    base_url: str,
    *,
    dmi_dir: Path = DMI_DIR,
    probes: Sequence[tuple[str, Probe]] | None = None,
) -> Decision:
    """The cloud for ``choice`` (``auto`` or one of the registry's NAMES)."""
    if choice != "auto":
        return Decision(choice, "flag", "set by --cloud / SPOTWATCH_CLOUD")
    found = from_dmi(dmi_dir)
    if found is not None:
        return found
    for cloud, probe in probes if probes is not None else ranked_probes():
        why = probe(base_url)
        if why is not None:
            return Decision(cloud, "probe", f"no known DMI vendor in {dmi_dir}; {why}")
    return Decision(
        "aws",
        "default",
        f"no known DMI vendor in {dmi_dir} and no metadata service answered at {base_url}; "
        "assuming AWS (set --cloud to choose)",
    )
