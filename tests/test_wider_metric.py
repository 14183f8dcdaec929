"""WIDER FACE mode: the official procedure transcribed literally, hand cases, and the real val ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facebench.metrics.detection import box_iou
from facebench.metrics.wider import SETTINGS, evaluate_wider

from conftest import SHARED

WIDER_GT = SHARED / "wider-face-val-gt"
needs_wider = pytest.mark.skipif(not WIDER_GT.is_dir(), reason=f"{WIDER_GT} absent (real WIDER val ground truth)")


def literal_wider_ap(gt_boxes, kept, preds, thresh_num=1000, iou_thresh=0.5):
    """The eval tool's loops, one prediction and one threshold at a time, in file order."""
    scores = np.concatenate([p[:, 4] for p in preds if len(p)])
    lo, hi = scores.min(), scores.max()
    pr = np.zeros((thresh_num, 2))
    count_face = 0
    for gt, keep, pred in zip(gt_boxes, kept, preds):
        count_face += len(keep)
        if len(gt) == 0 or len(pred) == 0:
            continue
        pred = pred.copy()
        pred[:, 4] = (pred[:, 4] - lo) / (hi - lo)
        ignore = np.zeros(len(gt))
        ignore[keep] = 1
        def to_corners(b):
            return np.c_[b[:, :2], b[:, :2] + b[:, 2:4]]

        overlaps = box_iou(to_corners(pred), to_corners(gt), plus_one=True)
        recall_list = np.zeros(len(gt))
        proposal_list = np.ones(len(pred))
        pred_recall = np.zeros(len(pred))
        for h in range(len(pred)):
            idx = int(np.argmax(overlaps[h]))
            if overlaps[h, idx] >= iou_thresh:
                if ignore[idx] == 0:
                    recall_list[idx] = -1
                    proposal_list[h] = -1
                elif recall_list[idx] == 0:
                    recall_list[idx] = 1
            pred_recall[h] = np.sum(recall_list == 1)
        for t in range(thresh_num):
            thresh = 1 - (t + 1) / thresh_num
            above = np.flatnonzero(pred[:, 4] >= thresh)
            if len(above):
                r = above[-1]
                pr[t, 0] += np.sum(proposal_list[: r + 1] == 1)
                pr[t, 1] += pred_recall[r]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = pr[:, 1] / pr[:, 0]
    recall = pr[:, 1] / count_face
    mrec = np.r_[0, recall, 1]
    mpre = np.r_[0, precision, 0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = np.fmax(mpre[i], mpre[i + 1])  # MATLAB's max skips NaN
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def _problem(seed, n_images=5, sort=True):
    rng = np.random.default_rng(seed)
    gts, kept, preds = [], {s: [] for s in SETTINGS}, []
    for _ in range(n_images):
        n = int(rng.integers(0, 8))
        xy = rng.integers(0, 200, (n, 2))
        gt = np.c_[xy, rng.integers(3, 40, (n, 2))].astype(float)
        gts.append(gt)
        hard = np.flatnonzero(rng.random(n) < 0.8)
        medium = hard[rng.random(len(hard)) < 0.6]
        kept["hard"].append(hard)
        kept["medium"].append(medium)
        kept["easy"].append(medium[rng.random(len(medium)) < 0.5])
        near = gt[rng.integers(0, max(n, 1), int(rng.integers(0, 2 * n + 1)))] if n else np.zeros((0, 4))
        near = near + np.round(rng.normal(0, 2, near.shape))
        far = np.c_[rng.integers(0, 200, (2, 2)), rng.integers(3, 40, (2, 2))]
        boxes = np.r_[near, far]
        score = np.round(rng.random(len(boxes)), 3)  # rounded: ties happen
        p = np.c_[boxes, score]
        preds.append(p[np.argsort(-score, kind="stable")] if sort else p)
    return gts, kept, preds


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_equals_the_literal_procedure_on_sorted_files(seed):
    gts, kept, preds = _problem(seed)
    ours = evaluate_wider(gts, kept, preds)
    for s in SETTINGS:
        if sum(len(k) for k in kept[s]) == 0:
            continue
        assert ours[s].ap == literal_wider_ap(gts, kept[s], preds)  # to the last digit


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_result_does_not_depend_on_per_image_order(seed):
    gts, kept, preds = _problem(seed)
    rng = np.random.default_rng(seed)
    shuffled = [p[rng.permutation(len(p))] for p in preds]
    a, b = evaluate_wider(gts, kept, preds), evaluate_wider(gts, kept, shuffled)
    assert all(a[s].ap == b[s].ap for s in SETTINGS)


def test_the_tool_itself_depends_on_file_order():
    # why facebench sorts: the same detections, listed low score first, change the tool's answer
    gt = [np.array([[0, 0, 10, 10], [50, 0, 10, 10.]])]
    preds = np.array([[100, 100, 10, 10, 0.2], [0, 0, 10, 10, 0.9], [50, 0, 10, 10, 0.5]])
    kept = [np.array([0, 1])]
    sorted_preds = [preds[np.argsort(-preds[:, 4])]]
    # in file order the background box (listed first) sits inside every cut the tool makes
    assert literal_wider_ap(gt, kept, [preds]) == pytest.approx(2 / 3)
    assert literal_wider_ap(gt, kept, sorted_preds) == 1.0
    assert evaluate_wider(gt, {"hard": kept}, [preds])["hard"].ap == literal_wider_ap(gt, kept, sorted_preds)


def test_hand_computed_case():
    # one image: faces A, B kept, C not kept. Detections (already normalised scores 1, .5, .25, 0):
    #   on A (1.0) -> recalls A; on C (0.5) -> not a proposal; duplicate on A (0.25) -> proposal, no recall;
    #   background (0.0) -> proposal.
    gt = [np.array([[0, 0, 20, 20], [100, 0, 20, 20], [200, 0, 20, 20.]])]
    preds = [np.array([[0, 0, 20, 20, 1.0], [200, 0, 20, 20, 0.5], [1, 1, 20, 20, 0.25], [300, 300, 9, 9, 0.0]])]
    r = evaluate_wider(gt, {"easy": [np.array([0, 1])]}, preds)["easy"]
    # thresholds .999 … .5: 1 proposal, 1 recalled; .499 … .25: 2 proposals; .249 … 0.001: 2; 0: 3
    assert r.recall.max() == 0.5 and r.precision[0] == 1.0 and r.precision[-1] == pytest.approx(1 / 3)
    assert r.ap == pytest.approx(0.5)  # precision 1 until recall 1/2, B never found
    # with C counted too, the 0.5 detection recalls it
    r2 = evaluate_wider(gt, {"hard": [np.array([0, 1, 2])]}, preds)["hard"]
    assert r2.ap == pytest.approx(2 / 3)


@pytest.mark.shared
@needs_wider
def test_real_ground_truth_scored_against_itself():
    from facebench.datasets.wider import read_wider_eval_gt

    gt = read_wider_eval_gt(WIDER_GT)
    assert (len(gt.keys), gt.n_faces) == (3226, 39708)
    assert [sum(len(k) for k in gt.kept[s]) for s in SETTINGS] == [7211, 13319, 31958]
    rng = np.random.default_rng(0)
    # every face predicted exactly, with a distinct score. Two faces cannot be recalled: one repeats an
    # earlier box of its image (the tool gives the prediction to the first face of highest IoU), and
    # one has a negative width (overlap 0 by the tool's rule).
    preds, recallable = [], {s: 0 for s in SETTINGS}
    for i, boxes in enumerate(gt.boxes):
        _, first = np.unique(boxes, axis=0, return_index=True)
        unique = np.zeros(len(boxes), bool)
        unique[first] = True
        unique &= (boxes[:, 2] >= 0) & (boxes[:, 3] >= 0)
        # those get the lowest scores, so they cannot lower precision before full recall
        score = np.where(unique, 0.5 + 0.5 * rng.random(len(boxes)), 0.4 * rng.random(len(boxes)))
        preds.append(np.c_[boxes, score])
        for s in SETTINGS:
            recallable[s] += int(unique[gt.kept[s][i]].sum())
    result = evaluate_wider(gt.boxes, gt.kept, preds)
    for s in SETTINGS:
        n = sum(len(k) for k in gt.kept[s])
        assert result[s].faces == n
        assert result[s].recall.max() == recallable[s] / n
        assert result[s].ap == pytest.approx(recallable[s] / n, abs=1e-12)
    assert [sum(len(k) for k in gt.kept[s]) - recallable[s] for s in SETTINGS] == [0, 0, 2]
    # cut every prediction to a third of its width: IoU (floor(w/3)+1)/(w+1) drops below 0.5 unless w is tiny; count
    # the ones that still match their own face and check the recall the metric reaches
    third = [np.c_[b[:, :2], np.floor(b[:, 2:3] / 3), b[:, 3:4], p[:, 4]] for b, p in zip(gt.boxes, preds)]
    still = {s: 0 for s in SETTINGS}
    for i, (b, p) in enumerate(zip(gt.boxes, third)):
        # with the dense IoU matrix: the faces some prediction reaches as its best at IoU >= 0.5
        # (a thin box in a crowd can land on a neighbour)
        iou = box_iou(np.c_[p[:, :2], p[:, :2] + p[:, 2:4]], np.c_[b[:, :2], b[:, :2] + b[:, 2:4]], plus_one=True)
        best = np.argmax(iou, axis=1) if len(b) else np.zeros(0, int)
        reached = np.unique(best[iou[np.arange(len(b)), best] >= 0.5]) if len(b) else best
        for s in SETTINGS:
            still[s] += len(np.intersect1d(reached, gt.kept[s][i]))
    halved = evaluate_wider(gt.boxes, gt.kept, third)
    for s in SETTINGS:
        n = sum(len(k) for k in gt.kept[s])
        assert halved[s].recall.max() == pytest.approx(still[s] / n, abs=1e-12)
        assert still[s] < recallable[s]
    assert still["easy"] == 0 < still["hard"]  # only tiny faces survive, and easy has none
