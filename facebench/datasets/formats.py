"""General annotation formats: dlib/imglab XML, COCO-style keypoint JSON, menpo folders.

* dlib/imglab XML: ``<image file=…>`` elements with ``<box top left width
  height [ignore='1']>`` and optional ``<part name x y>`` children. A box is
  inclusive integer pixels, so it spans ``left - 0.5`` to ``left + width - 0.5``;
  parts are pixel positions. Ignored boxes become ignore regions.
* COCO keypoints (as MMPose writes them): ``images`` (id, file_name),
  ``annotations`` (image_id, bbox x, y, w, h, keypoints x, y, v …, iscrowd).
  Crowd annotations become ignore regions. Visibility goes to
  :attr:`facebench.types.Landmarks.visible`: ``v = 0`` (unlabelled, stored as
  0, 0) is False, ``v = 1`` (occluded, position estimated) and ``v = 2`` are
  True. See :func:`load_coco_keypoints` for the coordinate origin and for
  annotations without a ``bbox``.
* menpo folders: images with ``.pts`` or ``.ljson`` of the same stem.

The landmark scheme is taken from the point count
(:func:`facebench.schemes.scheme_for_size`); other counts keep boxes only.
Non-finite coordinates are an :class:`AnnotationError` naming the file and
the entry, never silently scored.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from facebench.datasets.landmark_files import AnnotationError, read_ljson, read_pts
from facebench.imaging import ImageFile
from facebench.paths import printable_name
from facebench.schemes import scheme_for_size
from facebench.types import Box, Face, Landmarks, Sample


def _landmarks(points: np.ndarray | None) -> Landmarks | None:
    if points is None:
        return None
    scheme = scheme_for_size(len(points))
    return None if scheme is None else Landmarks(points, scheme)


def _attribute(element: ET.Element, key: str) -> str:
    value = element.get(key)
    if value is None:
        raise ValueError(f"no {key} attribute")
    return value


def _sorted_parts(parts: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """imglab parts in name order: numerically when every name is a number."""
    numeric = [name.isdigit() for name, _, _ in parts]
    if all(numeric):
        return sorted(parts, key=lambda p: int(p[0]))
    if any(numeric):
        raise ValueError("part names mix numbers and words")
    return sorted(parts, key=lambda p: p[0])


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
        faces: list[Face] = []
        ignore: list[Box] = []
        for box in image.iter("box"):
            try:
                top, left, width, height = (float(_attribute(box, k)) for k in ("top", "left", "width", "height"))
                parts = _sorted_parts([(_attribute(p, "name"), float(_attribute(p, "x")), float(_attribute(p, "y")))
                                       for p in box.iter("part")])
            except (TypeError, ValueError) as exc:
                raise AnnotationError(f"{path}: image {name}: malformed box or part ({exc})") from None
            if not np.isfinite([top, left, width, height, *(v for p in parts for v in p[1:])]).all():
                raise AnnotationError(f"{path}: image {name}: box {len(faces) + len(ignore)}: non-finite coordinate")
            rect = Box(left - 0.5, top - 0.5, left + width - 0.5, top + height - 0.5)
            if box.get("ignore") == "1":
                ignore.append(rect)
                continue
            points = np.array([[x, y] for _, x, y in parts]) if parts else None
            faces.append(Face(rect, _landmarks(points)))
        samples.append(Sample(id=name.rsplit(".", 1)[0], image=ImageFile(path.parent / name), faces=tuple(faces),
                              ignore=tuple(ignore), image_key=f"dlib:{name}"))
    return samples


ORIGINS = {"coco": 0.5, "one-based": 1.0, "zero-based": 0.0}  # what to subtract from x and y


def load_coco_keypoints(path: Path, images: Path | None = None, origin: str = "coco") -> list[Sample]:
    """Samples of a COCO-style keypoint file; images under ``images`` (default: the file's folder).

    ``origin`` says where the file's coordinates count from, since COCO-style
    face files in the wild use three conventions:

    * ``"coco"`` (default, the COCO format's own): continuous coordinates
      with the image's top-left *corner* at (0, 0), so pixel (0, 0) covers
      [0, 1] x [0, 1] and its centre is (0.5, 0.5). A value c becomes c - 0.5
      in facebench's pixel-centre convention, for keypoints and for the box
      edges alike (bbox x, y, w, h spans x - 0.5 .. x + w - 0.5).
    * ``"one-based"``: values copied verbatim from iBUG ``.pts`` files (what
      popular 300W/WFLW-to-COCO converters write): subtract 1, as for ``.pts``.
    * ``"zero-based"``: already pixel centres from 0: no shift.

    An annotation without ``bbox`` gets the tight box of its labelled
    keypoints (v > 0), after the same shift; the face indices so boxed are
    listed in ``attributes["box_from_keypoints"]`` so a detection protocol can
    tell a drawn box from a derived one. An annotation with neither is an
    error, as is any non-finite coordinate.
    """
    if origin not in ORIGINS:
        raise ValueError(f"COCO origin {origin!r}; known: {', '.join(ORIGINS)}")
    shift = ORIGINS[origin]
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        image_list, annotations = data["images"], data["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AnnotationError(f"{path}: not a COCO keypoint file ({exc})") from exc
    images = Path(images) if images else path.parent
    by_image: dict = {img["id"]: ([], [], []) for img in image_list}
    for k, ann in enumerate(annotations):
        where = f"{path}: annotation {k}"
        try:
            faces, ignore, derived = by_image[ann["image_id"]]
            kps = np.asarray(ann.get("keypoints") or [], dtype=np.float64).reshape(-1, 3)
            bbox = None if ann.get("bbox") is None else np.asarray(ann["bbox"], dtype=np.float64).reshape(4)
        except (KeyError, TypeError, ValueError) as exc:
            raise AnnotationError(f"{where}: missing or bad image_id/bbox/keypoints ({exc})") from None
        if not np.isfinite(kps).all() or (bbox is not None and not np.isfinite(bbox).all()):
            raise AnnotationError(f"{where}: non-finite coordinate in bbox or keypoints")
        points, labelled = kps[:, :2] - shift, kps[:, 2] > 0
        if bbox is not None:
            x, y, w, h = bbox
            box = Box(x - shift, y - shift, x + w - shift, y + h - shift)
        elif labelled.any():
            box = Box.around(points[labelled])
        else:
            raise AnnotationError(f"{where}: no bbox and no labelled keypoints (v > 0) to derive one from")
        if ann.get("iscrowd"):
            ignore.append(box)
            continue
        if bbox is None:
            derived.append(len(faces))
        # a face with no labelled keypoint (COCO's num_keypoints = 0) is a box, not a landmark face
        scheme = scheme_for_size(len(kps)) if labelled.any() else None
        landmarks = None if scheme is None else Landmarks(points, scheme, None if labelled.all() else labelled)
        faces.append(Face(box, landmarks))
    samples = []
    for img in image_list:
        faces, ignore, derived = by_image[img["id"]]
        attributes = {"box_from_keypoints": tuple(derived)} if derived else {}
        samples.append(Sample(id=str(img["file_name"]).rsplit(".", 1)[0], image=ImageFile(images / img["file_name"]),
                              faces=tuple(faces), ignore=tuple(ignore), attributes=attributes,
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
        rel = printable_name(str(image.relative_to(folder)))  # a non-UTF-8 name: \xNN escapes
        samples.append(Sample(id=rel.rsplit(".", 1)[0], image=ImageFile(image),
                              faces=(Face(Box.around(points), _landmarks(points)),),
                              attributes={"points": len(points)}, image_key=f"menpo:{rel}"))
    if not samples:
        raise AnnotationError(f"{folder}: no images with a .pts or .ljson beside them")
    return samples
