"""Bytes of state held in memory, measured on the objects themselves.

``sada bench`` reports decision state per submission; the projector may run
in a process of its own, so the measure lives here, where both can reach it.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable
from typing import Any


def deep_size(roots: Iterable[object], seen: set[int]) -> int:
    """Bytes of ``roots`` and everything they hold, each object counted once across ``seen``.

    Follows dicts, lists, tuples, sets and dataclass fields; stops at other
    objects (strings, numbers, datetimes are leaves). ``None`` and booleans
    are shared singletons and cost nothing per holder.
    """
    total = 0
    stack: list[object] = list(roots)
    while stack:
        obj = stack.pop()
        if obj is None or isinstance(obj, bool) or id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            stack.extend(getattr(obj, f.name) for f in dataclasses.fields(obj))
    return total


def fold_state(folds: Iterable[Any]) -> dict[str, int]:
    """The decision state of partition folds: their submission states and deadline index.

    The fold's private deadline index is looked up by name, so a renamed one
    drops out of the sum, not the run.
    """
    seen: set[int] = set()
    state_bytes = submissions = open_submissions = heap_entries = 0
    for fold in folds:
        heap = getattr(fold, "_heap", [])
        state_bytes += deep_size([fold.states, heap], seen)
        submissions += len(fold.states)
        open_submissions += sum(1 for s in fold.states.values() if s.status == "open")
        heap_entries += len(heap)
    return {
        "state_bytes": state_bytes,
        "submissions": submissions,
        "open_submissions": open_submissions,
        "deadline_index_entries": heap_entries,
    }
