"""Curve files and the plot of an early-exit run (MuSiCa's Figure 2 layout).

From a stored run: a tidy CSV of the three curves (the model's policy over
every threshold, random assignment of the same stage counts with its
spread, the oracle) and a figure (PNG, SVG, PDF) of NME against mean cost with the protocol's
operating points marked. The curves are the ones the scorer stored
(``Score.curves["early_exit"]``); a run stored before curves were kept has
them recomputed from its per-face stage errors and estimates, with the
same options. Both files are written atomically beside the leaderboard.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from facebench.metrics.early_exit import stop_stage
from facebench.paths import check_name, write_atomic
from facebench.protocol import Protocol
from facebench.report import plots
from facebench.results.store import Run
from facebench.scoring import METRICS
from facebench.scoring.early_exit import curves_from_dict, curves_table, operating_points, stage_costs
from facebench.types import ModelCard


def run_curves(protocol: Protocol, card: ModelCard, per_item: dict[str, dict],
               stored: Mapping[str, list] | None = None) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, str]:
    """The curves of a stored run: ``stored`` (the scorer's table) where given, else recomputed exactly as the
    scorer does (older stores)."""
    errors = np.array([m["nme"] for m in per_item.values()], dtype=np.float64)
    estimates = np.array([m["estimate"] for m in per_item.values()], dtype=np.float64)
    costs, unit = stage_costs(card)
    if stored:
        return curves_from_dict(stored), errors, estimates, unit
    curves = curves_table(errors, estimates, costs, METRICS[protocol.metric].resolve(protocol.options))
    return curves, errors, estimates, unit


def plot_curves(curves: pd.DataFrame, errors: np.ndarray, estimates: np.ndarray, costs: np.ndarray, unit: str,
                operating_points, title: str, model: str = ""):
    """The Figure: NME (%) against mean cost, policy (the model's colour) / random (± 1 s.d.) / oracle,
    in the report's style (:func:`facebench.report.plots.style`)."""
    from facebench.report.plots import GREY, ONE_COLUMN, log_axis, model_color, style

    scale, label = (1e6, f"mean M{unit}") if costs.max() >= 1e6 else (1e3, f"mean k{unit}")
    policy = model_color(model) if model else "#0072b2"
    with style() as plt:
        fig, ax = plt.subplots(figsize=(ONE_COLUMN, 2.6))
        for method, color, ls in (("oracle", "#000000", "--"), ("random", GREY, ":"), ("model", policy, "-")):
            c = curves[curves.method == method].sort_values("macs")
            name = {"model": "estimated error (policy)", "random": "random, same stage counts",
                    "oracle": "oracle"}[method]
            ax.plot(c.macs / scale, 100 * c.nme, label=name, color=color, ls=ls)
            if method == "random":
                ax.fill_between(c.macs / scale, 100 * (c.nme - c.nme_std), 100 * (c.nme + c.nme_std),
                                color=GREY, alpha=0.25, lw=0)
        cumulative = np.cumsum(costs)
        faces = np.arange(len(errors))
        for t in operating_points:
            stop = stop_stage(estimates, float(t))
            x, y = cumulative[stop].mean() / scale, 100 * errors[faces, stop].mean()
            ax.plot([x], [y], "o", color=policy, mec="black", mew=0.6, ms=4, zorder=4)
            ax.annotate(f"T={t:g}: {stop.mean() + 1:.2f} stages", (x, y), textcoords="offset points",
                        xytext=(5, 4), fontsize=5.5)
        ax.set_xlabel(label)
        ax.set_ylabel("NME (%)")
        ax.set_title(title)
        ax.grid(True)
        ax.legend()
        fig.tight_layout()
        if cumulative.max() / max(cumulative.min(), 1e-12) >= 10:  # a wide cost range: log axis, plain ticks
            log_axis(ax, "x")
            fig.tight_layout()
    return fig


def write_early_exit(out_dir: str | Path, protocol: Protocol, run: Run, per_item: dict[str, dict],
                     stored: Mapping[str, list] | None = None) -> tuple[Path, Path]:
    """Write ``early-exit/<protocol>--<model>.csv`` and ``.png`` under ``out_dir``; ``stored``: the run's
    ``curves["early_exit"]`` (None or empty: recomputed)."""
    card = ModelCard(**{**run.card, "input_shape": tuple(run.card["input_shape"]),
                        "input_range": tuple(run.card["input_range"])})
    curves, errors, estimates, unit = run_curves(protocol, card, per_item, stored)
    costs, _ = stage_costs(card)
    options = METRICS[protocol.metric].resolve(protocol.options)
    name = check_name(f"{protocol.id}--{run.model}")
    stem = Path(out_dir) / "early-exit" / name
    table = curves.rename(columns={"macs": f"mean_{unit.lower()}"}).to_csv(index=False)
    csv = stem.with_suffix(".csv")
    if not csv.exists() or csv.read_text() != table:  # unchanged: not rewritten
        write_atomic(csv, table)
    points = operating_points(options, card)
    title = f"{run.model} on {protocol.id}: {len(errors)} faces, {errors.shape[1]} stages"
    payload = [curves, errors, estimates, costs, unit, [float(t) for t in points], title, run.model]
    png = plots.cached(Path(out_dir), f"early-exit/{name}", payload,
                       lambda: plot_curves(curves, errors, estimates, costs, unit, points, title, run.model))
    return csv, png
