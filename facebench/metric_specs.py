"""One record per metric: what a protocol's ``metric`` means, in one place.

A :class:`MetricSpec` says which options a protocol may give the metric (type
and default), which scorer computes it, the column it is ranked and plotted
on, whether lower is better, the axis label, which figures it feeds, and how
its subsets are reported. Protocol validation (:mod:`facebench.protocol`),
the scorers (:mod:`facebench.scoring`), the leaderboard and the plots all
read these records, so they cannot disagree.

This module sits below everything else (it imports nothing from facebench):
the scorer is named as ``"module:function"`` and imported only when a metric
is scored, so :mod:`facebench.protocol` can validate options without
importing the scorers.

Adding a metric: write its scorer in ``facebench/scoring/`` with the
signature ``(protocol, samples, predictions, options, card) -> Score`` and add
one :class:`MetricSpec` to :data:`SPECS` below.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import Any

NUMBER = (int, float)
FIGURES = ("tradeoff", "ced", "pr", "early-exit", "sweep")


@dataclass(frozen=True)
class Option:
    """A metric option: its type (a tuple: any of them) and the value used when a protocol leaves it out
    (None: absent, the scorer then does without it)."""

    type: type | tuple[type, ...]
    default: Any = None
    doc: str = ""
    valid: Callable[[Any], bool] | None = None  # a value's range, checked when a protocol is loaded
    must: str = ""  # that range in words, for the error


def _positive(value: Any) -> bool:
    return value > 0


def _fraction(value: Any) -> bool:
    return 0 < value <= 1


@dataclass(frozen=True)
class MetricSpec:
    """Everything facebench knows about one metric; see the module docstring."""

    name: str
    scorer: str  # "module:function", imported when scored (:meth:`scorer_fn`)
    options: Mapping[str, Option]
    headline: str  # the column a protocol is ranked on and a tradeoff plot puts on its y axis
    higher_is_better: bool
    label: str  # axis label of the headline
    unit: str = ""  # shown after the label, in parentheses
    needs_card: bool = False  # the scorer needs the model's card (its task, stage costs)
    figures: frozenset[str] = frozenset({"tradeoff"})  # which of FIGURES it feeds
    groups: str = ""  # how subsets and groups appear as columns, in words
    # (option, column, label): when a protocol sets the option, that column is the headline instead
    headline_if: tuple[tuple[str, str, str], ...] = ()
    # columns tried, in order, when a row lacks the headline (a paper that reports only another summary)
    fallbacks: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        object.__setattr__(self, "figures", frozenset(self.figures))
        unknown = self.figures - set(FIGURES)
        if unknown:
            raise ValueError(f"metric {self.name}: unknown figures {sorted(unknown)}; known: {', '.join(FIGURES)}")

    @property
    def option_types(self) -> dict[str, type | tuple[type, ...]]:
        return {name: option.type for name, option in self.options.items()}

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The protocol's options with every default filled in; an option unknown to the record is an error."""
        unknown = set(given) - set(self.options)
        if unknown:
            raise ValueError(f"metric {self.name}: unknown options {sorted(unknown)}; known: {', '.join(self.options)}")
        return {name: given.get(name, option.default) for name, option in self.options.items()}

    def headline_for(self, given: Mapping[str, Any]) -> tuple[str, str]:
        """(column, axis label) a protocol with options ``given`` is ranked and plotted on."""
        for option, column, label in self.headline_if:
            if given.get(option) is not None:
                return column, label
        return self.headline, self.axis_label

    @property
    def axis_label(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label

    def scorer_fn(self) -> Callable:
        return _load(self.scorer)


@cache
def _load(reference: str) -> Callable:
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


_NORM = Option(str, "inter-ocular",
               "normaliser: inter-ocular | inter-pupil | box | 'i,j' (facebench.metrics.landmarks)")
_THRESHOLD = Option(NUMBER, 0.08, "NME at or above which a face is a failure; the CED's x range", _positive,
                    "be positive")
_IOU = Option(NUMBER, 0.5, "", _fraction, "be in (0, 1]")

SPECS: dict[str, MetricSpec] = {spec.name: spec for spec in (
    MetricSpec(
        "ap", "facebench.scoring.detection:score_ap",
        {"iou_threshold": _IOU, "rule": Option(str, "voc", "voc | coco matching"),
         "ap_method": Option(str, "voc", "voc | voc07 | coco101"),
         "min_area": Option(NUMBER, None, "faces smaller (pixels squared) are ignored"),
         "min_face_fraction": Option(NUMBER, None, "as min_area, a fraction of the image area"),
         "max_detections": Option(int, None, "per image, highest scores kept (pycocotools' maxDets); absent: no cap",
                                  _positive, "be at least 1")},
        headline="ap50", higher_is_better=True, label="AP at IoU 0.5", figures=frozenset({"tradeoff", "pr"})),
    MetricSpec(
        "wider_ap", "facebench.scoring.detection:score_wider_ap",
        {"iou_threshold": _IOU, "settings": Option(list, ("easy", "medium", "hard"))},
        headline="hard", higher_is_better=True, label="AP (hard)", figures=frozenset({"tradeoff", "pr"}),
        groups="one AP column per setting, and {setting}_faces"),
    MetricSpec(
        "roc", "facebench.scoring.detection:score_roc",
        {"overlap": _IOU, "false_positives": Option(list, (1000,))},
        headline="tpr@1000", higher_is_better=True, label="TPR at 1000 FP",
        groups="tpr@{n} for each of false_positives"),
    MetricSpec(
        "nme", "facebench.scoring.landmarks:score_nme",
        {"norm": _NORM, "threshold": _THRESHOLD,
         "subset_attribute": Option(str, None, "report per value of this sample attribute (300W common/challenging)"),
         "subset_flags": Option(list, (), "report the faces with each named 0/1 attribute set (WFLW's six)"),
         "yaw_attribute": Option(str, None, "AFLW2000-3D yaw bins (degrees) and their balanced mean")},
        headline="nme", higher_is_better=False, label="NME", figures=frozenset({"tradeoff", "ced"}),
        groups="{group}_nme, _fr, _auc, _faces, _failed per subset_attribute value and subset_flags flag; "
               "yaw{bin}, yaw{bin}_failed and yawbalanced with yaw_attribute",
        headline_if=(("yaw_attribute", "yawbalanced", "NME (yaw-balanced)"),), fallbacks=("yawbalanced", "nme")),
    MetricSpec(
        "regions", "facebench.scoring.landmarks:score_regions",
        {"norm": _NORM, "threshold": _THRESHOLD, "regions": Option(list, ("lips", "eyes"))},
        headline="all", higher_is_better=False, label="NME (all points)",
        groups="one NME column per region (each by its own corners), {part}_points"),
    MetricSpec(
        "jitter", "facebench.scoring.jitter:score_jitter",
        {"norm": _NORM, "min_iou": Option(NUMBER, 0.3, "a detection follows the face at this IoU or more", _fraction,
                                          "be in (0, 1]")},
        headline="jitter", higher_is_better=False, label="jitter", unit="fraction of IOD", needs_card=True),
    MetricSpec(
        "early_exit", "facebench.scoring.early_exit:score_early_exit",
        {"norm": _NORM, "operating_points": Option(list, (), "thresholds T_s; a card's own take precedence"),
         "failure_threshold": _THRESHOLD, "repeats": Option(int, 50, "random assignments averaged", _positive,
                                                            "be at least 1"),
         "seed": Option(int, 0)},
        headline="nme_last", higher_is_better=False, label="NME", needs_card=True,
        figures=frozenset({"tradeoff", "early-exit"}),
        groups="T{k}, nme@T{k}, stages@T{k}, cost@T{k}, random@T{k}, oracle@T{k} per operating point; "
               "the curves in Score.curves['early_exit']"),
)}


_POINTS = Option(str, "visible-inner", "visible-inner | visible | all: the ground-truth points compared (visible: "
                 "not hidden by the head, by the renderer's depth test; inner: without the jaw contour)",
                 lambda v: v in ("visible-inner", "visible", "all"), "be visible-inner, visible or all")
SPECS.update({spec.name: spec for spec in (
    MetricSpec(
        "sweep_nme", "facebench.scoring.sweeps:score_sweep_nme",
        {"norm": Option(str, "box", _NORM.doc), "threshold": _THRESHOLD, "points": _POINTS},
        headline="nme", higher_is_better=False, label="NME", figures=frozenset({"tradeoff", "sweep"}),
        groups="{factor}_at_neutral, {factor}_breaks_low and _breaks_high (where the mean NME passes threshold or "
               "half the faces get no answer) per factor; the curves in Score.curves['sweep']"),
    MetricSpec(
        "sweep_detection", "facebench.scoring.sweeps:score_sweep_detection",
        {"iou_threshold": _IOU, "threshold": Option(NUMBER, 0.5, "the share of faces found below which a value "
                                                    "breaks", _fraction, "be in (0, 1]")},
        headline="detected", higher_is_better=True, label="faces found", figures=frozenset({"tradeoff", "sweep"}),
        groups="{factor}_at_neutral, {factor}_breaks_low and _breaks_high per factor"),
    MetricSpec(
        "sequence_jitter", "facebench.scoring.sweeps:score_sequence_jitter",
        {"points": _POINTS, "min_iou": Option(NUMBER, 0.3, "a detection follows the face at this IoU or more",
                                              _fraction, "be in (0, 1]")},
        headline="jitter", higher_is_better=False, label="jitter", unit="fraction of face size", needs_card=True,
        groups="{sequence}_jitter per sequence"),
)})


def spec_for(metric: str) -> MetricSpec:
    try:
        return SPECS[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(SPECS)}") from None


__all__ = ["FIGURES", "NUMBER", "SPECS", "MetricSpec", "Option", "spec_for"]
