"""WIDER FACE ground truth as the official eval tool ships it (``.mat`` files).

``wider_face_val.mat`` holds, per event, the image names and (x, y, w, h) face
boxes with their labels; ``wider_{easy,medium,hard}_val.mat`` add ``gt_list``:
the 1-based indices of the faces that count in each setting. Boxes are kept in
the tool's own (x, y, w, h) integer-pixel form here, because the official
metric (:mod:`facebench.metrics.wider`) is defined on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facebench.datasets.landmark_files import AnnotationError
from facebench.metrics.wider import SETTINGS


@dataclass(frozen=True)
class WiderGroundTruth:
    """Images in the tool's order: ``keys[i]`` is ``"event/image_name"``."""

    keys: list[str]
    boxes: list[np.ndarray]          # (n, 4) x, y, w, h
    invalid: list[np.ndarray]        # (n,) bool
    kept: dict[str, list[np.ndarray]]  # setting -> per image 0-based face indices

    @property
    def n_faces(self) -> int:
        return int(sum(len(b) for b in self.boxes))


def read_wider_eval_gt(folder: str | Path, split: str = "val") -> WiderGroundTruth:
    """Read ``wider_face_<split>.mat`` and the three ``wider_<setting>_<split>.mat``."""
    from scipy.io import loadmat

    folder = Path(folder)
    main = folder / f"wider_face_{split}.mat"
    data = _load(loadmat, main, ("event_list", "file_list", "face_bbx_list"))
    keys, boxes, invalid = [], [], []
    invalid_lists = data.get("invalid_label_list")
    try:
        for e, event in enumerate(data["event_list"][:, 0]):
            event_name = str(event[0])
            for j, name in enumerate(data["file_list"][e, 0][:, 0]):
                keys.append(f"{event_name}/{name[0]}")
                b = np.asarray(data["face_bbx_list"][e, 0][j, 0], dtype=np.float64).reshape(-1, 4)
                boxes.append(b)
                inv = (np.asarray(invalid_lists[e, 0][j, 0]).reshape(-1).astype(bool)
                       if invalid_lists is not None else np.zeros(len(b), bool))
                invalid.append(inv)
    except (IndexError, TypeError, ValueError) as exc:
        raise AnnotationError(f"{main}: unexpected layout ({exc})") from exc

    kept = {}
    for setting in SETTINGS:
        path = folder / f"wider_{setting}_{split}.mat"
        gt_list = _load(loadmat, path, ("gt_list",))["gt_list"]
        per_image = []
        try:
            for e in range(gt_list.shape[0]):
                for j in range(gt_list[e, 0].shape[0]):
                    idx = np.asarray(gt_list[e, 0][j, 0], dtype=np.int64).reshape(-1) - 1
                    per_image.append(idx)
        except (IndexError, TypeError, ValueError) as exc:
            raise AnnotationError(f"{path}: unexpected gt_list layout ({exc})") from exc
        if len(per_image) != len(keys):
            raise AnnotationError(f"{path}: gt_list covers {len(per_image)} images, {main.name} has {len(keys)}")
        for i, idx in enumerate(per_image):
            if idx.size and (idx.min() < 0 or idx.max() >= len(boxes[i])):
                raise AnnotationError(f"{path}: image {keys[i]} lists face {idx.max() + 1} of {len(boxes[i])}")
        kept[setting] = per_image
    return WiderGroundTruth(keys=keys, boxes=boxes, invalid=invalid, kept=kept)


def _load(loadmat, path: Path, needed: tuple[str, ...]) -> dict:
    if not path.is_file():
        raise AnnotationError(f"{path}: missing (the WIDER FACE eval tool's ground-truth folder has it)")
    try:
        data = loadmat(str(path))
    except Exception as exc:  # scipy raises several types for a bad file
        raise AnnotationError(f"{path}: not a readable MATLAB file ({exc})") from exc
    missing = [k for k in needed if k not in data]
    if missing:
        raise AnnotationError(f"{path}: lacks {', '.join(missing)}")
    return data
