"""Run an adapter over items: pre/post-processing on worker threads, batched forward.

The main thread only stacks inputs and calls ``forward``; ``preprocess``
(image decoding included) and ``postprocess`` run on a thread pool, with up
to two batches prepared ahead, and no more than ``PREFETCH_BYTES`` of prepared inputs
waiting (large photos: fewer items ahead). Each item's time is recorded per phase; the
forward time of a batch is shared equally among its items.

An item whose preprocess or postprocess raises, whose prediction is not
finite or not of the card's scheme and shape, or whose forward fails even
when run alone, becomes a failure with its key and message; every other
item still gets its result.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from facebench.adapter import Adapter, check_prediction
from facebench.imaging import image_size
from facebench.run import activity
from facebench.types import Box, Detection, Face, ItemResult, Prediction, Sample, face_key

# The most bytes of preprocessed inputs waiting for ``forward`` (the look-ahead), besides the batch being
# formed: 24 photos of 25 Mpx would otherwise take 1.8 GB. At least one item is always prepared.
PREFETCH_BYTES = 512 * 2**20


def _nbytes(inputs) -> int:
    total = 0
    for value in (inputs.values() if isinstance(inputs, dict) else ()):
        total += int(getattr(value, "nbytes", 0) or np.asarray(value).nbytes)
    return total


@dataclass(frozen=True)
class Item:
    """One unit of work: a whole image for detectors, one face for landmark models.

    ``face`` is the annotated face a landmark item is about; ``face_box`` the
    box its model is given (:mod:`facebench.run.face_boxes` frames it)."""

    key: str
    sample: Sample
    face_box: Box | Detection | None = None
    face: Face | None = None


def check_within_image(prediction: Prediction, size: tuple[int, int], reach: float = 1.0) -> None:
    """Raise ValueError for a finite but absurd prediction: a point or box corner more than
    ``reach`` image sizes outside the image (a decoding bug, not a poor guess, so a failure)."""
    width, height = size
    points = []
    if prediction.landmarks is not None:
        points.append(prediction.landmarks.points[:, :2])
    for det in prediction.detections or ():
        points.append(det.box.as_array().reshape(2, 2))
        if det.keypoints is not None:
            points.append(np.asarray(det.keypoints, dtype=np.float64)[:, :2])
    if not points:
        return
    xy = np.concatenate(points)
    lo, hi = np.array([-reach * width, -reach * height]), np.array([(1 + reach) * width, (1 + reach) * height])
    outside = np.flatnonzero(((xy < lo) | (xy > hi)).any(axis=1))
    if outside.size:
        x, y = xy[outside[0]]
        raise ValueError(f"prediction far outside the {width}x{height} image: ({x:.1f}, {y:.1f}) and "
                         f"{outside.size - 1} more point(s) beyond {reach:g} image size(s) from its edges")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def run_adapter(adapter: Adapter, items: Sequence[Item], batch_size: int = 8, workers: int = 2,
                on_batch: Callable[[list[ItemResult]], None] | None = None,
                progress: Callable[[int], None] | None = None, track: bool = True) -> list[ItemResult]:
    """Run ``adapter`` over ``items``; results come back in item order.

    ``track`` marks each item's phase in :mod:`facebench.run.activity` (off for a helper model,
    such as a framing detector, whose caller marks the items it works for).

    ``on_batch`` receives each finished batch (the results store writes it
    at once, so an interrupted run keeps what it did); ``progress`` receives
    the number of items just finished.
    """
    card = adapter.card
    results: dict[str, ItemResult] = {}

    sizes: dict[str, tuple[int, int]] = {}
    seen = [0, 0]  # bytes and count of the inputs prepared so far: the look-ahead's estimate per item

    def pre(item: Item):
        start = time.perf_counter()
        with activity.phase("preprocess", [item.key] if track else []):
            inputs, context = adapter.preprocess(item.sample, item.face_box)
            sizes[item.key] = image_size(item.sample)
        nbytes = _nbytes(inputs)
        seen[0] += nbytes
        seen[1] += 1
        return inputs, context, time.perf_counter() - start, nbytes

    def post(item: Item, outputs, context, timing: ItemResult) -> ItemResult:
        start = time.perf_counter()
        try:
            with activity.phase("postprocess", [item.key] if track else []):
                prediction = adapter.postprocess(outputs, context)
            check_prediction(prediction, card)
            check_within_image(prediction, sizes.pop(item.key))
            timing.prediction = prediction
        except Exception as exc:  # noqa: BLE001 - any adapter error is the item's failure
            timing.error = f"postprocess: {_describe(exc)}"
        timing.postprocess_s = time.perf_counter() - start
        return timing

    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="facebench")
    try:
        pending: deque[tuple[Item, Future]] = deque()
        queue = iter(items)

        def room() -> bool:
            """Whether one more item may be prepared: always when none waits; else within three batches
            and (prepared bytes + an estimate for those still preparing and the next) within the budget."""
            if not pending:
                return True
            if len(pending) >= 3 * batch_size:
                return False
            if seen[1] == 0:  # no size known yet: only as many as the workers prepare at once
                return len(pending) < max(1, workers)
            mean = seen[0] / seen[1]
            ready = sum(f.result()[3] for _, f in pending if f.done() and f.exception() is None)
            preparing = sum(1 for _, f in pending if not f.done())
            return ready + (preparing + 1) * mean <= PREFETCH_BYTES

        def fill():
            while room():
                item = next(queue, None)
                if item is None:
                    return
                pending.append((item, pool.submit(pre, item)))

        fill()
        in_flight: list[tuple[Item, Future]] = []
        while pending or in_flight:
            batch: list[tuple[Item, dict, object, ItemResult]] = []
            failed: list[ItemResult] = []
            while len(batch) + len(failed) < batch_size:
                if not pending:
                    fill()  # the byte budget may have held the look-ahead below a batch
                    if not pending:
                        break
                item, fut = pending.popleft()
                try:
                    inputs, context, pre_s, _ = fut.result()
                    batch.append((item, inputs, context, ItemResult(item.key, None, None, pre_s)))
                except Exception as exc:  # noqa: BLE001
                    failed.append(ItemResult(item.key, None, f"preprocess: {_describe(exc)}"))
                fill()
            fill()
            submitted, forward_failed = _forward(adapter, batch, pool, post, track)
            failed += forward_failed
            done = failed + [f.result() for _, f in in_flight]
            in_flight = submitted
            if not pending:
                done += [f.result() for _, f in in_flight]
                in_flight = []
            _finish(done, results, on_batch, progress)
    finally:
        # on Ctrl-C or an error, drop the look-ahead instead of finishing it
        pool.shutdown(wait=True, cancel_futures=True)
    return [results[item.key] for item in items if item.key in results]


def _finish(done, results, on_batch, progress):
    if not done:
        return
    for r in done:
        results[r.key] = r
    if on_batch:
        on_batch(done)
    if progress:
        progress(len(done))


def _forward(adapter, batch, pool, post, track: bool = True) -> tuple[list[tuple[Item, Future]], list[ItemResult]]:
    """Forward a batch (falling back to one item at a time on error); submit postprocessing.

    Returns the submitted postprocessing and the items whose forward failed."""
    if not batch:
        return [], []
    failed: list[ItemResult] = []
    per_item: list[tuple[dict | None, float]]
    try:
        with activity.phase("forward", [b[0].key for b in batch] if track else []):
            outputs, seconds = _timed_forward(adapter, [b[1] for b in batch])
        per_item = [({k: v[i] for k, v in outputs.items()}, seconds / len(batch)) for i in range(len(batch))]
    except Exception:  # noqa: BLE001 - isolate the culprit below
        per_item = []
        for (_item, inputs, _, timing) in batch:
            try:
                with activity.phase("forward", [_item.key] if track else []):
                    outputs, seconds = _timed_forward(adapter, [inputs])
                per_item.append(({k: v[0] for k, v in outputs.items()}, seconds))
            except Exception as exc:  # noqa: BLE001
                per_item.append((None, 0.0))
                timing.error = f"forward: {_describe(exc)}"
    submitted = []
    for (item, _, context, timing), (outputs, seconds) in zip(batch, per_item):
        timing.forward_s = seconds
        if outputs is None:
            failed.append(timing)
        else:
            submitted.append((item, pool.submit(post, item, outputs, context, timing)))
    return submitted, failed


def _timed_forward(adapter, inputs_list):
    names = inputs_list[0].keys()
    stacked = {k: np.stack([np.asarray(inp[k]) for inp in inputs_list]) for k in names}
    start = time.perf_counter()
    outputs = adapter.forward(stacked)
    seconds = time.perf_counter() - start
    n = len(inputs_list)
    for name, value in outputs.items():
        if np.ndim(value) == 0 or len(value) != n:
            raise ValueError(f"forward output {name!r} has shape {np.shape(value)}, expected a leading batch of {n}")
    return outputs, seconds


def run_one(adapter: Adapter, sample: Sample, face_box: Box | Detection | None = None) -> tuple[Prediction, str | None]:
    """One sample (or one face of it) through the four methods, unbatched: the checked prediction
    and the crop warning the adapter's context carries, if any. The one single-item path (``facebench
    predict``, tests, benchmarks); evaluations use :func:`run_adapter`."""
    inputs, context = adapter.preprocess(sample, face_box)
    outputs = adapter.forward({k: np.stack([np.asarray(v)]) for k, v in inputs.items()})
    prediction = adapter.postprocess({k: v[0] for k, v in outputs.items()}, context)
    check_prediction(prediction, adapter.card)
    return prediction, getattr(context, "warning", None)


def items_for(task: str, samples: Iterable[Sample]) -> list[Item]:
    """Detectors see whole images; landmark models see each face with landmarks (a box-only face, such as
    a COCO annotation with no labelled keypoint, is not a landmark item)."""
    if task == "detector":
        return [Item(s.id, s) for s in samples]
    return [Item(face_key(s.id, k), s, face.box, face) for s in samples for k, face in enumerate(s.faces)
            if face.landmarks is not None]
