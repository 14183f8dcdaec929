"""What a scorer returns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Score:
    """A protocol's numbers for one model.

    ``metrics``: the leaderboard's columns (scalars and a few strings);
    ``per_item``: per image or face, for CED plots and debugging; ``curves``:
    what figures draw (precision-recall under ``"pr"``, the early-exit table
    under ``"early_exit"`` as a dict of columns), JSON-able, stored beside the
    metrics so a report never recomputes them.

    It unpacks as ``metrics, per_item`` for callers written before curves
    had their own place.
    """

    metrics: dict
    per_item: dict
    curves: dict = field(default_factory=dict)

    def __iter__(self):
        return iter((self.metrics, self.per_item))
