"""General annotation formats: dlib/imglab XML, COCO-style keypoint JSON, menpo folders.

* dlib/imglab XML: ``<image file=…>`` elements with ``<box top left width
  height [ignore='1']>`` and optional ``<part name x y>`` children. A box is
  inclusive integer pixels, so it spans ``left - 0.5`` to ``left + width - 0.5``;
  parts are pixel positions. Ignored boxes become ignore regions.
* COCO keypoints (as MMPose writes them): ``images`` (id, file_name),
  ``annotations`` (image_id, bbox x, y, w, h, keypoints x, y, v …, iscrowd).
  Crowd annotations become ignore regions; visibility flags go to
  ``attributes["visible"]`` (one array per face), since unlabelled points
  (v = 0) are stored as zeros and must not be scored.
* menpo folders: images with ``.pts`` or ``.ljson`` of the same stem.

The landmark scheme is taken from the point count
(:func:`facebench.schemes.scheme_for_size`); other counts keep boxes only.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from facebench.datasets.landmark_files import AnnotationError, read_ljson, read_pts
from facebench.imaging import ImageFile
from facebench.schemes import scheme_for_size
from facebench.types import Box, Face, Landmarks, Sample


def _landmarks(points: np.ndarray | None) -> Landmarks | None:
    scheme = None if points is None else scheme_for_size(len(points))
    return None if scheme is None else Landmarks(points, scheme)


def load_dlib_xml(path: Path) -> list[Sample]:
    path = Path(path)
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as exc:
        raise AnnotationError(f"{path}: not a readable imglab XML file ({exc})") from exc
    samples = []
    for image in tree.getroot().iter("image"):
        name = image.get("file")
        if name is None:
            raise AnnotationError(f"{path}: an <image> without a file attribute")
        faces, ignore = [], []
        for box in image.iter("box"):
            try:
                top, left, width, height = (float(box.get(k)) for k in ("top", "left", "width", "height"))
                parts = sorted(((p.get("name"), float(p.get("x")), float(p.get("y"))) for p in box.iter("part")),
                               key=lambda p: int(p[0]) if p[0].isdigit() else p[0])
            except (TypeError, ValueError) as exc:
                raise AnnotationError(f"{path}: image {name}: malformed box or part ({exc})") from None
            rect = Box(left - 0.5, top - 0.5, left + width - 0.5, top + height - 0.5)
            if box.get("ignore") == "1":
                ignore.append(rect)
                continue
            points = np.array([[x, y] for _, x, y in parts]) if parts else None
            faces.append(Face(rect, _landmarks(points)))
        samples.append(Sample(id=name.rsplit(".", 1)[0], image=ImageFile(path.parent / name), faces=tuple(faces),
                              ignore=tuple(ignore), image_key=f"dlib:{name}"))
    return samples


def load_coco_keypoints(path: Path, images: Path | None = None) -> list[Sample]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        image_list, annotations = data["images"], data["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AnnotationError(f"{path}: not a COCO keypoint file ({exc})") from exc
    images = Path(images) if images else path.parent
    by_image: dict = {img["id"]: ([], [], []) for img in image_list}
    for k, ann in enumerate(annotations):
        try:
            faces, ignore, visible = by_image[ann["image_id"]]
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError) as exc:
            raise AnnotationError(f"{path}: annotation {k}: missing or bad image_id/bbox ({exc})") from None
        if ann.get("iscrowd"):
            ignore.append(Box(x, y, x + w, y + h))
            continue
        kps = np.asarray(ann.get("keypoints", []), dtype=np.float64).reshape(-1, 3)
        faces.append(Face(Box(x, y, x + w, y + h), _landmarks(kps[:, :2] if len(kps) else None)))
        visible.append(kps[:, 2] > 0)
    samples = []
    for img in image_list:
        faces, ignore, visible = by_image[img["id"]]
        samples.append(Sample(id=str(img["file_name"]).rsplit(".", 1)[0], image=ImageFile(images / img["file_name"]),
                              faces=tuple(faces), ignore=tuple(ignore), attributes={"visible": visible},
                              image_key=f"coco:{img['file_name']}"))
    return samples


def load_menpo_folder(folder: Path, on_bad=None) -> list[Sample]:
    folder = Path(folder)
    samples = []
    for image in sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".ppm", ".bmp")):
        pts, ljson = image.with_suffix(".pts"), image.with_suffix(".ljson")
        try:
            if pts.is_file():
                points = read_pts(pts)
            elif ljson.is_file():
                points = read_ljson(ljson)
            else:
                continue
        except AnnotationError as exc:
            if on_bad is None:
                raise
            on_bad(exc)
            continue
        rel = str(image.relative_to(folder))
        samples.append(Sample(id=rel.rsplit(".", 1)[0], image=ImageFile(image),
                              faces=(Face(Box.around(points), _landmarks(points)),),
                              attributes={"points": len(points)}, image_key=f"menpo:{rel}"))
    if not samples:
        raise AnnotationError(f"{folder}: no images with a .pts or .ljson beside them")
    return samples
