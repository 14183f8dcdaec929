"""300-W: the official folders of ``.pts`` files, or the widely used CSV layout.

Official release (``root`` holds these folders; each image has a ``.pts`` of
the same stem beside it):

=============  =====================================================  =====
split          folders                                                faces
=============  =====================================================  =====
common         ``helen/testset`` (330) + ``lfpw/testset`` (224)         554
challenging    ``ibug`` (135)                                           135
full           common + challenging                                     689
train          ``afw`` (337) + ``helen/trainset`` (2000) + ``lfpw/trainset`` (811)  3148
private        ``300W/01_Indoor`` + ``300W/02_Outdoor``                 600
=============  =====================================================  =====

CSV layout (HRNet / PIPNet): ``face_landmarks_300w_{train,valid,test}.csv``
with ``image_name,scale,center_w,center_h`` then 68 x, y pairs; ``valid`` is
the full test set (subsets from the image path), ``test`` the private set.
Image paths in it are relative to ``root``. The CSV values are taken as the
``.pts`` values they were converted from (1-based) and shifted like them.
A row that is not 68 finite x, y pairs is a bad entry naming its line
(skipped through ``on_bad`` where given).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facebench.datasets.landmark_files import AnnotationError, is_number, read_pts
from facebench.imaging import ImageFile
from facebench.paths import printable_name
from facebench.types import Box, Face, Landmarks, Sample

FOLDERS = {
    "common": ("helen/testset", "lfpw/testset"),
    "challenging": ("ibug",),
    "train": ("afw", "helen/trainset", "lfpw/trainset"),
    "private": ("300W/01_Indoor", "300W/02_Outdoor"),
}
SPLITS = ("full", "common", "challenging", "train", "private")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def subset_of(relative_path: str) -> str:
    """The 300W subset an image belongs to, from its path.

    The private set's folder is ``300W/`` in the release and ``Test/`` in the CSV files.
    """
    if any(part in ("01_Indoor", "02_Outdoor") for part in relative_path.split("/")[:-1]):
        return "private"
    for subset, folders in FOLDERS.items():
        if any(relative_path.startswith(f + "/") for f in folders):
            return subset
    known = ", ".join(f for v in FOLDERS.values() for f in v)
    raise AnnotationError(f"{relative_path}: not in any 300W folder ({known})")


def load(root: Path, split: str = "full", on_bad=None) -> list[Sample]:
    """The samples of one split, from the official folders or, failing those, the CSV files.

    ``on_bad(error)``, if given, receives each bad annotation file instead of it being raised.
    """
    if split not in SPLITS:
        raise ValueError(f"300W split {split!r}; known: {', '.join(SPLITS)}")
    root = Path(root)
    wanted = ("common", "challenging") if split == "full" else (split,)
    if any((root / f).is_dir() for s in wanted for f in FOLDERS[s]):
        return [s for subset in wanted for s in _from_folders(root, subset, on_bad)]
    csv_name = {"private": "test", "train": "train"}.get(split, "valid")
    csv = root / f"face_landmarks_300w_{csv_name}.csv"
    if not csv.is_file():
        raise AnnotationError(f"{root}: neither the 300W folders ({', '.join(f for s in wanted for f in FOLDERS[s])}) "
                              f"nor {csv.name} found")
    return [s for s in _from_csv(root, csv, on_bad) if split == "full" or s.attributes["subset"] == split]


def _from_folders(root: Path, subset: str, on_bad=None) -> list[Sample]:
    samples = []
    for folder in FOLDERS[subset]:
        directory = root / folder
        if not directory.is_dir():
            raise AnnotationError(f"{directory}: missing (300W {subset} needs {', '.join(FOLDERS[subset])})")
        for pts in sorted(directory.glob("*.pts")):
            try:
                image = next((pts.with_suffix(s) for s in IMAGE_SUFFIXES if pts.with_suffix(s).is_file()), None)
                if image is None:
                    raise AnnotationError(f"{pts}: no image of the same name ({'/'.join(IMAGE_SUFFIXES)})")
                points = read_pts(pts)
                if len(points) != 68:
                    raise AnnotationError(f"{pts}: {len(points)} points, 300W has 68")
            except AnnotationError as exc:
                if on_bad is None:
                    raise
                on_bad(exc)
                continue
            samples.append(_sample(printable_name(str(image.relative_to(root))), image, points, subset))
    return samples


def _from_csv(root: Path, csv_path: Path, on_bad=None) -> list[Sample]:
    """Rows of the HRNet/PIPNet CSV; a bad row (wrong count, non-numeric or non-finite) names its line."""
    import csv

    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"cannot read {csv_path}: {exc}") from exc
    header = bool(rows and rows[0] and not is_number(rows[0][-1]))
    skip = 4 if header and [h.strip() for h in rows[0][1:4]] == ["scale", "center_w", "center_h"] else 1
    samples = []
    for lineno, row in enumerate(rows[int(header):], start=1 + int(header)):
        if not row:
            continue
        try:
            try:
                values = np.array([float(v) for v in row[skip:]], dtype=np.float64)
            except ValueError:
                raise AnnotationError(f"{csv_path}:{lineno}: not numbers after column {skip}") from None
            if values.size != 136:
                raise AnnotationError(f"{csv_path}:{lineno}: {values.size / 2:g} points in the row, 300W has 68")
            if not np.isfinite(values).all():
                raise AnnotationError(f"{csv_path}:{lineno}: non-finite coordinate "
                                      f"(column {skip + 1 + np.flatnonzero(~np.isfinite(values))[0]})")
            name = row[0].strip()
            subset = subset_of(name)
        except AnnotationError as exc:
            if on_bad is None:
                raise
            on_bad(exc)
            continue
        samples.append(_sample(name, root / name, values.reshape(68, 2) - 1.0, subset))
    if not samples and on_bad is None:
        raise AnnotationError(f"{csv_path}: no rows")
    return samples


def _sample(rel: str, image: Path, points: np.ndarray, subset: str) -> Sample:
    return Sample(id=rel.rsplit(".", 1)[0], image=ImageFile(image),
                  faces=(Face(Box.around(points), Landmarks(points, "ibug68")),),
                  attributes={"subset": subset}, image_key=f"300w:{rel}")
