"""A chunk of a cell computed away from the results store: the worker side of a distributed run.

A worker gets a :class:`ChunkTask` (plain data: the model as asked for, the
protocol, where the driver found the dataset, the driver's run key and dataset
fingerprint, the chunk's item keys) and returns a plain payload (run metadata
and per-item results, predictions encoded as the store encodes them). It never
opens the store: only the driver writes it (SQLite's locks are unsafe on
network file systems). Scoring is the driver's too, since AP and CED need
every image of the cell.

The worker plans the cell itself (:func:`facebench.results.evaluate.plan_cell`)
and refuses a chunk whose run key or dataset fingerprint differs from the
driver's: another facebench, model code, artifact, runtime version or dataset
copy would otherwise be stored under the driver's key. Plans and loaded models
are kept per worker process, so the chunks of one cell load the model once.

An item that stays in one adapter phase longer than ``item_timeout`` ends the
chunk early: the items done are returned, the stuck ones as ``timeout``
failures, and ``hung`` tells the driver to restart this worker (the stuck
thread cannot be stopped in-process) and to send the chunk's other items again.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facebench.errors import FacebenchError
from facebench.protocol import Protocol
from facebench.results.environment import environment
from facebench.results.store import decode_prediction, encode_prediction
from facebench.types import ItemResult

POLL_S = 0.2  # how often a chunk looks at what its items are doing


class WorkerMismatch(FacebenchError, RuntimeError):
    """A worker whose facebench, model, artifacts, runtime or dataset copy differs from the driver's."""


@dataclass(frozen=True)
class ChunkTask:
    """What a worker needs to compute one chunk of a cell (all plain, picklable data)."""

    model: str  # as asked for: a registered name, module:Class or path/file.py:Class
    protocol: Protocol
    root: str | None  # where the driver found the dataset; a worker without it uses $FACEBENCH_DATA/NAME
    key: str  # the driver's run key
    fingerprint: str  # the driver's dataset fingerprint
    chunk: int
    n_chunks: int
    item_keys: tuple[str, ...]
    runtime: str | None = None
    skip_bad: bool = False
    threads: int = 1
    batch_size: int = 8
    workers: int = 2
    item_timeout: float = 600.0
    parts: dict | None = None  # the driver's key parts, to name what differs on a worker that disagrees

    @property
    def label(self) -> str:
        return f"{self.model} on {self.protocol.id} (chunk {self.chunk + 1}/{self.n_chunks})"


_lock = threading.Lock()
_plans: OrderedDict[tuple, Any] = OrderedDict()  # a few cells' plans (their samples) per worker process
_models: OrderedDict[tuple, tuple[Any, dict, threading.Lock]] = OrderedDict()  # loaded adapters
MAX_PLANS, MAX_MODELS = 4, 2


def _where() -> str:
    """This worker's name in messages: its Dask address when it is one, else host and pid."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"{socket.gethostname()} pid {os.getpid()}"


def _plan(task: ChunkTask):
    from facebench import registry
    from facebench.datasets import root_for
    from facebench.results.evaluate import plan_cell

    root = Path(task.root) if task.root and Path(task.root).exists() else root_for(task.protocol.dataset)
    # the driver's key and fingerprint too: a model file edited, or a dataset copy changed, since this worker
    # planned the cell is planned again (a stale plan would refuse every chunk, or compute with the old code)
    cache_key = (task.model, task.protocol.id, task.protocol.content_hash, str(root), task.runtime, task.skip_bad,
                 task.key, task.fingerprint)
    with _lock:
        plan = _plans.get(cache_key)
        if plan is not None:
            _plans.move_to_end(cache_key)
    if plan is None:
        plan = plan_cell(registry.resolve(task.model), task.protocol, root=root, runtime=task.runtime,
                         skip_bad=task.skip_bad)
        with _lock:
            _plans[cache_key] = plan
            while len(_plans) > MAX_PLANS:
                _plans.popitem(last=False)
    if plan.fingerprint != task.fingerprint:
        raise WorkerMismatch(f"{task.label}: worker {_where()} reads dataset {task.protocol.dataset} under {root} with "
                             f"fingerprint {plan.fingerprint}, the driver's is {task.fingerprint}: every worker needs "
                             "the same copy (same files, sizes and times; pass the same --root or $FACEBENCH_DATA)")
    if plan.key != task.key:
        theirs = task.parts or {}
        differ = sorted(k for k in set(plan.parts) | set(theirs) if plan.parts.get(k) != theirs.get(k))
        raise WorkerMismatch(f"{task.label}: worker {_where()} computes run key {plan.key}, the driver {task.key} "
                             f"(they differ in {', '.join(differ) or 'the key'}): its facebench, model code, artifacts "
                             "or runtime version differ from the driver's (every worker needs the driver's install)")
    return plan


def _model_key(plan, task: ChunkTask) -> tuple:
    """A loaded model is reused only for the same code, card, artifacts and runtime (a model file edited since
    it was loaded is loaded again: its results go under the new code's key)."""
    import json

    made_of = {k: plan.parts.get(k) for k in ("card", "code", "artifacts", "runtime_version", "extras")}
    return (task.model, plan.runtime, task.threads, json.dumps(made_of, sort_keys=True, default=str))


def _model(plan, task: ChunkTask) -> tuple[Any, dict, threading.Lock]:
    cache_key = _model_key(plan, task)
    with _lock:
        found = _models.get(cache_key)
        if found is not None:
            _models.move_to_end(cache_key)
            return found
    adapter = plan.adapter_cls()
    info = adapter.load(runtime=None if plan.runtime == "native" else plan.runtime, threads=task.threads) or {}
    entry = (adapter, info, threading.Lock())
    with _lock:
        _models[cache_key] = entry
        while len(_models) > MAX_MODELS:
            _models.popitem(last=False)
    return entry


def _forget_model(plan, task: ChunkTask) -> None:
    with _lock:
        _models.pop(_model_key(plan, task), None)


def encode_item(result: ItemResult) -> list:
    return [result.key, None if result.prediction is None else encode_prediction(result.prediction), result.error,
            result.preprocess_s, result.forward_s, result.postprocess_s]


def decode_item(row: list) -> ItemResult:
    key, prediction, error, pre, fwd, post = row
    return ItemResult(key, None if prediction is None else decode_prediction(prediction), error, pre, fwd, post)


def compute_chunk(task: ChunkTask) -> dict:
    """Run one chunk of a cell here; the payload is plain data: ``key``, ``chunk``, ``environment``,
    ``worker``, ``items`` (encoded :class:`ItemResult` rows), ``hung`` (see the module docstring)."""
    from facebench.results.evaluate import compute_items
    from facebench.run import activity

    plan = _plan(task)
    with activity.phase("load", [""]):
        adapter, info, model_lock = _model(plan, task)
    results: list[ItemResult] = []
    results_lock = threading.Lock()
    failure: list[BaseException] = []

    def on_batch(batch) -> None:
        with results_lock:
            results.extend(batch)

    def work() -> None:
        try:
            compute_items(adapter, plan, task.item_keys, threads=task.threads, batch_size=task.batch_size,
                          workers=task.workers, on_batch=on_batch)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the task's thread below
            failure.append(exc)

    hung: list[ItemResult] = []
    with model_lock:  # one chunk at a time uses a loaded model
        activity.set_run(task.key)
        thread = threading.Thread(target=work, daemon=True, name="facebench-chunk")
        thread.start()
        last, since = None, time.monotonic()
        while thread.is_alive():
            thread.join(POLL_S)
            state = activity.snapshot()[1]
            now = time.monotonic()
            if state != last:
                last, since = state, now
            elif task.item_timeout and state and now - since > task.item_timeout:
                stuck = {item: phase for phase, item in state if item}
                hung = [ItemResult(item, None, f"timeout: {phase} exceeded {task.item_timeout:g} s")
                        for item, phase in stuck.items()]
                _forget_model(plan, task)  # the stuck thread still holds it
                break
        if not hung:
            activity.set_run(None)
    if failure and not hung:
        raise failure[0]
    with results_lock:
        rows = [encode_item(r) for r in results]
    return {"key": task.key, "chunk": task.chunk, "environment": environment(info), "worker": _where(),
            "items": rows + [encode_item(r) for r in hung], "hung": bool(hung)}
