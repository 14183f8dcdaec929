"""Cells on a Dask cluster (``facebench run --engine dask``): workers compute, the driver writes.

The driver (this process) plans every cell (:func:`facebench.results.evaluate.plan_cell`),
reuses complete runs from the store and skips stored items, so a run resumes across
engines. It splits each cell's missing items into chunks of ``protocol.chunk_items``
and submits one task per chunk (:func:`facebench.results.compute.compute_chunk`). As each
chunk's payload arrives the driver stores its items; when a cell's chunks are all in, it
scores the cell (AP and CED need every image) and completes the run. Only the driver
opens the store.

Faults stay in their cell:

* a chunk task that raises is retried once (``retries=1``); a worker that dies running it
  is retried by the scheduler up to ``allowed-failures`` (1 on the ``LocalCluster`` made
  here; set ``distributed.scheduler.allowed-failures`` on your own scheduler). After that
  the chunk's items are stored as failures naming the chunk, the worker's fate and the
  error, and the cell's other chunks are kept;
* an item that hangs comes back as a ``timeout`` failure; the driver restarts that worker
  and sends the chunk's other items again (each time at least one item is settled, so it
  cannot loop);
* a worker with another install or dataset copy refuses its chunks
  (:class:`facebench.results.compute.WorkerMismatch`), and the versions of the packages
  in :data:`PACKAGES` are compared on every worker before anything is submitted.

Workers are started with ``spawn`` (Dask's default), which keeps the rule that model
runtimes are never forked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from facebench.errors import FacebenchError
from facebench.extras import MissingExtra
from facebench.results.cells import Cell, CellResult, Settings, ended_before_work, format_metrics
from facebench.results.compute import ChunkTask, compute_chunk, decode_item
from facebench.results.database import StoreLocation
from facebench.types import ItemResult

# packages whose versions must agree between the driver and every worker
PACKAGES = ("facebench", "numpy", "tflite-runtime", "onnxruntime", "onnx", "pillow", "dlib-bin",
            "opencv-python-headless")
# Dask settings for the cluster facebench starts (and advice for yours): a dead worker's task is retried once, and
# a worker is sent only the task it runs, so a worker that dies takes no innocent task's retry with it. Two worker
# defaults cost a chunk of image decoding 3x its in-process time (measured: 0.85 s vs 0.28 s for 128 frames with
# BlazeFace): MALLOC_TRIM_THRESHOLD_=65536 (glibc then hands freed image buffers back to the kernel and faults
# them in again) and the 10 ms statistical profiler (it takes the GIL from the harness's threads); both are off.
CLUSTER_CONFIG = {"distributed.scheduler.allowed-failures": 1, "distributed.scheduler.worker-saturation": 1.0,
                  "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                  "distributed.worker.profile.enabled": False}


class EngineError(FacebenchError, RuntimeError):
    """The Dask engine cannot start: not installed, no scheduler at the address, or mismatched workers."""


@dataclass
class _CellState:
    cell: Cell
    plan: Any  # CellPlan
    name: str
    result: CellResult
    pending: int = 0
    started: bool = False
    settled: set[int] = field(default_factory=set)  # chunks whose items are stored
    selected: set[int] = field(default_factory=set)  # chunks this run computes (a shard: its part)


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise MissingExtra("--engine dask needs Dask: pip install 'facebench[dask]'") from None
    return distributed


@contextlib.contextmanager
def connect(address: str | None, jobs: int):
    """A Dask client: to the scheduler at ``address``, or to a ``LocalCluster`` of ``jobs`` one-thread
    worker processes (no dashboard) started here and closed on exit."""
    distributed = _import_distributed()
    import dask

    with dask.config.set(CLUSTER_CONFIG):
        if address:
            try:
                _probe(address)
                client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S)
            except (OSError, ValueError) as exc:  # ValueError: not an address (http://...)
                raise EngineError(f"no Dask scheduler at {address} ({exc}): start one with `dask scheduler` "
                                  "and workers with `dask worker ADDRESS --nthreads 1`") from None
            try:
                yield client
            finally:
                client.close()
            return
        cluster = distributed.LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=40)
        client = distributed.Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()


CONNECT_TIMEOUT_S = 30.0  # how long a run tries to reach the scheduler at --address
WORKER_WAIT_S = 60.0  # how long a run waits for a first worker (a cluster starting, or restarting one)


def _probe(address: str) -> None:
    """Raise OSError unless a Dask scheduler answers at ``address`` within :data:`CONNECT_TIMEOUT_S`: Dask's
    client waits for the handshake without a limit, so a port where something else listens (a web server, a
    dashboard's port) would hang the run for ever."""
    import asyncio

    from distributed.comm import connect as comm_connect
    from distributed.security import Security

    async def handshake() -> None:
        comm = await comm_connect(address, timeout=CONNECT_TIMEOUT_S, **Security().get_connection_args("client"))
        await comm.close()

    try:
        # connecting gives up at CONNECT_TIMEOUT_S (its own OSError: nobody listens); the handshake has 2 s more
        asyncio.run(asyncio.wait_for(handshake(), CONNECT_TIMEOUT_S + 2))
    except TimeoutError:
        raise OSError(f"something listens there but did not answer as a Dask scheduler within "
                      f"{CONNECT_TIMEOUT_S + 2:g} s; is that the dashboard's or another program's port?") from None


def check_versions(client) -> None:
    """Wait for a worker, then refuse workers whose versions of :data:`PACKAGES` differ from this process's,
    naming them."""
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except TimeoutError:
        raise EngineError(f"the Dask cluster has had no worker for {WORKER_WAIT_S:g} s: start some with "
                          "`dask worker ADDRESS --nthreads 1`") from None
    versions = client.get_versions(packages=list(PACKAGES))
    mine = versions["client"]["packages"]
    bad = []
    for worker, info in sorted(versions["workers"].items()):
        theirs = (info or {}).get("packages", {})
        for package in ("python", *PACKAGES):
            if theirs.get(package) != mine.get(package):
                bad.append(f"{worker}: {package} {theirs.get(package)} (driver: {mine.get(package)})")
    if bad:
        raise EngineError("workers differ from this install; results would not be comparable:\n  "
                          + "\n  ".join(bad))
    if not versions["workers"]:
        raise EngineError("the Dask cluster has no workers: start some with `dask worker ADDRESS --nthreads 1`")


def _plan_or_result(cell: Cell, settings: Settings) -> tuple[Any, str, CellResult | None]:
    """The cell's plan and model name, or the result that ends it before any work (as run_cell says it)."""
    from facebench import registry
    from facebench.results.evaluate import plan_cell

    name = cell.model
    try:
        adapter_cls = registry.resolve(cell.model)
        name = adapter_cls.card.name
        plan = plan_cell(adapter_cls, cell.protocol, root=cell.root, runtime=settings.runtime,
                         skip_bad=settings.skip_bad)
    except Exception as exc:  # noqa: BLE001 - one broken model must not lose the others
        return None, name, ended_before_work(cell, name, exc)
    return plan, name, None


def run_on_dask(cells: list[Cell], store_path: StoreLocation, settings: Settings, jobs: int, address: str | None,
                report: Callable[[CellResult], None],
                select: Callable[[Cell, int, int], bool] | None = None) -> list[CellResult]:
    """Run ``cells`` on Dask (see the module docstring); ``select(cell, chunk, n_chunks)`` keeps only
    a shard's chunks (the others are left to other shards; such a cell completes in ``facebench merge``)."""
    from facebench.results.store import Store

    _import_distributed()  # not installed: one line naming the fix, before any planning
    results: list[CellResult] = []
    states: list[_CellState] = []
    with Store(store_path) as db:
        for cell in cells:
            plan, name, ended = _plan_or_result(cell, settings)
            if ended is not None:
                results.append(ended)
                report(ended)
                continue
            state = _CellState(cell, plan, name, CellResult(cell))
            chunks = range(plan.n_chunks)
            state.selected = {i for i in chunks if select is None or select(cell, i, plan.n_chunks)}
            if not state.selected:  # every chunk of it is other shards' work (as the local engine leaves it out)
                continue
            if _reuse(db, state, settings):
                results.append(state.result)
                report(state.result)
                continue
            states.append(state)
        if not states:
            return results
        with connect(address, jobs) as client:
            check_versions(client)
            results += _drive(client, db, states, settings, report)
    return results


def _reuse(db, state: _CellState, settings: Settings) -> bool:
    """A complete stored run ends the cell (reused); else what is to be run again is forgotten (as evaluate
    does, with this run's chunks as the scope)."""
    from facebench.results.evaluate import reuse_or_reset

    plan = state.plan
    whole = len(state.selected) == plan.n_chunks
    scope = None if whole else {k for i in state.selected for k in plan.chunk_keys(i)}
    reused, _ = reuse_or_reset(db, plan.key, scope, force=settings.force, keep_failures=settings.keep_failures)
    if reused is None:
        return False
    state.result.messages.append(f"{state.name} on {plan.protocol.id}: {format_metrics(reused.metrics)} "
                                 "(stored result reused; --force recomputes)")
    return True


def _drive(client, db, states: list[_CellState], settings: Settings,
           report: Callable[[CellResult], None]) -> list[CellResult]:
    """Submit every missing chunk, store payloads as they come, finish each cell when its chunks are in."""
    from distributed import as_completed
    from tqdm import tqdm

    from facebench.results.environment import environment

    futures: dict[Any, tuple[_CellState, ChunkTask]] = {}

    def submit(state: _CellState, task: ChunkTask) -> Any:
        future = client.submit(compute_chunk, task, retries=1, pure=False,
                               key=f"facebench-{task.key}-{task.chunk}-{len(futures)}")
        futures[future] = (state, task)
        state.pending += 1
        return future

    first: list[Any] = []
    for state in states:
        plan = state.plan
        stored = db.item_keys(plan.key)
        for index in sorted(state.selected):
            keys = tuple(k for k in plan.chunk_keys(index) if k not in stored)
            if not keys:
                state.settled.add(index)
                continue
            first.append(submit(state, ChunkTask(
                state.cell.model, plan.protocol, None if state.cell.root is None else str(state.cell.root), plan.key,
                plan.fingerprint, index, plan.n_chunks, keys, settings.runtime, settings.skip_bad, settings.threads,
                settings.batch_size, settings.workers, settings.item_timeout, plan.parts)))
    done: list[CellResult] = []

    def store_items(state: _CellState, rows: list[ItemResult], env: dict | None) -> None:
        plan = state.plan
        if not state.started:
            card = plan.adapter_cls.card
            db.start_run(plan.key, card.name, plan.protocol.id, plan.protocol.content_hash, plan.fingerprint,
                         plan.runtime, card.to_dict(), env or environment({}), plan.parts)
            state.started = True
        db.add_items(plan.key, rows)

    def settle(state: _CellState, task: ChunkTask) -> None:
        state.settled.add(task.chunk)
        state.pending -= 1
        if state.pending == 0:
            done.append(_finish(db, state, store_items))
            report(done[-1])

    for state in states:  # cells with nothing left to compute (every item stored) finish now
        if state.pending == 0:
            done.append(_finish(db, state, store_items))
            report(done[-1])
    bar = tqdm(total=len(first), unit="chunk", desc="chunks", disable=not settings.progress or None, leave=False)
    queue = as_completed(first)
    try:
        for future in queue:
            state, task = futures[future]
            bar.update(1)
            try:
                payload = future.result()
            except Exception as exc:  # noqa: BLE001 - one chunk's end, named; its cell's other chunks go on
                reason = _describe_failure(exc, task)
                store_items(state, [ItemResult(k, None, reason) for k in task.item_keys], None)
                state.result.messages.append(f"  failed: {reason}")  # the reason names the chunk
                settle(state, task)
                continue
            rows = [decode_item(row) for row in payload["items"]]
            store_items(state, rows, payload["environment"])
            if payload["hung"]:
                with contextlib.suppress(Exception):  # a worker already gone needs no restart
                    client.restart_workers([payload["worker"]], raise_for_error=False)
                got = {r.key for r in rows}
                rest = tuple(k for k in task.item_keys if k not in got)
                state.result.messages.append(f"  {task.label}: an item timed out on {payload['worker']}; the worker "
                                             f"was restarted and {len(rest)} item(s) sent again")
                if rest:
                    state.pending -= 1
                    bar.total += 1
                    queue.add(submit(state, _replace_keys(task, rest)))
                    continue
            settle(state, task)
    except KeyboardInterrupt:
        for future in futures:
            future.cancel()
        raise
    finally:
        bar.close()
    return done


def _replace_keys(task: ChunkTask, keys: tuple[str, ...]) -> ChunkTask:
    from dataclasses import replace

    return replace(task, item_keys=keys)


def _describe_failure(exc: BaseException, task: ChunkTask) -> str:
    from distributed import KilledWorker

    if isinstance(exc, KilledWorker):
        return (f"worker died running {task.label} (retried once, died again; KilledWorker: {exc}): "
                "its stored items are kept; the next run resumes it")
    return f"{task.label} failed twice: {type(exc).__name__}: {exc}"


def _finish(db, state: _CellState, store_items) -> CellResult:
    """Score and complete a cell whose chunks are in; a shard's part is recorded chunk by chunk instead."""
    from facebench.results.evaluate import finish_cell

    plan, result = state.plan, state.result
    if not state.started and db.get_run(plan.key) is None:
        store_items(state, [], None)
    if not set(plan.item_keys) <= db.item_keys(plan.key):  # other shards hold the other chunks
        for index in state.settled:
            db.record_chunk(plan.key, index, plan.n_chunks, len(plan.item_keys))
        result.partial = True
        result.messages.insert(0, f"{state.name} on {plan.protocol.id}: chunks "
                                  f"{', '.join(str(i + 1) for i in sorted(state.settled))} of {plan.n_chunks} stored; "
                                  "the cell is scored when every chunk is in one store (facebench merge)")
        return result
    try:
        evaluation = finish_cell(plan, db)
    except Exception as exc:  # noqa: BLE001 - a scorer that fails is this cell's error only
        result.error = True
        result.messages.insert(0, f"error: {state.name} on {plan.protocol.id}: scoring: {type(exc).__name__}: {exc}")
        return result
    result.messages.insert(0, f"{state.name} on {plan.protocol.id}: {format_metrics(evaluation.run.metrics)}")
    said = "\n".join(result.messages)
    for key, message in evaluation.failures:
        if message not in said:  # a failed chunk's items are said once, by the chunk
            result.messages.append(f"  failed {key}: {message}")
    return result
