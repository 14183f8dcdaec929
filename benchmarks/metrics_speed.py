"""Metric speed on benchmark-sized problems, against pycocotools in the same process.

1. WIDER FACE mode (all three settings) on a WIDER-val-sized problem: the real
   val ground truth when ``../shared/data/wider-face-val-gt`` exists (else a
   synthetic one of the same size: 3,226 images, 39,708 faces) with about
   300,000 scored detections made from it (jittered copies of faces and
   random boxes).
2. Single-category AP50 of the same detections: facebench (COCO rule and
   101-point AP, equal to pycocotools to the last digit; and the VOC rule)
   against pycocotools' COCOeval (the reference). Ratio = reference time /
   facebench time (above 1: facebench is faster).
3. NME (inter-ocular) + CED/FR/AUC over one million 68-point faces.

Run on one core for the targets (WIDER < 0.5 s, NME+CED < 1 s):

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 taskset -c 0 python benchmarks/metrics_speed.py
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
from pathlib import Path

import numpy as np

from facebench.metrics import landmarks as lm
from facebench.metrics.detection import corners_from_xywh, evaluate_detections
from facebench.metrics.wider import SETTINGS, evaluate_wider

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "wider-face-val-gt"


def wider_problem(rng, n_detections: int):
    if SHARED.is_dir():
        from facebench.datasets.wider import read_wider_eval_gt

        gt = read_wider_eval_gt(SHARED)
        boxes, kept, source = gt.boxes, gt.kept, "real WIDER val ground truth"
    else:
        counts = rng.multinomial(39_708 - 3_226, np.ones(3_226) / 3_226) + 1
        boxes = []
        for n in counts:
            xy = rng.uniform(0, 1000, (n, 2))
            boxes.append(np.concatenate([xy, rng.uniform(4, 200, (n, 2))], axis=1).round())
        kept = {s: [np.flatnonzero(rng.random(len(b)) < p) for b in boxes]
                for s, p in zip(SETTINGS, (0.18, 0.34, 0.8))}
        source = "synthetic, WIDER val sized"
    n_faces = sum(len(b) for b in boxes)
    per_face = max(1, int(0.6 * n_detections / n_faces))
    preds = []
    for b in boxes:
        near = np.repeat(b, per_face, axis=0)
        near = near + rng.normal(0, 0.12, near.shape) * np.repeat(near[:, 2:4], 2, axis=1)
        n_far = int(rng.poisson(0.4 * n_detections / len(boxes)))
        far = np.concatenate([rng.uniform(0, 1000, (n_far, 2)), rng.uniform(4, 200, (n_far, 2))], axis=1)
        rows = np.concatenate([near, far])
        rows[:, 2:4] = np.maximum(rows[:, 2:4], 1)
        scores = rng.random(len(rows))
        preds.append(np.concatenate([rows, scores[:, None]], axis=1)[np.argsort(-scores)])
    return boxes, kept, preds, source


def pycocotools_ap50(gt_corners, det_corners, det_scores):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    anns, results, k = [], [], 0
    for i, (g, d, s) in enumerate(zip(gt_corners, det_corners, det_scores)):
        for b in g:
            k += 1
            anns.append({"id": k, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
        results += [{"image_id": i + 1, "category_id": 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                     "score": float(v)} for b, v in zip(d.tolist(), s)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": [{"id": i + 1} for i in range(len(gt_corners))], "annotations": anns,
                        "categories": [{"id": 1, "name": "face"}]}
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluator.params.iouThrs = np.array([0.5])
        evaluator.params.maxDets = [100_000]
        evaluator.params.areaRng = [[0, 1e10]]
        evaluator.params.areaRngLbl = ["all"]
        evaluator.evaluate()
        evaluator.accumulate()
    p = evaluator.eval["precision"][0, :, 0, 0, 0]
    return float(np.mean(p[p > -1]))


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--detections", type=int, default=300_000)
    parser.add_argument("--faces", type=int, default=1_000_000, help="faces for the NME + CED timing")
    parser.add_argument("--skip-pycocotools", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    boxes, kept, preds, source = wider_problem(rng, args.detections)
    n_det = sum(len(p) for p in preds)
    print(f"WIDER problem: {source}: {len(boxes)} images, {sum(len(b) for b in boxes)} faces, {n_det} detections")
    curves, t_wider = timed(evaluate_wider, boxes, kept, preds)
    print(f"facebench WIDER mode, 3 settings: {t_wider:.3f} s  "
          + "  ".join(f"{s} {curves[s].ap:.4f}" for s in SETTINGS))

    gt_c = [corners_from_xywh(b) for b in boxes]
    det_c = [corners_from_xywh(p) for p in preds]
    det_s = [p[:, 4] for p in preds]
    # min_area=0 is pycocotools' area range "all" (from 0): it ignores boxes of negative area, and the
    # real WIDER val ground truth has one (a face of width -2)
    coco, t_coco = timed(evaluate_detections, gt_c, det_c, det_s, rule="coco", ap="coco101", min_area=0.0)
    voc, t_voc = timed(evaluate_detections, gt_c, det_c, det_s, rule="voc", ap="voc")
    print(f"facebench AP50, COCO rule, 101-point: {t_coco:.3f} s  AP {coco.ap:.6f}")
    print(f"facebench AP50, VOC rule, all-point:  {t_voc:.3f} s  AP {voc.ap:.6f}")
    if not args.skip_pycocotools:
        ref, t_ref = timed(pycocotools_ap50, gt_c, det_c, det_s)
        print(f"reference pycocotools COCOeval AP50:  {t_ref:.3f} s  AP {ref:.6f}  "
              f"(equal to facebench COCO rule: {ref == coco.ap})")
        print(f"ratio pycocotools / facebench: COCO rule {t_ref / t_coco:.1f}x, VOC rule {t_ref / t_voc:.1f}x, "
              f"WIDER mode (3 settings) {t_ref / t_wider:.1f}x")

    gt = rng.uniform(0, 256, (args.faces, 68, 2))
    pred = gt + rng.normal(0, 2.0, gt.shape)
    start = time.perf_counter()
    errors = lm.nme(pred, gt, "inter-ocular", "ibug68")
    curve = lm.ced(errors, 0.08)
    t_nme = time.perf_counter() - start
    print(f"NME + CED over {args.faces} faces: {t_nme:.3f} s  (NME {errors.mean():.4f}, AUC {curve.auc:.4f})")


if __name__ == "__main__":
    main()
