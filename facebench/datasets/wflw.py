"""WFLW: ``list_98pt_rect_attr_{train,test}.txt`` and the ``WFLW_images/`` folder.

Each line is one face: 196 coordinates (98 x, y pairs), the face rectangle
(x_min, y_min, x_max, y_max), six 0/1 attribute flags (pose, expression,
illumination, make-up, occlusion, blur) and the image path relative to
``WFLW_images/``. An image with several faces has several lines, so a sample
is one line (id ``<image path>#<line>``). The test subsets are the faces with
each flag set, in ``attributes`` under the flag's name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facebench.datasets.landmark_files import AnnotationError, read_lines
from facebench.imaging import ImageFile
from facebench.types import Box, Face, Landmarks, Sample

FLAGS = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")


def find_list(root: Path, split: str) -> Path:
    name = f"list_98pt_rect_attr_{split}.txt"
    for candidate in (root / name, root / "WFLW_annotations" / "list_98pt_rect_attr_train_test" / name):
        if candidate.is_file():
            return candidate
    raise AnnotationError(f"{root}: {name} not found (looked in the folder and in WFLW_annotations/)")


def load(root: Path, split: str = "test", on_bad=None) -> list[Sample]:
    """One sample per line; ``on_bad(error)``, if given, receives each bad line instead of it being raised."""
    root = Path(root)
    path = find_list(root, split)
    images = root / "WFLW_images"
    samples = []
    for lineno, line in enumerate(read_lines(path), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) != 207:
                raise AnnotationError(f"{path}:{lineno}: expected 207 fields (196 coordinates, 4 box, 6 flags, path), "
                                      f"got {len(parts)}")
            try:
                values = np.array(parts[:206], dtype=np.float64)
            except ValueError:
                raise AnnotationError(f"{path}:{lineno}: non-numeric field before the image path") from None
            if not np.isfinite(values[:200]).all():
                field = np.flatnonzero(~np.isfinite(values))[0] + 1
                raise AnnotationError(f"{path}:{lineno}: non-finite coordinate (field {field})")
        except AnnotationError as exc:
            if on_bad is None:
                raise
            on_bad(exc)
            continue
        points = values[:196].reshape(98, 2)
        x0, y0, x1, y1 = values[196:200]
        flags = {name: int(v) for name, v in zip(FLAGS, values[200:206])}
        samples.append(Sample(
            id=f"{parts[206]}#{lineno}", image=ImageFile(images / parts[206]),
            faces=(Face(Box(x0, y0, x1, y1), Landmarks(points, "wflw98")),),
            attributes=flags, image_key=f"wflw:{parts[206]}"))
    return samples
