"""EC2 looked up by id in batches: one home for ``status`` and ``fleet watch``.

Ids go in a filter, not in ``InstanceIds``/``SpotInstanceRequestIds``: an id EC2
does not know (long gone, or in another region) is then simply absent from the
answer, where the id parameter would fail the whole call with ``...NotFound``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

# Values per filter in one call; EC2 accepts up to 200.
FILTER_CHUNK = 100
# Results per page asked for (MaxResults); EC2's own limit.
PAGE_SIZE = 1000


def chunks(items: Sequence[T], size: int = FILTER_CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def describe_instances(
    client: Any, instance_ids: Sequence[str]
) -> tuple[dict[str, dict[str, Any]], int]:
    """The instances EC2 knows among ``instance_ids``, by id, and how many calls it took.

    One DescribeInstances (paginated) per :data:`FILTER_CHUNK` ids; errors are
    the client's, raised as they come.
    """
    found: dict[str, dict[str, Any]] = {}
    calls = 0
    paginator = client.get_paginator("describe_instances")
    for chunk in chunks(instance_ids):
        calls += 1
        pages = paginator.paginate(
            Filters=[{"Name": "instance-id", "Values": list(chunk)}],
            PaginationConfig={"PageSize": PAGE_SIZE},
        )
        for page in pages:
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    found[str(instance["InstanceId"])] = instance
    return found, calls
