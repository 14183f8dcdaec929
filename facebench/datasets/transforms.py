"""Samples made from samples: an exact affine move of image and annotations, and the shifted copies
the jitter protocols score (a protocol's ``transform = "shifted"``).

The image is rendered through the output-to-source affine when read; landmarks,
boxes and ignore regions go through the inverse map exactly, so the ground
truth of a moved sample is as exact as the original's.
"""

from __future__ import annotations

import numpy as np

from facebench.imaging import apply_affine, warp_affine
from facebench.schemes import get_scheme
from facebench.types import Box, Face, Landmarks, Sample

SHIFTS = ((0.25, 0.0), (0.0, 0.5), (-0.5, 0.25), (1.0, 0.0), (0.0, -1.0), (2.0, 1.5))


def shifted_copies(samples: list[Sample], shifts=SHIFTS) -> list[Sample]:
    """Each annotated sample unshifted and moved by every (dx, dy) in ``shifts``, for the
    jitter protocol: ``attributes["source"]`` names the photo, ``["shift"]`` the offset."""
    out = []
    for s in samples:
        if not s.faces or any(f.landmarks is None for f in s.faces):
            continue
        size = s.attributes.get("image_size") or s.image().shape[1::-1]
        out += [moved(s, np.array([[1.0, 0, -dx], [0, 1.0, -dy]]), tuple(size)[::-1], f"{s.id}@shift{k}",
                       {**s.attributes, "source": s.id, "shift": (dx, dy)})
                for k, (dx, dy) in enumerate(((0.0, 0.0),) + tuple(shifts))]
    return out


class Rendered:
    """An image made by warping sources onto a canvas, on demand (uint8 RGB)."""

    def __init__(self, size: tuple[int, int], layers, fill: float = 0.0):
        self.size, self.layers, self.fill = size, layers, fill  # size: (height, width)

    @property
    def pixel_size(self) -> tuple[int, int]:
        """(width, height), known without rendering."""
        return self.size[1], self.size[0]

    def __call__(self) -> np.ndarray:
        out = np.full((*self.size, 3), self.fill, np.float32)
        for source, matrix, region in self.layers:
            x0, y0, x1, y1 = region if region is not None else (0, 0, self.size[1], self.size[0])
            # warp only the layer's region: shift the output grid by its corner
            local = matrix.copy()
            local[:, 2] += matrix[:, :2] @ np.array([x0, y0], dtype=np.float64)
            warped = warp_affine(source(), local, (y1 - y0, x1 - x0), fill=np.nan)
            inside = ~np.isnan(warped[..., 0])
            out[y0:y1, x0:x1][inside] = warped[inside]
        return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _flip_order(scheme: str) -> list[int]:
    flip = get_scheme(scheme).flip
    if flip is None:
        raise ValueError(f"scheme {scheme!r} has no flip permutation")
    return list(flip)


def moved(sample: Sample, out_to_src: np.ndarray, size: tuple[int, int], new_id: str, attributes: dict,
           flip: bool = False) -> Sample:
    """``sample`` rendered through an output->source affine, annotations mapped exactly."""
    src_to_out = invert(out_to_src)
    faces = []
    for face in sample.faces:
        landmarks = face.landmarks
        if landmarks is None:
            raise ValueError(f"{sample.id}: moving a sample needs landmarks on every face")
        pts = apply_affine(src_to_out, landmarks.points)
        visible = landmarks.visible
        if flip:
            order = _flip_order(landmarks.scheme)
            pts = pts[order]
            visible = None if visible is None else visible[order]
        faces.append(Face(Box.around(pts), Landmarks(pts, landmarks.scheme, visible=visible)))
    ignore = tuple(box_through(src_to_out, b) for b in sample.ignore)
    key = f"{sample.image_key}|{np.round(out_to_src, 9).tolist()}|{size}"
    return Sample(id=new_id, image=Rendered(size, [(sample.image, out_to_src, None)], fill=0.0),
                  faces=tuple(faces), ignore=ignore, attributes=attributes, image_key=key)


def box_through(matrix: np.ndarray, box: Box) -> Box:
    corners = np.array([[box.x0, box.y0], [box.x1, box.y0], [box.x0, box.y1], [box.x1, box.y1]])
    return Box.around(apply_affine(matrix, corners))


def invert(matrix: np.ndarray) -> np.ndarray:
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]
