"""The pycocotools reference the detection metrics are checked against, in one place."""

from __future__ import annotations

import numpy as np


def pycocotools_ap50(gts, dets, scores, min_area: float = 0.0, max_dets: int = 10_000) -> float:
    """pycocotools' AP at IoU 0.5 over one category (the reference facebench's COCO rule must equal):
    boxes (x0, y0, x1, y1) per image, ``maxDets = [max_dets]``, ``areaRng = [[min_area, 1e10]]``."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]

    anns = [{"id": k + 1, "image_id": i + 1, "category_id": 1, "bbox": xywh(b), "iscrowd": 0,
             "area": float((b[2] - b[0]) * (b[3] - b[1]))}
            for k, (i, b) in enumerate((i, b) for i, g in enumerate(gts) for b in g)]
    results = [{"image_id": i + 1, "category_id": 1, "bbox": xywh(b), "score": float(s)}
               for i, (d, sc) in enumerate(zip(dets, scores)) for b, s in zip(d, sc)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": [{"id": i + 1} for i in range(len(gts))], "annotations": anns,
                        "categories": [{"id": 1, "name": "face"}]}
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluator.params.iouThrs = np.array([0.5])
        evaluator.params.maxDets = [max_dets]
        evaluator.params.areaRng = [[min_area, 1e10]]
        evaluator.params.areaRngLbl = ["all"]
        evaluator.evaluate()
        evaluator.accumulate()
    p = evaluator.eval["precision"][0, :, 0, 0, 0]
    return float(np.mean(p[p > -1]))
