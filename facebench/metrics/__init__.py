"""Metrics as pure numpy functions over arrays, the same ones ``facebench run`` and ``facebench score`` use.

Landmarks (arrays (F, N, 2) in pixels; NME as a fraction of the normaliser)::

    from facebench.metrics import nme, ced
    errors = nme(pred, gt, norm="inter-ocular")   # scheme from N: 68 -> iBUG-68, 98 -> WFLW-98, ...
    curve = ced(errors, threshold=0.08)           # .failure_rate, .auc

Detection (boxes (x0, y0, x1, y1) per image)::

    from facebench.metrics import evaluate_detections
    result = evaluate_detections(gt_boxes, det_boxes, det_scores, rule="coco", ap="coco101")

Each module's docstring states its definition and where it departs from a reference evaluator.
"""

from facebench.metrics.detection import average_precision, box_iou, evaluate_detections, precision_recall
from facebench.metrics.early_exit import early_exit_curves, stop_stage
from facebench.metrics.fddb import evaluate_fddb
from facebench.metrics.jitter import sequence_jitter, shift_jitter
from facebench.metrics.landmarks import (
    balanced_yaw_nme,
    ced,
    grouped,
    nme,
    normaliser,
    point_errors,
    region_nme,
    summarise,
    summarise_with_failures,
)
from facebench.metrics.wider import evaluate_wider

__all__ = ["average_precision", "balanced_yaw_nme", "box_iou", "ced", "early_exit_curves", "evaluate_detections",
           "evaluate_fddb", "evaluate_wider", "grouped", "nme", "normaliser", "point_errors", "precision_recall",
           "region_nme", "sequence_jitter", "shift_jitter", "stop_stage", "summarise", "summarise_with_failures"]
