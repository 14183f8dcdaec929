"""A model of one landmark scheme scored on another's ground truth (WFLW-98, COFW-29) on the points
both share, through the command line, on dataset folders in the real formats written from real photos."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from facebench.cli import main
from facebench.results.store import Store
from facebench.schemes import MAPPINGS, shared_points


def _in_scheme(points68: np.ndarray, scheme: str, size: int) -> np.ndarray:
    """68 iBUG points written in another scheme: the corresponding points, the nose tip for the rest
    (inside the face, so neither the box nor the compared points depend on them)."""
    out = np.repeat(points68[30][None], size, axis=0)
    for ibug, src in MAPPINGS[(scheme, "ibug68")][0].items():
        out[src] = points68[ibug]
    return out


def _write_wflw(root, samples):
    images = root / "WFLW_images" / "0--Parade"
    images.mkdir(parents=True)
    lines = []
    for sample in samples:
        Image.fromarray(sample.image()).save(images / f"{sample.id}.jpg", quality=95)
        points = _in_scheme(sample.faces[0].landmarks.points, "wflw98", 98)
        lo, hi = points.min(axis=0), points.max(axis=0)
        values = [*points.ravel(), *lo, *hi, 1, 0, 0, 0, 0, 0]
        lines.append(" ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in values)
                     + f" 0--Parade/{sample.id}.jpg")
    (root / "list_98pt_rect_attr_test.txt").write_text("\n".join(lines) + "\n")


def _write_cofw(root, samples):
    from scipy.io import savemat

    root.mkdir(parents=True)
    images = np.empty((len(samples), 1), dtype=object)
    phis, boxes = [], []
    for k, sample in enumerate(samples):
        images[k, 0] = sample.image()
        points = _in_scheme(sample.faces[0].landmarks.points, "cofw29", 29) + 1.0  # MATLAB, 1-based
        phis.append([*points[:, 0], *points[:, 1], *np.zeros(29)])
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        boxes.append([x0, y0, x1 - x0, y1 - y0])
    savemat(root / "COFW_test.mat", {"IsT": images, "phisT": np.array(phis), "bboxesT": np.array(boxes)})


@pytest.mark.parametrize("dataset, protocol, shared", [("wflw", "wflw-io", 68), ("cofw", "cofw-io", 21)])
def test_68_point_model_on_another_schemes_ground_truth(dlib_model, mini_samples, tmp_path, dataset, protocol,
                                                        shared):
    pytest.importorskip("dlib")
    scheme = {"wflw": "wflw98", "cofw": "cofw29"}[dataset]
    assert len(shared_points("ibug68", scheme)) == shared
    root = tmp_path / dataset
    (_write_wflw if dataset == "wflw" else _write_cofw)(root, mini_samples)
    store = tmp_path / "s.sqlite"
    result = CliRunner().invoke(main, ["run", "-p", protocol, "-m", "dlib-68", "--root", f"{dataset}={root}",
                                       "--store", str(store), "--out", str(tmp_path / "out"), "--no-progress",
                                       "--no-report"])
    assert result.exit_code == 0, result.output
    with Store(store) as db:
        (run,) = db.runs()
    m = run.metrics
    assert m["points"] == shared and m["faces"] == 4 and m["failed"] == 0
    assert 0 < m["nme"] < 0.15  # dlib on its own box convention, on real photos
    assert m["framing"].startswith("ground truth -> dlib-hog")


def test_incompatible_model_is_skipped_with_the_reason_before_running(tmp_path, mini_samples):
    root = tmp_path / "wflw"
    _write_wflw(root, mini_samples)
    store = tmp_path / "s.sqlite"
    result = CliRunner().invoke(main, ["run", "-p", "wflw-io", "-m", "blazeface-short", "--root", f"wflw={root}",
                                       "--store", str(store), "--out", str(tmp_path / "out"), "--no-progress",
                                       "--no-report"])
    assert "skip wflw-io for blazeface-short: protocol wflw-io is for landmarks models" in result.output
    assert result.exit_code == 1  # nothing that was asked for could run
    with Store(store) as db:
        assert db.runs(status=None) == []


@pytest.mark.slow
def test_the_error_gallery_draws_faces_of_a_dataset_given_by_root(dlib_model, mini_samples, tmp_path):
    """`facebench run` passes its --root on to the report, so the gallery can read a user's images."""
    pytest.importorskip("dlib")
    root = tmp_path / "wflw"
    _write_wflw(root, mini_samples)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", "-p", "wflw-io", "-m", "dlib-68", "--root", f"wflw={root}",
                                       "--store", str(tmp_path / "s.sqlite"), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    crops = sorted((out / "gallery").glob("wflw-io--dlib-68-*.png"))
    assert len(crops) == 4
    assert crops[0].name in (out / "index.html").read_text()
