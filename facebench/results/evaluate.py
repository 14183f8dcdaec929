"""Evaluate one model on one protocol, through the results store.

A complete stored run with the same key (:func:`key_parts`: card, adapter
code, artifacts, runtime, protocol hash, dataset fingerprint, framing) is
reused unless ``force``; an interrupted one is resumed: only its missing items
are run. Items that failed are run again (a stored run's failures are never
final) unless ``keep_failures``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from facebench import assets, extras
from facebench.adapter import Adapter
from facebench.datasets import fingerprint, load_dataset
from facebench.errors import FacebenchError, UsageError
from facebench.protocol import Protocol
from facebench.results.environment import environment
from facebench.results.store import Run, Store, run_key
from facebench.run import activity
from facebench.run.face_boxes import FramingUnavailable, face_box_items, framing
from facebench.run.harness import ItemResult, items_for, run_adapter
from facebench.runtimes import RuntimeUnavailable
from facebench.schemes import scheme_size, shared_points
from facebench.scoring import check_ground_truth, score
from facebench.types import ModelCard, Sample


class UntrainedModelError(FacebenchError, ValueError):
    """A model whose card says its weights are random was asked for accuracy."""


class IncompatibleError(FacebenchError, ValueError):
    """A model that a protocol cannot score (task, landmark scheme or framing), refused before running."""


@dataclass
class Evaluation:
    run: Run
    reused: bool
    failures: list[tuple[str, str]]
    skipped: list[str] = field(default_factory=list)  # bad annotation entries left out (skip_bad)
    partial: bool = False  # one chunk of the cell stored; it completes when all are (see evaluate's chunk)


def card_runtimes(card: ModelCard) -> tuple[str, ...]:
    """The runtimes a model's artifacts serve: ``tflite`` for ``tflite*`` artifacts, ``onnxruntime`` for
    ``onnx*`` ones, else only ``native`` (its own library)."""
    found = tuple(runtime for runtime, prefix in (("tflite", "tflite"), ("onnxruntime", "onnx"))
                  if any(f.startswith(prefix) for f in card.artifacts))
    return found or ("native",)


def check_runtime(card: ModelCard, runtime: str | None) -> None:
    """Refuse, before anything runs, a runtime the model has no artifact for: it would run on its own one
    and be stored under the other's name."""
    if runtime and runtime not in card_runtimes(card):
        raise RuntimeUnavailable(f"{card.name} has no artifact for {runtime}: it runs on "
                                 f"{' or '.join(card_runtimes(card))}")


def default_runtime(adapter_cls: type[Adapter]) -> str:
    """The runtime a model runs on unless one is asked for: TFLite when it has a .tflite artifact, ONNX
    Runtime when it has an ONNX one, else ``native`` (its own library: dlib, OpenCV, libfacedetection,
    numpy), whose version the run key takes from the card's extras."""
    formats = adapter_cls.card.artifacts
    if "tflite" in formats:
        return "tflite"
    return "onnxruntime" if any(f.startswith("onnx") for f in formats) else "native"


def code_hashes(adapter_cls: type) -> dict[str, str]:
    """SHA-256 (first 16 hex digits) of the source of the model's own code, by module name (a user's
    ``file.py`` by its path): every module defining a class of the adapter's MRO in ``facebench.baselines``
    or outside facebench, and the helper modules those import from beside them (same folder tree: a
    user's sibling ``helper.py``, ``baselines/classical.py`` for ``ert.py``). facebench's own machinery
    is covered by :func:`engine_hash`."""
    hashes: dict[str, str] = {}
    queue = [sys.modules.get(cls.__module__) for cls in inspect.getmro(adapter_cls)
             if cls is not Adapter and cls is not object and issubclass(cls, Adapter)
             and not (cls.__module__.startswith("facebench.") and not cls.__module__.startswith("facebench.baselines"))]
    seen: set[str] = set()
    while queue:
        module = queue.pop(0)  # breadth first, in MRO order
        name = getattr(module, "__name__", None)
        if module is None or name is None or name in seen:
            continue
        seen.add(name)
        path = getattr(module, "__file__", None)
        label = path if path and name.startswith("facebench_user_") else name
        try:
            data = open(path, "rb").read() if path and path.endswith(".py") else inspect.getsource(module).encode()
        except (OSError, TypeError):  # no source (built in, frozen, made in memory): its name stands for it
            data = name.encode()
        hashes[str(label)] = hashlib.sha256(data).hexdigest()[:16]
        queue += [m for m in _imported_beside(module) if m.__name__ not in seen]
    return hashes


def _imported_beside(module) -> list:
    """Modules ``module`` uses (imported as modules or through names it imported) whose files lie in its own
    folder or below: the model's helpers, not the libraries it calls."""
    path = getattr(module, "__file__", None)
    if not path:
        return []
    folder = Path(path).resolve().parent
    found = {}
    for value in vars(module).values():
        used = value if inspect.ismodule(value) else sys.modules.get(getattr(value, "__module__", "") or "")
        file = getattr(used, "__file__", None)
        if used is None or used is module or not file or not file.endswith(".py"):
            continue
        resolved = Path(file).resolve()
        installed = not used.__name__.startswith("facebench") and bool(
            {"site-packages", "dist-packages"} & set(resolved.parts)
            or any(resolved.is_relative_to(Path(p).resolve() / "lib") for p in {sys.prefix, sys.base_prefix}))
        if resolved.is_relative_to(folder) and not installed:  # a library is the runtime's, not the model's
            found[used.__name__] = used
    return list(found.values())


# facebench's own code that decides a result: geometry and image reading, runtimes, the harness and
# framing, dataset readers, scoring and the metrics (not the report, the CLI or the farm)
ENGINE = ("types.py", "adapter.py", "schemes.py", "imaging.py", "metric_specs.py", "runtimes", "run", "datasets",
          "scoring", "metrics")


@lru_cache(maxsize=1)
def engine_hash() -> str:
    """SHA-256 (16 hex digits) of facebench's result-deciding source (:data:`ENGINE`): a facebench that
    decodes, crops or scores differently is a new run."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for entry in ENGINE:
        target = root / entry
        for file in sorted(target.rglob("*.py")) if target.is_dir() else [target]:
            digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def artifact_hashes(artifacts) -> dict[str, str]:
    """Each artifact by format: a pinned asset's SHA-256, a file's SHA-256, or the string itself
    (``built into dlib``: neither an asset nor a file)."""
    out: dict[str, str] = {}
    for fmt, value in artifacts.items():
        if value in assets.ASSETS:
            out[fmt] = "sha256:" + assets.get(value).sha256
        elif Path(value).is_file():
            out[fmt] = "sha256:" + assets.sha256_file(Path(value))
        else:
            out[fmt] = value
    return out


def runtime_version(runtime: str) -> str:
    """The runtime package's installed version ('' if not installed), read from its metadata."""
    from importlib.metadata import PackageNotFoundError, version

    for package in {"tflite": ("tflite-runtime", "ai-edge-litert", "tensorflow"),
                    "onnxruntime": ("onnxruntime", "onnxruntime-gpu")}.get(runtime, (runtime,)):
        try:
            return version(package)
        except PackageNotFoundError:
            continue
    return ""


def key_parts(adapter_cls: type[Adapter], runtime: str, protocol: Protocol, dataset_fingerprint: str,
              framing: str) -> dict:
    """Everything a run's numbers depend on, by name; its hash (:func:`run_key`) is the run's key.

    ``settings`` is empty on purpose: batch size, pre/post-processing workers
    and runtime threads decide speed, never outputs (the harness runs each item
    alone through pre/post-processing and a batch's items independently), and
    which samples are scored (``skip_bad``, a subset) is in the fingerprint.
    """
    return {
        "card": card_hash(adapter_cls.card.to_dict()),
        "code": code_hashes(adapter_cls),
        "engine": engine_hash(),
        "artifacts": artifact_hashes(adapter_cls.card.artifacts),
        "runtime": runtime,
        "runtime_version": runtime_version(runtime),
        "protocol_hash": protocol.content_hash,
        "dataset_fingerprint": dataset_fingerprint,
        # the framing's words carry its calibrated transform: a new calibration is a new run
        "framing": framing,
        "settings": {},
        # only for models with extras, so the keys of the others are unchanged
        **({"extras": extras.installed_versions(adapter_cls.card.extras)} if adapter_cls.card.extras else {}),
    }


def card_hash(card: dict) -> str:
    """The key part of a model card (its :meth:`~facebench.types.ModelCard.to_dict`): 16 hex digits."""
    return hashlib.sha256(json.dumps(card, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_settings(threads: int, batch_size: int, workers: int) -> None:
    """Refuse run settings out of range (a batch size of 0 would run nothing and store it as done)."""
    for name, value in (("batch_size", batch_size), ("workers", workers), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{name} must be an integer of at least 1, not {value!r}")


@dataclass
class CellPlan:
    """Everything about one cell decided before its model runs: its samples and their fingerprint, the
    runtime, the framing, the run key and its parts, and its items' keys in order. Chunk ``i`` of
    ``n_chunks`` (``chunk_keys``) is the ``i``-th run of ``protocol.chunk_items`` items: shards and
    distributed workers split a cell by it, and every machine splits it the same way."""

    adapter_cls: type[Adapter]
    protocol: Protocol
    samples: list[Sample]
    fingerprint: str
    runtime: str
    framing: str
    key: str
    parts: dict
    item_keys: tuple[str, ...]
    skipped: list[str] = field(default_factory=list)  # bad annotation entries left out (skip_bad)

    @property
    def n_chunks(self) -> int:
        return max(1, -(-len(self.item_keys) // self.protocol.chunk_items))

    def chunk_keys(self, index: int) -> tuple[str, ...]:
        if not 0 <= index < self.n_chunks:
            raise UsageError(f"{self.adapter_cls.card.name} on {self.protocol.id}: no chunk {index + 1} "
                             f"(it has {self.n_chunks})")
        size = self.protocol.chunk_items
        return self.item_keys[index * size:(index + 1) * size]


def plan_cell(adapter_cls: type[Adapter], protocol: Protocol, *, root=None, samples: Sequence[Sample] | None = None,
              runtime: str | None = None, skip_bad: bool = False) -> CellPlan:
    """Refuse what cannot be scored (task, scheme mapping, framing, ground truth, runtime) before
    anything runs, load the samples (``root`` for a dataset that is not embedded, or ``samples`` given)
    and make the run key."""
    card = adapter_cls.card
    if card.options.get("untrained"):
        raise UntrainedModelError(f"{card.name} has untrained (random) weights: it is for cost and latency only, "
                                  "and no accuracy is reported for it; give it a trained checkpoint")
    framing_words = check_compatible(card, protocol)
    skipped: list[str] = []
    if samples is None:
        samples = protocol_samples(protocol, root, skipped if skip_bad else None)
    samples = list(samples)
    check_ground_truth_scheme(protocol, samples)
    check_ground_truth(protocol, samples)
    fp = fingerprint(samples)
    check_runtime(card, runtime)
    runtime = runtime or default_runtime(adapter_cls)
    parts = key_parts(adapter_cls, runtime, protocol, fp, framing_words)
    keys = tuple(item.key for item in items_for(card.task, samples))
    return CellPlan(adapter_cls, protocol, samples, fp, runtime, framing_words, run_key(parts), parts, keys, skipped)


def evaluate(adapter_cls: type[Adapter], protocol: Protocol, store: Store, *, root=None,
             samples: Sequence[Sample] | None = None, force: bool = False, runtime: str | None = None,
             threads: int = 1, batch_size: int = 8, workers: int = 2, progress: bool = True,
             skip_bad: bool = False, keep_failures: bool = False, chunk: int | None = None) -> Evaluation:
    """Evaluate one model on one protocol through ``store``; returns the stored run and its failures.

    Order: :func:`plan_cell` (refusals, samples, key); reuse a complete run of
    the same key unless ``force``; otherwise run the items not stored yet
    (``batch_size`` per forward, ``workers`` threads for pre/post-processing,
    ``threads`` for the runtime), storing each batch as it ends; then score
    every item (a failed one as an empty answer) and complete the run in one
    transaction. ``skip_bad`` skips bad annotation entries (listed in
    ``Evaluation.skipped``). Items that failed in the stored run (complete or
    not) are deleted and run again, and the run re-scored, unless
    ``keep_failures``.

    ``chunk`` (0-based) runs only that chunk of the cell's items (a shard's
    part, :attr:`CellPlan.chunk_keys`) and records it in the store; the run is
    scored and completed only once every item is stored (here, or by
    ``facebench merge``), else ``Evaluation.partial`` is True.
    """
    check_settings(threads, batch_size, workers)
    for name, flag in (("force", force), ("skip_bad", skip_bad), ("keep_failures", keep_failures),
                       ("progress", progress)):
        if not isinstance(flag, bool):  # "no" would read as true
            raise UsageError(f"{name} must be True or False, not {flag!r}")
    plan = plan_cell(adapter_cls, protocol, root=root, samples=samples, runtime=runtime, skip_bad=skip_bad)
    key = plan.key
    scope = set(plan.chunk_keys(chunk)) if chunk is not None else None

    reused, failed = reuse_or_reset(store, key, scope, force=force, keep_failures=keep_failures)
    if reused is not None:
        return Evaluation(reused, True, failed, plan.skipped)

    activity.set_run(key)  # a supervisor reads what this cell is doing (facebench.results.isolation)
    try:
        run_missing(plan, store, scope, threads=threads, batch_size=batch_size, workers=workers, progress=progress)
    finally:
        activity.set_run(None)
    if chunk is not None:
        store.record_chunk(key, chunk, plan.n_chunks, len(plan.item_keys))
        if not set(plan.item_keys) <= store.item_keys(key):  # other chunks are other shards' work
            run = store.get_run(key)
            assert run is not None
            failures = [(item, error) for item, error in store.failures(key) if item in scope]  # type: ignore[operator]
            return Evaluation(run, False, failures, plan.skipped, partial=True)
    return finish_cell(plan, store)


def reuse_or_reset(store: Store, key: str, scope: set[str] | None, *, force: bool,
                   keep_failures: bool) -> tuple[Run | None, list[tuple[str, str]]]:
    """The stored run of ``key`` when it is reused as it is (marked used), with its failures in ``scope``
    (None: every item); else None, after forgetting what is to be computed again: the run (``force``;
    with a scope, only the scope's items: the other chunks may be other shards' work) or the scope's
    failed items (a failure may be transient) unless ``keep_failures``. A complete run is reused when
    nothing in scope failed, or failures are kept, or only a part is asked for (the other chunks'
    failures are other shards' to run again)."""
    existing = store.get_run(key)
    if existing is None:
        return None, []
    if force:
        if scope is None:
            store.delete_run(key)
        else:
            store.delete_items(key, scope)
        return None, []
    failed = [(item, error) for item, error in store.failures(key) if scope is None or item in scope]
    if existing.status == "complete" and (keep_failures or not failed or scope is not None):
        store.mark_used(key)
        return existing, failed
    if failed and not keep_failures:
        store.delete_items(key, [item for item, _ in failed])
    return None, failed


def run_missing(plan: CellPlan, store: Store, scope: set[str] | None = None, *, threads: int = 1,
                batch_size: int = 8, workers: int = 2, progress: bool = True) -> None:
    """Run the plan's items (those in ``scope``, default all) that the store lacks, storing each batch as
    it ends; the model is loaded only when there is something to run."""
    card = plan.adapter_cls.card
    done = store.item_keys(plan.key)
    wanted = [k for k in plan.item_keys if (scope is None or k in scope)]
    todo = [k for k in wanted if k not in done]
    if store.get_run(plan.key) is not None and not todo:
        return
    runtime_info: dict = {}
    adapter = None
    if todo:
        adapter = plan.adapter_cls()
        with activity.phase("load", [""]):
            runtime_info = adapter.load(runtime=None if plan.runtime == "native" else plan.runtime,
                                        threads=threads) or {}
    store.start_run(plan.key, card.name, plan.protocol.id, plan.protocol.content_hash, plan.fingerprint, plan.runtime,
                    card.to_dict(), environment(runtime_info), plan.parts)
    if adapter is None:
        return
    bar = _progress_bar(len(wanted), len(wanted) - len(todo), f"{card.name} on {plan.protocol.id}", progress)
    try:
        compute_items(adapter, plan, todo, threads=threads, batch_size=batch_size, workers=workers,
                      on_batch=lambda results: store.add_items(plan.key, results), progress=bar.update)
    finally:
        bar.close()


def compute_items(adapter: Adapter, plan: CellPlan, keys: Sequence[str], *, threads: int = 1, batch_size: int = 8,
                  workers: int = 2, on_batch, progress=None) -> None:
    """Run a loaded ``adapter`` over the plan's items named by ``keys``; ``on_batch`` gets each batch's
    results (a landmark face that cannot be boxed first, as a failure)."""
    card = plan.adapter_cls.card
    wanted = set(keys)
    todo = [item for item in items_for(card.task, plan.samples) if item.key in wanted]
    if card.task == "landmarks" and todo:
        todo, unboxed = face_box_items(plan.protocol.face_box, todo, card, threads=threads)
        if unboxed:
            on_batch(unboxed)
    run_adapter(adapter, todo, batch_size=batch_size, workers=workers, on_batch=on_batch,
                progress=progress or (lambda n: None))


def finish_cell(plan: CellPlan, store: Store) -> Evaluation:
    """Score every item of the plan from the store (an item without a stored outcome is stored as a
    failure, never silently absent) and complete the run in one transaction."""
    card = plan.adapter_cls.card
    key = plan.key
    results = {r.key: r for r in store.items(key)}
    lost = [ItemResult(k, None, "no outcome was stored for this item") for k in plan.item_keys if k not in results]
    if lost:
        store.add_items(key, lost)
        results.update({r.key: r for r in lost})
    predictions = {k: r.prediction for k, r in results.items()}
    failures = [(r.key, r.error) for r in results.values() if r.error]
    scored = score(plan.protocol, plan.samples, predictions, card)
    metrics = {**scored.metrics, "failures": len(failures)}
    if plan.framing:
        metrics["framing"] = plan.framing
    store.complete_run(key, metrics, scored.per_item, len(plan.item_keys), len(failures), scored.curves)
    run = store.get_run(key)
    if run is None:
        raise RuntimeError(f"{card.name} on {plan.protocol.id}: run {key!r} was completed but is not in the store")
    return Evaluation(run, False, failures, plan.skipped)


def check_compatible(card: ModelCard, protocol: Protocol) -> str:
    """Refuse, before anything runs, a model the protocol cannot score; return its framing in words
    (empty for detectors).

    A landmark model must share points with the protocol's scheme (all of them
    where the protocol compares ``all``), and its box convention must be one
    the protocol's framing can give it."""
    if protocol.task not in ("any", card.task):
        raise IncompatibleError(f"protocol {protocol.id} is for {protocol.task} models; "
                                f"{card.name} is a {card.task} model")
    if card.task != "landmarks":
        return ""
    if protocol.scheme and protocol.metric in ("nme", "regions", "early_exit", "sweep_nme", "sequence_jitter"):
        try:
            shared = shared_points(card.scheme, protocol.scheme)
        except ValueError:
            raise IncompatibleError(f"{card.name} predicts {card.scheme} points and {protocol.id} scores "
                                    f"{protocol.scheme}: no mapping between them") from None
        if protocol.points == "all" and len(shared) != scheme_size(protocol.scheme):
            raise IncompatibleError(f"{protocol.id} compares all {scheme_size(protocol.scheme)} points of "
                                    f"{protocol.scheme}; {card.name}'s {card.scheme} gives {len(shared)}")
        if protocol.metric == "regions":  # each region is scored on the points of it the model has
            from facebench.metrics.landmarks import REGIONS

            for region in protocol.options.get("regions", ()):
                for part in ("right-eye", "left-eye") if region == "eyes" else (region,):
                    points = REGIONS.get(protocol.scheme, {}).get(part, ((), ()))[0]
                    if not set(points) & set(shared):
                        raise IncompatibleError(f"{protocol.id} scores the {part} region; {card.name}'s "
                                                f"{card.scheme} points include none of it")
    try:
        return framing(protocol.face_box, card, protocol.scheme)
    except FramingUnavailable as exc:
        raise IncompatibleError(f"{protocol.id}: {exc}") from None


def check_ground_truth_scheme(protocol: Protocol, samples: Sequence[Sample]) -> None:
    """Refuse, before running, a dataset whose landmarks are not of the protocol's scheme."""
    if not protocol.scheme:
        return
    found = {f.landmarks.scheme for s in samples for f in s.faces if f.landmarks is not None}
    if found and found != {protocol.scheme}:
        raise IncompatibleError(f"{protocol.source}: the protocol scores {protocol.scheme} ground truth; the dataset's "
                                f"is {', '.join(sorted(found))}")


def protocol_samples(protocol: Protocol, root=None, skipped: list[str] | None = None) -> list[Sample]:
    """The samples a protocol is scored on: its dataset split, transformed as it says."""
    samples = load_dataset(protocol.dataset, root, protocol.split, skipped)
    if protocol.transform == "shifted":
        from facebench.datasets.transforms import shifted_copies

        samples = shifted_copies(samples)
    return samples


def _progress_bar(total: int, initial: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="item", disable=not enabled or None,
                file=sys.stderr, leave=False)
