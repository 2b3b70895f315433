"""Every cloud spotwatch knows, by name: the one place that lists them.

Adding a cloud is one adapter module in this package (a ``Cloud`` subclass)
plus its metadata simulator, and one entry here.
"""

from __future__ import annotations

from collections.abc import Mapping

from spotwatch.clouds.aws import AwsCloud
from spotwatch.clouds.azure import AzureCloud
from spotwatch.clouds.base import Cloud
from spotwatch.clouds.gcp import GoogleCloud

ADAPTERS: Mapping[str, Cloud] = {
    adapter.name: adapter for adapter in (AwsCloud(), GoogleCloud(), AzureCloud())
}
NAMES = tuple(ADAPTERS)


def get(name: str) -> Cloud:
    """The adapter for ``name`` (one of NAMES); KeyError for any other."""
    return ADAPTERS[name]
