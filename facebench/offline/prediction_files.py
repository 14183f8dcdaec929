"""Readers for prediction files other tools write, for ``facebench score``.

* WIDER FACE submission: a folder of ``<event>/<image>.txt``, each holding the
  image name, a count, and one ``x y w h score`` line per detection.
* FDDB detection output: the ellipse-list layout with a score (see
  :mod:`facebench.datasets.fddb`), one file or a folder of ``.txt`` files.
* Landmarks: a folder of iBUG ``.pts`` files (keyed by relative path without
  suffix), a CSV (first column the image name, then x, y pairs; the HRNet
  300W layout with ``scale,center_w,center_h`` columns is recognised), or a
  ``.npy`` array (F, N, 2), or (F, 2 or 3, N) as 3DDFA stores it, keyed by row.

Every reader raises :class:`PredictionFileError` naming the file (and line).
"""

from __future__ import annotations

import csv
import warnings
from itertools import chain
from pathlib import Path

import numpy as np

from facebench.datasets.fddb import read_fddb_list
from facebench.datasets.landmark_files import AnnotationError, is_number, read_lines, read_pts
from facebench.errors import FacebenchError


class PredictionFileError(FacebenchError, ValueError):
    """A prediction file is malformed; the message names the file and line."""


class PredictionFileWarning(UserWarning):
    """A prediction scored as given but probably wrong (a negative box size); names the file and line."""


def read_wider_predictions(folder: str | Path) -> dict[str, np.ndarray]:
    """``"event/image" -> (m, 5)`` (x, y, w, h, score) for every ``.txt`` under ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PredictionFileError(f"{folder}: not a folder of WIDER prediction files")
    out: dict[str, np.ndarray] = {}
    source: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.txt")):
        key = f"{path.parent.name}/{path.stem}"
        if key in source:  # a second file for one image would silently replace the first
            raise PredictionFileError(f"{path}: a second prediction file for image {key!r} "
                                      f"(first: {source[key]}); keep one")
        source[key] = path
        out[key] = _read_wider_file(path)
    if not out:
        raise PredictionFileError(f"{folder}: no .txt prediction files found")
    return out


def _read_wider_file(path: Path) -> np.ndarray:
    """One submission file, parsed in one pass: the detection lines are split once and converted with
    Python's ``float`` (the same numbers the line-by-line reader gives), then checked as one array. A file
    that fails any check is read again line by line, so the error names the exact line."""
    lines = read_lines(path, PredictionFileError)
    if len(lines) < 2:
        raise PredictionFileError(f"{path}: expected the image name, a count, then 'x y w h score' lines")
    try:
        count = int(float(lines[1].strip()))
    except ValueError:
        raise PredictionFileError(f"{path}:2: expected a detection count, got {lines[1].strip()!r}") from None
    body = lines[2:]
    rows = list(map(str.split, body))
    lengths = set(map(len, rows))
    if 0 in lengths:  # blank lines are skipped, as before
        rows = [r for r in rows if r]
        lengths.discard(0)
    values: np.ndarray | None = None
    if lengths <= {5}:
        try:
            values = np.array(list(map(float, chain.from_iterable(rows))), dtype=np.float64).reshape(-1, 5)
        except ValueError:
            pass
    if values is None or not np.isfinite(values).all():
        return _read_wider_lines(path, body, count)  # raises, naming the line
    negative = (values[:, 2] < 0) | (values[:, 3] < 0)
    if negative.any():
        numbers = [n for n, line in enumerate(body, start=3) if line.strip()]
        for i in np.flatnonzero(negative):
            _warn_negative(path, numbers[i], values[i], body[numbers[i] - 3])
    if len(values) != count:
        raise PredictionFileError(f"{path}:2: count says {count} detections, file has {len(values)}")
    return values


def _read_wider_lines(path: Path, body: list[str], count: int) -> np.ndarray:
    """The line-by-line reader: the reference behaviour, used to name the first bad line."""
    rows = []
    for lineno, line in enumerate(body, start=3):
        if not line.strip():
            continue
        try:
            row = [float(v) for v in line.split()]
        except ValueError:
            raise PredictionFileError(f"{path}:{lineno}: not numbers: {line.strip()!r}") from None
        if len(row) != 5 or not np.all(np.isfinite(row)):
            raise PredictionFileError(
                f"{path}:{lineno}: expected 5 finite numbers 'x y w h score', got {line.strip()!r}")
        if row[2] < 0 or row[3] < 0:
            _warn_negative(path, lineno, row, line)
        rows.append(row)
    if len(rows) != count:
        raise PredictionFileError(f"{path}:2: count says {count} detections, file has {len(rows)}")
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def _warn_negative(path: Path, lineno: int, row, line: str) -> None:
    # kept, as the official tool does (its own ground truth has some), but said
    warnings.warn(f"{path}:{lineno}: negative box size (w {row[2]:g}, h {row[3]:g}) in {line.strip()!r}: "
                  "scored as given (it matches no face)", PredictionFileWarning, stacklevel=3)


def read_fddb_predictions(path: str | Path) -> dict[str, np.ndarray]:
    """Image path -> (m, 5) rectangles or (m, 6) ellipses, with scores last."""
    path = Path(path)
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise PredictionFileError(f"{path}: no FDDB detection files found")
    out: dict[str, np.ndarray] = {}
    for f in files:
        try:
            entries = read_fddb_list(f, (5, 6))
        except AnnotationError as exc:
            raise PredictionFileError(str(exc)) from None
        for name, rows in entries.items():
            if name in out:
                raise PredictionFileError(f"{f}: image {name!r} already listed in another file")
            sizes = rows[:, 2:4] if rows.shape[1] == 5 else rows[:, 0:2]  # w h, or the ellipse's radii
            if np.any(sizes < 0):
                warnings.warn(f"{f}: image {name!r}: negative box size or radius in "
                              f"{rows[np.flatnonzero((sizes < 0).any(axis=1))[0]].tolist()}: scored as given",
                              PredictionFileWarning, stacklevel=2)
        out.update(entries)
    return out


def read_landmarks(path: str | Path) -> tuple[list[str] | None, np.ndarray]:
    """Names (None for ``.npy``: rows are matched by order) and (F, N, 2) points."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.pts"))
        if not files:
            raise PredictionFileError(f"{path}: no .pts files found")
        try:
            arrays = [read_pts(f) for f in files]
        except AnnotationError as exc:
            raise PredictionFileError(str(exc)) from None
        sizes = {a.shape[0] for a in arrays}
        if len(sizes) > 1:
            raise PredictionFileError(f"{path}: .pts files disagree on the number of points ({sorted(sizes)})")
        return [str(f.relative_to(path).with_suffix("")) for f in files], np.stack(arrays)
    if path.suffix == ".npy":
        return None, _read_npy(path)
    if path.suffix == ".csv":
        return _read_csv(path)
    raise PredictionFileError(f"{path}: expected a folder of .pts files, a .csv or a .npy file")


def _read_npy(path: Path) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise PredictionFileError(f"{path}: not a readable .npy array ({exc})") from exc
    if a.ndim == 3 and a.shape[-1] == 2:
        points = a
    elif a.ndim == 3 and a.shape[1] in (2, 3):
        points = np.transpose(a[:, :2], (0, 2, 1))
    else:
        raise PredictionFileError(f"{path}: expected (faces, points, 2) or (faces, 2|3, points), got {a.shape}")
    points = np.asarray(points, dtype=np.float64)
    if not np.all(np.isfinite(points)):
        bad = np.flatnonzero(~np.isfinite(points).all(axis=(1, 2)))
        raise PredictionFileError(f"{path}: non-finite values in rows {bad[:10].tolist()}")
    return points


def _read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise PredictionFileError(f"cannot read {path}: {exc}") from exc
    skip, start = 1, 0
    if rows and rows[0] and not is_number(rows[0][-1]):
        header = [h.strip() for h in rows[0]]
        skip = 4 if header[1:4] == ["scale", "center_w", "center_h"] else 1
        start = 1
    names: list[str] = []
    points: list[np.ndarray] = []
    first_line: dict[str, int] = {}
    for lineno, row in enumerate(rows[start:], start=start + 1):
        if not row:
            continue
        try:
            values = [float(v) for v in row[skip:]]
        except ValueError:
            raise PredictionFileError(f"{path}:{lineno}: not numbers after column {skip}") from None
        if len(values) % 2 or not values or not np.all(np.isfinite(values)):
            raise PredictionFileError(f"{path}:{lineno}: expected finite x, y pairs, got {len(values)} values")
        if points and len(values) != points[0].size:
            raise PredictionFileError(
                f"{path}:{lineno}: {len(values) // 2} points, earlier rows have {points[0].size // 2}")
        name = row[0].strip()
        if name in first_line:  # pairing by name would keep only one of them
            raise PredictionFileError(f"{path}:{lineno}: duplicate name {name!r} (first on line {first_line[name]})")
        first_line[name] = lineno
        names.append(name)
        points.append(np.array(values, dtype=np.float64))
    if not points:
        raise PredictionFileError(f"{path}: no rows")
    return names, np.stack(points).reshape(len(points), -1, 2)
