"""Datasets by name: each a loader ``load(root) -> list[Sample]``.

``mini`` is embedded (pulled from a registry package); the standard
benchmarks need a ``--root`` pointing at the user's copy.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from facebench.types import Sample


def _mini(root):
    from facebench.datasets import mini
    return mini.load(root)


# name -> (loader, needs a root folder)
DATASETS: dict[str, tuple[Callable[[Path | None], list[Sample]], bool]] = {
    "mini": (_mini, False),
}


def load_dataset(name: str, root: str | Path | None = None) -> list[Sample]:
    try:
        loader, needs_root = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None
    if needs_root and root is None:
        raise ValueError(f"dataset {name!r} needs --root pointing at your copy")
    return loader(Path(root) if root else None)


def is_embedded(name: str) -> bool:
    return name in DATASETS and not DATASETS[name][1]


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
