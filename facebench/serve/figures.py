"""The web leaderboard's figures: the report's plots, drawn on demand and cached on disk by what they show.

A figure's cache key hashes what it depends on: the protocol (id and content hash), the figure kind, every
stored run of the protocol (key, status, finished time, metrics), the phones' measurements (for the figures
that show latency) and the drawing code. So a new or re-finished run changes the key and the next request
redraws, while an unchanged store serves the PNG from disk without reading a single item. Drawing goes
through one module-level lock: matplotlib's pyplot state is global and not thread-safe, and Starlette runs
the sync endpoints on a thread pool. A figure draws at most ``MAX_FIGURE_ROWS`` rows (the best by the headline
metric), and one that fails to draw is left out of its page (said on stderr), never a 500.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import shutil
import sys
import tempfile
import threading
import traceback
from pathlib import Path

from facebench.paths import write_atomic
from facebench.protocol import Protocol
from facebench.report import html as report_html
from facebench.report import plots
from facebench.report.html import figures_for
from facebench.report.leaderboard import Row, headline
from facebench.results.store import Store
from facebench.scoring import METRICS

# the figure kinds a protocol page can show, in page order, with their captions
KINDS = {"tradeoff": "Accuracy against cost (MACs, and latency per processor class)",
         "ced": "Cumulative error distribution (share of faces under each NME)",
         "pr": "Precision-recall",
         "sweep": "Accuracy along the controlled factor",
         "latency": "Latency per device"}
MAX_FIGURE_ROWS = 40  # rows (curves, points, bars) one figure draws at most: the best by the headline metric
_LOCK = threading.Lock()
_COUNT_LOCK = threading.Lock()
draws = 0  # figures drawn by this process (not served from the cache): the tests count them


def kinds_for(protocol: Protocol) -> list[str]:
    """The figure kinds ``protocol`` can have: its metric's figures this server draws, then latency."""
    feeds = METRICS[protocol.metric].figures if protocol.metric in METRICS else frozenset()
    return [k for k in KINDS if k in feeds] + ["latency"]


@functools.cache
def _drawing_code() -> str:
    """The plotting code's hash: a changed plot redraws every cached figure."""
    digest = hashlib.sha256(str(plots.STYLE_VERSION).encode())
    for module in (plots, report_html):
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.hexdigest()[:16]


def figure_key(store: Store, protocol: Protocol, kind: str) -> str:
    """The hash of everything the figure ``kind`` of ``protocol`` shows (see the module docstring)."""
    runs = [(r.key, r.status, r.finished, r.protocol_hash, r.dataset_fingerprint, r.metrics)
            for r in store.runs(status=None) if r.protocol == protocol.id]
    phones = ([(d["key"], d.get("finished"), d.get("status")) for d in store.device_results()]
              if kind in ("tradeoff", "latency") else [])
    payload = [_drawing_code(), protocol.id, protocol.content_hash, kind, runs, phones]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def figure_rows(rows: list[Row], protocol: Protocol, most: int = MAX_FIGURE_ROWS) -> list[Row]:
    """The rows a figure draws: papers' rows, and the ``most`` best of the others by the protocol's headline
    metric (rows without it last), in their order. A protocol with thousands of runs must neither take minutes
    to draw (holding the drawing lock, so every other figure waits) nor give a PNG of megabytes no one can read."""
    ours = [r for r in rows if r.kind != "reported"]
    if len(ours) <= most:
        return rows
    rule = headline(protocol)

    def rank(row: Row) -> tuple[bool, float]:
        value = row.metrics.get(rule[0]) if rule else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return True, 0.0
        return False, float(value) if rule and rule[1] else -float(value)

    kept = {id(r) for r in sorted(ours, key=rank)[:most]}
    return [r for r in rows if r.kind == "reported" or id(r) in kept]


class FigureCache:
    """PNGs under ``folder/<protocol>/<kind>-<key>.png`` (``.none``: nothing to draw for that key). A figure
    draws at most ``max_rows`` of the protocol's rows (:func:`figure_rows`)."""

    def __init__(self, folder: str | Path, max_rows: int = MAX_FIGURE_ROWS):
        self.folder = Path(folder)
        self.max_rows = max_rows
        self.folder.mkdir(parents=True, exist_ok=True)

    def _paths(self, protocol: Protocol, kind: str, key: str) -> tuple[Path, Path]:
        base = self.folder / protocol.id / f"{kind}-{key}"
        return base.with_suffix(".png"), base.with_suffix(".none")

    def resolve(self, store: Store, protocol: Protocol, kind: str, rows: list[Row] | None = None,
                rows_for=None) -> tuple[str, Path | None]:
        """(key, the cached PNG, drawn now if missing; None when there is nothing to draw). ``rows`` (or
        ``rows_for()``, called only when a drawing is needed) are the protocol's leaderboard rows."""
        if kind not in kinds_for(protocol):
            return "", None
        key = figure_key(store, protocol, kind)
        png, none = self._paths(protocol, kind, key)
        if png.exists():
            return key, png
        if none.exists():
            return key, None
        with _LOCK:
            if png.exists() or none.exists():  # drawn by another request while this one waited
                return key, png if png.exists() else None
            if rows is None:
                rows = rows_for() if rows_for is not None else []
            try:
                drawn = self._draw(store, protocol, kind, figure_rows(rows or [], protocol, self.max_rows), png)
            except Exception:  # noqa: BLE001 - a plot that cannot draw these runs: the page goes without it
                print(f"facebench serve: the {kind} figure of {protocol.id} failed to draw; left out:",
                      file=sys.stderr)
                traceback.print_exc()
                drawn = None  # remembered for this key (a new run or new drawing code tries again)
            if drawn is None:
                write_atomic(none, "")
            for old in png.parent.glob(f"{kind}-*"):  # earlier keys of this figure: never served again
                if old.name not in (png.name, none.name):
                    old.unlink(missing_ok=True)
            return key, drawn

    def _draw(self, store: Store, protocol: Protocol, kind: str, rows: list[Row], png: Path) -> Path | None:
        global draws
        self.folder.mkdir(parents=True, exist_ok=True)  # removed while the server runs (a /tmp cleaner): made again
        work = Path(tempfile.mkdtemp(prefix=".draw-", dir=self.folder))
        try:
            with plots.only_formats("png"):
                if kind == "latency":
                    figure = plots.latency([r for r in rows if r.protocol == protocol.id], work)
                else:
                    figure = next(iter(figures_for(store, protocol, rows, work, kind)), None)
            with _COUNT_LOCK:
                draws += 1
            if figure is None:
                return None
            png.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(png, figure.read_bytes())
            return png
        finally:
            shutil.rmtree(work, ignore_errors=True)
