"""The figures: accuracy-vs-cost tradeoff, CED, precision-recall, latency (PNG and SVG).

Each function takes what it draws (leaderboard rows, per-face errors, stored
curves), writes ``<out>/<name>.png`` and ``.svg`` atomically and returns the
PNG's path, or None when there is nothing to draw. Measured models are filled
markers, reported ones hollow and labelled; a cascade with early-exit
thresholds is a line through its operating points (MuSiCa's Figure 7).
The early-exit curves themselves are :mod:`facebench.report.early_exit`'s.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from facebench.metrics.landmarks import ced as ced_curve
from facebench.paths import check_name, write_atomic
from facebench.protocol import Protocol
from facebench.report.leaderboard import Row
from facebench.scoring import METRICS


def _figure(**kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(**kwargs)


def _save(fig, plt, out: Path, name: str) -> Path:
    """Write ``<out>/<name>.png`` and ``.svg``; a name that is not a plain file name is refused
    (:class:`facebench.paths.UnsafeNameError`), so no figure lands outside ``out``."""
    try:
        check_name(name, "figure name")
    except ValueError:
        plt.close(fig)
        raise
    for fmt in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=120, bbox_inches="tight")
        write_atomic(out / f"{name}.{fmt}", buf.getvalue())
    plt.close(fig)
    return out / f"{name}.png"


def _accuracy(row: Row, protocol: Protocol) -> tuple[float | None, str]:
    """The row's headline value (the metric record's column, else its fallbacks in order) and its axis label."""
    spec = METRICS[protocol.metric]
    key, label = spec.headline_for(protocol.options)
    value = row.metrics.get(key)
    if value is None:
        value = next((row.metrics[k] for k in spec.fallbacks if k in row.metrics), None)
    return (float(value) if isinstance(value, (int, float)) else None), label


def tradeoff(rows: list[Row], protocol: Protocol, out: Path) -> Path | None:
    """Accuracy against MACs (left) and against latency per device (right)."""
    rows = [r for r in rows if r.protocol == protocol.id and r.kind != "stale"]  # stale: an old protocol
    points = [(r, *_accuracy(r, protocol)) for r in rows]
    points = [(r, y, label) for r, y, label in points if y is not None and np.isfinite(y)]
    if not points:
        return None
    plt, fig, (ax_macs, ax_lat) = _figure(ncols=2, figsize=(11, 4.2))
    label = points[0][2]
    for r, y, _ in points:
        hollow = r.kind == "reported"
        style = {"s": 46, "facecolors": "none" if hollow else "C0", "edgecolors": "C1" if hollow else "C0", "zorder": 3}
        family = [(float(r.metrics[f"cost@T{k}"]), float(r.metrics[f"nme@T{k}"]))
                  for k in range(1, 10) if f"cost@T{k}" in r.metrics]
        if family and "early-exit" in METRICS[protocol.metric].figures:
            cost_last = float(r.metrics.get("cost_last", 0)) or None
            xs, ys = zip(*sorted(family + ([(cost_last, y)] if cost_last else [])))
            ax_macs.plot(np.array(xs) / 1e6, ys, "-o", ms=4, label=f"{r.model} (thresholds)")
        elif r.macs:  # MACs only: a reported GFLOPs figure (FLOP or MAC convention unstated) is not drawn
            ax_macs.scatter([r.macs / 1e6], [y], **style)
            ax_macs.annotate(r.model, (r.macs / 1e6, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
        for device, t in r.latency.items():
            ax_lat.scatter([t.median_ms], [y], marker="s" if "host" in device else "o", **style)
            ax_lat.annotate(f"{r.model} @ {device.split(' (')[0]}", (t.median_ms, y), fontsize=7,
                            xytext=(4, 3), textcoords="offset points")
    if not ax_macs.has_data() and not ax_lat.has_data():  # accuracy without cost or latency: nothing to trade off
        plt.close(fig)
        return None
    for ax, xlabel in ((ax_macs, "MACs (millions; operations for non-networks)"), (ax_lat, "latency (ms, median)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.set_xscale("log")
    if ax_macs.get_legend_handles_labels()[0]:
        ax_macs.legend(fontsize=7)
    ax_macs.set_title("accuracy vs compute (filled: measured, hollow: reported)", fontsize=9)
    ax_lat.set_title("accuracy vs latency per device", fontsize=9)
    fig.suptitle(protocol.title, fontsize=10)
    return _save(fig, plt, out, f"tradeoff-{protocol.id}")


def ced(curves: dict[str, tuple[np.ndarray, dict]], protocol: Protocol, out: Path) -> Path | None:
    """Cumulative error distribution; ``curves`` maps model -> (per-face NME, run metrics)."""
    if not curves:
        return None
    options = METRICS[protocol.metric].resolve(protocol.options)
    threshold = float(options["threshold"])
    plt, fig, ax = _figure(figsize=(6, 4.2))
    for model, (errors, metrics) in sorted(curves.items()):
        c = ced_curve(np.asarray(errors, dtype=np.float64), threshold)
        ax.plot(c.xs, c.ys,
                label=f"{model}  AUC {metrics.get('auc', float('nan')):.3f}  FR {metrics.get('fr', float('nan')):.3f}")
    ax.set_xlim(0, threshold)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"NME ({options['norm']})")
    ax.set_ylabel("fraction of faces")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"CED: {protocol.title}", fontsize=9)
    return _save(fig, plt, out, f"ced-{protocol.id}")


def precision_recall(curves: dict[str, dict], protocol: Protocol, out: Path) -> Path | None:
    """Precision-recall per model; one panel per setting (WIDER easy / medium / hard side by side)."""
    curves = {m: c for m, c in curves.items() if c}
    if not curves:
        return None
    settings = sorted({s for c in curves.values() for s in c}, key=lambda s: ("easy", "medium", "hard", s).index(s)
                      if s in ("easy", "medium", "hard") else 3)
    plt, fig, axes = _figure(ncols=len(settings), figsize=(4.6 * len(settings), 4.2), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        for model, by_setting in sorted(curves.items()):
            if setting in by_setting:
                ax.plot(by_setting[setting]["recall"], by_setting[setting]["precision"], label=model)
        ax.set_xlim(0, 1.01)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.grid(alpha=0.3)
        ax.set_title(setting if setting != "ap" else protocol.id, fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(protocol.title, fontsize=10)
    return _save(fig, plt, out, f"pr-{protocol.id}")


def latency(rows: list[Row], out: Path) -> Path | None:
    """Median latency per model and device, with the 10th-90th percentile spread where measured."""
    best: dict[tuple[str, str], tuple] = {}  # a model is timed in every protocol it ran: keep its largest run
    for r in rows:
        if r.kind == "stale":
            continue
        for device, t in r.latency.items():
            bar = (r.model, device, t.median_ms, t.p10_ms, t.p90_ms, r.kind, t.n or 0)
            if bar[6] >= best.get((r.model, device), bar)[6]:
                best[(r.model, device)] = bar
    bars = sorted(best.values())
    if not bars:
        return None
    plt, fig, ax = _figure(figsize=(8, 0.32 * len(bars) + 1.2))
    y = np.arange(len(bars))
    medians = np.array([b[2] for b in bars])
    low = np.array([b[2] - b[3] if b[3] is not None else 0 for b in bars])
    high = np.array([b[4] - b[2] if b[4] is not None else 0 for b in bars])
    colors = ["none" if b[5] == "reported" else "C0" for b in bars]
    ax.barh(y, medians, xerr=[low, high], color=colors, edgecolor="C0", capsize=2)
    ax.set_yticks(y, [f"{b[0]} @ {b[1]}" for b in bars], fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("ms per item (median; bars 10th-90th percentile; hollow: reported)")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title("latency per device (host CPU figures are not phone GPU figures)", fontsize=9)
    return _save(fig, plt, out, "latency")
