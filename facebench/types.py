"""Core value types shared by datasets, adapters, the harness and the metrics.

Coordinate convention (every adapter, loader and metric holds to it):

* positions are in pixels of the original image, x to the right, y down;
* the centre of the top-left pixel is (0, 0), so an image of width W spans
  x in [-0.5, W - 0.5] and pixel (row r, column c) has its centre at (c, r);
* a box is (x0, y0, x1, y1) in those coordinates; its width is x1 - x0
  (no "+1": areas are continuous, so IoU is scale-invariant).

Formats that count from 1 (iBUG ``.pts``, MATLAB) subtract 1 when read;
models that emit normalised [0, 1] coordinates over the image extent map them
with ``x = u * W - 0.5``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facebench.schemes import scheme_size

TASKS = ("detector", "landmarks")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
BOX_CONVENTIONS = ("tight-68", "dlib-hog", "mediapipe-roi", "image", "wflw-rect")  # see facebench.run.framing


@dataclass(frozen=True)
class Box:
    """An axis-aligned box (x0, y0, x1, y1) in image pixels."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2)

    def as_array(self) -> np.ndarray:
        return np.array([self.x0, self.y0, self.x1, self.y1], dtype=np.float64)

    @classmethod
    def from_array(cls, values) -> Box:
        x0, y0, x1, y1 = (float(v) for v in values)
        return cls(x0, y0, x1, y1)

    @classmethod
    def around(cls, points: np.ndarray) -> Box:
        """The tight box around a set of (x, y) points."""
        pts = np.asarray(points, dtype=np.float64)[:, :2]
        (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
        return cls(float(x0), float(y0), float(x1), float(y1))


@dataclass(frozen=True, eq=False)
class Landmarks:
    """Points of a named landmark scheme, shape (N, 2) or (N, 3) with depth.

    ``visible`` (bool, shape (N,)) says which points the annotator labelled;
    None means every point is. A point marked False (COCO ``v = 0``) has no
    position: its coordinates are whatever the file stored (COCO writes 0, 0)
    and must not be scored or drawn. Occluded points whose position was
    estimated by the annotator (COCO ``v = 1``) count as labelled.
    """

    points: np.ndarray
    scheme: str
    visible: np.ndarray | None = None

    def __post_init__(self):
        pts = np.asarray(self.points, dtype=np.float64)
        expected = scheme_size(self.scheme)
        if pts.ndim != 2 or pts.shape[1] not in (2, 3) or pts.shape[0] != expected:
            raise ValueError(
                f"scheme {self.scheme!r} has {expected} points of (x, y[, z]); got shape {pts.shape}"
            )
        object.__setattr__(self, "points", pts)
        if self.visible is not None:
            vis = np.asarray(self.visible)
            if vis.shape != (expected,):
                raise ValueError(f"visible must have shape ({expected},) for scheme {self.scheme!r}; got {vis.shape}")
            if vis.dtype != bool and not np.isin(vis, (0, 1)).all():
                raise ValueError("visible must be booleans (or 0/1)")
            object.__setattr__(self, "visible", vis.astype(bool))


@dataclass(frozen=True)
class Face:
    """One annotated face: its box and, where annotated, its landmarks."""

    box: Box
    landmarks: Landmarks | None = None


@dataclass(frozen=True)
class Sample:
    """One image of a dataset with its annotations; the image is read on demand.

    ``image`` is a callable returning an RGB ``uint8`` array of shape (H, W, 3);
    ``image_key`` identifies the image content for dataset fingerprints.
    ``ignore`` boxes are faces (or crowds) that count neither way in detection.
    """

    id: str
    image: Callable[[], np.ndarray]
    faces: tuple[Face, ...] = ()
    ignore: tuple[Box, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)
    image_key: str = ""


@dataclass(frozen=True, eq=False)
class Detection:
    """A detected face: box, confidence and optional keypoints (K, 2)."""

    box: Box
    score: float
    keypoints: np.ndarray | None = None


@dataclass(frozen=True)
class StageOutput:
    """What an early-exit model knows after one stage of its cascade."""

    landmarks: Landmarks
    estimated_error: float


@dataclass(frozen=True)
class Prediction:
    """An adapter's answer for one sample (detector) or one face (landmarks)."""

    detections: tuple[Detection, ...] | None = None
    landmarks: Landmarks | None = None
    stages: tuple[StageOutput, ...] = ()


@dataclass(frozen=True)
class ModelCard:
    """What a model is and costs, independent of any run.

    ``macs`` maps stage name to multiply-accumulates for one forward pass of
    that stage (one stage for single-shot models); a model that is not a
    network (a Haar cascade, regression trees) leaves it empty and says what
    it costs instead in ``options["cost"]``. ``artifacts`` maps a format
    (``tflite``, ``onnx``, ...) to an asset name or a file path. An input size
    of -1 means the model takes whole images of any size. ``box_convention``
    (landmark models) names the kind of face box the model was trained on
    (:mod:`facebench.run.framing`: ``tight-68``, ``dlib-hog``, ``mediapipe-roi``,
    ``image``, ``wflw-rect``); ground-truth framing draws that kind. Options the
    harness reads: ``untrained`` (random weights: never scored for accuracy),
    ``early_exit`` (a cascade whose predictions carry every stage with an
    error estimate), ``stage_operations`` and ``operating_points`` (see
    :func:`facebench.scoring.score_early_exit`), ``detector`` (the detector a
    landmark model finds faces with by default) and ``boxes`` (a detector's:
    the convention its boxes are of, so detector framing can re-box them).
    """

    name: str
    task: str
    scheme: str
    input_shape: tuple[int, ...]
    input_range: tuple[float, float]
    macs: Mapping[str, int]
    artifacts: Mapping[str, str]
    description: str = ""
    source: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    box_convention: str = "tight-68"
    extras: tuple[str, ...] = ()  # facebench extras it needs beyond the base install (facebench.extras)
    platforms: tuple[str, ...] = ()  # where its artifacts run, e.g. ("linux-x86_64",); empty: anywhere

    def __post_init__(self):
        if not _SAFE_NAME.fullmatch(self.name) or ".." in self.name:  # it names stored runs and figure files
            raise ValueError(f"model name {self.name!r}: use letters, digits, '.', '_' and '-' only, starting with "
                             "a letter or digit")
        if self.task not in TASKS:
            raise ValueError(f"model {self.name!r}: task must be one of {TASKS}, not {self.task!r}")
        scheme_size(self.scheme)
        if not self.macs and not self.options.get("cost"):
            raise ValueError(f"model {self.name!r}: give macs per stage, or options['cost'] for a non-network model")
        if any(int(v) <= 0 for v in self.macs.values()):
            raise ValueError(f"model {self.name!r}: macs must give a positive count per stage")
        if not self.artifacts:
            raise ValueError(f"model {self.name!r}: a card names at least one artifact")
        if self.options.get("boxes", "image") not in BOX_CONVENTIONS:  # the kind of box a detector draws
            raise ValueError(f"model {self.name!r}: options['boxes'] must be one of {BOX_CONVENTIONS}, "
                             f"not {self.options['boxes']!r}")
        if self.box_convention not in BOX_CONVENTIONS:
            raise ValueError(f"model {self.name!r}: box_convention must be one of {BOX_CONVENTIONS}, "
                             f"not {self.box_convention!r}")

    @property
    def total_macs(self) -> int:
        return int(sum(self.macs.values()))

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "task": self.task,
            "scheme": self.scheme,
            "input_shape": list(self.input_shape),
            "input_range": list(self.input_range),
            "macs": {k: int(v) for k, v in self.macs.items()},
            "artifacts": dict(self.artifacts),
            "description": self.description,
            "source": self.source,
            "options": dict(self.options),
            "box_convention": self.box_convention,
            # only when set, so the cards (and run keys) of models without them are unchanged
            **({"extras": list(self.extras)} if self.extras else {}),
            **({"platforms": list(self.platforms)} if self.platforms else {}),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ModelCard:
        """The card :meth:`to_dict` wrote (a stored run's), for scoring a run without its model's code."""
        data = dict(data)
        for name in ("input_shape", "input_range", "extras", "platforms"):
            if name in data:
                data[name] = tuple(data[name])
        return cls(**data)


@dataclass
class ItemResult:
    """One item's outcome: its prediction, or the error that stopped it, and the seconds of each phase."""

    key: str
    prediction: Prediction | None
    error: str | None
    preprocess_s: float = 0.0
    forward_s: float = 0.0
    postprocess_s: float = 0.0


def face_key(sample_id: str, index: int) -> str:
    """The item key of a sample's ``index``-th face (how landmark results are stored and scored)."""
    return f"{sample_id}#{index}"


def detection_arrays(prediction: Prediction | None) -> tuple[np.ndarray, np.ndarray]:
    """A prediction's detections as boxes (D, 4: x0, y0, x1, y1) and scores (D,); no prediction (a failed
    item) and no detections both give empty arrays, so a failure scores as an empty answer."""
    dets = prediction.detections if prediction is not None and prediction.detections is not None else ()
    boxes = np.array([d.box.as_array() for d in dets], dtype=np.float64).reshape(-1, 4)
    return boxes, np.array([d.score for d in dets], dtype=np.float64)
