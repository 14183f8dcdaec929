"""Protocol scorers on the embedded photos, with predictions made from the ground truth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from facebench.protocol import get_protocol
from facebench.scoring import score
from facebench.types import Detection, Landmarks, Prediction


def _with_options(protocol_id, **options):
    p = get_protocol(protocol_id)
    return dataclasses.replace(p, options={**p.options, **options})


def test_nme_scorer_counts_a_failed_face_as_failure(mini_samples):
    predictions = {}
    for sample in mini_samples:
        pts = sample.faces[0].landmarks.points.copy()
        pts[:, 0] += 0.05 * np.linalg.norm(pts[36] - pts[45])
        predictions[f"{sample.id}#0"] = Prediction(landmarks=Landmarks(pts, "ibug68"))
    predictions["lenna#0"] = None  # the adapter failed on this face
    metrics, per_item = score(get_protocol("mini-nme"), mini_samples, predictions)
    assert metrics["nme"] == pytest.approx(0.05) and metrics["faces"] == 4
    assert metrics["fr"] == 0.25 and per_item["lenna#0"] == {"nme": None, "failed": True}


def test_ap_scorer_min_face_fraction_ignores_small_faces(mini_samples):
    # detect every face exactly except the smallest (einstein's, about 1% of the photo)
    fractions = {s.id: s.faces[0].box.width * s.faces[0].box.height / np.prod(s.image().shape[:2])
                 for s in mini_samples}
    smallest = min(fractions, key=fractions.get)
    predictions = {s.id: Prediction(detections=() if s.id == smallest else (Detection(s.faces[0].box, 0.9),))
                   for s in mini_samples}
    plain, _ = score(get_protocol("mini-ap50"), mini_samples, predictions)
    assert plain["recall"] == 0.75 and plain["faces"] == 4
    cut = sorted(fractions.values())[1] * 0.99  # above the smallest face, below the others
    filtered, _ = score(_with_options("mini-ap50", min_face_fraction=cut), mini_samples, predictions)
    assert filtered["recall"] == 1.0 and filtered["ap50"] == 1.0 and filtered["faces"] == 3
    for method in ("voc07", "coco101"):
        m, _ = score(_with_options("mini-ap50", ap_method=method, rule="coco"), mini_samples, predictions)
        # recall 3/4: COCO samples precision 1 at recall 0, .01, …, .75 (76 of 101); VOC07 at 0, .1, …, .7 (8 of 11)
        assert m["ap50"] == pytest.approx(76 / 101 if method == "coco101" else 8 / 11, abs=1e-9)


def test_nme_scorer_groups_by_subset_flag_and_yaw(tmp_path):
    from facebench.datasets.wflw import load as load_wflw
    from facebench.protocol import parse_protocol

    rng = np.random.default_rng(0)
    pts = rng.uniform(10, 90, (3, 98, 2))
    flags = (["1", "0", "0", "0", "0", "0"], ["1", "0", "0", "0", "0", "1"], ["0"] * 6)
    (tmp_path / "list_98pt_rect_attr_test.txt").write_text("\n".join(
        " ".join(f"{v:.6f}" for v in p.ravel()) + f" 5 6 95 96 {' '.join(f)} e/a.jpg" for p, f in zip(pts, flags)))
    samples = load_wflw(tmp_path)
    protocol = parse_protocol('id = "t"\ntitle = "t"\ndataset = "wflw"\ntask = "landmarks"\nmetric = "nme"\n'
                              'scheme = "wflw98"\n[options]\nsubset_flags = ["pose", "blur"]\n')
    predictions = {}
    for k, s in enumerate(samples):
        gt = s.faces[0].landmarks.points
        iod = np.linalg.norm(gt[60] - gt[72])
        predictions[f"{s.id}#0"] = Prediction(landmarks=Landmarks(gt + [0.01 * (k + 1) * iod, 0], "wflw98"))
    metrics, _ = score(protocol, samples, predictions)
    assert metrics["nme"] == pytest.approx(0.02)
    assert metrics["pose_nme"] == pytest.approx(0.015) and metrics["pose_faces"] == 2
    assert metrics["blur_nme"] == pytest.approx(0.02) and metrics["blur_faces"] == 1


def test_nme_scorer_compares_another_scheme_on_shared_points_only(mini_samples):
    from facebench.schemes import MAPPINGS

    table = MAPPINGS[("mediapipe478", "ibug68")][0]
    predictions = {}
    for sample in mini_samples:
        gt = sample.faces[0].landmarks.points
        mesh = np.zeros((478, 2))  # everything without a counterpart is far off on purpose
        for ibug, m in table.items():
            mesh[m] = gt[ibug] + [0.03 * np.linalg.norm(gt[36] - gt[45]), 0]
        predictions[f"{sample.id}#0"] = Prediction(landmarks=Landmarks(mesh, "mediapipe478"))
    metrics, _ = score(get_protocol("mini-nme"), mini_samples, predictions)
    assert metrics["points"] == len(table) and metrics["nme"] == pytest.approx(0.03)
