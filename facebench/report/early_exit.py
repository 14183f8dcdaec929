"""Curve files and the plot of an early-exit run (MuSiCa's Figure 2 layout).

From a stored run: a tidy CSV of the three curves (the model's policy over
every threshold, random assignment of the same stage counts with its
spread, the oracle) and a PNG of NME against mean cost with the protocol's
operating points marked. The curves are the ones the scorer stored
(``Score.curves["early_exit"]``); a run stored before curves were kept has
them recomputed from its per-face stage errors and estimates, with the
same options. Both files are written atomically beside the leaderboard.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from facebench.metrics.early_exit import stop_stage
from facebench.paths import check_name, write_atomic
from facebench.protocol import Protocol
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
                operating_points, title: str) -> bytes:
    """PNG bytes: NME (%) against mean cost, policy / random (± 1 s.d.) / oracle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale, label = (1e6, f"mean M{unit}") if costs.max() >= 1e6 else (1e3, f"mean k{unit}")
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for method, color, ls in (("oracle", "tab:green", "--"), ("random", "tab:gray", ":"), ("model", "tab:blue", "-")):
        c = curves[curves.method == method].sort_values("macs")
        name = {"model": "estimated error (policy)", "random": "random, same stage counts", "oracle": "oracle"}[method]
        ax.plot(c.macs / scale, 100 * c.nme, label=name, drawstyle="default", color=color, ls=ls)
        if method == "random":
            ax.fill_between(c.macs / scale, 100 * (c.nme - c.nme_std), 100 * (c.nme + c.nme_std),
                            color="tab:gray", alpha=0.2, lw=0)
    cumulative = np.cumsum(costs)
    faces = np.arange(len(errors))
    for t in operating_points:
        stop = stop_stage(estimates, float(t))
        x, y = cumulative[stop].mean() / scale, 100 * errors[faces, stop].mean()
        ax.plot([x], [y], "o", color="tab:red")
        ax.annotate(f"T={t:g}\n{stop.mean() + 1:.2f} stages", (x, y), textcoords="offset points", xytext=(6, 6),
                    fontsize=8)
    ax.set_xlabel(label)
    ax.set_ylabel("NME (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def write_early_exit(out_dir: str | Path, protocol: Protocol, run: Run, per_item: dict[str, dict],
                     stored: Mapping[str, list] | None = None) -> tuple[Path, Path]:
    """Write ``early-exit/<protocol>--<model>.csv`` and ``.png`` under ``out_dir``; ``stored``: the run's
    ``curves["early_exit"]`` (None or empty: recomputed)."""
    card = ModelCard(**{**run.card, "input_shape": tuple(run.card["input_shape"]),
                        "input_range": tuple(run.card["input_range"])})
    curves, errors, estimates, unit = run_curves(protocol, card, per_item, stored)
    costs, _ = stage_costs(card)
    options = METRICS[protocol.metric].resolve(protocol.options)
    stem = Path(out_dir) / "early-exit" / check_name(f"{protocol.id}--{run.model}")
    table = curves.rename(columns={"macs": f"mean_{unit.lower()}"})
    csv = write_atomic(stem.with_suffix(".csv"), table.to_csv(index=False))
    png = write_atomic(stem.with_suffix(".png"), plot_curves(
        curves, errors, estimates, costs, unit, operating_points(options, card),
        f"{run.model} on {protocol.id}: {len(errors)} faces, {errors.shape[1]} stages"))
    return csv, png
