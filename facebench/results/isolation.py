"""Cells in supervised child processes: a model that exits, crashes, hangs or prints fails only its own cell.

Every cell runs in a worker process (multiprocessing's ``spawn`` context: model
runtimes hold thread pools that a fork would copy half-held), up to ``jobs`` at a
time; a worker runs cell after cell (imports are paid once) and a dead one is
replaced. The parent (:func:`run_isolated`) supervises them over one pipe each:

* **Containment.** A worker that exits (``sys.exit``, ``os._exit``, any code) or dies
  by a signal (segfault, OOM kill) before reporting its cell's result makes that
  cell an error naming the model, the protocol and the exit code or signal
  (``worker died: SIGSEGV``); the items it stored stay (the next run resumes them)
  and the other cells go on. In the worker, fd 1 is pointed at fd 2, so whatever
  model code prints lands on stderr, never in the command's stdout.
* **Workers die with their parent.** On Linux each worker asks the kernel for
  SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``; strictly, when the
  parent *thread* that started it ends, and the supervisor keeps that thread alive
  while its workers live). A watchdog thread in the worker also exits it as soon as
  ``os.getppid()`` changes (the worker was re-parented), which covers other
  platforms and a parent that died before the prctl call.
* **Item timeout.** The worker's watchdog samples, a few times a second, which of
  the cell's items are in which adapter phase (``load``, ``preprocess``,
  ``forward``, ``postprocess``; marked by the harness in :mod:`facebench.run.activity`) and sends the
  parent each change. When the same items stay in the same phase for
  ``Settings.item_timeout`` seconds, the parent kills the worker, stores those
  items as failures (``timeout: forward exceeded 5 s``) and restarts the cell, which
  resumes after the stored items. Every restart stores at least one new failure and
  an item never times out twice, so a cell cannot loop; a hang in ``load`` (no
  items) fails the cell.
* **Claims.** Before a cell is handed to a worker, the run claims it in the store
  (model, protocol -> pid, host, heartbeat); a cell another live run holds is
  skipped with a note. A claim whose heartbeat is older than ``CLAIM_STALE_S`` or
  whose process is gone (same host) is taken over. The parent refreshes its
  claims every ``HEARTBEAT_S`` and releases each as its cell ends.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from multiprocessing.connection import Connection, wait
from typing import Any

from facebench.results.cells import Cell, CellResult, Settings, run_cell
from facebench.results.database import StoreLocation

CLAIM_STALE_S = 600.0  # a claim without a heartbeat for this long belongs to a run that is gone
HEARTBEAT_S = 30.0
SAMPLE_S = 0.2  # how often a worker looks at what its cell is doing


# ---------------------------------------------------------------------------------------------- worker side

def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the prctl: nobody will collect our result
        os._exit(1)


def _snapshot() -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """The run key of the cell being evaluated and its (phase, item) pairs in flight (the harness marks them)."""
    from facebench.run import activity

    return activity.snapshot()


class _Watchdog(threading.Thread):
    """Exits the worker when its parent is gone; reports each change of what the cell is doing."""

    def __init__(self, conn: Connection, lock: threading.Lock, parent_pid: int):
        super().__init__(daemon=True, name="facebench-watchdog")
        self.conn, self.lock, self.parent_pid = conn, lock, parent_pid
        self.busy = threading.Event()

    def run(self) -> None:
        last: object = None
        while True:
            time.sleep(SAMPLE_S)
            if os.getppid() != self.parent_pid:
                os._exit(1)
            if not self.busy.is_set():
                last = None
                continue
            try:
                state = _snapshot()
            except Exception:  # noqa: BLE001 - the watchdog must never end the worker: look again next time
                continue
            if state != last:
                last = state
                with self.lock:
                    self.conn.send(("state", state))


def _worker_main(conn: Connection, parent_pid: int, store_path: StoreLocation) -> None:
    """A worker process: cells in over the pipe, ("state", ...) and ("result", CellResult) out."""
    _die_with_parent(parent_pid)
    sys.stdout.flush()
    os.dup2(2, 1)  # model code printing to stdout must not reach the command's stdout
    lock = threading.Lock()
    watchdog = _Watchdog(conn, lock, parent_pid)
    watchdog.start()
    try:
        while True:
            try:
                job = conn.recv()
            except EOFError:
                return
            if job is None:
                return
            cell, settings = job
            watchdog.busy.set()
            result = run_cell(cell, store_path, settings)
            watchdog.busy.clear()
            sys.stdout.flush()
            with lock:
                conn.send(("result", result))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the parent says what happened
        return


# ---------------------------------------------------------------------------------------------- parent side

def describe_exit(exitcode: int | None) -> str:
    """A dead worker's end in words: ``SIGSEGV``, ``exit code 3``."""
    if exitcode is None:
        return "no exit code"
    if exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def _pid_dead(pid: int, host: str) -> bool:
    """True when ``pid`` on this host no longer exists (another host's process: unknown, so not dead)."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass
class _Job:
    cell: Cell
    name: str  # the model's card name (or what was asked for, when it cannot be resolved here)
    settings: Settings
    claimed: bool = False
    timed_out: set[str] = field(default_factory=set)


@dataclass
class _Worker:
    process: Any
    conn: Connection
    job: _Job | None = None
    state: tuple = (None, ())
    since: float = 0.0  # when the state last changed


def _model_name(cell: Cell) -> str:
    from facebench import registry

    try:
        return registry.resolve(cell.model).card.name
    except Exception:  # noqa: BLE001 - the worker reports the real error
        return cell.model


def run_isolated(cells: list[Cell], store_path: StoreLocation, settings: Settings, jobs: int,
                 report: Callable[[CellResult], None]) -> list[CellResult]:
    """Run ``cells`` in supervised worker processes, at most ``jobs`` at once (see the module docstring)."""
    from facebench.results.store import Store

    context = multiprocessing.get_context("spawn")
    token, host, me = uuid.uuid4().hex, socket.gethostname(), os.getpid()
    jobs = max(1, min(jobs, len(cells)))
    pending = deque(_Job(cell, _model_name(cell), settings) for cell in cells)
    workers: list[_Worker] = []
    results: list[CellResult] = []
    last_beat = time.monotonic()
    timeout = settings.item_timeout

    def finish(job: _Job, result: CellResult) -> None:
        if job.claimed:
            with Store(store_path) as db:
                db.release_claim(_claim_key(job), token)
        results.append(result)
        report(result)

    def start_worker() -> _Worker:
        ours, theirs = context.Pipe(duplex=True)
        process = context.Process(target=_worker_main, args=(theirs, me, store_path), daemon=True,
                                  name="facebench-cell")
        process.start()
        theirs.close()
        worker = _Worker(process, ours)
        workers.append(worker)
        return worker

    def retire(worker: _Worker) -> None:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(5)
        worker.conn.close()
        workers.remove(worker)

    try:
        while pending or any(w.job for w in workers):
            while pending and sum(1 for w in workers if w.job) < jobs:
                job = pending.popleft()
                if not job.claimed:
                    with Store(store_path) as db:
                        held = db.claim_cell(_claim_key(job), token, me, host, CLAIM_STALE_S, _pid_dead)
                    if held is not None:
                        when = datetime.fromtimestamp(held.since).strftime("%Y-%m-%d %H:%M:%S")
                        where = "" if held.host == host else f" on {held.host}"
                        results.append(CellResult(job.cell, [
                            f"skip {job.name} on {job.cell.protocol.id}{job.cell.chunk_label}: being computed by pid "
                            f"{held.pid}{where} "
                            f"since {when}; rerun later to reuse it"], skipped=True))
                        report(results[-1])
                        continue
                    job.claimed = True
                worker = next((w for w in workers if w.job is None), None) or start_worker()
                worker.conn.send((job.cell, job.settings))
                worker.job, worker.state, worker.since = job, (None, ()), time.monotonic()
            busy = [w for w in workers if w.job]
            wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=0.5)
            now = time.monotonic()
            for worker in busy:
                current = worker.job
                assert current is not None
                job = current
                result = _drain(worker, now)
                if result is not None:
                    worker.job = None
                    finish(job, result)
                elif not worker.process.is_alive():
                    worker.process.join()
                    how = describe_exit(worker.process.exitcode)
                    retire(worker)
                    finish(job, CellResult(job.cell, [
                        f"error: {job.name} on {job.cell.protocol.id}{job.cell.chunk_label}: worker died: {how} "
                        "(its stored items are kept; the next run resumes the cell)"], error=True))
                elif timeout and worker.state[1] and now - worker.since > timeout:
                    retire(worker)
                    restart = _store_timeouts(store_path, job, worker.state, timeout)
                    if restart:
                        pending.appendleft(restart)
                    else:
                        phases = ", ".join(sorted({p for p, _ in worker.state[1]}))
                        finish(job, CellResult(job.cell, [
                            f"error: {job.name} on {job.cell.protocol.id}{job.cell.chunk_label}: timeout: {phases} "
                            f"exceeded {timeout:g} s"],
                            error=True))
            if now - last_beat > HEARTBEAT_S:
                last_beat = now
                with Store(store_path) as db:
                    db.heartbeat_claims(token)
    finally:
        leftover = [j for j in pending if j.claimed] + [w.job for w in workers if w.job is not None]
        for worker in list(workers):
            if worker.job is None and worker.process.is_alive():
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
        for worker in list(workers):
            worker.process.join(2 if worker.job is None else 0)
            retire(worker)
        if leftover:
            with Store(store_path) as db:
                for job in leftover:
                    db.release_claim(_claim_key(job), token)
    return results


def _claim_key(job: _Job) -> str:
    return f"{job.name} on {job.cell.protocol.id}{job.cell.chunk_label}"


def _drain(worker: _Worker, now: float) -> CellResult | None:
    """Read what the worker sent; its cell's result if it came."""
    try:
        while worker.conn.poll():
            kind, payload = worker.conn.recv()
            if kind == "result":
                return payload
            if payload != worker.state:
                worker.state, worker.since = payload, now
    except (EOFError, OSError):
        pass
    return None


def _store_timeouts(store_path: StoreLocation, job: _Job, state: tuple, timeout: float) -> _Job | None:
    """Store the stuck items as failures; the job to restart, or None when that could loop (nothing new)."""
    from facebench.results.store import Store
    from facebench.types import ItemResult

    key, entries = state
    stuck = {item: phase for phase, item in entries if item}
    new = {item: phase for item, phase in stuck.items() if item not in job.timed_out}
    if key is None or not new:
        return None
    with Store(store_path) as db:
        db.add_items(key, [ItemResult(item, None, f"timeout: {phase} exceeded {timeout:g} s")
                           for item, phase in new.items()])
    job.timed_out.update(new)
    # resume, never recompute: --force would delete the failures just stored, and a retry of failed items
    # would run the stuck ones again
    return replace(job, settings=replace(job.settings, force=False, keep_failures=True))
