"""COFW (Caltech Occluded Faces in the Wild), the ``.mat`` release, 29 points.

``COFW_test.mat`` / ``COFW_train.mat`` hold the images (``IsT`` / ``IsTr``: a
cell of grey or colour arrays), the landmarks (``phisT`` / ``phisTr``: one row
per face of 29 x, then 29 y, then 29 occlusion flags) and face boxes
(``bboxesT`` / ``bboxesTr``: x, y, w, h). The images live inside the file, so
samples read them from the loaded arrays. The ``_color`` files of the later
release are MATLAB v7.3 (HDF5), which needs ``h5py``; the error says so.
Occlusion flags are in ``attributes["occluded"]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facebench.datasets.landmark_files import AnnotationError
from facebench.types import Box, Face, Landmarks, Sample

KEYS = {"test": ("IsT", "phisT", "bboxesT"), "train": ("IsTr", "phisTr", "bboxesTr")}


def load(root: Path, split: str = "test") -> list[Sample]:
    from scipy.io import loadmat

    root = Path(root)
    path = next((p for p in (root / f"COFW_{split}.mat", root / f"COFW_{split}_color.mat") if p.is_file()), None)
    if path is None:
        raise AnnotationError(f"{root}: COFW_{split}.mat not found")
    images_key, phis_key, boxes_key = KEYS[split]
    try:
        data = loadmat(str(path))
    except NotImplementedError as exc:
        raise AnnotationError(f"{path}: MATLAB v7.3 (HDF5) file; install h5py or use the v7 release") from exc
    except Exception as exc:  # scipy raises several types for a bad file
        raise AnnotationError(f"{path}: not a readable MATLAB file ({exc})") from exc
    missing = [k for k in (images_key, phis_key, boxes_key) if k not in data]
    if missing:
        raise AnnotationError(f"{path}: lacks {', '.join(missing)}")
    phis = np.asarray(data[phis_key], dtype=np.float64)
    boxes = np.asarray(data[boxes_key], dtype=np.float64).reshape(-1, 4)
    cells = data[images_key].reshape(-1)
    if phis.shape[1:] != (87,) or not (len(phis) == len(boxes) == len(cells)):
        raise AnnotationError(f"{path}: {len(cells)} images, phis {phis.shape}, boxes {boxes.shape}; expected N x 87")
    bad = np.flatnonzero(~(np.isfinite(phis[:, :58]).all(axis=1) & np.isfinite(boxes).all(axis=1)))
    if len(bad):  # rows are 0-based here, as in the sample ids
        raise AnnotationError(f"{path}: {phis_key}/{boxes_key} row {bad[0]}: non-finite coordinate")
    samples = []
    for i, (phi, (x, y, w, h), cell) in enumerate(zip(phis, boxes, cells)):
        points = np.stack([phi[:29], phi[29:58]], axis=1) - 1.0  # MATLAB, 1-based
        samples.append(Sample(
            id=f"{split}/{i:04d}", image=_InlineImage(cell),
            faces=(Face(Box(x - 1.0, y - 1.0, x - 1.0 + w, y - 1.0 + h), Landmarks(points, "cofw29")),),
            attributes={"occluded": phi[58:87].astype(bool)}, image_key=f"cofw:{path.name}:{i}"))
    return samples


class _InlineImage:
    """An image stored in the annotation file, returned as RGB uint8."""

    def __init__(self, array):
        self.array = array

    @property
    def pixel_size(self) -> tuple[int, int]:
        """(width, height), known without converting the array."""
        height, width = np.shape(self.array)[:2]
        return width, height

    def __call__(self) -> np.ndarray:
        a = np.asarray(self.array)
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        return np.ascontiguousarray(a[..., :3].astype(np.uint8))
