"""Landmark schemes by name: size, horizontal-flip permutation, and mappings between them.

A scheme name travels with every set of landmarks so that a metric never
compares points of different definitions by accident. Indices are 0-based.

Mappings are index tables: ``MAPPINGS[(src, dst)]`` gives, for each point of
``dst`` that ``src`` can provide, the ``src`` index (as a dict dst -> src).

* exact: WFLW-98 -> iBUG-68 (the standard subset: every other jaw point,
  the upper brow arcs, the nose, six of each eye's eight points, the
  mouth) and iBUG-68 -> five-point (eye centres as the mean of each eye's
  six points are computed by :func:`convert`, not indexed);
* semantic: MediaPipe mesh -> iBUG-68 for points with an unambiguous mesh
  counterpart: the eye contours (the six-point sets widely used for the eye
  aspect ratio), mouth corners and lip midpoints, nose tip. The jaw line, the
  brows and the nose wings have no agreed counterpart and are left out rather
  than faked; protocols compare on the shared points only (:func:`shared_points`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# MediaPipe mesh regions, in the order Attention Mesh's region heads emit them
# (they are its Landmarks2TransformMatrix subsets; a test reads them back from
# the model file). The first 16 points of an eye list are its contour.
MEDIAPIPE_LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409, 78, 95, 88,
        178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415, 76, 77, 90, 180, 85, 16,
        315, 404, 320, 307, 306, 184, 74, 73, 72, 11, 302, 303, 304, 408, 62, 96, 89, 179, 86, 15, 316, 403, 319,
        325, 292, 183, 42, 41, 38, 12, 268, 271, 272, 407)
# the eye on the image's left (the subject's right), corners 33 and 133
MEDIAPIPE_RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173, 130, 25, 110, 24, 23, 22,
             26, 112, 243, 247, 30, 29, 27, 28, 56, 190, 226, 31, 228, 229, 230, 231, 232, 233, 244, 113, 225, 224,
             223, 222, 221, 189, 35, 124, 46, 53, 52, 65, 143, 111, 117, 118, 119, 120, 121, 128, 245, 156, 70, 63,
             105, 66, 107, 55, 193)
# the subject's left eye, corners 263 and 362, listed as the mirror image of MEDIAPIPE_RIGHT_EYE
MEDIAPIPE_LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398, 359, 255, 339, 254, 253,
            252, 256, 341, 463, 467, 260, 259, 257, 258, 286, 414, 446, 261, 448, 449, 450, 451, 452, 453, 464, 342,
            445, 444, 443, 442, 441, 413, 265, 353, 276, 283, 282, 295, 372, 340, 346, 347, 348, 349, 350, 357, 465,
            383, 300, 293, 334, 296, 336, 285, 417)

@dataclass(frozen=True)
class Scheme:
    name: str
    size: int
    description: str
    flip: tuple[int, ...] | None = None  # index i of a mirrored face = point flip[i] of the original


def _flip_from_pairs(size: int, pairs) -> tuple[int, ...]:
    perm = list(range(size))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


_IBUG_PAIRS = ([(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)]
               + [(31, 35), (32, 34), (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),
                  (48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)])
_WFLW_PAIRS = ([(i, 32 - i) for i in range(16)] + [(33 + i, 46 - i) for i in range(5)]
               + [(38 + i, 50 - i) for i in range(4)] + [(55, 59), (56, 58)]
               + [(60 + i, 72 - i) for i in range(5)] + [(65, 75), (66, 74), (67, 73)]
               + [(76, 82), (77, 81), (78, 80), (83, 87), (84, 86), (88, 92), (89, 91), (93, 95), (96, 97)])

SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("ibug68", 68, "iBUG 300-W 68-point markup (Multi-PIE)", _flip_from_pairs(68, _IBUG_PAIRS)),
    Scheme("wflw98", 98, "WFLW 98-point markup, points 96/97 are the pupils", _flip_from_pairs(98, _WFLW_PAIRS)),
    Scheme("cofw29", 29, "COFW 29-point markup (LFPW layout)"),
    Scheme("mediapipe468", 468, "MediaPipe Face Mesh canonical topology"),
    Scheme("mediapipe478", 478, "MediaPipe Face Mesh with 2 x 5 iris points"),
    Scheme("blazeface6", 6, "BlazeFace keypoints: right eye, left eye, nose tip, mouth, right ear, left ear",
           _flip_from_pairs(6, [(0, 1), (4, 5)])),
    Scheme("five_point", 5, "right eye centre, left eye centre, nose tip, right and left mouth corner",
           _flip_from_pairs(5, [(0, 1), (3, 4)])),
)}

_WFLW_TO_IBUG = {**{i: 2 * i for i in range(17)}, **{17 + i: 33 + i for i in range(5)},
                 **{22 + i: 42 + i for i in range(5)}, **{27 + i: 51 + i for i in range(9)},
                 36: 60, 37: 61, 38: 63, 39: 64, 40: 65, 41: 67, 42: 68, 43: 69, 44: 71, 45: 72, 46: 73, 47: 75,
                 **{48 + i: 76 + i for i in range(20)}}
_MESH_TO_IBUG = {36: 33, 37: 160, 38: 158, 39: 133, 40: 153, 41: 144, 42: 362, 43: 385, 44: 387, 45: 263,
                 46: 373, 47: 380, 48: 61, 54: 291, 51: 0, 57: 17, 62: 13, 66: 14, 30: 1}

MAPPINGS: dict[tuple[str, str], tuple[dict[int, int], str]] = {
    ("wflw98", "ibug68"): (_WFLW_TO_IBUG, "exact"),
    ("mediapipe468", "ibug68"): (_MESH_TO_IBUG, "semantic"),
    ("mediapipe478", "ibug68"): (_MESH_TO_IBUG, "semantic"),
    ("ibug68", "five_point"): ({2: 30, 3: 48, 4: 54}, "exact; eye centres are the means of 36-41 and 42-47"),
}


def scheme_for_size(n_points: int) -> str | None:
    """The scheme with that many points, if exactly one has it (every size is unique today)."""
    names = [s.name for s in SCHEMES.values() if s.size == n_points]
    return names[0] if len(names) == 1 else None


def get_scheme(name: str) -> Scheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown landmark scheme {name!r}; known: {', '.join(sorted(SCHEMES))}") from None


def scheme_size(name: str) -> int:
    """Number of points of a scheme; a clear error for an unknown name."""
    return get_scheme(name).size


def flip_points(points: np.ndarray, scheme: str, width: float) -> np.ndarray:
    """Landmarks of the horizontally mirrored image (x -> width - 1 - x), relabelled left/right."""
    flip = get_scheme(scheme).flip
    if flip is None:
        raise ValueError(f"scheme {scheme!r} has no flip permutation")
    out = np.array(points, dtype=np.float64)[list(flip)]
    out[:, 0] = width - 1 - out[:, 0]
    return out


def shared_points(src: str, dst: str) -> list[int]:
    """The ``dst`` point indices that ``src`` provides (all of them when equal)."""
    if src == dst:
        return list(range(scheme_size(dst)))
    if (src, dst) == ("ibug68", "five_point"):
        return list(range(5))
    try:
        return sorted(MAPPINGS[(src, dst)][0])
    except KeyError:
        raise ValueError(f"no mapping from {src!r} to {dst!r}") from None


def convert(points: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Points of ``src`` expressed in ``dst``: (size of dst, 2), NaN where ``src`` has no counterpart."""
    points = np.asarray(points, dtype=np.float64)
    if src == dst:
        return points.copy()
    out = np.full((scheme_size(dst), points.shape[1]), np.nan)
    if (src, dst) == ("ibug68", "five_point"):
        out[0], out[1] = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
    table = MAPPINGS.get((src, dst))
    if table is None:
        raise ValueError(f"no mapping from {src!r} to {dst!r}")
    for d, s in table[0].items():
        out[d] = points[s]
    return out
