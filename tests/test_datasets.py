"""Dataset loaders: fixtures written in each official format, and the real annotation files in ../shared."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy.io import savemat

from facebench.cli import main
from facebench.datasets import fddb, load_dataset, summary
from facebench.datasets import wider as wider_ds
from facebench.datasets.aflw2000 import load_arrays
from facebench.datasets.landmark_files import AnnotationError
from facebench.imaging import ImageError

from conftest import SHARED


def _pts(path, points):
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{x + 1} {y + 1}\n" for x, y in points)
    path.write_text(f"version: 1\nn_points: {len(points)}\n{{\n{body}}}\n")


def _image(path, size=(64, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 150)).save(path)


def test_300w_official_folders(tmp_path):
    rng = np.random.default_rng(0)
    layout = {"helen/testset": 3, "lfpw/testset": 2, "ibug": 2, "afw": 1, "300W/01_Indoor": 1}
    for folder, n in layout.items():
        for i in range(n):
            _pts(tmp_path / folder / f"img{i}.pts", rng.uniform(5, 40, (68, 2)))
            _image(tmp_path / folder / f"img{i}.png")
    counts = {split: len(load_dataset("300w", tmp_path, split)) for split in ("full", "common", "challenging")}
    assert counts == {"full": 7, "common": 5, "challenging": 2}
    sample = load_dataset("300w", tmp_path, "challenging")[0]
    assert sample.id == "ibug/img0" and sample.attributes["subset"] == "challenging"
    assert sample.image().shape == (48, 64, 3)
    # .pts are 1-based: the loader shifts them to facebench's 0-based convention
    raw = np.loadtxt(tmp_path / "ibug" / "img0.pts", skiprows=3, max_rows=68)
    assert np.allclose(sample.faces[0].landmarks.points, raw - 1)
    with pytest.raises(AnnotationError, match="missing"):  # train needs helen/trainset and lfpw/trainset too
        load_dataset("300w", tmp_path, "train")
    _pts(tmp_path / "ibug" / "bad.pts", rng.uniform(5, 40, (67, 2)))
    _image(tmp_path / "ibug" / "bad.png")
    with pytest.raises(AnnotationError, match=r"bad\.pts: 67 points"):
        load_dataset("300w", tmp_path, "challenging")
    (tmp_path / "ibug" / "bad.png").unlink()
    with pytest.raises(AnnotationError, match=r"bad\.pts: no image"):
        load_dataset("300w", tmp_path, "challenging")


def test_wider_release_txt_with_invalid_faces(tmp_path):
    split = tmp_path / "wider_face_split"
    split.mkdir()
    (split / "wider_face_val_bbx_gt.txt").write_text(
        "0--Parade/0_Parade_a.jpg\n2\n10 20 30 40 0 0 0 0 0 0 \n50 60 5 5 2 0 0 1 0 0 \n"
        "1--Handshaking/1_b.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n")
    samples = wider_ds.load(tmp_path, split="val")
    assert [s.id for s in samples] == ["0--Parade/0_Parade_a", "1--Handshaking/1_b"]
    a = samples[0]
    assert a.faces[0].box.as_array().tolist() == [10, 20, 40, 60] and len(a.ignore) == 1  # the invalid face
    assert samples[1].faces == () and samples[1].ignore == ()
    with pytest.raises(ImageError, match="WIDER_val/images/0--Parade/0_Parade_a.jpg"):
        a.image()
    (split / "wider_face_val_bbx_gt.txt").write_text("0--Parade/0_Parade_a.jpg\n2\n10 20 30 40 0 0 0 0 0 0\n")
    with pytest.raises(AnnotationError, match=r"bbx_gt.txt:4"):
        wider_ds.load(tmp_path, split="val")


def test_fddb_folds_and_errors(tmp_path):
    for k in range(1, 11):
        (tmp_path / f"FDDB-fold-{k:02d}-ellipseList.txt").write_text(
            f"2002/07/{k:02d}/big/img_1\n1\n20.0 10.0 1.5707963 50.0 60.0  1\n")
    samples = fddb.load(tmp_path)
    assert len(samples) == 10 and samples[3].attributes["fold"] == 4
    assert np.allclose(samples[0].faces[0].box.as_array(), [40, 40, 60, 80])  # major axis vertical
    (tmp_path / "FDDB-fold-05-ellipseList.txt").write_text("2002/07/05/big/img_1\n2\n20 10 1.5 50 60 1\n")
    with pytest.raises(AnnotationError, match=r"fold-05-ellipseList.txt:4: image .* ends after 1 of 2"):
        fddb.load(tmp_path)


def test_aflw2000_mat_files(tmp_path):
    pts = np.vstack([np.random.default_rng(1).uniform(50, 400, (2, 68)), np.zeros((1, 68))])
    savemat(tmp_path / "image00002.mat",
            {"pt3d_68": pts, "Pose_Para": np.array([[0.1, np.radians(-42.0), 0, 0, 0, 0, 1]])})
    (sample,) = load_dataset("aflw2000-3d", tmp_path)
    assert sample.id == "image00002" and sample.attributes["yaw"] == pytest.approx(-42.0)
    assert np.allclose(sample.faces[0].landmarks.points, pts[:2].T)
    savemat(tmp_path / "image00003.mat", {"pt3d_68": pts[:, :60], "Pose_Para": np.zeros((1, 7))})
    with pytest.raises(AnnotationError, match=r"image00003.mat: pt3d_68 \(3, 60\)"):
        load_dataset("aflw2000-3d", tmp_path)


def test_datasets_cli(tmp_path, mini_samples):
    result = CliRunner().invoke(main, ["datasets", "list"])
    assert result.exit_code == 0 and "wider-face" in result.output and "300w" in result.output
    result = CliRunner().invoke(main, ["datasets", "info", "mini", "--json"])
    data = json.loads(result.stdout)
    assert data["splits"]["all"] == {"images": 4, "images_present": 4, "faces": 4, "ignored": 2}
    result = CliRunner().invoke(main, ["datasets", "info", "300w", "--root", str(tmp_path)])
    assert result.exit_code == 1 and "neither the 300W folders" in result.output


# --- the real annotation files ------------------------------------------------------------------

def _shared(name):
    path = SHARED / name
    return pytest.mark.skipif(not path.is_dir(), reason=f"{path} absent"), path


skip_300w, W300 = _shared("300w-annotations")
skip_wider, WIDER = _shared("wider-face-val-gt")
skip_fddb, FDDB = _shared("fddb-folds")
skip_aflw, AFLW = _shared("aflw2000-3d-annotations")
skip_aflw_sample, AFLW_SAMPLE = _shared("aflw2000-3d-sample")


@pytest.mark.shared
@skip_300w
def test_real_300w_csv_counts():
    counts = {s: summary(load_dataset("300w", W300, s)) for s in ("full", "common", "challenging", "private")}
    assert [counts[s]["faces"] for s in ("full", "common", "challenging", "private")] == [689, 554, 135, 600]
    assert counts["full"]["by_subset"] == {"challenging": {"images": 135, "faces": 135},
                                           "common": {"images": 554, "faces": 554}}


@pytest.mark.shared
@skip_wider
def test_real_wider_counts():
    for setting, kept in (("easy", 7211), ("medium", 13319), ("hard", 31958)):
        info = summary(load_dataset("wider-face", WIDER, f"val-{setting}"))
        assert (info["images"], info["faces"], info["faces"] + info["ignored"]) == (3226, kept, 39708)
        assert len(info["by_event"]) == 61


@pytest.mark.shared
@skip_fddb
def test_real_fddb_counts():
    info = summary(load_dataset("fddb", FDDB))
    assert (info["images"], info["faces"], len(info["by_fold"])) == (2845, 5171, 10)


@pytest.mark.shared
@skip_aflw
@skip_aflw_sample
def test_real_aflw2000_mat_files_match_the_array_rows():
    names = sorted(p.stem for p in AFLW_SAMPLE.glob("image*.mat"))
    from_mat = {s.id: s for s in load_dataset("aflw2000-3d", AFLW_SAMPLE)}
    rows = load_arrays(AFLW)
    assert len(from_mat) == 16 and len(rows) == 2000
    # each of the 16 files equals exactly one row, and the rows keep sorted filename order
    found = []
    for name in names:
        pts = from_mat[name].faces[0].landmarks.points
        matches = [i for i, r in enumerate(rows)
                   if np.array_equal(r.faces[0].landmarks.points, pts.astype(np.float32).astype(np.float64))]
        assert len(matches) == 1, name
        found.append(matches[0])
        assert rows[matches[0]].attributes["yaw"] == pytest.approx(from_mat[name].attributes["yaw"], abs=1e-4)
    assert found == sorted(found)


# --- more formats -------------------------------------------------------------------------------

def test_wflw_lines_flags_and_errors(tmp_path):
    rng = np.random.default_rng(2)
    pts = rng.uniform(10, 90, (2, 98, 2))
    lines = [" ".join(f"{v:.3f}" for v in p.ravel()) + f" 5 6 95 96 {' '.join(flags)} 0--Parade/a.jpg"
             for p, flags in zip(pts, (["1", "0", "0", "0", "1", "0"], ["0"] * 6))]
    (tmp_path / "list_98pt_rect_attr_test.txt").write_text("\n".join(lines) + "\n")
    samples = load_dataset("wflw", tmp_path, "test")
    assert [s.id for s in samples] == ["0--Parade/a.jpg#1", "0--Parade/a.jpg#2"]  # two faces of one image
    assert np.allclose(samples[0].faces[0].landmarks.points, pts[0], atol=1e-3)
    assert samples[0].attributes["pose"] == 1 and samples[0].attributes["occlusion"] == 1
    assert summary(samples)["by_flag"] == {"pose": {"images": 1, "faces": 1}, "occlusion": {"images": 1, "faces": 1}}
    (tmp_path / "list_98pt_rect_attr_test.txt").write_text(lines[0] + "\n" + lines[1].rsplit(" ", 2)[0] + "\n")
    with pytest.raises(AnnotationError, match=r"attr_test.txt:2: expected 207 fields"):
        load_dataset("wflw", tmp_path, "test")


def test_cofw_mat(tmp_path):
    rng = np.random.default_rng(3)
    images = np.empty((2, 1), dtype=object)
    images[0, 0] = rng.integers(0, 255, (40, 50), dtype=np.uint8)  # grey
    images[1, 0] = rng.integers(0, 255, (30, 20, 3), dtype=np.uint8)
    phis = np.c_[rng.uniform(2, 19, (2, 58)), rng.integers(0, 2, (2, 29))]
    savemat(tmp_path / "COFW_test.mat",
            {"IsT": images, "phisT": phis, "bboxesT": np.array([[1, 2, 10, 12], [3, 3, 5, 5.]])})
    samples = load_dataset("cofw", tmp_path, "test")
    assert len(samples) == 2 and samples[0].image().shape == (40, 50, 3) and samples[1].image().shape == (30, 20, 3)
    assert np.allclose(samples[0].faces[0].landmarks.points[:, 0], phis[0, :29] - 1)
    assert samples[1].faces[0].box.as_array().tolist() == [2, 2, 7, 7]
    assert np.array_equal(samples[0].attributes["occluded"], phis[0, 58:].astype(bool))


def test_dlib_xml_coco_keypoints_and_menpo_folder(tmp_path):
    parts = "".join(f"<part name='{i:02d}' x='{10 + i}' y='{20 + i}'/>" for i in range(68))
    (tmp_path / "faces.xml").write_text(
        "<?xml version='1.0'?><dataset><images>"
        f"<image file='a.jpg'><box top='5' left='6' width='40' height='50'>{parts}</box>"
        "<box top='0' left='0' width='3' height='3' ignore='1'/></image>"
        "<image file='b.jpg'/></images></dataset>")
    a, b = load_dataset("dlib-xml", tmp_path / "faces.xml")
    assert a.faces[0].box.as_array().tolist() == [5.5, 4.5, 45.5, 54.5] and len(a.ignore) == 1
    assert a.faces[0].landmarks.scheme == "ibug68" and a.faces[0].landmarks.points[67].tolist() == [77, 87]
    assert b.faces == ()
    (tmp_path / "bad.xml").write_text("<dataset><images><image file='a.jpg'><box top='x'/></image></images></dataset>")
    with pytest.raises(AnnotationError, match=r"bad.xml: image a.jpg: malformed box"):
        load_dataset("dlib-xml", tmp_path / "bad.xml")

    kps = np.c_[np.arange(98) * 1.0, np.arange(98) * 2.0, np.r_[np.full(97, 2), 0]].ravel().tolist()
    (tmp_path / "kp.json").write_text(json.dumps({
        "images": [{"id": 7, "file_name": "x.png"}],
        "annotations": [{"image_id": 7, "bbox": [1, 2, 30, 40], "keypoints": kps, "iscrowd": 0},
                        {"image_id": 7, "bbox": [50, 50, 10, 10], "iscrowd": 1}]}))
    (sample,) = load_dataset("coco-keypoints", tmp_path / "kp.json")
    # COCO coordinates count from the pixel corner: -0.5 to reach pixel centres (the default origin)
    assert sample.faces[0].landmarks.scheme == "wflw98"
    assert sample.faces[0].box.as_array().tolist() == [0.5, 1.5, 30.5, 41.5]
    assert len(sample.ignore) == 1
    assert not sample.faces[0].landmarks.visible[97] and sample.faces[0].landmarks.visible[0]

    menpo = tmp_path / "menpo"
    _image(menpo / "p.png")
    _pts(menpo / "p.pts", np.random.default_rng(4).uniform(0, 40, (68, 2)))
    _image(menpo / "unannotated.png")
    (sample,) = load_dataset("menpo", menpo)
    assert sample.id == "p" and sample.faces[0].landmarks.scheme == "ibug68"


# --- round trips on the real files: load -> write in the official format -> load ---------------

@pytest.mark.shared
@skip_300w
def test_real_300w_csv_round_trips_through_pts_folders(tmp_path):
    from facebench.datasets.landmark_files import write_pts

    original = load_dataset("300w", W300, "full")
    for s in original:
        write_pts(tmp_path / f"{s.id}.pts", s.faces[0].landmarks.points)
        _image(tmp_path / f"{s.id}.png", (8, 8))
    again = {s.id: s for s in load_dataset("300w", tmp_path, "full")}
    assert len(again) == 689
    for s in original:
        assert np.allclose(again[s.id].faces[0].landmarks.points, s.faces[0].landmarks.points, atol=1e-6)
        assert again[s.id].attributes["subset"] == s.attributes["subset"]


@pytest.mark.shared
@skip_wider
def test_real_wider_mat_round_trips_through_the_release_txt(tmp_path):
    from facebench.datasets.wider import read_wider_eval_gt, write_wider_txt

    gt = read_wider_eval_gt(WIDER)
    write_wider_txt(tmp_path / "wider_face_split" / "wider_face_val_bbx_gt.txt",
                    {f"{k}.jpg": (b, inv) for k, b, inv in zip(gt.keys, gt.boxes, gt.invalid)})
    from_txt = wider_ds.load(tmp_path, "val")
    assert len(from_txt) == 3226 and sum(len(s.faces) + len(s.ignore) for s in from_txt) == 39708
    assert sum(len(s.ignore) for s in from_txt) == int(sum(i.sum() for i in gt.invalid))  # invalid faces
    for s, boxes in zip(from_txt[::97], gt.boxes[::97]):
        both = np.array([f.box.as_array() for f in s.faces] + [b.as_array() for b in s.ignore]).reshape(-1, 4)
        assert sorted(map(tuple, both)) == sorted(map(tuple, np.c_[boxes[:, :2], boxes[:, :2] + boxes[:, 2:]]))


@pytest.mark.shared
@skip_fddb
def test_real_fddb_round_trip(tmp_path):
    from facebench.datasets.fddb import read_fddb_folds, read_fddb_list, write_fddb_list

    folds = read_fddb_folds(FDDB)
    write_fddb_list(tmp_path / "all.txt", folds)
    again = read_fddb_list(tmp_path / "all.txt")
    assert list(again) == list(folds)
    assert all(np.array_equal(again[k][:, :5], folds[k]) for k in folds)


def test_skip_bad_counts_and_names_the_bad_files(tmp_path):
    rng = np.random.default_rng(5)
    for i in range(3):
        _pts(tmp_path / "ibug" / f"img{i}.pts", rng.uniform(5, 40, (68, 2)))
        _image(tmp_path / "ibug" / f"img{i}.png")
    (tmp_path / "ibug" / "img1.pts").write_text("version: 1\nn_points: 68\n{\n1 2\n}\n")
    with pytest.raises(AnnotationError, match="img1.pts"):
        load_dataset("300w", tmp_path, "challenging")
    skipped: list[str] = []
    samples = load_dataset("300w", tmp_path, "challenging", skipped)
    assert [s.id for s in samples] == ["ibug/img0", "ibug/img2"] and len(skipped) == 1 and "img1.pts" in skipped[0]
    result = CliRunner().invoke(main, ["datasets", "info", "300w", "--root", str(tmp_path), "--split", "challenging",
                                       "--skip-bad", "--json"])
    info = json.loads(result.stdout)["splits"]["challenging"]
    assert info["images"] == 2 and len(info["skipped"]) == 1
