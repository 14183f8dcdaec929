"""Numbers reported in the papers facebench starts from, typed in once with their source.

They join the leaderboard as rows marked ``reported`` (and hollow points in the
tradeoff plot); they are never mixed with measured rows: the papers measured
on their own test sets and devices, which the ``dataset`` and ``device`` of
each row say. NME and AP are fractions (the papers print percentages).
Latencies are milliseconds on the named device.

Only figures with a source at hand are here: the tables of the BlazeFace,
Attention Mesh and MuSiCa papers as the project brief quotes them, and
PRNet's AFLW2000-3D figure. The other methods those tables compare against are
not typed in, because no copy of the tables could be checked here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BLAZEFACE = "Bazarevsky et al., BlazeFace: Sub-millisecond Neural Face Detection on Mobile GPUs, 2019"
ATTENTION_MESH = "Grishchenko et al., Attention Mesh: High-fidelity Face Mesh Prediction in Real-time, 2020, Table 1"
MUSICA = "MuSiCa (selective cascaded regression with patch attention), tables of MACs and of 300W / WFLW NME"
PRNET = "Feng et al., Joint 3D Face Reconstruction and Dense Alignment with Position Map Regression Network, ECCV 2018"


@dataclass(frozen=True)
class Reported:
    model: str
    protocol: str  # the facebench protocol whose metric the figure is
    metrics: dict[str, float]
    source: str
    dataset: str  # what the paper measured on
    macs: int | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)  # device -> milliseconds
    note: str = ""


_AM_DEVICE = "Pixel 2 XL (TFLite GPU)"
REPORTED: tuple[Reported, ...] = (
    Reported("BlazeFace (paper)", "mini-ap50", {"ap50": 0.9861}, BLAZEFACE, "the paper's front-camera test set",
             latency_ms={"iPhone XS (GPU)": 0.6}, note="128x128 input, 896 anchors, blending"),
    Reported("BlazeFace (paper)", "jitter-shift", {"jitter": 0.03}, BLAZEFACE, "the paper's front-camera test set",
             note="blending cut jitter by 40% (front camera) and 30% (rear); regression error 7.4% of IOD (median)"),
    Reported("Face Mesh (paper)", "attention-regions", {"all": 0.0299, "lips": 0.0328, "eyes": 0.066},
             ATTENTION_MESH, "the paper's test set", latency_ms={_AM_DEVICE: 8.82}),
    Reported("Mesh + lips + eye & iris cascade (paper)", "attention-regions",
             {"all": 0.0299, "lips": 0.0270, "eyes": 0.0628}, ATTENTION_MESH, "the paper's test set",
             latency_ms={_AM_DEVICE: 22.4}, note="components: mesh 8.82 ms, lips 4.18 ms, eye & iris 4.70 ms"),
    Reported("Attention Mesh (paper)", "attention-regions", {"all": 0.0311, "lips": 0.0289, "eyes": 0.0604},
             ATTENTION_MESH, "the paper's test set", latency_ms={_AM_DEVICE: 16.6}),
    Reported("MuSiCa 68x68 (paper)", "300w-ip", {"common_nme": 0.0463, "challenging_nme": 0.0816, "nme": 0.0532},
             MUSICA, "300W test (common 554, challenging 135)", macs=95_000_000,
             latency_ms={"Samsung A71, Mali-G76 MP5 (GPU)": 14.77},
             note="3 iterations; the latency is the paper's mobile figure"),
    Reported("MuSiCa 68x34 (paper)", "300w-ip", {}, MUSICA, "MACs only", macs=48_000_000, note="3 iterations"),
    Reported("MuSiCa 68x19 (paper)", "300w-ip", {}, MUSICA, "MACs only", macs=26_000_000, note="3 iterations"),
    Reported("MuSiCa 98x98 (paper)", "wflw-io", {"nme": 0.0790}, MUSICA, "WFLW test (2,500)", macs=138_000_000,
             note="3 iterations"),
    Reported("MuSiCa 98x49 (paper)", "wflw-io", {}, MUSICA, "MACs only", macs=69_000_000, note="3 iterations"),
    Reported("PRNet (paper)", "aflw2000-3d",
             {"yaw[0,30]": 0.0275, "yaw(30,60]": 0.0351, "yaw(60,90]": 0.0461, "yawbalanced": 0.0362}, PRNET,
             "AFLW2000-3D, 68 points, NME over sqrt(w*h) of the box",
             note="from the paper's AFLW2000-3D table; not re-checked against a copy on this machine"),
)


def reported(protocol: str | None = None) -> list[Reported]:
    return [r for r in REPORTED if protocol is None or r.protocol == protocol]
