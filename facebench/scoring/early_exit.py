"""The early-exit scorer: accuracy against cost of a cascade that stops at the first confident stage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from facebench.metrics.early_exit import early_exit_curves, stop_stage
from facebench.metrics.landmarks import nme, normaliser
from facebench.protocol import Protocol
from facebench.schemes import convert, shared_points
from facebench.scoring.base import Score
from facebench.types import Prediction, Sample, face_key


def stage_errors(protocol: Protocol, samples: Sequence[Sample], predictions: Mapping[str, Prediction | None],
                 norm: str):
    """Per-face NME and estimate after every stage of a cascade: keys, (F, S), (F, S).

    Faces whose prediction failed or has no stages are left out (and counted
    by the caller); ``norm`` is the protocol's normaliser, from the ground truth."""
    keys, errors, estimates = [], [], []
    for sample in samples:
        for k, face in enumerate(sample.faces):
            key = face_key(sample.id, k)
            pred = predictions.get(key)
            if face.landmarks is None or pred is None or not pred.stages:
                continue
            gt = face.landmarks.points[:, :2]
            dst = face.landmarks.scheme
            shared = shared_points(pred.stages[0].landmarks.scheme, dst)
            mapped = np.stack([convert(st.landmarks.points[:, :2], st.landmarks.scheme, dst)[shared]
                               for st in pred.stages])
            scale = normaliser(gt[None], norm, dst)
            errors.append(nme(mapped, np.broadcast_to(gt[shared], mapped.shape), np.repeat(scale, len(mapped))))
            estimates.append([st.estimated_error for st in pred.stages])
            keys.append(key)
    if len({len(e) for e in errors}) > 1:
        raise ValueError("predictions have different numbers of stages")
    if not keys:
        return keys, np.zeros((0, 0)), np.zeros((0, 0))
    return keys, np.array(errors), np.array(estimates)


def stage_costs(card) -> tuple[np.ndarray, str]:
    """Cost of each stage from a card: MACs, or counted operations where the card gives those."""
    if card is not None and card.macs:
        return np.array(list(card.macs.values()), dtype=np.float64), "MACs"
    ops = (card.options.get("stage_operations") if card is not None else None) or {}
    if not ops:
        raise ValueError("the early-exit protocol needs a card with a cost per stage (macs or stage_operations)")
    return np.array(list(ops.values()), dtype=np.float64), "operations"


def operating_points(opts: Mapping, card=None) -> list[float]:
    """Thresholds T_s to report: the card's own where it gives them (an estimate is
    in its model's units: MuSiCa's predicts NME, others measure an update),
    else the protocol's (``opts``: its resolved options)."""
    if card is not None and card.options.get("operating_points"):
        return [float(t) for t in card.options["operating_points"]]
    return [float(t) for t in opts["operating_points"]]


def curves_table(errors: np.ndarray, estimates: np.ndarray, costs: np.ndarray, opts: Mapping):
    """The tidy early-exit table (:func:`facebench.metrics.early_exit.early_exit_curves`) with the protocol's
    options."""
    return early_exit_curves(errors, estimates, costs, failure_threshold=float(opts["failure_threshold"]),
                             repeats=int(opts["repeats"]), seed=int(opts["seed"]))


def score_early_exit(protocol: Protocol, samples: Sequence[Sample], predictions: Mapping[str, Prediction | None],
                     opts: Mapping, card=None) -> Score:
    """Accuracy vs cost of a cascade that stops early (:mod:`facebench.metrics.early_exit`).

    Per operating point: the policy's NME, mean stages and cost, the random
    assignment of the same stage counts, and the oracle at the same mean
    cost. The three curves go to ``Score.curves["early_exit"]`` (column ->
    values, ``macs`` in the card's cost unit) so reports draw them as scored."""
    keys, errors, estimates = stage_errors(protocol, samples, predictions, opts["norm"])
    if not keys:
        raise ValueError(f"{protocol.source}: no face has a staged prediction (is the model a cascade?)")
    costs, unit = stage_costs(card)
    if len(costs) != errors.shape[1]:
        raise ValueError(f"the card gives {len(costs)} stage costs; the predictions have {errors.shape[1]} stages")
    curves = curves_table(errors, estimates, costs, opts)
    metrics = {"faces": len(keys), "stages": errors.shape[1], "cost_unit": unit,
               "nme_first": float(errors[:, 0].mean()), "nme_last": float(errors[:, -1].mean()),
               "cost_last": float(costs.sum())}
    oracle = curves[curves.method == "oracle"].sort_values("macs")
    for k, t in enumerate(operating_points(opts, card), start=1):
        stop = stop_stage(estimates, float(t))
        spent = np.cumsum(costs)[stop]
        counts = np.bincount(stop, minlength=errors.shape[1])
        # random: the expectation over assignments with the same stage counts
        random = float((counts * errors.mean(axis=0)).sum() / len(keys))
        metrics.update({f"T{k}": float(t), f"nme@T{k}": float(errors[np.arange(len(keys)), stop].mean()),
                        f"stages@T{k}": float(stop.mean() + 1), f"cost@T{k}": float(spent.mean()),
                        f"random@T{k}": random,
                        f"oracle@T{k}": float(np.interp(spent.mean(), oracle.macs, oracle.nme))})
    per_item = {k: {"nme": e.tolist(), "estimate": s.tolist()} for k, e, s in zip(keys, errors, estimates)}
    return Score(metrics, per_item, {"early_exit": curves_to_dict(curves)})


def curves_to_dict(curves) -> dict[str, list]:
    """The tidy table as column -> plain Python values (JSON-able; inf and NaN as Python's json writes them)."""
    return {column: curves[column].tolist() for column in curves.columns}


def curves_from_dict(columns: Mapping[str, list]):
    """The stored table back as a DataFrame, in its columns' order."""
    import pandas as pd

    return pd.DataFrame({column: list(values) for column, values in columns.items()})
