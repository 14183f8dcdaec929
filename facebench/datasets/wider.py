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
from typing import Any

import numpy as np

from facebench.datasets.landmark_files import AnnotationError, read_lines
from facebench.imaging import ImageFile
from facebench.metrics.detection import corners_from_xywh
from facebench.metrics.wider import SETTINGS
from facebench.types import Box, Face, Sample


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


def read_wider_txt(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The release's ``wider_face_<split>_bbx_gt.txt``: image path -> ((n, 4) x, y, w, h, (n,) invalid).

    Each entry: the image path, the face count, then one line per face
    ``x y w h blur expression illumination invalid occlusion pose``; an image
    with no face has a count of 0 followed by one line of zeros.
    """
    path = Path(path)
    lines = read_lines(path)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    i = 0
    while i < len(lines):
        name = lines[i].strip()
        if not name:
            i += 1
            continue
        try:
            count = int(lines[i + 1])
        except (IndexError, ValueError):
            raise AnnotationError(f"{path}:{i + 2}: expected the face count of {name}") from None
        rows = []
        for k in range(max(count, 1)):
            lineno = i + 3 + k
            try:
                values = [int(v) for v in lines[lineno - 1].split()]
            except (IndexError, ValueError):
                raise AnnotationError(f"{path}:{lineno}: expected 10 integers for a face of {name}") from None
            if len(values) != 10:
                raise AnnotationError(f"{path}:{lineno}: expected 10 integers, got {len(values)}")
            rows.append(values)
        table = np.array(rows[:count], dtype=np.float64).reshape(-1, 10)
        out[name] = (table[:, :4], table[:, 7].astype(bool))
        i += 2 + max(count, 1)
    return out


def load(root: Path, split: str = "val", setting: str | None = "hard") -> list[Sample]:
    """Samples of one split. Faces that do not count in ``setting`` (or are
    marked invalid, without the eval tool's lists) become ignore regions.
    With ``setting=None`` every face is kept, in the tool's order, and
    ``attributes["kept"]`` maps each setting to the indices that count in it
    (what the official three-setting evaluation needs).

    ``root`` holds the release (``wider_face_split/wider_face_<split>_bbx_gt.txt``
    and ``WIDER_<split>/images/``) or just the eval tool's ``.mat`` files. Boxes
    are used as given: (x, y) to (x + w, y + h).
    """
    root = Path(root)
    if setting is not None and setting not in SETTINGS:
        raise ValueError(f"WIDER FACE setting {setting!r}; known: {', '.join(SETTINGS)}")
    images = root / f"WIDER_{split}" / "images"
    entries: list[tuple[str, np.ndarray, np.ndarray, dict[str, Any]]]
    if (root / f"wider_face_{split}.mat").is_file():
        gt = read_wider_eval_gt(root, split)
        if setting is None:
            entries = [(f"{k}.jpg", b, np.ones(len(b), bool), {"kept": {s: gt.kept[s][i] for s in SETTINGS}})
                       for i, (k, b) in enumerate(zip(gt.keys, gt.boxes))]
        else:
            entries = [(f"{k}.jpg", b, np.isin(np.arange(len(b)), kept), {"setting": setting})
                       for k, b, kept in zip(gt.keys, gt.boxes, gt.kept[setting])]
    else:
        txt = root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
        if not txt.is_file():
            raise AnnotationError(f"{root}: neither wider_face_{split}.mat nor {txt.relative_to(root)} found")
        entries = [(name, boxes, ~invalid, {}) for name, (boxes, invalid) in read_wider_txt(txt).items()]
    samples = []
    for name, boxes, counts, attrs in entries:
        corners = corners_from_xywh(boxes)
        samples.append(Sample(
            id=name.rsplit(".", 1)[0], image=ImageFile(images / name),
            faces=tuple(Face(Box.from_array(b)) for b in corners[counts]),
            ignore=tuple(Box.from_array(b) for b in corners[~counts]),
            attributes={"event": name.split("/", 1)[0], **attrs}, image_key=f"wider:{name}"))
    return samples


def write_wider_txt(path: str | Path, entries: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """Write ``image path -> ((n, 4) x, y, w, h, (n,) invalid)`` in the release's txt layout."""
    from facebench.paths import write_atomic

    lines = []
    for name, (boxes, invalid) in entries.items():
        lines += [name, str(len(boxes))]
        lines += [f"{int(x)} {int(y)} {int(w)} {int(h)} 0 0 0 {int(inv)} 0 0 "
                  for (x, y, w, h), inv in zip(boxes, invalid)]
        if len(boxes) == 0:
            lines.append("0 0 0 0 0 0 0 0 0 0 ")
    return write_atomic(path, "\n".join(lines) + "\n")
