"""``facebench score wider`` speed on a WIDER-val-sized submission, against faster-coco-eval in the same process.

The submission is synthetic but shaped like a real one: the real WIDER val ground
truth (``../shared/data/wider-face-val-gt``, required) gives 3,226 images and
39,708 faces; each image's file holds jittered copies of its faces and random
boxes, about 300,000 detections in all, written as ``%.1f`` boxes and ``%.3f``
scores like the published detectors' files.

Timed, each on the same files / detections:

* the line-by-line reader facebench had before (kept as ``_read_wider_lines``),
* facebench's reader (``read_wider_predictions``), and reader + official-procedure
  scorer (``score_wider``: ground truth, predictions, easy/medium/hard AP),
* faster-coco-eval's COCOeval_faster on the same detections, single category,
  AP at IoU 0.5 (a different metric, the same amount of matching work; its
  input is given in memory, so its time excludes any file reading). Skipped
  when faster-coco-eval is not installed (it is not a facebench dependency:
  ``pip install faster-coco-eval``).

Ratio = faster-coco-eval time / facebench time (above 1: facebench is faster).

    OMP_NUM_THREADS=1 python benchmarks/score_wider_speed.py
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from facebench.offline import prediction_files as pf
from facebench.offline.score_files import score_wider

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "wider-face-val-gt"


def write_submission(folder: Path, keys: list[str], boxes: list[np.ndarray], n_detections: int,
                     rng: np.random.Generator) -> list[np.ndarray]:
    """One ``event/image.txt`` per image; returns the (m, 5) rows as written (rounded)."""
    n_faces = sum(len(b) for b in boxes)
    per_face = max(1, int(0.6 * n_detections / n_faces))
    written = []
    for key, b in zip(keys, boxes):
        near = np.repeat(b, per_face, axis=0)
        near = near + rng.normal(0, 0.12, near.shape) * np.repeat(near[:, 2:4], 2, axis=1)
        n_far = int(rng.poisson(0.4 * n_detections / len(boxes)))
        far = np.concatenate([rng.uniform(0, 1000, (n_far, 2)), rng.uniform(4, 200, (n_far, 2))], axis=1)
        rows = np.concatenate([near, far])
        rows[:, 2:4] = np.maximum(rows[:, 2:4], 1)
        scores = rng.random(len(rows))
        order = np.argsort(-scores)
        rows, scores = rows[order].round(1), scores[order].round(3)
        event, image = key.split("/")
        (folder / event).mkdir(parents=True, exist_ok=True)
        body = "".join(f"{x:.1f} {y:.1f} {w:.1f} {h:.1f} {s:.3f}\n" for (x, y, w, h), s in zip(rows.tolist(), scores))
        (folder / event / f"{image}.txt").write_text(f"{image}\n{len(rows)}\n{body}")
        written.append(np.concatenate([rows, scores[:, None]], axis=1))
    return written


def read_old(folder: Path) -> dict[str, np.ndarray]:
    """The reader as it was: every line parsed and checked on its own."""
    out = {}
    for path in sorted(folder.rglob("*.txt")):
        lines = pf.read_lines(path, pf.PredictionFileError)
        out[f"{path.parent.name}/{path.stem}"] = pf._read_wider_lines(path, lines[2:], int(float(lines[1])))
    return out


def faster_coco_ap50(gt_boxes: list[np.ndarray], preds: list[np.ndarray]) -> tuple[float, float]:
    """AP50 of one category with faster-coco-eval; (AP, seconds), the seconds from the dicts onwards."""
    from faster_coco_eval import COCO, COCOeval_faster

    images = [{"id": i + 1, "width": 2000, "height": 2000} for i in range(len(gt_boxes))]
    anns, k = [], 0
    for i, g in enumerate(gt_boxes):
        for x, y, w, h in g.tolist():
            k += 1
            anns.append({"id": k, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                         "bbox": [x, y, w, h], "area": w * h})
    results = [{"image_id": i + 1, "category_id": 1, "bbox": r[:4], "score": r[4]}
               for i, p in enumerate(preds) for r in p.tolist()]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "face"}]}
        coco.createIndex()
        evaluator = COCOeval_faster(coco, coco.loadRes(results), "bbox")
        evaluator.params.iouThrs = np.array([0.5])
        evaluator.params.maxDets = [100_000]
        evaluator.params.areaRng = [[0, 1e10]]
        evaluator.params.areaRngLbl = ["all"]
        evaluator.evaluate()
        evaluator.accumulate()
    seconds = time.perf_counter() - start
    p = evaluator.eval["precision"][0, :, 0, 0, 0]
    return float(np.mean(p[p > -1])), seconds


def timed(fn, *args):
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--detections", type=int, default=300_000)
    parser.add_argument("--skip-old", action="store_true", help="do not time the line-by-line reader")
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} absent (the real WIDER val ground truth)")
        return 0
    from facebench.datasets.wider import read_wider_eval_gt

    gt = read_wider_eval_gt(SHARED)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        written = write_submission(folder, list(gt.keys), list(gt.boxes), args.detections, rng)
        n_det = sum(len(w) for w in written)
        print(f"submission: {len(written)} files, {sum(len(b) for b in gt.boxes)} faces, {n_det} detections")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pf.PredictionFileWarning)
            new, t_new = timed(pf.read_wider_predictions, folder)
            if not args.skip_old:
                old, t_old = timed(read_old, folder)
                same = old.keys() == new.keys() and all(np.array_equal(old[k], new[k]) for k in old)
                print(f"line-by-line reader (before): {t_old:.3f} s")
            print(f"facebench reader:             {t_new:.3f} s"
                  + ("" if args.skip_old else f"  ({t_old / t_new:.1f}x faster, identical arrays: {same})"))
            result, t_score = timed(score_wider, SHARED, folder)
        print(f"facebench score_wider (gt + reader + 3 settings): {t_score:.3f} s  "
              + "  ".join(f"{s} {ap:.4f}" for s, ap in result["ap"].items()))
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        print("faster-coco-eval not installed: comparison skipped (pip install faster-coco-eval)")
        return 0
    ap, t_fce = faster_coco_ap50(list(gt.boxes), written)
    print(f"faster-coco-eval {faster_coco_eval.__version__} COCOeval_faster AP50 (in memory): "
          f"{t_fce:.3f} s  AP {ap:.4f}")
    print(f"ratio faster-coco-eval / facebench score_wider: {t_fce / t_score:.2f}x (above 1: facebench faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
