"""The four-method adapter contract every model plugs in through.

The harness relies on these four methods and the class's ``card`` alone:

``load(runtime=None, threads=1) -> dict``
    Build the runtime session(s) from the card's artifacts; return a mapping
    that names the runtime(s) and versions used (recorded with results).
``preprocess(sample, face_box=None) -> (inputs, context)``
    numpy only, thread-safe: the model inputs for *one* item (no batch axis)
    and whatever ``postprocess`` needs to map outputs back (crop matrix, scale).
    Landmark models receive the face box the protocol chose: a ``Box``, or the
    ``Detection`` itself when the protocol frames faces with a detector.
``forward(inputs) -> outputs``
    The only place a model runs. Takes a batch (every array has a leading
    batch axis) and returns a dict of arrays with the same leading axis. Its
    time is what "latency" means in facebench.
``postprocess(outputs, context) -> Prediction``
    numpy only, thread-safe: one item's outputs (batch axis removed) to a
    :class:`~facebench.types.Prediction` in original-image pixel coordinates
    (see the convention in :mod:`facebench.types`).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

from facebench.schemes import scheme_size
from facebench.types import Box, Detection, ModelCard, Prediction, Sample


class Adapter(abc.ABC):
    """A model behind the four methods; ``card`` (a class attribute) says what it is and costs."""

    card: ClassVar[ModelCard]

    @classmethod
    def unavailable(cls) -> tuple[str, str | None] | None:
        """``(why, fix)`` when this model cannot load here for a reason its card's ``extras`` and
        ``platforms`` do not say (a file the user brings); None when it can. Checked, without loading,
        by ``facebench models``, ``predict`` and ``run``."""
        return None

    @abc.abstractmethod
    def load(self, runtime: str | None = None, threads: int = 1) -> dict[str, str]:
        """Build the runtime session(s) from the card's artifacts, once, before any item.

        ``runtime`` (``tflite``, ``onnxruntime``; None: the card's first) and
        ``threads`` (the runtime's intra-op threads). Returns what ran it,
        e.g. ``{"runtime": "tflite", "version": "2.14.0"}``: stored with every result.
        """

    @abc.abstractmethod
    def preprocess(self, sample: Sample, face_box: Box | Detection | None = None) -> tuple[dict[str, np.ndarray], Any]:
        """One item's model inputs, without a batch axis, and the context ``postprocess`` needs.

        Runs on worker threads: numpy only, no shared state. ``face_box``
        (landmark models) is the face's box in image pixels in the card's
        ``box_convention``, or a detection (box and keypoints) under detector
        framing; None means the whole image. Images come from ``sample.image()``
        as RGB uint8 (H, W, 3).
        """

    @abc.abstractmethod
    def forward(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on a batch: every input and output array has a leading batch axis of the same
        length. The only place the model runs; its time is what facebench calls latency."""

    @abc.abstractmethod
    def postprocess(self, outputs: dict[str, np.ndarray], context: Any) -> Prediction:
        """One item's outputs (batch axis removed) to a :class:`~facebench.types.Prediction` in original-image
        pixels (pixel centres at integers, see :mod:`facebench.types`). Runs on worker threads: numpy only."""


def object_input(value: Any) -> np.ndarray:
    """A 0-d object array holding ``value``: lets a whole image (any size) travel
    in a batch of inputs, which the harness stacks into a (batch,) object array."""
    holder = np.empty((), dtype=object)
    holder[()] = value
    return holder


def face_region(face_box: Box | Detection | None, image: np.ndarray) -> Box:
    """The box a landmark model works from: a detection's box, the given box, or
    (no box) the whole image."""
    if isinstance(face_box, Detection):
        return face_box.box
    if face_box is None:
        return Box(-0.5, -0.5, image.shape[1] - 0.5, image.shape[0] - 0.5)
    return face_box


def check_prediction(prediction: Any, card: ModelCard) -> None:
    """Raise ValueError unless ``prediction`` is finite and fits the card."""
    if not isinstance(prediction, Prediction):
        raise ValueError(f"postprocess returned {type(prediction).__name__}, not a Prediction")
    if card.task == "detector":
        if prediction.detections is None:
            raise ValueError("a detector's prediction has no detections (use an empty tuple for none)")
        for det in prediction.detections:
            values = [det.box.x0, det.box.y0, det.box.x1, det.box.y1, det.score]
            if not np.all(np.isfinite(values)):
                raise ValueError(f"detection with non-finite box or score: {values}")
            if det.keypoints is not None:
                kp = np.asarray(det.keypoints)
                expected = (scheme_size(card.scheme), 2)
                if kp.shape != expected:
                    raise ValueError(f"detection keypoints of shape {kp.shape}; scheme {card.scheme} needs {expected}")
                if not np.all(np.isfinite(kp)):
                    raise ValueError("detection keypoints contain NaN or infinity")
    else:
        lm = prediction.landmarks
        if lm is None:
            raise ValueError("a landmark model's prediction has no landmarks")
        if lm.scheme != card.scheme:
            raise ValueError(f"landmarks of scheme {lm.scheme!r}, card declares {card.scheme!r}")
        if not np.all(np.isfinite(lm.points)):
            raise ValueError("landmarks contain NaN or infinity")
        for k, stage in enumerate(prediction.stages):
            if not np.all(np.isfinite(stage.landmarks.points)) or not np.isfinite(stage.estimated_error):
                raise ValueError(f"stage {k} output is not finite")
