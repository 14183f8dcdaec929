"""The harness and the store: failures stay per item, interrupted runs resume, results are reused."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from facebench.baselines.blazeface import BlazeFaceShortRange
from facebench.protocol import get_protocol
from facebench.results.evaluate import evaluate
from facebench.results.store import Store
from facebench.run import activity
from facebench.run.harness import items_for, run_adapter
from facebench.types import Box, Detection, Prediction


class Counting(BlazeFaceShortRange):
    """The real BlazeFace, counting preprocess calls."""

    calls: list[str] = []

    def preprocess(self, sample, face_box=None):
        type(self).calls.append(sample.id)
        return super().preprocess(sample, face_box)


class FailsOnEinstein(Counting):
    def preprocess(self, sample, face_box=None):
        if sample.id == "einstein":
            raise RuntimeError("cannot handle grayscale scans")
        return super().preprocess(sample, face_box)


class NaNOnLenna(BlazeFaceShortRange):
    def postprocess(self, outputs, context):
        prediction = super().postprocess(outputs, context)
        if context[0, 0] == 4.0:  # lenna is the 512x512 photo: letterbox scale 4
            return Prediction(detections=(Detection(Box(np.nan, 0, 1, 1), 0.9, np.zeros((6, 2))),))
        return prediction


class FiveKeypointsOnEinstein(BlazeFaceShortRange):
    """Returns keypoints of the wrong shape for the grayscale photo (same detections otherwise)."""

    def preprocess(self, sample, face_box=None):
        inputs, ctx = super().preprocess(sample, face_box)
        return inputs, (ctx, sample.id)

    def postprocess(self, outputs, context):
        matrix, sample_id = context
        if sample_id == "einstein":
            return Prediction(detections=(Detection(Box(0, 0, 10, 10), 0.9, np.zeros((5, 2))),))
        return super().postprocess(outputs, matrix)


class ForwardFailsOnTakeo(BlazeFaceShortRange):
    """forward breaks on any batch holding takeo's tensor (marked by preprocess)."""

    def preprocess(self, sample, face_box=None):
        inputs, ctx = super().preprocess(sample, face_box)
        if sample.id == "takeo":
            inputs = {k: np.full_like(v, 7.0) for k, v in inputs.items()}
        return inputs, ctx

    def forward(self, inputs):
        if any(np.any(v == 7.0) for v in inputs.values()):
            raise RuntimeError("delegate rejected the input")
        return super().forward(inputs)


class InterruptAfterTwo(Counting):
    """Ctrl-C arrives while the third item is being postprocessed."""

    finished = 0

    def postprocess(self, outputs, context):
        if type(self).finished == 2:
            raise KeyboardInterrupt
        type(self).finished += 1
        return super().postprocess(outputs, context)


@pytest.fixture
def protocol():
    return get_protocol("mini-ap50")


def test_failure_on_one_sample_of_four_keeps_the_other_three(mini_samples, protocol, tmp_path):
    with Store(tmp_path / "r.sqlite") as store:
        result = evaluate(FailsOnEinstein, protocol, store, samples=mini_samples, progress=False)
    assert result.run.n_items == 4 and result.run.n_failures == 1
    assert result.failures == [("einstein", "preprocess: RuntimeError: cannot handle grayscale scans")]
    # the three others were detected and scored; the failed face counts as missed
    assert result.run.metrics["failures"] == 1
    assert result.run.metrics["recall"] == pytest.approx(0.75)
    assert result.run.metrics["ap50"] == pytest.approx(0.75)


@pytest.mark.parametrize("adapter_cls,bad,message", [
    (NaNOnLenna, "lenna", "postprocess: ValueError: detection with non-finite"),
    (FiveKeypointsOnEinstein, "einstein", "postprocess: ValueError: detection keypoints of shape (5, 2)"),
    (ForwardFailsOnTakeo, "takeo", "forward: RuntimeError: delegate rejected the input"),
])
def test_bad_outputs_and_forward_errors_are_isolated(adapter_cls, bad, message, mini_samples):
    adapter = adapter_cls()
    adapter.load()
    results = run_adapter(adapter, items_for("detector", mini_samples), batch_size=4, workers=2)
    assert [r.key for r in results] == [s.id for s in mini_samples]
    for r in results:
        if r.key == bad:
            assert r.prediction is None and r.error.startswith(message)
        else:
            assert r.error is None and r.prediction.detections is not None
            assert r.preprocess_s > 0 and r.forward_s > 0 and r.postprocess_s > 0


def test_interrupted_run_resumes_and_complete_runs_are_reused(mini_samples, protocol, tmp_path):
    path = tmp_path / "r.sqlite"
    InterruptAfterTwo.calls, InterruptAfterTwo.finished = [], 0
    with Store(path) as store, pytest.raises(KeyboardInterrupt):
        evaluate(InterruptAfterTwo, protocol, store, samples=mini_samples, batch_size=1, workers=1, progress=False)
    # the store is readable after the interruption and holds the finished items
    with sqlite3.connect(path) as db:
        (status,) = db.execute("SELECT status FROM runs").fetchone()
        (stored,) = db.execute("SELECT COUNT(*) FROM items").fetchone()
    assert status == "running" and stored == 2

    Counting.calls = []
    with Store(path) as store:
        result = evaluate(Counting, protocol, store, samples=mini_samples, batch_size=1, progress=False)
    assert len(Counting.calls) == 4 - stored, "a resumed run redoes only the missing items"
    assert not result.reused and result.run.status == "complete" and result.run.n_items == 4

    Counting.calls = []
    with Store(path) as store:
        again = evaluate(Counting, protocol, store, samples=mini_samples, progress=False)
        assert again.reused and Counting.calls == [] and again.run.metrics == result.run.metrics
        forced = evaluate(Counting, protocol, store, samples=mini_samples, force=True, progress=False)
    assert not forced.reused and len(Counting.calls) == 4
    assert forced.run.metrics == result.run.metrics


class Watched(BlazeFaceShortRange):
    """Records what the activity record says while each phase runs."""

    seen: list = []

    def preprocess(self, sample, face_box=None):
        Watched.seen.append(("preprocess", activity.snapshot()[1]))
        return super().preprocess(sample, face_box)

    def forward(self, inputs):
        Watched.seen.append(("forward", activity.snapshot()[1]))
        return super().forward(inputs)

    def postprocess(self, outputs, context):
        Watched.seen.append(("postprocess", activity.snapshot()[1]))
        return super().postprocess(outputs, context)


def test_the_harness_marks_each_items_phase_for_a_supervisor(mini_samples):
    """The item-timeout supervisor names a stuck item from this record; it must say what is running, then clear."""
    model = Watched()
    model.load()
    Watched.seen.clear()
    run_adapter(model, items_for("detector", mini_samples[:2]), batch_size=2, workers=1)
    for phase, entries in Watched.seen:
        marked = {p for p, _ in entries}
        assert phase in marked, (phase, entries)
    forwards = [entries for phase, entries in Watched.seen if phase == "forward"]
    assert forwards and {k for p, k in forwards[0] if p == "forward"} == {"takeo", "einstein"}
    assert activity.snapshot()[1] == ()  # nothing left marked once the run ends
