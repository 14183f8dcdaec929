"""One record per metric: protocols validate against the records, every record's scorer runs, defaults come from
the record, Score carries the curves figures draw, and the leaderboard's typed rows keep their JSON form."""

from __future__ import annotations

import ast
import dataclasses
import json
import tomllib
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from facebench.metric_specs import FIGURES, NUMBER, SPECS, Option
from facebench.metrics.early_exit import COLUMNS
from facebench.protocol import METRIC_OPTIONS, builtin_protocols, get_protocol, validate
from facebench.report.leaderboard import Latency, Row, headline
from facebench.scoring import METRICS, Score, score
from facebench.types import Detection, Landmarks, Prediction, StageOutput


def _protocol_files() -> list[Path]:
    return sorted(Path(str(p)) for p in resources.files("facebench.protocols").iterdir() if p.name.endswith(".toml"))


@pytest.mark.parametrize("path", _protocol_files(), ids=lambda p: p.stem)
def test_every_shipped_protocol_validates_against_its_record(path):
    data = tomllib.loads(path.read_text())
    validate(data, str(path))
    spec = METRICS[data["metric"]]
    resolved = spec.resolve(data.get("options", {}))
    assert set(resolved) == set(spec.options)
    for name, value in data.get("options", {}).items():
        assert isinstance(value, spec.options[name].type) and resolved[name] == value
    # the headline a protocol is ranked on is one of its leaderboard columns
    assert spec.headline_for(data.get("options", {}))[0] in data.get("columns", [spec.headline])


def test_the_protocol_schema_is_a_view_of_the_records():
    assert METRIC_OPTIONS == {name: spec.option_types for name, spec in SPECS.items()}
    assert METRICS is SPECS
    for spec in SPECS.values():
        assert spec.figures <= set(FIGURES) and "tradeoff" in spec.figures
        assert spec.label and isinstance(spec.higher_is_better, bool)


def test_an_option_the_record_does_not_know_is_refused():
    with pytest.raises(ValueError, match="unknown options"):
        METRICS["nme"].resolve({"treshold": 0.1})


def test_no_scorer_carries_a_literal_default():
    """Scorers read options resolved against their record: ``opts.get(name, default)`` would hide a default."""
    root = Path(__file__).resolve().parent.parent / "facebench" / "scoring"
    for path in sorted(root.glob("*.py")):
        if path.name == "__init__.py":  # score(): resolves protocol.options against the record
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "opts"):
                pytest.fail(f"{path.name}:{node.lineno}: opts.get(...) in a scorer; give the default to the record")
            if (isinstance(node, ast.Attribute) and node.attr == "options" and isinstance(node.value, ast.Name)
                    and node.value.id == "protocol"):
                pytest.fail(f"{path.name}:{node.lineno}: a scorer reads protocol.options; use the resolved opts")


# --- every record's scorer runs ---------------------------------------------------------------------------

def _gt_detections(samples):
    return {s.id: Prediction(detections=tuple(Detection(f.box, 0.9 - 0.1 * k) for k, f in enumerate(s.faces)))
            for s in samples}


def _gt_landmarks(samples, offset=1.0):
    return {f"{s.id}#{k}": Prediction(landmarks=Landmarks(f.landmarks.points[:, :2] + offset, f.landmarks.scheme))
            for s in samples for k, f in enumerate(s.faces) if f.landmarks is not None}


def _cascade(samples, stages=3):
    out = {}
    for s in samples:
        for k, f in enumerate(s.faces):
            pts = f.landmarks.points[:, :2]
            out[f"{s.id}#{k}"] = Prediction(stages=tuple(
                StageOutput(Landmarks(pts + 3.0 / (j + 1), f.landmarks.scheme), 0.03 / (j + 1)) for j in range(stages)))
    return out


_CASCADE_CARD = SimpleNamespace(task="landmarks", macs={"a": 1e6, "b": 2e6, "c": 3e6}, options={})


def _case(metric, samples):
    """(protocol, samples, predictions, card) exercising ``metric``'s scorer on the embedded photos."""
    protocols = builtin_protocols()
    if metric == "ap":
        return protocols["mini-ap50"], samples, _gt_detections(samples), None
    if metric == "roc":
        return protocols["fddb-roc"], samples, _gt_detections(samples), None
    if metric == "wider_ap":
        kept = [dataclasses.replace(s, attributes={**s.attributes, "kept": {name: np.arange(len(s.faces))
                                                                            for name in ("easy", "medium", "hard")}})
                for s in samples]
        return protocols["wider-ap50"], kept, _gt_detections(samples), None
    if metric == "nme":
        return protocols["mini-nme"], samples, _gt_landmarks(samples), None
    if metric == "regions":
        return protocols["attention-regions"], samples, _gt_landmarks(samples), None
    if metric == "jitter":
        from facebench.datasets.transforms import shifted_copies

        copies = shifted_copies(list(samples))
        return protocols["jitter-shift"], copies, _gt_landmarks(copies, 0.0), SimpleNamespace(task="landmarks")
    if metric == "early_exit":
        return protocols["early-exit"], samples, _cascade(samples), _CASCADE_CARD
    if metric in ("sweep_nme", "sweep_detection", "sequence_jitter"):  # the rendered benchmark's attributes
        swept = [dataclasses.replace(s, attributes={**s.attributes, "factor": "yaw", "value": 30.0 * k, "neutral": 0.0,
                                                    "visible": [True] * 68, "sequence": "turn", "frame": k})
                 for k, s in enumerate(samples)]
        if metric == "sweep_detection":
            return protocols["render-scale-detection"], swept, _gt_detections(swept), None
        name = "render-pose-nme" if metric == "sweep_nme" else "render-sequence-jitter"
        card = SimpleNamespace(task="landmarks") if metric == "sequence_jitter" else None
        return protocols[name], swept, _gt_landmarks(swept, 0.5), card
    raise AssertionError(f"no test case for metric {metric!r}: add one here with its record")


@pytest.mark.parametrize("metric", sorted(SPECS))
def test_every_records_scorer_runs(metric, mini_samples):
    protocol, samples, predictions, card = _case(metric, mini_samples)
    assert protocol.metric == metric
    result = score(protocol, samples, predictions, card)
    assert isinstance(result, Score)
    column, _ = METRICS[metric].headline_for(protocol.options)
    assert isinstance(result.metrics[column], float) and np.isfinite(result.metrics[column])
    assert result.per_item and not any(k.startswith("_") for k in result.metrics)
    json.dumps(result.curves)  # stored as JSON beside the metrics
    metrics, per_item = result  # still unpacks as before
    assert metrics is result.metrics and per_item is result.per_item
    if METRICS[metric].needs_card:
        with pytest.raises(ValueError, match="needs the model's card"):
            score(protocol, samples, predictions)


# --- defaults come from the record ------------------------------------------------------------------------

def _without(protocol, *names):
    return dataclasses.replace(protocol, options={k: v for k, v in protocol.options.items() if k not in names})


def test_defaults_come_from_the_record(mini_samples):
    protocol = _without(get_protocol("mini-nme"), "threshold")
    predictions = _gt_landmarks(mini_samples, 4.0)  # a few pixels off: a failure below threshold 0.02, not at 0.08
    spec = METRICS["nme"]
    base = score(protocol, mini_samples, predictions).metrics
    assert base == score(get_protocol("mini-nme"), mini_samples, predictions).metrics  # the record's 0.08
    strict = dataclasses.replace(spec, options={**spec.options, "threshold": Option(NUMBER, 0.02)})
    changed = score(protocol, mini_samples, predictions, spec=strict).metrics
    assert changed["nme"] == base["nme"] and changed["fr"] > base["fr"]
    assert SPECS["nme"].options["threshold"].default == 0.08  # the copy changed nothing global
    # a protocol's own value wins over the record's default
    given = score(get_protocol("mini-nme"), mini_samples, predictions, spec=strict).metrics
    assert given["fr"] == base["fr"]


def test_early_exit_options_come_from_the_record():
    from facebench.scoring.early_exit import operating_points

    protocol = _without(get_protocol("early-exit"), "operating_points", "repeats")
    options = METRICS["early_exit"].resolve(protocol.options)
    assert options["repeats"] == SPECS["early_exit"].options["repeats"].default
    assert operating_points(options) == []
    assert operating_points(options, SimpleNamespace(options={"operating_points": [0.5]})) == [0.5]


# --- curves live in Score.curves --------------------------------------------------------------------------

def test_score_carries_curves(mini_samples):
    ap = score(builtin_protocols()["mini-ap50"], mini_samples, _gt_detections(mini_samples))
    assert set(ap.curves["pr"]["ap"]) == {"precision", "recall"} and "_pr" not in ap.metrics
    protocol = builtin_protocols()["early-exit"]
    early = score(protocol, mini_samples, _cascade(mini_samples), _CASCADE_CARD)
    table = early.curves["early_exit"]
    assert list(table) == COLUMNS and len({len(v) for v in table.values()}) == 1
    assert set(table["method"]) == {"model", "random", "oracle"}
    # what a report draws from the store is what the scorer computed, and the fallback for an old store agrees
    from facebench.report.early_exit import run_curves

    stored = json.loads(json.dumps(early.curves))["early_exit"]
    drawn, errors, _, unit = run_curves(protocol, _CASCADE_CARD, early.per_item, stored)
    recomputed, _, _, _ = run_curves(protocol, _CASCADE_CARD, early.per_item, None)
    assert unit == "MACs" and errors.shape == (len(early.per_item), 3)
    assert drawn.to_csv(index=False) == recomputed.to_csv(index=False)


# --- headline, direction and label come from the record -----------------------------------------------------

def test_leaderboard_and_plots_read_headline_and_direction_from_the_record():
    from facebench.report.plots import _accuracy

    for protocol in builtin_protocols().values():
        spec = METRICS[protocol.metric]
        column, label = spec.headline_for(protocol.options)
        assert headline(protocol) == (column, not spec.higher_is_better)
        row = Row("m", protocol.id, "measured", metrics={column: 0.5})
        assert _accuracy(row, protocol) == (0.5, label)
    aflw = builtin_protocols()["aflw2000-3d"]
    assert headline(aflw) == ("yawbalanced", True)
    # a paper that gives only the plain mean still gets a point, through the record's fallbacks
    assert _accuracy(Row("paper", aflw.id, "reported", metrics={"nme": 0.04}), aflw)[0] == 0.04


# --- typed rows ------------------------------------------------------------------------------------------

def test_rows_and_latency_keep_their_json_form():
    latency = Latency.of([1.0, 2.0, 3.0, 4.0])
    assert latency.median_ms == 2.5 and latency.n == 4 and latency.p10_ms < latency.median_ms < latency.p90_ms
    assert Latency(0.6).to_dict() == {"median_ms": 0.6}
    measured = Row("m", "mini-nme", "measured", status="current", latency={"host CPU (x)": latency}).to_dict()
    assert "variant" not in measured and "gflops" not in measured and measured["latency"]["host CPU (x)"]["n"] == 4
    reported = Row("p", "mini-nme", "reported", variant="v").to_dict()
    assert reported["variant"] == "v" and reported["image_read"] is False
    assert Row("m", "p", "measured")["model"] == "m" and latency["median_ms"] == 2.5  # dict-style reads still work
    with pytest.raises(KeyError):
        Row("m", "p", "measured")["nope"]


def test_a_record_with_an_unknown_figure_is_refused():
    with pytest.raises(ValueError, match="unknown figures"):
        dataclasses.replace(SPECS["nme"], figures={"ced", "histogram"})


def test_records_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SPECS["nme"].headline = "auc"
    with pytest.raises(TypeError):
        SPECS["nme"].options["threshold"] = Option(NUMBER, 1.0)
