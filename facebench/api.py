"""The Python API: what ``facebench run``, ``leaderboard`` and ``predict`` do, as functions that return
pandas DataFrames and plain objects, for notebooks and scripts.

    import facebench as fb

    samples = fb.load_dataset("mini")                      # list of Sample
    result = fb.evaluate("dlib-68", "mini-nme")            # runs (or reuses) one cell of the leaderboard
    result.metrics["nme"], result.framing                   # the numbers and how the face box was drawn
    result.items                                            # one row per item: error, nme, timings (DataFrame)
    fb.leaderboard(protocol="mini-nme")                    # measured and reported rows (DataFrame)
    fb.metrics.nme(pred, gt, norm="inter-ocular")          # metrics on arrays

Models are registered names, ``module:Class``, ``path/to/file.py:Class`` or an
adapter class; protocols are built-in ids, ``.toml`` paths or
:class:`~facebench.protocol.Protocol` objects. Results go to the same store as
the command line's (``$FACEBENCH_HOME/results.sqlite`` unless ``store`` says).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from facebench import registry
from facebench.adapter import Adapter
from facebench.datasets import load_dataset
from facebench.paths import default_store_path
from facebench.protocol import Protocol, builtin_protocols, get_protocol
from facebench.types import Sample

__all__ = ["EvaluationResult", "builtin_protocols", "evaluate", "get_protocol", "leaderboard", "load_dataset",
           "load_model", "models", "predict"]


@dataclass(frozen=True)
class EvaluationResult:
    """One model on one protocol: its metrics, how it was made, and every item's outcome."""

    model: str
    protocol: str
    metrics: dict[str, Any]
    items: pd.DataFrame  # index: item key; columns: error, the scorer's per-item numbers, phase seconds
    reused: bool  # a stored result with the same key was reused
    run_key: str
    dataset_fingerprint: str
    protocol_hash: str

    @property
    def framing(self) -> str:
        return str(self.metrics.get("framing", ""))

    @property
    def failures(self) -> pd.DataFrame:
        return self.items[self.items["error"].notna()]


def models() -> dict[str, str]:
    """Registered model names and where each adapter lives."""
    return registry.available()


def load_model(model: str | type[Adapter], threads: int = 1) -> Adapter:
    """An adapter instance, loaded (its runtime sessions built)."""
    adapter = _adapter_class(model)()
    adapter.load(threads=threads)
    return adapter


def evaluate(model: str | type[Adapter], protocol: str | Protocol, *, root: str | Path | None = None,
             store: str | Path | None = None, samples: Sequence[Sample] | None = None, force: bool = False,
             progress: bool = False, **options) -> EvaluationResult:
    """Evaluate ``model`` on ``protocol`` through the results store (see :func:`facebench.results.evaluate.evaluate`).

    ``root`` is the dataset's folder when it is not embedded; ``samples`` replaces
    the protocol's dataset (a subset, say: it gets its own fingerprint and row).
    ``options``: ``runtime``, ``threads``, ``batch_size``, ``workers``, ``skip_bad``, ``keep_failures``.
    This runs in the calling process (a model that exits or crashes takes it along); ``facebench run``
    isolates each cell in a supervised child process.
    """
    from facebench.results.evaluate import evaluate as evaluate_cell
    from facebench.results.store import Store

    chosen = protocol if isinstance(protocol, Protocol) else get_protocol(protocol)
    with Store(store or default_store_path()) as db:
        done = evaluate_cell(_adapter_class(model), chosen, db, root=root, samples=samples, force=force,
                             progress=progress, **options)
        frame = _items_frame(db, done.run.key)
    run = done.run
    return EvaluationResult(run.model, run.protocol, dict(run.metrics or {}), frame, done.reused, run.key,
                            run.dataset_fingerprint, run.protocol_hash)


def leaderboard(store: str | Path | None = None, protocol: str | None = None, reported: bool = True) -> pd.DataFrame:
    """The leaderboard as one row per (model, protocol, protocol version, dataset copy), plus reported rows:
    metrics as columns (fractions), with ``kind``, ``framing``, ``points``, ``faces`` and the row's provenance."""
    from facebench.report.leaderboard import leaderboard_rows
    from facebench.results.store import Store

    with Store(store or default_store_path()) as db:
        rows = leaderboard_rows(db, protocol, include_reported=reported)
    records = []
    for row in rows:
        data = row.to_dict()
        flat = {k: v for k, v in data.items() if k not in ("metrics", "latency", "versions")}
        flat.update({f"metric:{k}": v for k, v in (data.get("metrics") or {}).items()})
        records.append(flat)
    return pd.DataFrame.from_records(records)


def predict(model: str, images: Sequence[str | Path], detector: str | None = None, threads: int = 1):
    """``facebench predict``: one :class:`~facebench.run.predict.ImageResult` per image."""
    from facebench.run.predict import predict_images

    return predict_images(model, images, detector=detector, threads=threads)


def _adapter_class(model: str | type[Adapter]) -> type[Adapter]:
    if isinstance(model, type) and issubclass(model, Adapter):
        return model
    registry.check_usable(str(model), with_detector=False)  # a missing extra: MissingExtra with the fix
    return registry.resolve(str(model))


def _items_frame(db, key: str) -> pd.DataFrame:
    scored = db.item_metrics(key)
    rows = []
    for r in db.items(key):
        row: dict[str, Any] = {"item": r.key, "error": r.error, "preprocess_s": r.preprocess_s,
                               "forward_s": r.forward_s, "postprocess_s": r.postprocess_s}
        row.update({k: v for k, v in scored.get(r.key, {}).items() if not isinstance(v, (list, dict))})
        rows.append(row)
    return pd.DataFrame.from_records(rows).set_index("item").sort_index() if rows else pd.DataFrame()
