"""300-VW (300 Videos in the Wild): per-frame iBUG-68 ``.pts`` for 114 videos.

Layout as released, ``root`` holding one folder per video::

    <root>/<video>/annot/000001.pts …   (1-based x y, like every iBUG .pts)
    <root>/<video>/vid.avi              (the video itself)
    <root>/<video>/imgs/000001.jpg …    (frames, once you have extracted them)

The release ships videos, not frames, and facebench decodes no video: extract
the frames once, numbered like the annotations, e.g.
``ffmpeg -i <video>/vid.avi <video>/imgs/%06d.png`` (ffmpeg counts from 1, as
the ``.pts`` files do). A video with ``vid.avi`` and no ``imgs/`` is an error
saying so; a copy with annotations only (neither) loads, for scoring
prediction files, and fails only when an image is read.

Samples are frames, id ``<video>/<frame stem>``, ``attributes = {"video",
"frame"}`` (frame as an int), ordered by video then frame number (numerically:
``10.pts`` after ``9.pts`` whatever the zero padding). Face box: the tight box
of the 68 points, as for the mini set.

Splits: the official test categories of the 300-VW challenge (Shen et al.,
ICCVW 2015; the lists below are the ones every public 300-VW evaluation script
uses): category 1, well-lit laboratory and naturalistic; 2, real-world
human-computer interaction; 3, arbitrary conditions. ``test`` is their union
(64 videos), ``train`` every other video found, ``all`` every video found.
"""

from __future__ import annotations

from pathlib import Path

from facebench.datasets.landmark_files import AnnotationError, read_pts
from facebench.imaging import ImageFile
from facebench.paths import printable_name
from facebench.types import Box, Face, Landmarks, Sample

CATEGORIES = {
    "category1": ("114", "124", "125", "126", "150", "158", "401", "402", "505", "506", "507", "508", "509", "510",
                  "511", "514", "515", "518", "519", "520", "521", "522", "524", "525", "537", "538", "540", "541",
                  "546", "547", "548"),
    "category2": ("203", "208", "211", "212", "213", "214", "218", "224", "403", "404", "405", "406", "407", "408",
                  "409", "412", "550", "551", "553"),
    "category3": ("410", "411", "516", "517", "526", "528", "529", "530", "531", "533", "557", "558", "559", "562"),
}
TEST = frozenset(v for videos in CATEGORIES.values() for v in videos)
SPLITS = ("all", "train", "test", *CATEGORIES)
FRAME_SUFFIXES = (".jpg", ".png", ".jpeg")


def _numeric_key(name: str):
    return (0, int(name), name) if name.isdigit() else (1, 0, name)


def videos(root: Path, split: str = "all") -> list[Path]:
    """The video folders of a split found under ``root`` (those with an ``annot/`` folder), in numeric order."""
    if split not in SPLITS:
        raise ValueError(f"300VW split {split!r}; known: {', '.join(SPLITS)}")
    root = Path(root)
    found = sorted((p for p in root.iterdir() if (p / "annot").is_dir()), key=lambda p: _numeric_key(p.name))
    if not found:
        raise AnnotationError(f"{root}: no <video>/annot/ folders (300VW layout: <root>/<video>/annot/NNNNNN.pts)")
    if split == "all":
        return found
    if split == "train":
        return [p for p in found if p.name not in TEST]
    if split == "test":
        return [p for p in found if p.name in TEST]
    return [p for p in found if p.name in CATEGORIES[split]]


def load(root: Path, split: str = "all", on_bad=None) -> list[Sample]:
    """Frames of the split's videos; ``on_bad(error)``, if given, receives each bad frame instead of it being raised.

    A video whose frames are not extracted (``vid.avi`` without ``imgs/``)
    raises whatever ``on_bad`` is: skipping it frame by frame would hide a
    setup step, not a bad annotation.
    """
    samples = []
    chosen = videos(root, split)
    if not chosen:
        raise AnnotationError(f"{root}: no 300VW video of split {split!r} here (folders <video>/annot/*.pts)")
    for video in chosen:
        frames_dir = video / "imgs"
        if not frames_dir.is_dir() and (video / "vid.avi").is_file():
            raise AnnotationError(
                f"{video}: frames not extracted (only vid.avi); facebench reads frames, not video: extract them "
                f"into {frames_dir}/ numbered like annot/, e.g. ffmpeg -i {video / 'vid.avi'} {frames_dir}/%06d.png")
        stems = sorted((p.stem for p in (video / "annot").glob("*.pts")), key=_numeric_key)
        # frames by number, whatever the zero padding of either folder
        numbered = {int(f.stem): f for f in frames_dir.iterdir() if f.stem.isdigit() and f.suffix.lower()
                    in FRAME_SUFFIXES} if frames_dir.is_dir() else {}
        for stem in stems:
            pts = video / "annot" / f"{stem}.pts"
            try:
                if not stem.isdigit():
                    raise AnnotationError(f"{pts}: not a frame number")
                image = frames_dir / f"{stem}.jpg"
                if frames_dir.is_dir():
                    found = numbered.get(int(stem))
                    if found is None:
                        raise AnnotationError(f"{pts}: no frame {frames_dir / stem}{{{','.join(FRAME_SUFFIXES)}}}")
                    image = found
                points = read_pts(pts)
                if len(points) != 68:
                    raise AnnotationError(f"{pts}: {len(points)} points, 300VW has 68")
            except AnnotationError as exc:
                if on_bad is None:
                    raise
                on_bad(exc)
                continue
            samples.append(Sample(
                id=printable_name(f"{video.name}/{stem}"), image=ImageFile(image),
                faces=(Face(Box.around(points), Landmarks(points, "ibug68")),),
                attributes={"video": video.name, "frame": int(stem)}, image_key=f"300vw:{video.name}/{stem}"))
    return samples
