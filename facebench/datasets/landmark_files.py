"""Readers for per-image landmark files: iBUG ``.pts`` and menpo ``.ljson``.

Both return (N, 2) arrays in facebench's 0-based pixel-centre convention and
raise :class:`AnnotationError` naming the file when it is malformed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facebench.errors import FacebenchError


class AnnotationError(FacebenchError, ValueError):
    """An annotation file is not what its format says; the message names it."""


def read_lines(path: Path, error: type[ValueError] = AnnotationError) -> list[str]:
    """A text file's lines; an unreadable file raises ``error`` naming it."""
    try:
        return Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read {path}: {exc}") from exc


def is_number(text: str) -> bool:
    """Whether ``text`` reads as a float (a CSV's header row does not)."""
    try:
        float(text)
        return True
    except ValueError:
        return False


def read_pts(path: str | Path) -> np.ndarray:
    """iBUG ``.pts``: ``version: 1``, ``n_points: N``, ``{``, N lines of 1-based ``x y``, ``}``.

    A point that is not finite (``nan``, ``inf``: Python's float() accepts them)
    is an error naming the file and line, since it would poison every mean.
    """
    path = Path(path)
    numbered = [(n, ln.strip()) for n, ln in enumerate(read_lines(path), start=1) if ln.strip()]
    lines = [ln for _, ln in numbered]
    try:
        header = dict(ln.split(":", 1) for ln in lines[: lines.index("{")])
        n_points = int(header["n_points"])
        body = numbered[lines.index("{") + 1: lines.index("}")]
        points = np.array([[float(v) for v in ln.split()] for _, ln in body], dtype=np.float64)
    except (ValueError, KeyError) as exc:
        raise AnnotationError(f"{path}: not an iBUG .pts file ({exc})") from exc
    if points.shape != (n_points, 2):
        raise AnnotationError(f"{path}: header says {n_points} points, found shape {points.shape}")
    bad = np.flatnonzero(~np.isfinite(points).all(axis=1))
    if len(bad):
        lineno, text = body[bad[0]]
        raise AnnotationError(f"{path}:{lineno}: non-finite coordinate {text!r} (point {bad[0]})")
    return points - 1.0


def read_ljson(path: str | Path, group: str | None = None) -> np.ndarray:
    """menpo LJSON (version 2): points stored as (y, x) in 0-based pixels."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        groups = data["groups"]
        name = group or next(iter(groups))
        points = np.array(groups[name]["landmarks"]["points"], dtype=np.float64)
    except (OSError, ValueError, KeyError, StopIteration, TypeError) as exc:
        raise AnnotationError(f"{path}: not a menpo LJSON landmark file ({exc})") from exc
    if points.ndim != 2 or points.shape[1] != 2:
        raise AnnotationError(f"{path}: expected (N, 2) points, found shape {points.shape}")
    bad = np.flatnonzero(~np.isfinite(points).all(axis=1))
    if len(bad):  # JSON null reads as NaN
        raise AnnotationError(f"{path}: group {name!r} point {bad[0]}: non-finite or null coordinate")
    return points[:, ::-1].copy()


def write_pts(path: str | Path, points: np.ndarray) -> Path:
    """Write (N, 2) 0-based points as an iBUG ``.pts`` file (1-based), atomically."""
    from facebench.paths import write_atomic

    body = "".join(f"{x + 1:.6f} {y + 1:.6f}\n" for x, y in np.asarray(points, dtype=np.float64)[:, :2])
    return write_atomic(path, f"version: 1\nn_points: {len(points)}\n{{\n{body}}}\n")
