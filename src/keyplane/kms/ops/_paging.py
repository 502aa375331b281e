"""Marker pagination shared by the List operations (ListKeys, ListAliases,
ListResourceTags)."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import TypeVar

from keyplane.errors import InvalidMarkerError

T = TypeVar("T")


def page(
    items: list[T],
    limit: int,
    marker: str | None,
    name: Callable[[T], str],
    well_formed: Callable[[str], bool] = bool,
) -> tuple[list[T], str | None]:
    """One page of ``items`` (sorted by ``name``) after ``marker``.

    The marker is the name of the last item of the previous page. Paging continues
    after where that name would sort, so deleting the item it names between two pages
    does not break the listing.

    Raises:
        InvalidMarkerError: a marker that could not be a name of these items.
    """
    start = 0
    if marker is not None:
        if not well_formed(marker):
            raise InvalidMarkerError("Invalid marker")  # AWS's whole message
        start = bisect.bisect_right([name(item) for item in items], marker)
    chunk = items[start : start + limit]
    more = start + limit < len(items)
    return chunk, (name(chunk[-1]) if more and chunk else None)
