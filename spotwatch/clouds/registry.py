"""Every cloud spotwatch knows, by name: the one place that lists them.

Adding a cloud is one adapter module in this package (a ``base.Cloud``
subclass, exposed as its module's ``ADAPTER``) plus its metadata simulator, and
one line here. Like gunicorn's worker table, the table names modules, and an
adapter is imported only when asked for: ``spotwatch run`` on AWS never loads
the Google or Azure code, and listing the names costs nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from spotwatch.clouds.base import Cloud

_MODULES: Mapping[str, str] = {
    "aws": "spotwatch.clouds.aws",
    "gcp": "spotwatch.clouds.gcp",
    "azure": "spotwatch.clouds.azure",
}
NAMES = tuple(_MODULES)


def get(name: str) -> Cloud:
    """The adapter for ``name`` (one of NAMES); KeyError for any other."""
    adapter = importlib.import_module(_MODULES[name]).ADAPTER
    if not isinstance(adapter, Cloud) or adapter.name != name:
        raise TypeError(f"{_MODULES[name]}.ADAPTER is not the Cloud named {name!r}")
    return adapter


def every() -> list[Cloud]:
    """Every adapter, in the order of NAMES."""
    return [get(name) for name in NAMES]
