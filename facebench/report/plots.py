"""The figures: accuracy-vs-cost tradeoff, CED, precision-recall, latency (PNG, SVG and PDF).

Each public function takes what it draws (leaderboard rows, per-face errors,
stored curves), writes ``<out>/<name>.png``, ``.svg`` and ``.pdf`` atomically and
returns the PNG's path, or None when there is nothing to draw. Its ``draw_*``
twin returns the matplotlib Figure instead (for tests and notebooks).

One style for every figure (:func:`style`): the Okabe-Ito colour-blind-safe
palette, a model's colour a stable function of its name (:func:`model_color`,
so a model has the same colour in every figure of a report), paper sizes (one
column 3.5 in, two columns 7 in), fractions shown as percentages (NME, AP,
TPR: :func:`is_percent`), log axes ticked with plain numbers (10, 30, 100).

Tradeoff figures: one MACs panel, then one latency panel per processor class
(phone GPU, phone CPU, host CPU: :func:`processor_class`) so times of different
processors never share an axis; measured models are filled markers, reported
ones hollow diamonds, a cascade with early-exit thresholds a line through its
operating points (MuSiCa's Figure 7); the Pareto front is the dashed step.

Cached redraw: every figure is keyed on a hash of what it draws and
:data:`STYLE_VERSION` (``<name>.key`` beside it); when the key matches and
the files exist the figure is not drawn again.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from facebench.metrics.landmarks import ced as ced_curve
from facebench.paths import check_name, write_atomic
from facebench.protocol import Protocol
from facebench.report.leaderboard import Row
from facebench.scoring import METRICS

STYLE_VERSION = 2  # part of every figure's key, with the drawing code's own hash (:func:`_code_hash`)
FORMATS = ("png", "svg", "pdf")
ONE_COLUMN, TWO_COLUMNS = 3.5, 7.0  # inches
# Okabe & Ito (2008), without yellow (too light on white): blue, orange, bluish green, vermillion,
# reddish purple, sky blue, black
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#000000")
GREY = "#999999"
PERCENT_METRICS = frozenset({"nme", "regions", "early_exit", "ap", "wider_ap", "roc"})
PROCESSOR_CLASSES = ("phone GPU", "phone CPU", "host CPU", "other device")
RC: dict[str, Any] = {
    "font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "legend.fontsize": 6, "xtick.labelsize": 6,
    "ytick.labelsize": 6, "lines.linewidth": 1.0, "lines.markersize": 4, "axes.linewidth": 0.6,
    "grid.linewidth": 0.4, "grid.alpha": 0.4, "legend.frameon": False,
    "savefig.dpi": 200, "pdf.fonttype": 42, "svg.fonttype": "none", "svg.hashsalt": "facebench",
    "figure.dpi": 100,
}


# ---- the style ------------------------------------------------------------------------------------

def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _base(model: str) -> str:
    """A curve label's model name (``model [fingerprint]`` for one of several data copies)."""
    return model.split(" [", 1)[0]


def model_color(model: str) -> str:
    """The model's colour in every figure: a stable function of its name."""
    return PALETTE[_digest(_base(model)) % len(PALETTE)]


def model_linestyle(model: str) -> str:
    """Solid or dashed, also from the name, so two models sharing a colour are still told apart."""
    return ("-", "--")[(_digest(_base(model)) // len(PALETTE)) % 2]


def is_percent(metric: str) -> bool:
    """Whether the metric's values are fractions drawn as percentages."""
    return metric in PERCENT_METRICS


def _axis_label(label: str, percent: bool) -> str:
    if not percent:
        return label
    if label.endswith(")") and " (" in label:  # "AP (hard)" -> "AP, hard (%)"
        head, _, tail = label[:-1].partition(" (")
        return f"{head}, {tail} (%)"
    return f"{label} (%)"


def processor_class(device: str) -> str:
    """phone GPU, phone CPU, host CPU or other device, from a latency label such as
    ``host CPU (...)``, ``NAME (GPU fp16)``, ``NAME (CPU, 4 threads)``."""
    if device.lower().startswith("host"):
        return "host CPU"
    inner = device.rsplit("(", 1)[1].lower() if "(" in device else ""
    if "gpu" in inner:
        return "phone GPU"
    if "cpu" in inner:
        return "phone CPU"
    return "other device"


@contextlib.contextmanager
def style() -> Iterator[Any]:
    """matplotlib (Agg) with facebench's figure style; yields pyplot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from cycler import cycler

    settings: Any = {**RC, "axes.prop_cycle": cycler(color=PALETTE)}
    with plt.rc_context(settings):
        yield plt


def _plain(value: float, _pos=None) -> str:
    if value >= 1:
        return f"{value:.0f}"
    return f"{value:.3g}"


def log_axis(ax, which: str = "x") -> None:
    """A log axis over the data's range ticked with plain numbers (1, 2, 5 per decade, fewer when the range is
    wide), thinned until no two labels overprint."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    get_lim, set_lim = (ax.get_xlim, ax.set_xlim) if which == "x" else (ax.get_ylim, ax.set_ylim)
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    lo, hi = get_lim()
    lo, hi = max(lo, 1e-9), max(hi, 1e-9)
    if hi / lo < 3:  # too narrow for a tick or two: widen about the middle
        mid = math.sqrt(lo * hi)
        lo, hi = mid / math.sqrt(3), mid * math.sqrt(3)
        set_lim(lo, hi)
    span = math.log10(hi / lo)
    subs = (1, 2, 3, 5) if span <= 1.2 else (1, 2, 5) if span <= 2.5 else (1, 3) if span <= 4 else (1,)
    ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
             for m in subs if lo <= m * 10.0 ** e <= hi]
    axis.set_major_formatter(FuncFormatter(_plain))
    axis.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10))))
    axis.set_minor_formatter(NullFormatter())
    renderer = ax.figure.canvas.get_renderer()
    while True:
        axis.set_major_locator(FixedLocator(ticks))
        boxes = [t.get_window_extent(renderer) for t in axis.get_ticklabels() if t.get_text()]
        if len(ticks) <= 2 or not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:])):
            break
        ticks = ticks[::2]


@functools.cache
def _code_hash() -> str:
    """The drawing code (this module and the early-exit plot): a change redraws every figure."""
    here = Path(__file__).parent
    return hashlib.sha256(b"".join((here / f).read_bytes() for f in ("plots.py", "early_exit.py"))).hexdigest()


def _key(kind: str, payload: Any) -> str:
    def encode(obj):
        if isinstance(obj, np.ndarray) and obj.dtype == object:  # bytes of an object array are pointers
            return obj.tolist()
        if isinstance(obj, np.ndarray):
            digest = hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest()
            return ["ndarray", str(obj.dtype), list(obj.shape), digest]
        if isinstance(obj, np.generic):
            return obj.item()
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        if hasattr(obj, "to_numpy") and hasattr(obj, "columns"):  # a DataFrame
            return [list(map(str, obj.columns)), encode(obj.to_numpy())]
        if isinstance(obj, (set, frozenset)):
            return sorted(map(str, obj))
        return repr(obj)

    text = json.dumps([STYLE_VERSION, _code_hash(), kind, payload], sort_keys=True, default=encode)
    return hashlib.sha256(text.encode()).hexdigest()


_FORMATS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("formats", default=FORMATS)


@contextlib.contextmanager
def only_formats(*formats: str) -> Iterator[None]:
    """Write only these of :data:`FORMATS` in this thread (the web leaderboard shows PNGs: SVG and PDF would
    triple its drawing time)."""
    token = _FORMATS.set(tuple(formats))
    try:
        yield
    finally:
        _FORMATS.reset(token)


def _paths(out: Path, name: str) -> tuple[list[Path], Path]:
    check_name(Path(name).name, "figure name")
    return [out / f"{name}.{fmt}" for fmt in _FORMATS.get()], out / f"{name}.key"


def is_fresh(out: Path, name: str, key: str) -> bool:
    """Whether ``<out>/<name>.*`` were drawn from inputs with this key (and all still exist)."""
    files, key_file = _paths(out, name)
    try:
        return key_file.read_text() == key and all(f.exists() for f in files)
    except OSError:
        return False


def remove_figure(out: Path, name: str) -> None:
    """Remove a figure that has nothing to draw any more (an old one would look current)."""
    files, key_file = _paths(out, name)
    for f in (*files, key_file):
        f.unlink(missing_ok=True)


def save(fig, out: Path, name: str, key: str | None = None) -> Path:
    """Write ``<out>/<name>.png``, ``.svg``, ``.pdf`` (and the key); a name that is not a plain file name is
    refused (:class:`facebench.paths.UnsafeNameError`), so no figure lands outside ``out``."""
    import matplotlib.pyplot as plt

    try:
        files, key_file = _paths(out, name)
        with style():
            for fmt, path in zip(_FORMATS.get(), files):
                buf = io.BytesIO()
                fig.savefig(buf, format=fmt, bbox_inches="tight", pad_inches=0.02,
                            metadata={"Date": None} if fmt in ("svg", "pdf") else None)
                write_atomic(path, buf.getvalue())
    finally:
        plt.close(fig)
    if key is not None:
        write_atomic(key_file, key)
    return files[0]


def cached(out: Path, name: str, payload: Any, draw) -> Path:
    """``<out>/<name>.png``, drawn by ``draw()`` unless the figure of this ``payload`` is already there."""
    check_name(Path(name).name, "figure name")
    key = _key(name, payload)
    if is_fresh(out, name, key):
        return out / f"{name}.png"
    return save(draw(), out, name, key)


# ---- tradeoff -----------------------------------------------------------------------------------

def _accuracy(row: Row, protocol: Protocol) -> tuple[float | None, str]:
    """The row's headline value (the metric record's column, else its fallbacks in order) and its axis label."""
    spec = METRICS[protocol.metric]
    key, label = spec.headline_for(protocol.options)
    value = row.metrics.get(key)
    if value is None:
        value = next((row.metrics[k] for k in spec.fallbacks if k in row.metrics), None)
    return (float(value) if isinstance(value, (int, float)) else None), label


def tradeoff_points(rows: list[Row], protocol: Protocol) -> dict:
    """What the tradeoff figure draws: per panel ("MACs" or a processor class), the points
    ``(model, kind, x, y, device)`` and the early-exit lines ``(model, xs, ys)``; y in the figure's unit."""
    percent = is_percent(protocol.metric)
    scale = 100.0 if percent else 1.0
    early_exit = "early-exit" in METRICS[protocol.metric].figures
    panels: dict[str, dict[str, list]] = {}
    label = ""
    for r in rows:
        if r.protocol != protocol.id or r.kind == "stale":  # stale: an old protocol
            continue
        y, label = _accuracy(r, protocol)
        if y is None or not np.isfinite(y):
            continue
        y *= scale
        family = [(float(r.metrics[f"cost@T{k}"]) / 1e6, float(r.metrics[f"nme@T{k}"]) * scale)
                  for k in range(1, 10) if f"cost@T{k}" in r.metrics and f"nme@T{k}" in r.metrics]
        if family and early_exit:
            cost_last = float(r.metrics.get("cost_last", 0) or 0) / 1e6
            xs, ys = zip(*sorted(family + ([(cost_last, y)] if cost_last else [])))
            panels.setdefault("MACs", {"points": [], "lines": []})["lines"].append((r.model, list(xs), list(ys)))
        elif r.macs:  # MACs only: a reported GFLOPs figure (FLOP or MAC convention unstated) is not drawn
            panels.setdefault("MACs", {"points": [], "lines": []})["points"].append(
                (r.model, r.kind, r.macs / 1e6, y, ""))
        for device, t in sorted(r.latency.items()):
            if t.median_ms and t.median_ms > 0:
                panels.setdefault(processor_class(device), {"points": [], "lines": []})["points"].append(
                    (r.model, r.kind, float(t.median_ms), y, device))
    order = ("MACs", *PROCESSOR_CLASSES)
    return {"title": protocol.title, "ylabel": _axis_label(label, percent),
            "higher_is_better": METRICS[protocol.metric].higher_is_better,
            "panels": {p: panels[p] for p in order if p in panels}}


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (lower) and accuracy, by increasing cost."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1] if higher_is_better else p[1])):
        if not front or (y > front[-1][1] if higher_is_better else y < front[-1][1]):
            front.append((x, y))
    return front


def _device_short(device: str) -> str:
    return device.split(" (")[0]


def place_labels(ax, items: list[tuple[float, float, str, str]]) -> list:
    """Greedy label placement: each label takes the first of eight offsets around its point that stays inside the
    axes and clears the labels and points placed so far (else the least overlapping)."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    axbox = ax.get_window_extent(renderer)
    px = renderer.points_to_pixels(3.0)
    taken = []
    for x, y, _, _ in items:
        cx, cy = ax.transData.transform((x, y))
        taken.append(_box(cx - px, cy - px, cx + px, cy + px))
    candidates = ((4, 3, "left", "bottom"), (4, -3, "left", "top"), (-4, 3, "right", "bottom"),
                  (-4, -3, "right", "top"), (0, 6, "center", "bottom"), (0, -6, "center", "top"),
                  (8, 0, "left", "center"), (-8, 0, "right", "center"))
    placed = []
    for x, y, text, color in items:
        best = None
        for dx, dy, ha, va in candidates:
            t = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                            fontsize=5.5, color=color, annotation_clip=False)
            bb = t.get_window_extent(renderer)
            outside = max(0.0, axbox.x0 - bb.x0) + max(0.0, bb.x1 - axbox.x1) + max(0.0, axbox.y0 - bb.y0) \
                + max(0.0, bb.y1 - axbox.y1)
            score = outside * 1e4 + sum(_overlap(bb, o) for o in taken)
            if best is None or score < best[0]:
                if best is not None:
                    best[1].remove()
                best = (score, t, bb)
            else:
                t.remove()
            if score == 0:
                break
        assert best is not None
        taken.append(best[2])
        placed.append(best[1])
    return placed


def _box(x0, y0, x1, y1):
    from matplotlib.transforms import Bbox

    return Bbox([[x0, y0], [x1, y1]])


def _overlap(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _pad_log(lo: float, hi: float, left: float = 1.6, right: float = 2.2) -> tuple[float, float]:
    return lo / left, hi * right


def draw_tradeoff(data: dict):
    """The tradeoff Figure from :func:`tradeoff_points`' result (None: no panel)."""
    from matplotlib.lines import Line2D

    panels = data["panels"]
    if not panels:
        return None
    n = len(panels)
    cols = min(n, 2)
    nrows = math.ceil(n / cols)
    with style() as plt:
        fig, axes = plt.subplots(nrows, cols, figsize=(TWO_COLUMNS if n > 1 else ONE_COLUMN, 2.6 * nrows),
                                 squeeze=False)
        flat = list(axes.flat)
        for ax in flat[n:]:
            ax.set_visible(False)
        for ax, (panel, content) in zip(flat, panels.items()):
            everything: list[tuple[float, float]] = []
            for model, xs, ys in content["lines"]:
                ax.plot(xs, ys, marker="o", ms=2.5, color=model_color(model), ls=model_linestyle(model), zorder=3)
                everything += list(zip(xs, ys))
            devices = {d for *_, d in content["points"]}
            for model, kind, x, y, _ in content["points"]:
                color = model_color(model)
                if kind == "reported":
                    ax.scatter([x], [y], s=18, marker="D", facecolors="white", edgecolors=color, linewidths=0.9,
                               zorder=4)
                else:
                    ax.scatter([x], [y], s=18, marker="o", color=color, edgecolors="white", linewidths=0.4,
                               zorder=4)
                everything.append((x, y))
            front = pareto_front(everything, data["higher_is_better"])
            if len(front) > 1:
                fx, fy = zip(*front)
                ax.plot(fx, fy, drawstyle="steps-post", ls="--", color=GREY, lw=0.8, zorder=2)
            xs_all = [p[0] for p in everything]
            ys_all = [p[1] for p in everything]
            ax.set_xlim(*_pad_log(min(xs_all), max(xs_all)))
            yr = (max(ys_all) - min(ys_all)) or max(abs(max(ys_all)) * 0.1, 1e-3)
            ax.set_ylim(min(ys_all) - 0.12 * yr, max(ys_all) + 0.18 * yr)
            ax.set_ylabel(data["ylabel"])
            ax.grid(True, which="major")
            if panel == "MACs":
                ax.set_xlabel("MACs (millions; operations for non-networks)")
                ax.set_title("accuracy vs compute")
            else:
                ax.set_xlabel("latency (ms per item, median)")
                if panel == "host CPU" and len(devices) == 1:
                    title = next(iter(devices))
                title = f"accuracy vs latency: {panel}"
                if len(devices) == 1 and panel != "host CPU":
                    title += f"\n{next(iter(devices))}"
                ax.set_title(title)
        fig.suptitle(data["title"], fontsize=8)
        rect = (0, 0.1 / nrows, 1, 1)  # room for the legend below
        fig.tight_layout(rect=rect)
        for ax in flat[:n]:
            log_axis(ax, "x")
        fig.tight_layout(rect=rect)
        for ax, (panel, content) in zip(flat, panels.items()):
            devices = {d for *_, d in content["points"]}
            items = [(xs[-1], ys[-1], model, model_color(model)) for model, xs, ys in content["lines"]]
            items += [(x, y, model if panel in ("MACs", "host CPU") or len(devices) == 1
                       else f"{model} ({_device_short(d)})", model_color(model))
                      for model, _, x, y, d in content["points"]]
            place_labels(ax, items)
        kinds = {k for c in panels.values() for _, k, *_ in c["points"]}
        handles = []
        if "measured" in kinds:
            handles.append(Line2D([], [], ls="", marker="o", color="0.3", label="measured here"))
        if "reported" in kinds:
            handles.append(Line2D([], [], ls="", marker="D", mfc="white", color="0.3", label="reported (paper)"))
        if any(c["lines"] for c in panels.values()):
            handles.append(Line2D([], [], marker="o", ms=2.5, color="0.3", label="early-exit thresholds"))
        handles.append(Line2D([], [], ls="--", color=GREY, label="Pareto front"))
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), bbox_to_anchor=(0.5, 0.0))
    return fig


def tradeoff(rows: list[Row], protocol: Protocol, out: Path) -> Path | None:
    """Accuracy against MACs, and against latency per processor class (None, and any old figure removed, when
    no row has MACs or a latency)."""
    name = f"tradeoff-{check_name(protocol.id, 'protocol id')}"
    data = tradeoff_points(rows, protocol)
    if not data["panels"]:
        remove_figure(out, name)
        return None
    return cached(out, name, data, lambda: draw_tradeoff(data))


# ---- CED, precision-recall, latency -------------------------------------------------------------

def draw_ced(curves: dict[str, tuple[np.ndarray, dict]], protocol: Protocol):
    """The CED Figure (None: no curve); NME and faces in percent."""
    if not curves:
        return None
    options = METRICS[protocol.metric].resolve(protocol.options)
    threshold = float(options["threshold"])
    wide = len(curves) > 5
    with style() as plt:
        fig, ax = plt.subplots(figsize=(TWO_COLUMNS if wide else ONE_COLUMN, 2.6))
        for model, (errors, metrics) in sorted(curves.items()):
            c = ced_curve(np.asarray(errors, dtype=np.float64), threshold)
            auc, fr = metrics.get("auc", float("nan")), metrics.get("fr", float("nan"))
            ax.plot(100 * np.asarray(c.xs), 100 * np.asarray(c.ys), color=model_color(model),
                    ls=model_linestyle(model), label=f"{model}  AUC {100 * auc:.1f}%  FR {100 * fr:.1f}%")
        ax.set_xlim(0, 100 * threshold)
        ax.set_ylim(0, 100)
        ax.set_xlabel(f"NME (%, {options['norm']})")
        ax.set_ylabel("faces (%)")
        ax.grid(True)
        if wide:
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
        else:
            ax.legend(loc="lower right")
        ax.set_title(f"CED: {protocol.title}")
        fig.tight_layout()
    return fig


def ced(curves: dict[str, tuple[np.ndarray, dict]], protocol: Protocol, out: Path) -> Path | None:
    """Cumulative error distribution; ``curves`` maps model -> (per-face NME, run metrics)."""
    name = f"ced-{check_name(protocol.id, 'protocol id')}"
    if not curves:
        return None
    payload = [protocol.id, protocol.title, protocol.metric, protocol.options,
               {m: [np.asarray(e, dtype=np.float64), {k: v for k, v in (met or {}).items() if k in ("auc", "fr")}]
                for m, (e, met) in sorted(curves.items())}]
    return cached(out, name, payload, lambda: draw_ced(curves, protocol))


def _settings(curves: dict[str, dict]) -> list[str]:
    named = ("easy", "medium", "hard")
    return sorted({s for c in curves.values() for s in c}, key=lambda s: (named.index(s) if s in named else 3, s))


def draw_precision_recall(curves: dict[str, dict], protocol: Protocol):
    """The precision-recall Figure (None: no curve); one panel per setting, in percent."""
    curves = {m: c for m, c in curves.items() if c}
    if not curves:
        return None
    settings = _settings(curves)
    n = len(settings)
    with style() as plt:
        fig, axes = plt.subplots(ncols=n, figsize=(ONE_COLUMN if n == 1 else TWO_COLUMNS, 2.6 if n == 1 else 2.4),
                                 squeeze=False, sharey=True)
        for ax, setting in zip(axes[0], settings):
            for model, by_setting in sorted(curves.items()):
                if setting in by_setting:
                    ax.plot(100 * np.asarray(by_setting[setting]["recall"], dtype=float),
                            100 * np.asarray(by_setting[setting]["precision"], dtype=float), label=model,
                            color=model_color(model), ls=model_linestyle(model))
            ax.set_xlim(0, 101)
            ax.set_ylim(0, 101)
            ax.set_xlabel("recall (%)")
            ax.grid(True)
            ax.set_title(setting if setting != "ap" else protocol.id)
        axes[0][0].set_ylabel("precision (%)")
        axes[0][-1].legend(loc="lower left")
        fig.suptitle(protocol.title, fontsize=8)
        fig.tight_layout()
    return fig


def precision_recall(curves: dict[str, dict], protocol: Protocol, out: Path) -> Path | None:
    """Precision-recall per model; one panel per setting (WIDER easy / medium / hard side by side)."""
    name = f"pr-{check_name(protocol.id, 'protocol id')}"
    curves = {m: c for m, c in curves.items() if c}
    if not curves:
        return None
    payload = [protocol.id, protocol.title,
               {m: {s: {k: np.asarray(v, dtype=np.float64) for k, v in sorted(c.items())
                        if k in ("recall", "precision")} for s, c in sorted(by.items())}
                for m, by in sorted(curves.items())}]
    return cached(out, name, payload, lambda: draw_precision_recall(curves, protocol))


def draw_sweep(curves: dict[str, dict], protocol: Protocol, caveat: str):
    """The sweep Figure (None: no curve): one panel per factor, the measure against the factor's value,
    one line per model, the breaking threshold dashed and each model's breaking points marked."""
    curves = {m: c for m, c in curves.items() if c and c.get("factors")}
    if not curves:
        return None
    factors = sorted({f for c in curves.values() for f in c["factors"]})
    first = next(iter(curves.values()))
    measure, threshold = first["measure"], float(first["threshold"])
    n = len(factors)
    cols = min(n, 3)
    rows_ = -(-n // cols)
    with style() as plt:
        fig, axes = plt.subplots(nrows=rows_, ncols=cols, figsize=(TWO_COLUMNS, 0.4 + 2.1 * rows_), squeeze=False)
        for k, factor in enumerate(factors):
            ax = axes[k // cols][k % cols]
            for model, curve in sorted(curves.items()):
                data = curve["factors"].get(factor)
                if not data:
                    continue
                xs, ys = np.asarray(data["values"], float), 100 * np.asarray(data["metric"], float)
                ax.plot(xs, ys, marker=".", color=model_color(model), ls=model_linestyle(model), label=model)
                for broken in data.get("breaks") or ():
                    if broken is not None:
                        ax.axvline(broken, color=model_color(model), lw=0.5, ls=":")
            ax.axhline(100 * threshold, color="black", lw=0.6, ls="--")
            if factor == "face_size":  # sizes double: a log axis spaces them evenly
                log_axis(ax, "x")
            ax.set_xlabel(factor.replace("_", " ") + (" (px)" if factor == "face_size" else ""))
            ax.set_ylabel("NME (%)" if measure == "nme" else "faces found (%)")
            if measure != "nme":
                ax.set_ylim(-2, 102)
            ax.grid(True)
        for k in range(n, rows_ * cols):
            axes[k // cols][k % cols].axis("off")
        axes[0][-1 if n >= cols else n - 1].legend(loc="best", fontsize=5)
        fig.suptitle(f"{protocol.title}\n{caveat}", fontsize=7)
        fig.tight_layout()
    return fig


def sweep(curves: dict[str, dict], protocol: Protocol, out: Path, caveat: str) -> Path | None:
    """Measure against each controlled factor per model (the rendered benchmark); ``curves`` maps model ->
    the run's ``curves['sweep']``."""
    name = f"sweep-{check_name(protocol.id, 'protocol id')}"
    curves = {m: c for m, c in curves.items() if c and c.get("factors")}
    if not curves:
        return None
    payload = [protocol.id, protocol.title, caveat, {m: c for m, c in sorted(curves.items())}]
    return cached(out, name, payload, lambda: draw_sweep(curves, protocol, caveat))


def draw_render_strip(samples: list, caveat: str):
    """The renders of a sweep side by side, each with its exact landmarks: visible ones green, those the head
    hides red (the depth test)."""
    with style() as plt:
        fig, axes = plt.subplots(ncols=len(samples), figsize=(TWO_COLUMNS, TWO_COLUMNS / len(samples) + 0.5),
                                 squeeze=False)
        for ax, sample in zip(axes[0], samples):
            ax.imshow(sample.image())
            points = sample.faces[0].landmarks.points
            visible = np.asarray(sample.attributes["visible"], bool)
            ax.scatter(points[visible, 0], points[visible, 1], s=0.6, c="#00c000", linewidths=0)
            ax.scatter(points[~visible, 0], points[~visible, 1], s=0.6, c="#e00000", linewidths=0)
            ax.set_title(f"{sample.attributes['factor']} {sample.attributes['value']:+g}", fontsize=6)
            ax.axis("off")
        fig.suptitle(f"Renders with exact landmarks (green: visible, red: hidden by the head); {caveat}", fontsize=6)
        fig.tight_layout()
    return fig


def render_strip(samples: list, out: Path, name: str, caveat: str) -> Path | None:
    """A strip of rendered samples (see :func:`draw_render_strip`), redrawn when a render's identity changes."""
    if not samples:
        return None
    payload = [caveat, [(s.id, s.image_key) for s in samples]]
    return cached(out, name, payload, lambda: draw_render_strip(samples, caveat))


def latency_bars(rows: list[Row]) -> list[tuple]:
    """(model, device, median, p10, p90, kind), a model's largest run per device, grouped by processor class."""
    best: dict[tuple[str, str], tuple] = {}  # a model is timed in every protocol it ran: keep its largest run
    for r in rows:
        if r.kind == "stale":
            continue
        for device, t in r.latency.items():
            bar = (r.model, device, t.median_ms, t.p10_ms, t.p90_ms, r.kind, t.n or 0)
            if bar[6] >= best.get((r.model, device), bar)[6]:
                best[(r.model, device)] = bar
    return sorted((b[:6] for b in best.values()), key=lambda b: (PROCESSOR_CLASSES.index(processor_class(b[1])),
                                                                 b[0], b[1]))


def draw_latency(bars: list[tuple]):
    """Horizontal bars of median latency with the 10th-90th percentile spread, one panel per processor class."""
    if not bars:
        return None
    groups: dict[str, list[tuple]] = {}
    for b in bars:
        groups.setdefault(processor_class(b[1]), []).append(b)
    with style() as plt:
        heights = [len(g) + 1.2 for g in groups.values()]
        fig, axes = plt.subplots(len(groups), 1, figsize=(TWO_COLUMNS * 0.7, 0.16 * sum(heights) + 0.9),
                                 gridspec_kw={"height_ratios": heights}, squeeze=False)
        for ax, (cls, group) in zip(axes[:, 0], groups.items()):
            y = np.arange(len(group))
            for i, (model, _, median, p10, p90, kind) in enumerate(group):
                color = model_color(model)
                err = [[median - p10], [p90 - median]] if p10 is not None and p90 is not None else None
                ax.barh([i], [median], xerr=err, color="white" if kind == "reported" else color, edgecolor=color,
                        hatch="////" if kind == "reported" else None, linewidth=0.8, height=0.7,
                        error_kw={"elinewidth": 0.7, "capsize": 1.5, "ecolor": "0.2"})
            devices = {b[1] for b in group}
            ax.set_yticks(y, [b[0] if len(devices) == 1 or cls == "host CPU" else f"{b[0]} @ {_device_short(b[1])}"
                              for b in group])
            ax.invert_yaxis()
            ax.grid(True, axis="x")
            lo = min(b[3] if b[3] is not None else b[2] for b in group)
            hi = max(b[4] if b[4] is not None else b[2] for b in group)
            ax.set_xlim(lo / 1.5, hi * 1.5)
            one = next(iter(devices)) if len(devices) == 1 else ""
            ax.set_title(one if cls == "host CPU" and one else cls + (f": {one}" if one else ""), loc="left")
        axes[-1, 0].set_xlabel("ms per item (median; whiskers: 10th-90th percentile; hatched: reported)")
        fig.tight_layout()
        for ax in axes[:, 0]:
            log_axis(ax, "x")
        fig.tight_layout()
    return fig


def latency(rows: list[Row], out: Path) -> Path | None:
    """Median latency per model and device, with the 10th-90th percentile spread where measured."""
    bars = latency_bars(rows)
    if not bars:
        return None
    return cached(out, "latency", bars, lambda: draw_latency(bars))
