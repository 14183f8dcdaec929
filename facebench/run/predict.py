"""Predictions of any registered model on a user's own images, and overlays.

A detector runs on the whole image. A landmark model needs faces first: a
detector (the one its card names, else BlazeFace short range) finds them and the landmark model
runs on each detection, receiving the box *and* the detector's keypoints so
crops can be rotated by the eye line, as MediaPipe's pipeline does. When the
detector's boxes are of another calibrated kind than the model was trained on
(its card's ``options["boxes"]``), the box is re-boxed into the model's
convention (:func:`facebench.run.framing.detector_face`). A model that cannot
run in this install (a missing extra) is one error line naming the fix. An image
with no face gives an empty result, not an error; an unreadable image gives
an error naming the file and the other images still run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facebench import registry
from facebench.adapter import Adapter
from facebench.errors import UsageError
from facebench.imaging import ImageError, read_image
from facebench.paths import write_atomic
from facebench.run.framing import detector_face
from facebench.run.harness import run_one
from facebench.types import Detection, Sample


@dataclass
class ImageResult:
    path: str
    width: int = 0
    height: int = 0
    detections: list[Detection] = field(default_factory=list)
    landmarks: list[np.ndarray] = field(default_factory=list)  # one (N, 2|3) array per detection
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        faces = []
        for k, det in enumerate(self.detections):
            face = {"box": [round(float(v), 2) for v in det.box.as_array()], "score": round(float(det.score), 4)}
            if det.keypoints is not None:
                face["keypoints"] = np.round(np.asarray(det.keypoints, dtype=float), 2).tolist()
            if k < len(self.landmarks):
                face["landmarks"] = np.round(self.landmarks[k], 2).tolist()
            faces.append(face)
        return {"image": self.path, "width": self.width, "height": self.height, "faces": faces,
                "warnings": self.warnings, "error": self.error}


def load_model(name: str, threads: int = 1) -> Adapter:
    adapter = registry.resolve(name)()
    adapter.load(threads=threads)
    return adapter


def _constant(image: np.ndarray) -> Callable[[], np.ndarray]:
    """An image reader that returns an array already read."""
    def read() -> np.ndarray:
        return image
    return read


def predict_images(model: str, paths: Sequence[str | Path], detector: str | None = None,
                   threads: int = 1) -> list[ImageResult]:
    """One result per image, in order; failures are recorded per image.

    ``detector`` defaults to the one the landmark model's card names
    (``options["detector"]``), else BlazeFace short range.
    """
    registry.check_usable(model, with_detector=detector is None)
    if detector is not None:
        registry.check_usable(detector)
    adapter = load_model(model, threads)
    if adapter.card.task == "detector":
        finder = adapter
    else:
        finder = load_model(detector or adapter.card.options.get("detector", "blazeface-short"), threads)
    if finder.card.task != "detector":
        raise UsageError(f"{detector} is not a detector")
    results = []
    for path in paths:
        result = ImageResult(str(path))
        results.append(result)
        try:
            image = read_image(path)  # a decompression bomb or a too-large image: ImageError naming it
        except ImageError as exc:
            result.error = str(exc)
            continue
        except Exception as exc:  # noqa: BLE001 - one bad image must not stop the others
            result.error = f"cannot read image {path}: {type(exc).__name__}: {exc}"
            continue
        result.height, result.width = image.shape[:2]
        sample = Sample(Path(path).name, _constant(image))
        try:
            found, _ = run_one(finder, sample)
            result.detections = list(found.detections or ())
            if adapter is not finder:
                boxes = finder.card.options.get("boxes")
                for det in result.detections:
                    # the box the landmark model was trained on, when the detector draws another kind
                    face = detector_face(det, boxes, adapter.card.box_convention)
                    prediction, warning = run_one(adapter, sample, face)
                    if prediction.landmarks is None:
                        raise ValueError(f"{adapter.card.name} returned no landmarks")
                    result.landmarks.append(prediction.landmarks.points)
                    if warning:
                        result.warnings.append(warning)
        except Exception as exc:  # noqa: BLE001 - one bad image must not stop the others
            result.error = f"{path}: {type(exc).__name__}: {exc}"
    return results


def draw_overlay(image: np.ndarray, result: ImageResult):
    """A PIL image: boxes with scores, detector keypoints, and landmarks."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    size = max(canvas.size)
    line = max(1, size // 400)
    dot = max(1.0, size / 500)
    for k, det in enumerate(result.detections):
        x0, y0, x1, y1 = (float(v) for v in det.box.as_array())
        draw.rectangle([x0, y0, x1, y1], outline=(0, 255, 0), width=line)
        draw.text((x0 + 2, max(0.0, y0 - 12)), f"{det.score:.2f}", fill=(0, 255, 0))
        if det.keypoints is not None:
            for x, y in np.asarray(det.keypoints)[:, :2]:
                draw.ellipse([x - 2 * dot, y - 2 * dot, x + 2 * dot, y + 2 * dot], fill=(255, 64, 64))
        if k < len(result.landmarks):
            for x, y in result.landmarks[k][:, :2]:
                draw.ellipse([x - dot, y - dot, x + dot, y + dot], fill=(0, 200, 255))
    return canvas


def write_overlay(path: str | Path, image: np.ndarray, result: ImageResult) -> Path:
    """Draw and write a PNG atomically."""
    import io

    buffer = io.BytesIO()
    draw_overlay(image, result).save(buffer, format="PNG")
    path = Path(path)
    write_atomic(path, buffer.getvalue())
    return path
