"""The report's figures: formats, plain log ticks, latency per processor class, one colour per model, percent
units, and the cached redraw (a second report with nothing changed rewrites no figure)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from facebench.protocol import builtin_protocols
from facebench.report import plots
from facebench.report.leaderboard import Latency, Row

PROTOCOLS = builtin_protocols()
NME = PROTOCOLS["mini-nme"]
AP = PROTOCOLS["mini-ap50"]
PLAIN = re.compile(r"^\d+(\.\d+)?$")


def _row(model, nme, macs=None, kind="measured", **latency):
    return Row(model=model, protocol=NME.id, kind=kind, metrics={"nme": nme}, macs=macs,
               latency={device: Latency(median_ms=ms, p10_ms=ms * 0.8, p90_ms=ms * 1.3, n=20)
                        for device, ms in latency.items()})


def _rows():
    host = "host CPU (AMD EPYC)"
    return [
        _row("face-mesh", 0.053, 37e6, **{host: 2.3, "Pixel 7 (GPU fp16)": 1.1, "Pixel 7 (CPU, 4 threads)": 6.0}),
        _row("attention-mesh", 0.041, 43e6, **{host: 4.3, "Pixel 7 (GPU fp16)": 2.0}),
        _row("mesh-refinement", 0.058, 105e6, **{host: 31.0}),
        _row("dlib-68", 0.062, None, **{host: 5.0}),
        _row("Face Mesh (paper)", 0.039, 37e6, kind="reported", **{"Pixel 2 XL (TFLite GPU)": 8.8}),
        _row("old", 0.01, 1e6, kind="stale", **{host: 1.0}),
    ]


def _close(fig):
    import matplotlib.pyplot as plt

    plt.close(fig)


@pytest.mark.slow
def test_every_figure_is_written_as_png_svg_and_pdf(tmp_path):
    png = plots.tradeoff(_rows(), NME, tmp_path)
    assert png == tmp_path / "tradeoff-mini-nme.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert png.with_suffix(".svg").read_text().lstrip().startswith("<?xml")
    assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    latency = plots.latency(_rows(), tmp_path)
    assert latency is not None
    assert all(latency.with_suffix(s).exists() for s in (".svg", ".pdf", ".key"))


def test_log_axes_are_ticked_with_plain_numbers_that_do_not_overprint():
    fig = plots.draw_tradeoff(plots.tradeoff_points(_rows(), NME))
    renderer = fig.canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert axes
    for ax in axes:
        assert ax.get_xscale() == "log"
        labels = [t for t in ax.xaxis.get_ticklabels() if t.get_text()]
        assert len(labels) >= 2, ax.get_title()
        assert all(PLAIN.match(t.get_text()) for t in labels), [t.get_text() for t in labels]
        boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
        assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:])), ax.get_title()
        # point labels stay inside the axes and do not overlap each other
        box = ax.get_window_extent(renderer)
        texts = [t.get_window_extent(renderer) for t in ax.texts]
        assert all(box.x0 - 1 <= t.x0 and t.x1 <= box.x1 + 1 and box.y0 - 1 <= t.y0 and t.y1 <= box.y1 + 1
                   for t in texts)
        assert not any(a.overlaps(b) for i, a in enumerate(texts) for b in texts[i + 1:])
    _close(fig)


def test_latency_panels_are_split_by_processor_class():
    assert plots.processor_class("host CPU (AMD EPYC)") == "host CPU"
    assert plots.processor_class("Pixel 7 (GPU fp16)") == "phone GPU"
    assert plots.processor_class("Pixel 7 (CPU, 4 threads)") == "phone CPU"
    assert plots.processor_class("Samsung A71, Mali-G76 MP5 (GPU)") == "phone GPU"
    data = plots.tradeoff_points(_rows(), NME)
    assert list(data["panels"]) == ["MACs", "phone GPU", "phone CPU", "host CPU"]
    for panel, content in data["panels"].items():
        if panel != "MACs":
            assert {plots.processor_class(p[4]) for p in content["points"]} == {panel}
    assert all(p[0] != "old" for c in data["panels"].values() for p in c["points"])  # stale rows are not drawn
    fig = plots.draw_tradeoff(data)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert len(titles) == 4 and "phone GPU" in titles[1] and "phone CPU" in titles[2]
    _close(fig)
    bars = plots.draw_latency(plots.latency_bars(_rows()))
    assert len(bars.axes) == 3  # phone GPU, phone CPU, host CPU: never one axis
    _close(bars)


def test_a_protocol_with_nothing_to_plot_writes_no_tradeoff_figure(tmp_path):
    (tmp_path / "tradeoff-mini-nme.png").write_bytes(b"old")  # an old figure would look current
    rows = [_row("dlib-68", 0.06)]  # accuracy, but no MACs and no latency
    assert plots.tradeoff(rows, NME, tmp_path) is None
    assert plots.tradeoff([], NME, tmp_path) is None
    assert not list(tmp_path.iterdir())


def test_the_same_model_has_the_same_colour_in_every_figure():
    from matplotlib.colors import to_hex

    errors = np.array([0.03, 0.05, 0.07])
    ced = plots.draw_ced({"face-mesh": (errors, {"auc": 0.4, "fr": 0.1}),
                          "dlib-68": (errors * 1.1, {"auc": 0.3, "fr": 0.2})}, NME)
    colour = {line.get_label().split()[0]: to_hex(line.get_color()) for line in ced.axes[0].lines}
    assert colour["face-mesh"] == plots.model_color("face-mesh") and colour["dlib-68"] == plots.model_color("dlib-68")
    tradeoff = plots.draw_tradeoff(plots.tradeoff_points(_rows(), NME))
    faces = {to_hex(c) for ax in tradeoff.axes for coll in ax.collections for c in coll.get_facecolors()}
    assert plots.model_color("face-mesh") in faces
    pr = plots.draw_precision_recall({"face-mesh": {"ap": {"recall": [0, 0.5], "precision": [1, 0.8]}}}, AP)
    assert to_hex(pr.axes[0].lines[0].get_color()) == plots.model_color("face-mesh")
    assert plots.model_color("face-mesh [0123abcd]") == plots.model_color("face-mesh")  # a second data copy
    assert set(map(plots.model_color, ("a", "b", "c", "face-mesh"))) <= set(plots.PALETTE)
    for fig in (ced, tradeoff, pr):
        _close(fig)


def test_nme_and_ap_are_drawn_as_percentages():
    fig = plots.draw_tradeoff(plots.tradeoff_points(_rows(), NME))
    ax = fig.axes[0]
    assert ax.get_ylabel() == "NME (%)"
    assert 3.5 < ax.get_ylim()[0] and ax.get_ylim()[1] < 7
    _close(fig)
    ced = plots.draw_ced({"face-mesh": (np.array([0.03, 0.05]), {})}, NME)
    assert ced.axes[0].get_xlabel().startswith("NME (%") and ced.axes[0].get_xlim()[1] == pytest.approx(8)
    _close(ced)
    pr = plots.draw_precision_recall({"m": {"ap": {"recall": [0, 0.5], "precision": [1, 0.8]}}}, AP)
    assert pr.axes[0].get_xlabel() == "recall (%)" and pr.axes[0].get_ylabel() == "precision (%)"
    _close(pr)
    assert plots.tradeoff_points([Row(model="m", protocol=AP.id, kind="measured", metrics={"ap50": 0.75},
                                      macs=1e6)], AP)["ylabel"] == "AP at IoU 0.5 (%)"


def test_pareto_front():
    points = [(1, 5.0), (2, 4.0), (3, 4.5), (4, 3.0), (5, 3.0)]
    assert plots.pareto_front(points, higher_is_better=False) == [(1, 5.0), (2, 4.0), (4, 3.0)]
    assert plots.pareto_front(points, higher_is_better=True) == [(1, 5.0)]


@pytest.mark.slow
def test_an_unchanged_figure_is_not_redrawn(tmp_path):
    png = plots.tradeoff(_rows(), NME, tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert plots.tradeoff(_rows(), NME, tmp_path) == png
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == mtimes
    changed = _rows()
    changed[0].metrics["nme"] = 0.052
    plots.tradeoff(changed, NME, tmp_path)
    assert png.stat().st_mtime_ns != mtimes[png]


@pytest.mark.slow
def test_a_second_report_with_no_change_rewrites_no_figure(tmp_path):
    from facebench.report.html import write_report
    from facebench.results.store import Store

    out = tmp_path / "report"
    with Store(tmp_path / "s.sqlite") as store:  # no run: the papers' rows alone have MACs and latency
        write_report(store, out)
        figures = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.suffix in (".png", ".svg", ".pdf", ".key")}
        assert any(p.name == "latency.png" for p in figures) and any(p.name.startswith("tradeoff-") for p in figures)
        page = write_report(store, out).read_text()
    assert {p: p.stat().st_mtime_ns for p in figures} == figures
    assert "vector: " in page and ".pdf" in page


def test_a_figure_key_is_the_same_for_equal_inputs():
    import pandas as pd

    def table():  # object columns: their array bytes are pointers, never hashed
        return pd.DataFrame({"method": ["model", "oracle"], "nme": [0.05, 0.04]})

    assert plots._key("f", [table(), np.arange(3.0)]) == plots._key("f", [table(), np.arange(3.0)])
    assert plots._key("f", [table(), np.arange(3.0)]) != plots._key("f", [table(), np.arange(4.0)])
