"""AFLW2000-3D: ``imageNNNNN.jpg`` with ``.mat`` annotations, or the 2000-row arrays.

A ``.mat`` holds ``pt3d_68`` (3 x 68: x, y in image pixels, z depth) and
``Pose_Para`` (pitch, yaw, roll in radians, then translation and scale); the
yaw in degrees goes to ``attributes["yaw"]`` for the protocol's bins. The
arrays evaluation codebases distribute (``AFLW2000-3D.pts68.npy`` (2000, 3,
68) and ``AFLW2000-3D.pose.npy`` (2000,), yaw in degrees) have their rows in
sorted filename order; with no images beside them the samples carry the row's
file name and fail clearly if an image is asked for.

Coordinates are used as stored (0-based pixel positions, the convention of
the 3DDFA evaluation code); the face box is the tight box of the 68 points,
which is also the protocol's NME normaliser (sqrt(w·h)).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facebench.datasets.landmark_files import AnnotationError
from facebench.imaging import ImageFile
from facebench.paths import printable_name
from facebench.types import Box, Face, Landmarks, Sample

ARRAY_POINTS = "AFLW2000-3D.pts68.npy"
ARRAY_YAW = "AFLW2000-3D.pose.npy"


def read_mat(path: Path) -> tuple[np.ndarray, float]:
    """(68, 2) points and yaw in degrees from one ``.mat`` file."""
    from scipy.io import loadmat

    try:
        data = loadmat(str(path))
        pts = np.asarray(data["pt3d_68"], dtype=np.float64)
        pose = np.asarray(data["Pose_Para"], dtype=np.float64).reshape(-1)
    except Exception as exc:  # scipy raises several types for a bad file
        raise AnnotationError(f"{path}: not an AFLW2000-3D annotation ({exc})") from exc
    if pts.shape != (3, 68) or pose.size < 3:
        raise AnnotationError(f"{path}: pt3d_68 {pts.shape} / Pose_Para {pose.shape}, expected (3, 68) / (1, 7)")
    bad = np.flatnonzero(~np.isfinite(pts[:2]).all(axis=0))
    if len(bad):
        raise AnnotationError(f"{path}: pt3d_68 point {bad[0]}: non-finite x, y")
    if not np.isfinite(pose[1]):
        raise AnnotationError(f"{path}: Pose_Para yaw is {pose[1]}: the face cannot be put in a yaw bin")
    return pts[:2].T.copy(), float(np.degrees(pose[1]))


def load(root: Path, on_bad=None) -> list[Sample]:
    """Samples from ``.mat`` files (if any) or from the 2000-row arrays.

    ``on_bad(error)``, if given, receives each unreadable ``.mat`` instead of it being raised.
    """
    root = Path(root)
    mats = sorted(root.glob("image*.mat"))
    if mats:
        samples = []
        for mat in mats:
            try:
                points, yaw = read_mat(mat)
            except AnnotationError as exc:
                if on_bad is None:
                    raise
                on_bad(exc)
                continue
            samples.append(_sample(printable_name(mat.stem), mat.with_suffix(".jpg"), points, yaw))
        return samples
    if (root / ARRAY_POINTS).is_file():
        return load_arrays(root)
    raise AnnotationError(f"{root}: no imageNNNNN.mat files and no {ARRAY_POINTS}")


def load_arrays(root: Path, names: list[str] | None = None) -> list[Sample]:
    """Samples from the arrays; ``names`` are the 2000 sorted file stems if known."""
    root = Path(root)
    try:
        pts = np.load(root / ARRAY_POINTS)
        yaw = np.load(root / ARRAY_YAW).reshape(-1)
    except (OSError, ValueError) as exc:
        raise AnnotationError(f"{root}: cannot read {ARRAY_POINTS} / {ARRAY_YAW} ({exc})") from exc
    if pts.ndim != 3 or pts.shape[1:] not in ((3, 68), (2, 68)) or len(yaw) != len(pts):
        raise AnnotationError(f"{root}: points {pts.shape} and yaw {yaw.shape} do not describe the same faces")
    bad = np.flatnonzero(~np.isfinite(pts[:, :2]).all(axis=(1, 2)))
    if len(bad):
        raise AnnotationError(f"{root / ARRAY_POINTS}: non-finite x, y in row(s) {bad[:10].tolist()}")
    names = names or [f"row{i:04d}" for i in range(len(pts))]
    return [_sample(name, root / f"{name}.jpg", p[:2].T.astype(np.float64), float(y))
            for name, p, y in zip(names, pts, yaw)]


def _sample(name: str, image: Path, points: np.ndarray, yaw: float) -> Sample:
    return Sample(id=name, image=ImageFile(image), faces=(Face(Box.around(points), Landmarks(points, "ibug68")),),
                  attributes={"yaw": yaw}, image_key=f"aflw2000-3d:{name}")
