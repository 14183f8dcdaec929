"""The face box a landmark model is given, in the convention it was trained on.

Landmark models are trained on face boxes of one kind, and are sensitive to
it: dlib's 68-point model given the tight box of the annotated points
instead of its HOG detector's box scores several times worse. So every
landmark card names its ``box_convention``, and under ground-truth framing
the harness draws the box of that convention from the ground-truth
landmarks, by one documented transform per convention:

``tight-68``
    the tight box of the 68 iBUG points (300-W's rule): exact where the
    ground truth has all 68 (iBUG-68, WFLW-98 through its exact mapping),
    calibrated below where it has fewer (COFW-29).
``dlib-hog``
    the box dlib's HOG frontal detector draws (upsampled once), on which
    dlib's 68-point model was trained.
``mediapipe-roi``
    BlazeFace short range's detection box, which MediaPipe turns into the
    mesh's crop (square on the long side, x1.5).
``image``
    no box: the model takes the whole image.
``wflw-rect``
    WFLW's list rectangles. Not calibrated (that needs WFLW's images, which
    no registry ships): a model trained on them runs with detector framing
    only, and ground-truth framing refuses it before running.

The transform: the ground truth is mapped onto iBUG-68 (exact mappings,
:mod:`facebench.schemes`), and the *reference box* is the tight box of
either its inner points (17-67: brows, eyes, nose, mouth) or all its points,
whichever places that convention's boxes more consistently on the calibration
faces (the smaller median absolute deviation of the centre offset): dlib's
HOG box follows the inner features (on a turned face the jaw swings the
tight box off them), BlazeFace's box spans the whole face, jaw included. A
convention's box is the reference box moved by ``(dx, dy)`` of its width and
height and scaled by ``(sw, sh)``: the medians, over the calibration faces, of
(box centre - reference centre) / reference size and box size / reference size.

Calibration (``python -m facebench.run.framing`` rewrites ``framing_calibration.json``;
a test checks the stored file against a fresh run): unannotated photos pulled
from registry packages (``calib-*`` assets; never a test set that facebench
reports). dlib's HOG detector finds the faces; dlib's 68-point model gives
each face's shape from that box (so shape and box stand in the relation the
model learned); BlazeFace short range's best-overlapping detection gives the
``mediapipe-roi`` box.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from facebench.errors import FacebenchError
from facebench.schemes import convert, shared_points
from facebench.types import Box, Detection, Landmarks

INNER = tuple(range(17, 68))  # iBUG-68 brows, eyes, nose and mouth
REFERENCES = {"inner": INNER, "all": tuple(range(68))}  # the point sets a reference box may span
CALIBRATION_FILE = "framing_calibration.json"


@dataclass(frozen=True)
class Convention:
    name: str
    description: str
    calibrated: bool  # a transform from ground-truth landmarks exists


CONVENTIONS: dict[str, Convention] = {c.name: c for c in (
    Convention("tight-68", "tight box of the 68 iBUG points", True),
    Convention("dlib-hog", "dlib's HOG frontal face detector box (upsampled once)", True),
    Convention("mediapipe-roi", "BlazeFace short-range detection box, MediaPipe's source of the mesh crop", True),
    Convention("image", "the whole image, no face box", True),
    Convention("wflw-rect", "WFLW's list rectangles (not calibrated: no WFLW images on a registry)", False),
)}


class FramingError(FacebenchError, ValueError):
    """A model's box convention cannot be drawn from this ground truth."""


def get_convention(name: str) -> Convention:
    try:
        return CONVENTIONS[name]
    except KeyError:
        raise FramingError(f"unknown box convention {name!r}; known: {', '.join(CONVENTIONS)}") from None


@lru_cache(maxsize=1)
def calibration() -> dict:
    """The stored calibration: provenance and, per face, its 68-point shape and convention boxes."""
    return json.loads(resources.files("facebench.run").joinpath(CALIBRATION_FILE).read_text())


def check_framing(convention: str, scheme: str) -> None:
    """Raise FramingError unless ground-truth framing can draw ``convention`` boxes for ``scheme``."""
    conv = get_convention(convention)
    if not conv.calibrated:
        raise FramingError(f"box convention {convention!r} is not calibrated against landmarks ({conv.description}): "
                           "evaluate this model on a protocol with face_box.source = \"detector\"")
    if convention == "image":
        return
    try:
        available = shared_points(scheme, "ibug68")
    except ValueError:
        available = []
    if len([i for i in INNER if i in available]) < 4:
        raise FramingError(f"ground truth of scheme {scheme!r} shares too few inner points with iBUG-68 to "
                           "place a face box")


def _relation(box: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(dx, dy, sw, sh) of ``box`` relative to ``reference`` (both x0, y0, x1, y1)."""
    rw, rh = reference[2] - reference[0], reference[3] - reference[1]
    return np.array([((box[0] + box[2]) - (reference[0] + reference[2])) / 2 / rw,
                     ((box[1] + box[3]) - (reference[1] + reference[3])) / 2 / rh,
                     (box[2] - box[0]) / rw, (box[3] - box[1]) / rh])


def _tight(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


@dataclass(frozen=True)
class Transform:
    """How a convention's box is drawn from the points a ground truth has."""

    reference: str  # "inner" or "all": which points' tight box it starts from
    points: tuple[int, ...]  # the iBUG-68 indices of that box (those the ground truth has)
    shift: tuple[float, float, float, float]  # (dx, dy, sw, sh), medians over the calibration faces
    spread: float  # median absolute deviation of the centre offset (dx plus dy) over those faces


@lru_cache(maxsize=64)
def transform(convention: str, available: tuple[int, ...] = REFERENCES["all"]) -> Transform:
    """The transform to a ``convention`` box from the reference box (inner or all points, of those
    ``available``) that places the calibration faces' boxes with the smaller spread."""
    found = candidates(convention, available)
    if not found:
        raise FramingError("too few ground-truth points to place a face box")
    return min(found, key=lambda t: t.spread)


def candidates(convention: str, available: tuple[int, ...] = REFERENCES["all"]) -> list[Transform]:
    """The calibrated transform from each reference box the ``available`` points can span."""
    candidates = []
    for name, reference in REFERENCES.items():
        points = tuple(i for i in reference if i in set(available))
        if len(points) < 4:
            continue
        relations = []
        for face in calibration()["faces"]:
            shape = np.asarray(face["shape68"], dtype=np.float64)
            box = _tight(shape) if convention == "tight-68" else face["boxes"].get(convention)
            if box is not None:
                relations.append(_relation(np.asarray(box, dtype=np.float64), _tight(shape[list(points)])))
        if not relations:
            raise FramingError(f"the calibration has no faces with a {convention!r} box")
        rel = np.array(relations)
        median = np.median(rel, axis=0)
        mad = np.median(np.abs(rel - median), axis=0)
        shift = (float(median[0]), float(median[1]), float(median[2]), float(median[3]))
        candidates.append(Transform(name, points, shift, float(mad[0] + mad[1])))
    return candidates


def apply(reference: Box, t: tuple[float, float, float, float]) -> Box:
    dx, dy, sw, sh = t
    cx, cy = reference.center
    cx, cy = cx + dx * reference.width, cy + dy * reference.height
    w, h = sw * reference.width, sh * reference.height
    return Box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def ground_truth_box(landmarks: Landmarks, convention: str) -> Box | None:
    """The box of ``convention`` drawn from ground-truth landmarks (None for ``image``).

    Only labelled points count (``landmarks.visible``)."""
    check_framing(convention, landmarks.scheme)
    if convention == "image":
        return None
    points = convert(landmarks.points[:, :2], landmarks.scheme, "ibug68")
    visible = getattr(landmarks, "visible", None)
    if visible is not None:
        labelled = np.zeros(len(points), bool)
        labelled[shared_points(landmarks.scheme, "ibug68")] = True
        mapped = convert(np.asarray(visible, float)[:, None], landmarks.scheme, "ibug68")[:, 0]
        points[~(labelled & (mapped > 0.5))] = np.nan
    have = ~np.isnan(points).any(axis=1)
    if convention == "tight-68" and have.all():
        return Box.around(points)
    if int(have[list(INNER)].sum()) < 4:
        raise FramingError(f"only {int(have[list(INNER)].sum())} labelled inner points: too few to place a face box")
    t = transform(convention, tuple(int(i) for i in np.flatnonzero(have)))
    return apply(Box.around(points[list(t.points)]), t.shift)


def ground_truth_face(landmarks: Landmarks, convention: str) -> Box | Detection | None:
    """What a model of ``convention`` is given under ground-truth framing: the box, and for
    ``mediapipe-roi`` a detection whose first two keypoints are the eye centres, because MediaPipe
    rotates the mesh's crop by BlazeFace's eye line (keypoints in BlazeFace's order: eyes, nose tip,
    mouth centre, ear tragions; the tragions stand in as the jaw's ends)."""
    box = ground_truth_box(landmarks, convention)
    if convention != "mediapipe-roi" or box is None:
        return box
    points = convert(landmarks.points[:, :2], landmarks.scheme, "ibug68")
    groups = (range(36, 42), range(42, 48), (30,), (51, 57), (0,), (16,))
    keypoints = np.array([np.nanmean(points[list(g)], axis=0) for g in groups])
    if np.isnan(keypoints[:2]).any():
        return box  # no eyes in this ground truth: an upright crop
    return Detection(box, 1.0, np.nan_to_num(keypoints, nan=0.0))


@lru_cache(maxsize=16)
def box_relation(source: str, target: str) -> tuple[float, float, float, float] | None:
    """(dx, dy, sw, sh) that turns a ``source`` box into a ``target`` box: the medians over the calibration
    faces that have both (``tight-68`` is every face's tight 68-point box). None when they are the same
    convention or either is not calibrated with boxes (``image``, ``wflw-rect``, an unknown name)."""
    if source == target or "image" in (source, target):
        return None
    relations = []
    for face in calibration()["faces"]:
        boxes = {**face["boxes"], "tight-68": _tight(np.asarray(face["shape68"], dtype=np.float64))}
        if boxes.get(source) is not None and boxes.get(target) is not None:
            relations.append(_relation(np.asarray(boxes[target], np.float64), np.asarray(boxes[source], np.float64)))
    if not relations:
        return None
    median = np.median(np.array(relations), axis=0)
    return float(median[0]), float(median[1]), float(median[2]), float(median[3])


def detector_face(detection: Detection, detector_boxes: str | None, convention: str) -> Detection:
    """A detection re-boxed into the landmark model's ``convention`` when the detector's boxes are of another
    calibrated kind (its card's ``options["boxes"]``): BlazeFace's box given to dlib's 68-point model
    becomes the box dlib's HOG detector would have drawn, by :func:`box_relation`. Keypoints are kept."""
    t = box_relation(detector_boxes, convention) if detector_boxes else None
    if t is None:
        return detection
    return Detection(apply(detection.box, t), detection.score, detection.keypoints)


def describe_detector(name: str, detector_boxes: str | None, convention: str) -> str:
    """How detector framing boxes a face, for results and reports."""
    t = box_relation(detector_boxes, convention) if detector_boxes else None
    if t is None:
        return f"detector {name}"
    dx, dy, sw, sh = t
    return f"detector {name} -> {convention} (calibrated: {dx:+.3f}, {dy:+.3f}, x{sw:.3f}, x{sh:.3f})"


def describe(convention: str) -> str:
    """How ground-truth framing draws a ``convention`` box, with the transform (for results and reports)."""
    if convention == "image":
        return "whole image"
    if convention == "tight-68":
        return "ground truth: tight box of the 68 points"
    t = transform(convention)
    dx, dy, sw, sh = t.shift
    return (f"ground truth -> {convention} ({t.reference}-point box, calibrated: "
            f"{dx:+.3f}, {dy:+.3f}, x{sw:.3f}, x{sh:.3f})")


# --- making the calibration --------------------------------------------------------------------

CALIBRATION_PHOTOS = ("calib-insightface-t1.jpg", "calib-insightface-tom-hanks.png", "calib-pyfeat-multi_face.jpg",
                      "calib-pyfeat-single_face.jpg", "calib-pyfeat-0-f1-su-ph.jpg", "calib-pyfeat-0-f15-hao-ph.jpg",
                      "calib-pyfeat-15-f13-anc-ph.jpg", "calib-pyfeat-45-m7-di-ph.jpg")


def calibrate() -> dict:
    """Run the calibration (needs dlib, the dlib model and BlazeFace; pulls the photos)."""
    import dlib

    from facebench import __version__
    from facebench.assets import asset_path, get
    from facebench.imaging import ImageFile
    from facebench.metrics.detection import box_iou
    from facebench.registry import resolve
    from facebench.run.harness import items_for, run_adapter
    from facebench.types import Sample

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(asset_path("dlib_shape_predictor_68_face_landmarks.dat")))
    blazeface = resolve("blazeface-short")()
    blazeface.load()
    faces = []
    for name in CALIBRATION_PHOTOS:
        image_file = ImageFile(asset_path(name))
        image = np.ascontiguousarray(image_file())
        found = run_adapter(blazeface, items_for("detector", [Sample(name, image_file)]))[0].prediction
        blaze = np.array([d.box.as_array() for d in ((found.detections or ()) if found else ())]).reshape(-1, 4)
        for rect in detector(image, 1):
            shape = np.array([(p.x, p.y) for p in predictor(image, rect).parts()], dtype=np.float64)
            boxes: dict[str, list[float] | None] = {
                "dlib-hog": [rect.left() - 0.5, rect.top() - 0.5, rect.right() + 0.5, rect.bottom() + 0.5]}
            ious = box_iou(blaze, _tight(shape)[None])[:, 0] if len(blaze) else np.zeros(0)
            boxes["mediapipe-roi"] = blaze[int(np.argmax(ious))].tolist() if len(ious) and ious.max() >= 0.3 else None
            faces.append({"photo": name, "shape68": shape.tolist(), "boxes": boxes})
    return {
        "provenance": {
            "photos": {name: {"package": get(name).dist.requirement, "member": get(name).member,
                              "sha256": get(name).sha256} for name in CALIBRATION_PHOTOS},
            "shape": "dlib shape_predictor_68_face_landmarks.dat (face_recognition_models==0.3.0) on the dlib-hog box",
            "dlib-hog": f"dlib {dlib.__version__} get_frontal_face_detector(), upsample 1",
            "mediapipe-roi": "blazeface-short (mediapipe==0.10.21 face_detection_short_range.tflite), best IoU >= 0.3 "
                             "with the shape's tight box",
            "facebench": __version__,
        },
        "faces": faces,
    }


def main() -> None:
    """Recompute the calibration and write it beside this module."""
    data = calibrate()
    target = Path(__file__).with_name(CALIBRATION_FILE)
    from facebench.paths import write_atomic

    write_atomic(target, json.dumps(data, indent=1) + "\n")
    calibration.cache_clear()
    transform.cache_clear()
    print(f"wrote {target}: {len(data['faces'])} faces")
    for name in ("tight-68", "dlib-hog", "mediapipe-roi"):
        t = transform(name)
        print(f"  {name}: from the {t.reference}-point box, (dx, dy, sw, sh) = {tuple(round(v, 4) for v in t.shift)}, "
              f"spread {t.spread:.4f}")


if __name__ == "__main__":
    main()
