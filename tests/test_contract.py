"""The adapter contract, checked on every registered adapter with a real photo."""

from __future__ import annotations

import numpy as np
import pytest

from facebench import registry
from facebench.adapter import check_prediction
from facebench.assets import ASSETS, asset_path
from facebench.run.harness import items_for
from facebench.runtimes.macs import count_tflite_macs
from facebench.schemes import scheme_size
from facebench.types import TASKS, Prediction

from conftest import SHARED

NAMES = sorted(registry.available())


@pytest.mark.parametrize("name", NAMES)
def test_card_is_complete(name):
    card = registry.resolve(name).card
    assert card.name == name
    assert card.task in TASKS
    assert scheme_size(card.scheme) > 0
    assert len(card.input_shape) == 4 and card.input_shape[0] == 1
    assert card.input_range[0] < card.input_range[1]
    assert all(v > 0 for v in card.macs.values())
    assert card.macs or card.options.get("cost"), "a non-network model says what it costs instead"
    assert card.artifacts and card.description and card.source


@pytest.mark.parametrize("name", NAMES)
def test_card_macs_match_the_graph(name, mediapipe_assets):
    adapter_cls = registry.resolve(name)
    card = adapter_cls.card
    if card.artifacts.get("tflite") not in ASSETS:
        pytest.skip("no pulled .tflite artifact to count")
    if card.options.get("macs_rule"):  # per-image costs (an image pyramid): the model's own tests count them
        pytest.skip(f"stage costs follow a rule: {card.options['macs_rule']}")
    custom_ops = getattr(adapter_cls, "custom_ops", False)
    counted = {key: count_tflite_macs(asset_path(a), custom_ops=custom_ops and key == "tflite")
               for key, a in card.artifacts.items() if key.startswith("tflite")}
    # a stage runs the artifact named after it (iris-* -> tflite-iris), else the main one
    expected = sum(counted[next((k for k in counted if k != "tflite" and k[7:] in stage), "tflite")]
                   for stage in card.macs)
    assert expected == card.total_macs


@pytest.mark.usefixtures("model_assets")
@pytest.mark.parametrize("name", NAMES)
def test_prediction_on_a_real_photo(name, mini_samples, monkeypatch):
    if name == "prnet":  # the user brings PRNet's UV index file; the real one is in ../shared
        uv = SHARED / "prnet-uv" / "uv_kpt_ind.txt"
        if not uv.is_file():
            pytest.skip(f"{uv} not present")
        monkeypatch.setenv("FACEBENCH_PRNET_UV", str(uv))
    adapter_cls = registry.resolve(name)
    adapter = adapter_cls()
    try:
        info = adapter.load(threads=1)
    except ImportError as exc:
        pytest.skip(f"optional extra not installed: {exc}")
    assert info["runtime"] and info["version"]
    item = items_for(adapter.card.task, mini_samples[:1])[0]
    inputs, context = adapter.preprocess(item.sample, item.face_box)
    for value in inputs.values():
        if value.dtype == object or value.ndim != 3:
            continue  # auxiliary inputs (the whole image a cascade crops from, a crop rectangle)
        expected = adapter.card.input_shape[1:]
        assert all(e in (-1, v) for e, v in zip(expected, value.shape)) and value.ndim == len(expected)
        lo, hi = adapter.card.input_range
        assert lo - 1e-6 <= value.min() and value.max() <= hi + 1e-6
    outputs = adapter.forward({k: v[None] for k, v in inputs.items()})
    prediction = adapter.postprocess({k: v[0] for k, v in outputs.items()}, context)
    assert isinstance(prediction, Prediction)
    check_prediction(prediction, adapter.card)
    if adapter.card.task == "detector":
        assert prediction.detections, "the detector found nothing on a one-face photo"
        n_kp = scheme_size(adapter.card.scheme)
        for det in prediction.detections:
            if adapter.card.options.get("keypoints") is False:
                assert det.keypoints is None
            else:
                assert det.keypoints.shape == (n_kp, 2) and np.all(np.isfinite(det.keypoints))
    else:
        assert prediction.landmarks.scheme == adapter.card.scheme
        assert prediction.landmarks.points.shape[0] == scheme_size(adapter.card.scheme)
