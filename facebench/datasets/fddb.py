"""FDDB annotations: ``FDDB-fold-NN-ellipseList.txt`` for the ten folds.

Each entry is an image path line, a face count, and one line per face:
``major_radius minor_radius angle centre_x centre_y 1``. The same layout, with
a score in the last column (and rectangles ``left top width height score`` as
the alternative), is FDDB's detection output format; one parser reads both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facebench.datasets.landmark_files import AnnotationError, read_lines
from facebench.imaging import ImageFile
from facebench.types import Box, Face, Sample


def read_fddb_list(path: str | Path, columns: tuple[int, ...] = (6,)) -> dict[str, np.ndarray]:
    """Entries of one FDDB list file: image path -> (n, k) float rows.

    ``columns`` are the row widths allowed (6 for ellipses, 5 for rectangles
    in detection files); a malformed line raises naming the file and line.
    """
    path = Path(path)
    lines = read_lines(path)
    out: dict[str, np.ndarray] = {}
    i = 0
    while i < len(lines):
        name = lines[i].strip()
        if not name:
            i += 1
            continue
        if i + 1 >= len(lines):
            raise AnnotationError(f"{path}:{i + 1}: image {name!r} has no face count line")
        try:
            count = int(lines[i + 1].strip())
        except ValueError:
            raise AnnotationError(f"{path}:{i + 2}: expected a face count, got {lines[i + 1].strip()!r}") from None
        rows = []
        for k in range(count):
            lineno = i + 3 + k
            if lineno > len(lines):
                raise AnnotationError(f"{path}:{lineno}: image {name!r} ends after {k} of {count} rows")
            try:
                row = [float(v) for v in lines[lineno - 1].split()]
            except ValueError:
                raise AnnotationError(f"{path}:{lineno}: not numbers: {lines[lineno - 1].strip()!r}") from None
            if len(row) not in columns or not np.all(np.isfinite(row)):
                raise AnnotationError(f"{path}:{lineno}: expected {' or '.join(map(str, columns))} finite numbers, "
                                      f"got {lines[lineno - 1].strip()!r}")
            rows.append(row)
        if name in out:
            raise AnnotationError(f"{path}:{i + 1}: image {name!r} listed twice")
        width = max(columns) if not rows else len(rows[0])
        if len({len(r) for r in rows}) > 1:
            raise AnnotationError(f"{path}:{i + 1}: image {name!r} mixes ellipses and rectangles")
        out[name] = np.array(rows, dtype=np.float64).reshape(-1, width)
        i += 2 + count
    return out


def read_fddb_folds(folder: str | Path) -> dict[str, np.ndarray]:
    """All ten folds' ellipses, image path -> (n, 5) (a, b, theta, cx, cy), fold order kept."""
    folder = Path(folder)
    files = [folder / f"FDDB-fold-{k:02d}-ellipseList.txt" for k in range(1, 11)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise AnnotationError(f"{folder}: missing {', '.join(missing)}")
    out: dict[str, np.ndarray] = {}
    for f in files:
        for name, rows in read_fddb_list(f, (6,)).items():
            out[name] = rows[:, :5]
    return out


def load(root: Path) -> list[Sample]:
    """All ten folds as samples; images at ``<root>/originalPics/<name>.jpg``.

    The folds are looked for in ``<root>/FDDB-folds/`` and then in ``root``.
    Each face's box is its ellipse's exact bounding box
    (:func:`facebench.metrics.fddb.ellipse_to_box`); the ellipse itself is in
    ``attributes["ellipses"]`` and the fold number in ``attributes["fold"]``.
    """
    from facebench.metrics.fddb import ellipse_to_box

    root = Path(root)
    folds = root / "FDDB-folds" if (root / "FDDB-folds").is_dir() else root
    samples = []
    for k in range(1, 11):
        path = folds / f"FDDB-fold-{k:02d}-ellipseList.txt"
        if not path.is_file():
            raise AnnotationError(f"{folds}: missing {path.name}")
        for name, rows in read_fddb_list(path, (6,)).items():
            ellipses = rows[:, :5]
            samples.append(Sample(
                id=name, image=ImageFile(root / "originalPics" / f"{name}.jpg"),
                faces=tuple(Face(Box.from_array(b)) for b in ellipse_to_box(ellipses)),
                attributes={"fold": k, "ellipses": ellipses}, image_key=f"fddb:{name}"))
    return samples


def write_fddb_list(path: str | Path, entries: dict[str, np.ndarray]) -> Path:
    """Write ``image path -> (n, 5) ellipses`` (or (n, k) rows) in the ellipse-list layout."""
    from facebench.paths import write_atomic

    lines = []
    for name, rows in entries.items():
        lines += [name, str(len(rows))]
        lines += [" ".join(repr(float(v)) for v in row) + ("  1" if len(row) == 5 else "") for row in rows]
    return write_atomic(path, "\n".join(lines) + "\n")
