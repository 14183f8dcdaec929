"""What this process's evaluation is doing right now: the run key, and which items are in which adapter phase.

The harness marks each phase of each item as it enters and leaves it
(``preprocess``, ``forward``, ``postprocess``; ``load`` for the model's load),
and :func:`facebench.results.evaluate.evaluate` names the run. A supervisor
(:mod:`facebench.results.isolation`) reads :func:`snapshot` a few times a second to
name an item that hangs. Thread-safe; one record per process.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_run: list[str | None] = [None]
_entries: Counter[tuple[str, str]] = Counter()


def set_run(key: str | None) -> None:
    """The run key of the cell being evaluated (None: none)."""
    with _lock:
        _run[0] = key
        if key is None:
            _entries.clear()


@contextmanager
def phase(name: str, items: Iterable[str]) -> Iterator[None]:
    """Mark ``items`` as being in phase ``name`` for the duration of the block."""
    entries = [(name, item) for item in items]
    with _lock:
        _entries.update(entries)
    try:
        yield
    finally:
        with _lock:
            _entries.subtract(entries)
            for entry in entries:
                if _entries[entry] <= 0:
                    del _entries[entry]


def snapshot() -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """The run key and the sorted (phase, item) pairs in flight."""
    with _lock:
        return _run[0], tuple(sorted(_entries))
