"""Error as a function of one controlled factor, and temporal jitter with the true motion removed.

Pure functions on arrays (no samples): the rendered benchmark's scorers
(:mod:`facebench.scoring.sweeps`) feed them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FactorCurve:
    """A metric per value of one factor: ``values`` sorted, ``metric`` (mean over the faces answered at
    that value; NaN where none was), ``failed`` (fraction not answered), ``count`` faces per value."""

    values: np.ndarray
    metric: np.ndarray
    failed: np.ndarray
    count: np.ndarray


def factor_curve(values: np.ndarray, metric: np.ndarray) -> FactorCurve:
    """Group per-face ``metric`` (NaN: the model gave no answer) by the factor's ``values``, shape (F,)."""
    values, metric = np.asarray(values, np.float64), np.asarray(metric, np.float64)
    if values.shape != metric.shape or values.ndim != 1:
        raise ValueError(f"values and metric must be (F,) arrays of one shape, got {values.shape} and {metric.shape}")
    unique, index = np.unique(values, return_inverse=True)
    count = np.bincount(index, minlength=len(unique)).astype(np.float64)
    answered = ~np.isnan(metric)
    n_answered = np.bincount(index, answered, minlength=len(unique))
    sums = np.bincount(index, np.where(answered, metric, 0.0), minlength=len(unique))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_answered > 0, sums / np.maximum(n_answered, 1), np.nan)
    return FactorCurve(unique, mean, 1.0 - n_answered / count, count.astype(np.int64))


def breaking_points(curve: FactorCurve, neutral: float, fails) -> tuple[float | None, float | None]:
    """Walking from the ``neutral`` value (the easiest) outwards, the first value below it and the first
    above it where ``fails(metric, failed)`` is true for that value; None on a side where it never is."""
    values = curve.values
    broken = np.array([bool(fails(m, f)) for m, f in zip(curve.metric, curve.failed)])
    below = [i for i in np.flatnonzero(values <= neutral)[::-1] if broken[i]]
    above = [i for i in np.flatnonzero(values >= neutral) if broken[i]]
    return (float(values[below[0]]) if below else None, float(values[above[0]]) if above else None)


def sequence_jitter(predicted: np.ndarray, truth: np.ndarray, norm: np.ndarray) -> tuple[float, int]:
    """Frame-to-frame jitter with the true motion removed: the RMS over consecutive frames (t-1, t) and
    points of ``|r_t - r_{t-1}|`` divided by ``norm_t``, where ``r_t = predicted_t - truth_t`` is the
    residual. Constant offsets and the true motion cancel; a perfect or a constantly biased predictor
    scores 0, i.i.d. noise of sigma per coordinate about ``2 sigma / norm`` (both coordinates).

    ``predicted`` and ``truth``: (T, P, 2) in frame order (a NaN frame: no answer; pairs touching it are
    left out); ``norm`` (T,). Returns (jitter, pairs used); NaN when no pair is usable."""
    predicted, truth = np.asarray(predicted, np.float64), np.asarray(truth, np.float64)
    norm = np.asarray(norm, np.float64)
    if predicted.shape != truth.shape or predicted.ndim != 3 or norm.shape != predicted.shape[:1]:
        raise ValueError(f"predicted and truth must be (T, P, 2) and norm (T,), got {predicted.shape}, "
                         f"{truth.shape} and {norm.shape}")
    if predicted.shape[1] == 0:  # no point compared: nothing to measure, no pair used
        return float("nan"), 0
    residual = predicted - truth
    step = residual[1:] - residual[:-1]  # (T-1, P, 2)
    usable = np.isfinite(step).all(axis=(1, 2)) & (norm[1:] > 0)
    if not usable.any():
        return float("nan"), 0
    squared = (step[usable] ** 2).sum(axis=2) / norm[1:][usable, None] ** 2
    return float(np.sqrt(squared.mean())), int(usable.sum())
