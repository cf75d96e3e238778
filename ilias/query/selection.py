"""Selections as payload filters: evaluate mini-ILIAS on a collection of all distractors.

The reference applies a selection list (mini-ILIAS: 5M of the 100M YFCC100M distractors)
at search time. Here the list becomes a tag: every point it keeps (all queries' positives
and the listed distractors) gets the tag in its indexed ``selection`` payload, once per
collection and list, and a search or evaluation then filters ``selection=<tag>`` inside
Qdrant like any other payload filter. Nothing is filtered in Python after the search, so
the top-k is the top-k of the selected subset, exactly.

The tag is named after the list's keys (``selection_tag``), and the collection's shard
ledger records it (``selection:<tag>``) with the number of points it keeps, so the next
evaluation with the same list only counts them instead of scanning the collection again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ilias.errors import DatasetError
from ilias.indexing.store import Store
from ilias.loader import Role, read_selection
from ilias.loader.sources import selected, tag_of

SELECTION_FIELD = "selection"
LEDGER_PREFIX = "selection:"


@dataclass(frozen=True)
class AppliedSelection:
    """A selection ready to filter on: ``filter`` is the payload filter to add."""

    tag: str
    points: int  # points the selection keeps (positives and other non-distractors included)
    distractors: int  # listed distractors found in the collection
    listed: int  # keys in the list
    reused: bool  # the tag was already there: nothing was scanned

    @property
    def filter(self) -> dict[str, str]:
        return {SELECTION_FIELD: self.tag}


def apply_selection(store: Store, collection: str, path: str | Path) -> AppliedSelection:
    """Tag what the selection list at ``path`` keeps in ``collection`` (once), and say how
    to filter on it. A list that names no distractor of the collection is an error."""
    if SELECTION_FIELD not in store.collection_config(collection).payload_indexes:
        raise DatasetError(
            f"collection {collection!r} has no indexed '{SELECTION_FIELD}' payload (it was "
            "made by an older ilias or another tool), so a selection cannot filter it; load "
            "it again into a new collection"
        )
    keys = read_selection(path)
    tag = tag_of(path, keys)
    entry = store.shard_ledger(collection).get(LEDGER_PREFIX + tag)
    total = store.count(collection)
    if (
        entry
        and entry.get("collection_points") == total  # nothing loaded since the tagging
        and store.count(collection, {SELECTION_FIELD: tag}) == entry["points"]
    ):
        return AppliedSelection(tag, entry["points"], entry["distractors"], len(keys), True)
    distractors = 0

    def keep(payload: Mapping[str, Any]) -> bool:
        nonlocal distractors
        if payload.get("role") != Role.DISTRACTOR.value:
            return True
        if selected(str(payload.get("id", "")), keys):
            distractors += 1
            return True
        return False

    points = store.tag(collection, tag, keep)
    if not distractors:
        raise DatasetError(
            f"{path}: none of its {len(keys)} keys names a distractor of {collection!r}; is "
            "it the selection for these distractors?"
        )
    store.record_shards(
        collection,
        {
            LEDGER_PREFIX + tag: {
                "points": points,
                "distractors": distractors,
                "collection_points": total,
            }
        },
    )
    return AppliedSelection(tag, points, distractors, len(keys), False)
