"""Curve files and the plot of an early-exit run (MuSiCa's Figure 2 layout).

From a stored run's per-face stage errors and estimates: a tidy CSV of the
three curves (the model's policy over every threshold, random assignment of
the same stage counts with its spread, the oracle) and a PNG of NME against
mean cost with the protocol's operating points marked. Both are written
atomically beside the leaderboard.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from facebench.metrics.early_exit import early_exit_curves, stop_stage
from facebench.protocol import Protocol
from facebench.report import write_atomic
from facebench.scoring import operating_points, stage_costs
from facebench.store import Run
from facebench.types import ModelCard


def run_curves(protocol: Protocol, card: ModelCard, per_item: dict[str, dict]) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, str]:
    """The curves of a stored run, recomputed exactly as its scorer did."""
    errors = np.array([m["nme"] for m in per_item.values()], dtype=np.float64)
    estimates = np.array([m["estimate"] for m in per_item.values()], dtype=np.float64)
    costs, unit = stage_costs(card)
    opts = protocol.options
    curves = early_exit_curves(errors, estimates, costs, failure_threshold=float(opts.get("failure_threshold", 0.08)),
                               repeats=int(opts.get("repeats", 50)), seed=int(opts.get("seed", 0)))
    return curves, errors, estimates, unit


def plot_curves(curves: pd.DataFrame, errors: np.ndarray, estimates: np.ndarray, costs: np.ndarray, unit: str,
                operating_points, title: str) -> bytes:
    """PNG bytes: NME (%) against mean cost, policy / random (± 1 s.d.) / oracle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale, label = (1e6, f"mean M{unit}") if costs.max() >= 1e6 else (1e3, f"mean k{unit}")
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for method, style in (("oracle", {"color": "tab:green", "ls": "--"}), ("random", {"color": "tab:gray", "ls": ":"}),
                          ("model", {"color": "tab:blue", "ls": "-"})):
        c = curves[curves.method == method].sort_values("macs")
        name = {"model": "estimated error (policy)", "random": "random, same stage counts", "oracle": "oracle"}[method]
        ax.plot(c.macs / scale, 100 * c.nme, label=name, drawstyle="default", **style)
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


def write_early_exit(out_dir: str | Path, protocol: Protocol, run: Run, per_item: dict[str, dict]) -> tuple[Path, Path]:
    """Write ``early-exit/<protocol>--<model>.csv`` and ``.png`` under ``out_dir``."""
    card = ModelCard(**{**run.card, "input_shape": tuple(run.card["input_shape"]),
                        "input_range": tuple(run.card["input_range"])})
    curves, errors, estimates, unit = run_curves(protocol, card, per_item)
    costs, _ = stage_costs(card)
    stem = Path(out_dir) / "early-exit" / f"{protocol.id}--{run.model}"
    csv = write_atomic(stem.with_suffix(".csv"), curves.rename(columns={"macs": f"mean_{unit.lower()}"}).to_csv(index=False))
    png = write_atomic(stem.with_suffix(".png"), plot_curves(
        curves, errors, estimates, costs, unit, operating_points(protocol, card),
        f"{run.model} on {protocol.id}: {len(errors)} faces, {errors.shape[1]} stages"))
    return csv, png
