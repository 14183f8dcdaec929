"""The jitter scorer: BlazeFace's shifted-copies jitter, for detectors and landmark models alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from facebench.protocol import Protocol
from facebench.scoring.base import Score
from facebench.types import Prediction, Sample


def score_jitter(protocol: Protocol, samples: Sequence[Sample], predictions: Mapping[str, Prediction | None],
                 opts: Mapping, card=None) -> Score:
    """Jitter per source photo (:mod:`facebench.scoring.shift_jitter`); the card says the model's task."""
    from facebench.scoring.shift_jitter import photo_jitter

    if card is None:
        raise ValueError(f"{protocol.source}: the jitter metric needs the model's card (detector or landmarks)")
    per_photo = photo_jitter(samples, predictions, card.task, float(opts["min_iou"]))
    values = np.array([p.jitter for p in per_photo if p.jitter is not None])
    metrics = {"jitter": float(values.mean()) if values.size else float("nan"),
               "jitter_median": float(np.median(values)) if values.size else float("nan"),
               "photos": len(per_photo), "missed": int(sum(p.missed for p in per_photo)),
               "unfollowed": int(sum(p.jitter is None for p in per_photo))}
    per_item = {p.source: {"jitter": p.jitter, "copies": p.copies, "missed": p.missed} for p in per_photo}
    return Score(metrics, per_item)
