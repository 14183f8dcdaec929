"""Landmark schemes by name: how many points each has and where it comes from.

A scheme name travels with every set of landmarks so that a metric never
compares points of different definitions by accident.
"""

from __future__ import annotations

SCHEMES: dict[str, tuple[int, str]] = {
    "ibug68": (68, "iBUG 300-W 68-point markup (Multi-PIE)"),
    "wflw98": (98, "WFLW 98-point markup, points 96/97 are the pupils"),
    "cofw29": (29, "COFW 29-point markup"),
    "mediapipe468": (468, "MediaPipe Face Mesh canonical topology"),
    "mediapipe478": (478, "MediaPipe Face Mesh with 2 x 5 iris points"),
    "blazeface6": (6, "BlazeFace keypoints: right eye, left eye, nose tip, mouth, right ear, left ear"),
}


def scheme_size(name: str) -> int:
    """Number of points of a scheme; a clear error for an unknown name."""
    try:
        return SCHEMES[name][0]
    except KeyError:
        raise ValueError(f"unknown landmark scheme {name!r}; known: {', '.join(sorted(SCHEMES))}") from None
