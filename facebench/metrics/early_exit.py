"""Early-exit curves for cascades ("knowing when to quit", MuSiCa).

Input per face: its NME after each stage, the model's own error estimate after
each stage, and the MACs of each stage. For a success threshold T_s, a face
stops at the first stage whose estimate is below T_s (the last stage
otherwise) and costs the MACs of the stages it ran. Sweeping T_s over every
distinct estimate (plus infinity: all stop after stage one) traces the
accuracy-vs-compute curve. Two references on the same axes:

* ``random``: the same number of faces stopping at each stage, but which
  faces is random (R seeded repeats; mean and standard deviation);
* ``oracle``: the lowest mean NME any choice of per-face stop stages reaches
  at that mean cost. Each face's (cost, NME) points are reduced to their
  lower convex hull; the hull segments of all faces, taken in order of NME
  gained per MAC, trace the best curve (between its vertices, mixing two
  choices reaches the straight line). So no policy, whatever its estimate, is
  below it at equal mean cost. MuSiCa's "stop once the true error is below
  T" is not such a bound: it runs on when the error rises along the cascade.

The sweep is vectorised: with the running minimum m[f, s] of a face's
estimates, the face runs past stage s exactly when m[f, s] >= T_s, so every
per-threshold sum is a sum over stages of "faces with m[:, s] >= T_s" terms,
read off sorted cumulative sums.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ["method", "threshold", "nme", "nme_std", "macs", "stages", "failures"]


def early_exit_curves(nme: np.ndarray, estimate: np.ndarray, stage_macs: np.ndarray,
                      failure_threshold: float = 0.08, repeats: int = 50, seed: int = 0) -> pd.DataFrame:
    """Tidy curves for the model's estimate, the random baseline and the oracle.

    ``nme`` and ``estimate`` are (F, S); ``stage_macs`` is (S,). One row per
    method and threshold: mean NME, its spread (random only), mean MACs, mean
    stages run, and the number of faces whose estimate at their stop stage
    exceeds ``failure_threshold``.
    """
    nme = np.asarray(nme, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    stage_macs = np.asarray(stage_macs, dtype=np.float64).reshape(-1)
    if nme.ndim != 2 or nme.shape != estimate.shape or nme.shape[1] != len(stage_macs):
        raise ValueError(f"need nme and estimate of shape (faces, stages) and one MAC count per stage; "
                         f"got {nme.shape}, {estimate.shape}, {stage_macs.shape}")
    if not (np.all(np.isfinite(nme)) and np.all(np.isfinite(estimate))):
        raise ValueError("nme and estimate must be finite")
    failed = (estimate > failure_threshold).astype(np.float64)

    model = _sweep(nme, estimate, stage_macs, failed)
    oracle = _oracle(nme, stage_macs, failed)
    random = _random_baseline(nme, failed, model["runs_past"], repeats, seed)
    frames = []
    methods: list[tuple[str, dict[str, np.ndarray], dict[str, np.ndarray]]] = [
        ("model", model, {}), ("oracle", oracle, {}), ("random", model, random)]
    for method, sweep, extra in methods:
        frames.append(pd.DataFrame({
            "method": method,
            "threshold": sweep["thresholds"],
            "nme": extra.get("nme", sweep["nme"]),
            "nme_std": extra.get("nme_std", np.full(len(sweep["thresholds"]), np.nan)),
            "macs": sweep["macs"],
            "stages": sweep["stages"],
            "failures": extra.get("failures", sweep["failures"]),
        }))
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def stop_stage(estimate: np.ndarray, threshold: float) -> np.ndarray:
    """Index of the stage each face stops at, for one threshold (reference rule)."""
    below = np.asarray(estimate) < threshold
    return np.where(below.any(axis=1), np.argmax(below, axis=1), below.shape[1] - 1)


def _sweep(nme, estimate, stage_macs, failed):
    n_faces, n_stages = nme.shape
    thresholds = np.r_[np.unique(estimate), np.inf]
    running_min = np.minimum.accumulate(estimate, axis=1)
    # runs_past[s, t]: faces that go on to stage s + 1 at threshold t
    runs_past = np.zeros((n_stages - 1, len(thresholds)), np.int64)
    totals = {"nme": np.full(len(thresholds), nme[:, 0].sum()),
              "failures": np.full(len(thresholds), failed[:, 0].sum())}
    for s in range(n_stages - 1):
        order = np.argsort(-running_min[:, s], kind="stable")
        key = running_min[order, s]
        k = np.searchsorted(-key, -thresholds, side="right")  # faces with min >= threshold
        runs_past[s] = k
        for name, values in (("nme", nme), ("failures", failed)):
            gain = np.r_[0.0, np.cumsum(values[order, s + 1] - values[order, s])]
            totals[name] += gain[k]
    macs = stage_macs[0] * n_faces + stage_macs[1:] @ runs_past
    return {"thresholds": thresholds, "runs_past": runs_past, "nme": totals["nme"] / n_faces,
            "macs": macs / n_faces, "stages": 1 + runs_past.sum(axis=0) / n_faces,
            "failures": totals["failures"]}


def _oracle(nme, stage_macs, failed):
    n_faces, n_stages = nme.shape
    cost = np.cumsum(stage_macs)
    segments = []  # (NME change per MAC, NME change, MAC change, stages added, failure change)
    for f in range(n_faces):
        s = 0
        while s + 1 < n_stages:
            later = np.arange(s + 1, n_stages)
            slopes = (nme[f, later] - nme[f, s]) / (cost[later] - cost[s])
            best = slopes.min()
            if best >= 0:
                break
            t = later[np.flatnonzero(slopes == best)[-1]]  # collinear vertices: jump to the last
            segments.append((best, nme[f, t] - nme[f, s], cost[t] - cost[s], t - s, failed[f, t] - failed[f, s]))
            s = t
    steps = np.array(sorted(segments, key=lambda seg: seg[0]), dtype=np.float64).reshape(-1, 5)
    start = np.array([[0.0, nme[:, 0].sum(), stage_macs[0] * n_faces, n_faces, failed[:, 0].sum()]])
    totals = np.cumsum(np.vstack([start, steps]), axis=0)
    return {"thresholds": np.r_[np.inf, -steps[:, 0]], "nme": totals[:, 1] / n_faces,
            "macs": totals[:, 2] / n_faces, "stages": totals[:, 3] / n_faces, "failures": totals[:, 4]}


def _random_baseline(nme, failed, runs_past, repeats, seed):
    """Random faces stop at each stage, in the model's per-stage numbers."""
    n_faces, n_stages = nme.shape
    rng = np.random.default_rng(seed)
    # stopping at stage s: faces [b_s, b_{s+1}) of a random permutation, where
    # b_s = faces that do not run past stage s - 1 (b_0 = 0, b_S = F)
    bounds = np.vstack([np.zeros(runs_past.shape[1], np.int64), n_faces - runs_past,
                        np.full(runs_past.shape[1], n_faces)])
    nme_sums = np.zeros((repeats, runs_past.shape[1]))
    fail_sums = np.zeros_like(nme_sums)
    for r in range(repeats):
        perm = rng.permutation(n_faces)
        for values, sums in ((nme, nme_sums), (failed, fail_sums)):
            prefix = np.vstack([np.zeros(n_stages), np.cumsum(values[perm], axis=0)])  # (F + 1, S)
            for s in range(n_stages):
                sums[r] += prefix[bounds[s + 1], s] - prefix[bounds[s], s]
    means = nme_sums / n_faces
    return {"nme": means.mean(axis=0), "nme_std": means.std(axis=0), "failures": fail_sums.mean(axis=0)}
