"""Evaluate one model on one protocol, through the results store.

A complete stored run with the same key (card, runtime, protocol hash,
dataset fingerprint) is reused unless ``force``; an interrupted one is
resumed: only its missing items are run.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata

from facebench import __version__
from facebench.adapter import Adapter
from facebench.datasets import fingerprint, load_dataset
from facebench.face_boxes import face_box_items
from facebench.harness import items_for, run_adapter
from facebench.protocol import Protocol
from facebench.scoring import score
from facebench.store import Run, Store, run_key
from facebench.types import Sample


class UntrainedModelError(ValueError):
    """A model whose card says its weights are random was asked for accuracy."""


@dataclass
class Evaluation:
    run: Run
    reused: bool
    failures: list[tuple[str, str]]
    skipped: list[str] = field(default_factory=list)  # bad annotation entries left out (skip_bad)


def default_runtime(adapter_cls: type[Adapter]) -> str:
    formats = adapter_cls.card.artifacts
    return "tflite" if "tflite" in formats else "onnxruntime"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(runtime_info: dict) -> dict:
    versions = {}
    for package in ("numpy", "tflite-runtime", "onnxruntime", "pillow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"facebench": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
            "cpu": cpu_name(), "cpu_count": os.cpu_count(), "packages": versions, "runtime": runtime_info}


def evaluate(adapter_cls: type[Adapter], protocol: Protocol, store: Store, *, root=None,
             samples: Sequence[Sample] | None = None, force: bool = False, runtime: str | None = None,
             threads: int = 1, batch_size: int = 8, workers: int = 2, progress: bool = True,
             skip_bad: bool = False) -> Evaluation:
    card = adapter_cls.card
    if card.options.get("untrained"):
        raise UntrainedModelError(f"{card.name} has untrained (random) weights: it is for cost and latency only, "
                                  "and no accuracy is reported for it; give it a trained checkpoint")
    if protocol.task not in ("any", card.task):
        raise ValueError(f"protocol {protocol.id} is for {protocol.task} models; {card.name} is a {card.task}")
    skipped: list[str] = []
    if samples is None:
        samples = protocol_samples(protocol, root, skipped if skip_bad else None)
    samples = list(samples)
    fp = fingerprint(samples)
    runtime = runtime or default_runtime(adapter_cls)
    key = run_key(card.to_dict(), runtime, protocol.content_hash, fp)

    existing = store.get_run(key)
    if existing and existing.status == "complete" and not force:
        return Evaluation(existing, True, store.failures(key), skipped)
    if existing and force:
        store.delete_run(key)

    adapter = adapter_cls()
    runtime_info = adapter.load(runtime=runtime, threads=threads) or {}
    store.start_run(key, card.name, protocol.id, protocol.content_hash, fp, runtime, card.to_dict(),
                    environment(runtime_info))
    items = items_for(card.task, samples)
    done = store.item_keys(key)
    todo = [item for item in items if item.key not in done]
    if card.task == "landmarks" and todo:
        todo, unboxed = face_box_items(protocol.face_box, todo, threads=threads)
        store.add_items(key, unboxed)

    bar = _progress_bar(len(items), len(done), f"{card.name} on {protocol.id}", progress)
    try:
        run_adapter(adapter, todo, batch_size=batch_size, workers=workers,
                    on_batch=lambda results: store.add_items(key, results), progress=bar.update)
    finally:
        bar.close()

    results = {r.key: r for r in store.items(key)}
    predictions = {k: r.prediction for k, r in results.items()}
    failures = [(r.key, r.error) for r in results.values() if r.error]
    metrics, per_item = score(protocol, samples, predictions, card)
    curves = {k[1:]: metrics.pop(k) for k in [k for k in metrics if k.startswith("_")]}
    metrics["failures"] = len(failures)
    store.complete_run(key, metrics, per_item, len(items), len(failures), curves)
    return Evaluation(store.get_run(key), False, failures, skipped)


def protocol_samples(protocol: Protocol, root=None, skipped: list[str] | None = None) -> list[Sample]:
    """The samples a protocol is scored on: its dataset split, transformed as it says."""
    samples = load_dataset(protocol.dataset, root, protocol.split, skipped)
    if protocol.transform == "shifted":
        from facebench.datasets.mini import shifted_copies

        samples = shifted_copies(samples)
    return samples


def _progress_bar(total: int, initial: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="item", disable=not enabled or None,
                file=sys.stderr, leave=False)
