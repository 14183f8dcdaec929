"""Faults a hostile tester found in the trust work, each refused before running or counted, never a quiet
number: attributes in the fingerprint, protocol semantics, detector framing names, dataset/protocol
scheme mismatch, --skip-bad in run, and annotation corner cases (NaN yaw, 300VW padding, empty COCO faces)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from facebench.cli import main
from facebench.datasets import fingerprint, load_dataset
from facebench.datasets.landmark_files import AnnotationError, write_pts
from facebench.errors import FacebenchError
from facebench.protocol import ProtocolError, get_protocol, parse_protocol
from facebench.registry import resolve
from facebench.results.evaluate import IncompatibleError, check_compatible, evaluate
from facebench.results.store import Store

MINI_NME = get_protocol("mini-nme")


def _protocol(**face_box) -> str:
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in face_box.items())
    return (f'id = "t"\ntitle = "t"\ndataset = "mini"\ntask = "landmarks"\nmetric = "nme"\nscheme = "ibug68"\n'
            f"[face_box]\n{lines}\n")


def test_every_deliberate_error_shares_one_base():
    with pytest.raises(FacebenchError):
        get_protocol("no-such-protocol")
    with pytest.raises(FacebenchError):
        load_dataset("no-such-dataset")
    with pytest.raises(FacebenchError):
        resolve("no-such-model")


@pytest.mark.parametrize("face_box, message", [
    ({"margin": -0.5}, "margin must be more than -0.5"),
    ({"source": "detector", "min_iou": 5}, r"min_iou must be in \(0, 1\]"),
    ({"source": "detector", "min_iou": 0}, r"min_iou must be in \(0, 1\]"),
])
def test_protocol_face_box_semantics_are_checked_on_load(face_box, message):
    with pytest.raises(ProtocolError, match=message):
        parse_protocol(_protocol(**face_box), "my.toml")


def test_unknown_scheme_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="unknown scheme 'ibug86'"):
        parse_protocol(_protocol().replace('"ibug68"', '"ibug86"'), "typo.toml")


def test_framing_detector_must_exist_and_be_a_detector():
    card = resolve("dlib-68").card
    with pytest.raises(IncompatibleError, match="unknown model 'nosuch'"):
        check_compatible(card, parse_protocol(_protocol(source="detector", detector="nosuch")))
    with pytest.raises(IncompatibleError, match="'face-mesh' is a landmarks model, not a detector"):
        check_compatible(card, parse_protocol(_protocol(source="detector", detector="face-mesh")))


def test_dataset_of_another_scheme_is_refused_before_running(tmp_path, mini_samples):
    protocol = replace(MINI_NME, scheme="wflw98")
    with Store(tmp_path / "s.sqlite") as store:
        with pytest.raises(IncompatibleError, match="scores wflw98 ground truth; the dataset's is ibug68"):
            evaluate(resolve("ert-68"), protocol, store, samples=mini_samples, progress=False)
        assert store.runs(status=None) == []


def test_attributes_are_part_of_the_fingerprint(mini_samples):
    """A subset flag, a 300-W subset or a yaw that changes must not reuse the old group figures."""
    flagged = [replace(s, attributes={**s.attributes, "pose": 1}) if s.id == "takeo" else s for s in mini_samples]
    assert fingerprint(flagged) != fingerprint(mini_samples)
    assert fingerprint(list(mini_samples)) == fingerprint(mini_samples)


def test_nan_yaw_is_an_annotation_error(tmp_path, pulled_assets):
    from scipy.io import savemat

    points = load_dataset("mini")[0].faces[0].landmarks.points
    pt3d = np.vstack([points.T + 1.0, np.zeros((1, 68))])
    savemat(tmp_path / "image00001.mat", {"pt3d_68": pt3d, "Pose_Para": np.array([[0.1, np.nan, 0, 0, 0, 0, 1]])})
    Image.new("RGB", (200, 200)).save(tmp_path / "image00001.jpg")
    with pytest.raises(AnnotationError, match="image00001.mat: Pose_Para yaw is nan"):
        load_dataset("aflw2000-3d", tmp_path)


def test_300vw_frames_match_whatever_the_padding(tmp_path, mini_samples):
    source = mini_samples[3]
    (tmp_path / "114" / "annot").mkdir(parents=True)
    (tmp_path / "114" / "imgs").mkdir()
    for frame in (2, 10):
        write_pts(tmp_path / "114" / "annot" / f"{frame}.pts", source.faces[0].landmarks.points)
        Image.fromarray(source.image()).save(tmp_path / "114" / "imgs" / f"{frame:06d}.jpg")
    samples = load_dataset("300vw", tmp_path)
    assert [s.id for s in samples] == ["114/2", "114/10"]
    assert [s.image.path.name for s in samples] == ["000002.jpg", "000010.jpg"]


def test_coco_face_without_labelled_keypoints_is_a_box_not_a_landmark_item(tmp_path, mini_samples):
    from facebench.run.harness import items_for

    sample = mini_samples[0]
    Image.fromarray(sample.image()).save(tmp_path / "takeo.png")
    points = sample.faces[0].landmarks.points
    keypoints = np.column_stack([points + 0.5, np.full(68, 2)]).ravel().tolist()
    data = {"images": [{"id": 1, "file_name": "takeo.png"}],
            "annotations": [{"image_id": 1, "bbox": [10, 10, 50, 50], "keypoints": keypoints},
                            {"image_id": 1, "bbox": [100, 10, 40, 40], "keypoints": [0, 0, 0] * 68,
                             "num_keypoints": 0}]}
    (tmp_path / "faces.json").write_text(json.dumps(data))
    (loaded,) = load_dataset("coco-keypoints", tmp_path / "faces.json")
    assert [f.landmarks is None for f in loaded.faces] == [False, True]
    assert [item.key for item in items_for("landmarks", [loaded])] == ["takeo#0"]


def test_sequence_jitter_refuses_a_zero_scale():
    from facebench.metrics.jitter import sequence_jitter

    with pytest.raises(ValueError, match="scale must be positive"):
        sequence_jitter(np.ones((2, 68, 2)), np.zeros((2, 68, 2)))


def test_run_honours_skip_bad_when_checking_availability(tmp_path, pulled_assets, mini_samples):
    """A WFLW list with one garbage line: --skip-bad runs the other faces instead of skipping the protocol."""
    pytest.importorskip("dlib")
    from test_cross_scheme import _write_wflw

    root = tmp_path / "wflw"
    _write_wflw(root, mini_samples)
    with open(root / "list_98pt_rect_attr_test.txt", "a") as f:
        f.write("1 2 3 garbage\n")
    args = ["run", "-p", "wflw-io", "-m", "dlib-68", "--root", f"wflw={root}", "--store", str(tmp_path / "s.sqlite"),
            "--out", str(tmp_path / "out"), "--no-progress", "--no-report"]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1 and "cannot be read" in refused.output and "list_98pt_rect_attr_test.txt:5" in \
        refused.output
    result = CliRunner().invoke(main, [*args, "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "skipped bad annotation" in result.output and "dlib-68 on wflw-io" in result.output


def test_unlabelled_normaliser_points_are_refused_before_running(tmp_path, mini_samples):
    from facebench.scoring import GroundTruthError
    from facebench.types import Face, Landmarks

    sample = mini_samples[0]
    visible = np.ones(68, bool)
    visible[45] = False  # an outer eye corner: the inter-ocular normaliser's point
    lm = sample.faces[0].landmarks
    broken = replace(sample, faces=(Face(sample.faces[0].box, Landmarks(lm.points, "ibug68", visible=visible)),))
    with Store(tmp_path / "s.sqlite") as store:
        with pytest.raises(GroundTruthError, match="takeo#0"):
            evaluate(resolve("ert-68"), MINI_NME, store, samples=[broken], progress=False)
        assert store.runs(status=None) == []


def test_a_run_where_every_face_failed_reports_the_models_point_count(tmp_path, mini_samples):
    base = resolve("face-mesh")

    class Broken(base):  # type: ignore[misc,valid-type]
        def postprocess(self, outputs, context):
            raise RuntimeError("decoder broke")

    with Store(tmp_path / "s.sqlite") as store:
        done = evaluate(Broken, MINI_NME, store, samples=mini_samples[:2], progress=False)
    assert done.run.metrics["failed"] == 2 and done.run.metrics["points"] == 19  # the mesh shares 19 iBUG points
    assert all("decoder broke" in reason for _, reason in done.failures)


def test_reported_delta_is_against_full_set_rows_only():
    from facebench.report.leaderboard import Row, versus_measured

    protocol = get_protocol("wflw-io")
    paper = Row(model="LAB", protocol="wflw-io", kind="reported", metrics={"nme": 0.0527})
    debug = Row(model="dlib-68", protocol="wflw-io", kind="measured", metrics={"nme": 0.042}, faces=3)
    full = Row(model="dlib-68", protocol="wflw-io", kind="measured", metrics={"nme": 0.081}, faces=2500)
    assert versus_measured(paper, [debug], protocol) == ("no full-set measured row (2500 faces); measured rows "
                                                         "have 3")
    assert versus_measured(paper, [debug, full], protocol).startswith("nme -0.0283 vs best measured (dlib-68)")


def test_two_versions_of_an_unchecked_user_protocol_never_share_a_table():
    from facebench.report.leaderboard import UNCHECKED, Row, render

    rows = [Row(model="m", protocol="my-nme", kind="measured", status=UNCHECKED, protocol_hash=h,
                metrics={"nme": v, "faces": 4, "failures": 0}, faces=4, failures=0, items=4)
            for h, v in (("aaaa", 0.05), ("bbbb", 0.06))]
    md = render(rows, "md")
    assert "## my-nme [protocol aaaa]" in md and "## my-nme [protocol bbbb]" in md
    header = render(rows, "csv").splitlines()[0].split(",")
    assert len(header) == len(set(header))  # no column twice (failures, faces, framing, points)
