"""A leaderboard is a matrix of cells (model, protocol); this runs them, in parallel if asked.

Each cell runs in a supervised worker process (:mod:`facebench.results.isolation`:
a model that exits, crashes, hangs or prints fails only its own cell) with its
own connection to the results store: items are committed batch by batch and
the run is completed in one transaction, so cells never see each other's
partial writes, two runs writing to one store do not corrupt it (SQLite
serialises writers; a cell another run is computing is skipped) and a killed
run loses only its unfinished cells, which the next run resumes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from facebench.protocol import Protocol
from facebench.results.database import StoreLocation


@dataclass(frozen=True)
class Cell:
    """One (model, protocol) of the matrix; with ``chunk``, only that chunk of its items (0-based, of
    ``n_chunks``: a shard's part, see :mod:`facebench.results.shards`)."""

    model: str
    protocol: Protocol
    root: Path | None = None
    chunk: int | None = None
    n_chunks: int = 1

    @property
    def label(self) -> str:
        """``model on protocol`` (the model as asked for), with the chunk when it is one."""
        return f"{self.model} on {self.protocol.id}{self.chunk_label}"

    @property
    def chunk_label(self) -> str:
        return "" if self.chunk is None else f" (chunk {self.chunk + 1}/{self.n_chunks})"


@dataclass(frozen=True)
class Settings:
    """How every cell is run (the ``facebench run`` options)."""

    force: bool = False
    runtime: str | None = None
    threads: int = 1
    batch_size: int = 8
    workers: int = 2
    progress: bool = True
    skip_bad: bool = False
    item_timeout: float = 600.0  # seconds an item may stay in one phase (0: no limit)
    keep_failures: bool = False  # keep a stored run's failed items (default: run them again)


@dataclass
class CellResult:
    cell: Cell
    messages: list[str] = field(default_factory=list)
    error: bool = False
    skipped: bool = False
    partial: bool = False  # one chunk stored; the cell is scored once all its chunks are in one store


def format_metrics(metrics: dict | None) -> str:
    """A run's metrics on one line, as the run's messages say them."""
    return ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in (metrics or {}).items())


def ended_before_work(cell: Cell, name: str, exc: Exception) -> CellResult:
    """The result of a cell that could not start: skipped for random weights or an optional extra not
    installed, else an error naming the exception (one broken model never loses the others)."""
    from facebench.results.evaluate import UntrainedModelError

    if isinstance(exc, (UntrainedModelError, ImportError)):
        return CellResult(cell, [f"skip {name} on {cell.protocol.id}: {exc}"], skipped=True)
    return CellResult(cell, [f"error: {name} on {cell.protocol.id}: {type(exc).__name__}: {exc}"], error=True)


def run_cell(cell: Cell, store_path: StoreLocation, settings: Settings) -> CellResult:
    """Evaluate one cell; never raises for a model's failure (the message says what happened)."""
    from facebench import registry
    from facebench.results.evaluate import evaluate
    from facebench.results.store import Store

    result = CellResult(cell)
    say = result.messages.append
    protocol = cell.protocol
    name = cell.model
    try:
        adapter_cls = registry.resolve(cell.model)
        name = adapter_cls.card.name
        with Store(store_path) as db:
            done = evaluate(adapter_cls, protocol, db, root=cell.root, force=settings.force, runtime=settings.runtime,
                            threads=settings.threads, batch_size=settings.batch_size, workers=settings.workers,
                            progress=settings.progress, skip_bad=settings.skip_bad,
                            keep_failures=settings.keep_failures, chunk=cell.chunk)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one broken model must not lose the others
        return ended_before_work(cell, name, exc)
    metrics = format_metrics(done.run.metrics)
    note = " (stored result reused; --force recomputes)" if done.reused else ""
    if done.partial:
        result.partial = True
        stored = len(done.failures)
        result.messages.insert(0, f"{name} on {protocol.id}{cell.chunk_label}: stored ({stored} failed items); "
                                  "the cell is scored when every chunk is in one store (facebench merge)")
    else:
        result.messages.insert(0, f"{name} on {protocol.id}: {metrics}{note}")
    for key, message in done.failures:
        say(f"  failed {key}: {message}")
    for message in done.skipped:
        say(f"  skipped bad annotation: {message}")
    if done.skipped:
        say(f"  {len(done.skipped)} bad annotation entries skipped")
    return result


ENGINES = ("local", "dask")


def run_cells(cells: Iterable[Cell], store_path: StoreLocation, settings: Settings, jobs: int = 1,
              report: Callable[[CellResult], None] = lambda r: None, engine: str = "local",
              address: str | None = None, shard=None) -> list[CellResult]:
    """Run every cell, ``jobs`` at a time: ``local``, each in a supervised worker process (see
    :mod:`facebench.results.isolation`); ``dask``, chunk by chunk on a Dask cluster (``address``, or a
    local one of ``jobs`` workers; see :mod:`facebench.results.dask_engine`). ``shard``
    (:class:`facebench.results.shards.Shard`) keeps only that shard's cells and chunks."""
    cells = list(cells)
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if not cells:
        return []
    if shard is not None and shard.count == 1:  # 1/1 is the whole matrix: a plain run (cells whole, scored here)
        shard = None
    if engine == "dask":
        from facebench.results.dask_engine import run_on_dask

        select = None if shard is None else (lambda cell, chunk, n: shard.owns(cell.model, cell.protocol.id, chunk))
        return run_on_dask(cells, store_path, settings, jobs, address, report, select)
    from facebench.results.isolation import run_isolated

    if shard is not None:
        from facebench.results.shards import shard_cells

        cells = shard_cells(cells, shard, settings)
        if not cells:
            return []
    if jobs > 1 and len(cells) > 1:
        settings = replace(settings, progress=False)  # one bar per process would interleave
    return run_isolated(cells, store_path, settings, jobs, report)
