"""Turn a protocol's predictions into its numbers.

A protocol's ``metric`` names a record in :data:`METRICS` (defined in
:mod:`facebench.metric_specs`, below the protocol schema, so validation and
scoring read the same options and defaults). Its scorer is called as
``scorer(protocol, samples, predictions, options, card) -> Score`` with the
protocol's options resolved against the record (every default filled in:
no scorer carries a literal default). ``predictions`` maps item keys to a
Prediction, or None where the adapter failed. A failed item is scored as an
empty answer (its faces count as missed), never dropped: dropping it would
flatter the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from facebench.metric_specs import SPECS, MetricSpec, Option, spec_for
from facebench.protocol import Protocol
from facebench.scoring.base import Score
from facebench.scoring.detection import score_ap, score_roc, score_wider_ap
from facebench.scoring.early_exit import operating_points, score_early_exit, stage_costs, stage_errors
from facebench.scoring.jitter import score_jitter
from facebench.scoring.landmarks import GroundTruthError, paired_landmarks, score_nme, score_regions

METRICS: Mapping[str, MetricSpec] = SPECS
# metric -> scorer, a view of METRICS for callers that only need the function
SCORERS: dict[str, Callable] = {name: spec.scorer_fn() for name, spec in METRICS.items()}


def score(protocol: Protocol, samples, predictions, card=None, *, spec: MetricSpec | None = None) -> Score:
    """Score ``predictions`` as ``protocol`` says; ``spec`` replaces the metric's record (tests, experiments)."""
    if spec is None:
        try:
            spec = METRICS[protocol.metric]
        except KeyError:
            raise ValueError(f"{protocol.source}: unknown metric {protocol.metric!r}; "
                             f"known: {', '.join(METRICS)}") from None
    if spec.needs_card and card is None:
        raise ValueError(f"{protocol.source}: the {spec.name} metric needs the model's card")
    return spec.scorer_fn()(protocol, samples, predictions, spec.resolve(protocol.options), card)


def check_ground_truth(protocol: Protocol, samples) -> None:
    """Before a model runs: refuse ground truth that does not label the points the protocol's normaliser needs."""
    spec = METRICS[protocol.metric]
    if spec.name in ("nme", "regions"):
        from facebench.scoring.landmarks import check_ground_truth as check_labelled

        check_labelled(protocol, samples, spec.resolve(protocol.options))


__all__ = ["check_ground_truth", "METRICS", "SCORERS", "GroundTruthError", "MetricSpec", "Option", "Score",
           "operating_points", "paired_landmarks", "score", "score_ap", "score_early_exit", "score_jitter",
           "score_nme", "score_regions", "score_roc", "score_wider_ap", "spec_for", "stage_costs", "stage_errors"]
