"""Regenerate ``facebench/report/reported_results.csv`` from ``../shared/data/reported/*.csv``.

    python benchmarks/import_reported.py [--shared ../shared/data/reported] [--check]

Each published figure lands on the built-in protocol whose definition it
matches, or is left out with the reason (printed with ``--verbose``). The
rules, in order:

* the dataset and split must be the protocol's: 300-W common/challenging/full
  (not the 600-face private test), WFLW test, AFLW2000-3D with its original
  annotation (not the re-annotated one), COFW test, WIDER FACE val (a figure
  whose split its table does not name is left out), FDDB's ten folds;
* the metric must be one facebench's scorer emits under the protocol's
  options: NME, FR and AUC at the protocol's threshold (0.10 on WFLW and
  COFW), yaw bins and their mean, WIDER easy/medium/hard, TPR at a stated
  number of false positives (an FDDB score whose operating point is not
  stated is left out);
* the normaliser must be the protocol's. ``basis`` says how we know it:
  ``stated`` (the source or its evaluation code says it), ``inferred`` (the
  source's label is missing or contradicted, but its own figures equal the
  same authors' figures under a stated normaliser: ADNet's 300-W table,
  STAR's results image), ``convention`` (unstated, on a benchmark with a
  single normaliser in use: WFLW inter-ocular, AFLW2000-3D box). On 300-W and
  COFW, where inter-ocular and inter-pupil figures are both published, an
  unstated normaliser is left out, and inter-pupil COFW has no protocol;
* WIDER's test setting (image scale, flips) is not part of ``wider-ap50``
  (facebench runs each detector at its adapter's own input), so every WIDER
  figure goes into a labelled group of its setting (``group``) and is never
  ranked against another group or a measured row (``basis`` is then whether
  the source states its setting).

Values become fractions (percent / 100); GFLOPs and parameter counts ride
along as ``gflops`` and ``params`` lines. Quotes are not copied: each line
keeps the figure, its normalisation/setting text, the source and whether it
was read from an image. Disagreeing sources stay separate lines.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "facebench" / "report" / "reported_results.csv"
FIELDS = ("method", "variant", "protocol", "metric", "value", "unit", "normalisation", "basis", "group",
          "source_title", "source_location", "image_read", "shared_file")
SUBSETS = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")
YAW = {"NME_yaw_0_30": "yaw[0,30]", "NME_yaw_30_60": "yaw(30,60]", "NME_yaw_60_90": "yaw(60,90]"}


class Skip(Exception):
    """A figure with no protocol here; the message says why."""


def fraction(row: dict) -> float:
    value, unit = float(row["value"]), row["unit"]
    if "%" in unit:
        return value / 100.0
    if "fraction" in unit:
        return value
    raise Skip(f"unit {unit!r} is not a percentage or a fraction")


def landmark_metric(name: str) -> str:
    """Shared CSV metric label -> facebench's score_nme key."""
    if name.startswith("NME_mean"):
        return "yawbalanced"
    if name in YAW:
        return YAW[name]
    m = re.fullmatch(r"(NME|FR@0\.1|AUC@0\.1)(?:_(\w+))?", name)
    if not m:
        raise Skip(f"metric {name!r} is not one facebench computes under the protocol's options")
    kind = {"NME": "nme", "FR@0.1": "fr", "AUC@0.1": "auc"}[m.group(1)]
    subset = m.group(2)
    if subset in (None, "full"):
        return kind
    if subset in SUBSETS:
        return f"{subset}_{kind}"
    if subset in ("common", "challenging"):
        return f"{subset}_{kind}"
    raise Skip(f"subset {subset!r} is not one of the protocol's")


def landmarks_300w(row: dict) -> tuple[str, str]:
    if row["metric"].startswith("NME_test"):
        raise Skip("300-W private test (600 faces): no built-in protocol (300w-io/-ip are the 689-face test set)")
    norm = row["normalisation"]
    if norm.startswith("inter-ocular"):
        return "300w-io", "stated"
    if norm.startswith("inter-pupil"):
        return "300w-ip", "stated"
    if norm.startswith("label conflict") and "most likely inter-ocular" in norm:
        return "300w-io", "inferred"
    if norm.startswith("not stated in image") and "inter-ocular values" in norm:
        return "300w-io", "inferred"
    raise Skip("normaliser not stated, and 300-W is published both inter-ocular and inter-pupil")


def landmarks_cofw(row: dict) -> tuple[str, str]:
    norm = row["normalisation"]
    if row["metric"].startswith("FR (threshold not stated"):
        raise Skip("failure threshold not stated")
    if norm.startswith("inter-ocular"):
        return "cofw-io", "stated"
    if norm.startswith("inter-pupil"):
        raise Skip("inter-pupil COFW: no built-in protocol (cofw-io is inter-ocular)")
    raise Skip("normaliser not stated, and COFW is published both inter-ocular and inter-pupil")


def landmarks_wflw(row: dict) -> tuple[str, str]:
    norm = row["normalisation"]
    return "wflw-io", ("stated" if norm.startswith("inter-ocular") else "convention")


def landmarks_aflw(row: dict) -> tuple[str, str]:
    if "reannotated" in row["variant"].lower():
        raise Skip("re-annotated AFLW2000-3D landmarks: the protocol uses the original pt3d_68")
    return "aflw2000-3d", ("stated" if row["normalisation"].startswith("bounding box") else "convention")


def wider_group(norm: str) -> str:
    """The test setting of a WIDER figure, as a short label (rows of one label form one group)."""
    n = norm.lower()
    if "split not named" in n:
        raise Skip("its table does not name the split (val or test)")
    if "multi-scale, flip" in n:
        return "multi-scale + flip"
    if "multi-scale" in n:
        return "multi-scale"
    if "vga" in n:
        return "VGA (640x480) input"
    if "1100, 1650" in n:
        return "single scale, resized to 1100x1650"
    if any(k in n for k in ("original image size", "origin size", "scales=[1.]", "sio", "original image")):
        return "single scale, original image size"
    if "single scale" in n:
        return "single scale, image size not stated"
    if "original paper protocol" in n:
        return "the original paper's setting (not stated by this source)"
    return "test setting not stated"


def convert(row: dict, shared_file: str) -> list[dict]:
    metric, group, unit = row["metric"], "", "fraction"
    if shared_file == "300w.csv":
        protocol, basis = landmarks_300w(row)
        metric = landmark_metric(metric)
    elif shared_file == "wflw.csv":
        protocol, basis = landmarks_wflw(row)
        metric = landmark_metric(metric)
    elif shared_file == "cofw.csv":
        protocol, basis = landmarks_cofw(row)
        metric = landmark_metric(metric)
    elif shared_file == "aflw2000-3d.csv":
        protocol, basis = landmarks_aflw(row)
        metric = landmark_metric(metric)
    elif shared_file == "fddb.csv":
        if not metric.startswith("TPR@1000FP"):
            raise Skip("FDDB score whose operating point (number of false positives) is not stated")
        protocol, basis, metric = "fddb-roc", "stated", "tpr@1000"
    elif shared_file == "wider-face-val.csv":
        group = wider_group(row["normalisation"])
        protocol, basis = "wider-ap50", ("not stated" if "not stated" in group else "stated")
        if metric.startswith("GFLOPs"):
            metric, unit = "gflops", "GFLOPs"
        elif metric == "Params":
            if row["unit"] != "M":
                raise Skip(f"parameter unit {row['unit']!r}")
            metric, unit = "params", "count"
        else:
            m = re.fullmatch(r"AP_(easy|medium|hard)", metric)
            if not m:
                raise Skip(f"metric {metric!r}")
            metric = m.group(1)
    else:
        raise Skip(f"unknown shared file {shared_file}")
    if unit == "fraction":
        value = fraction(row)
    elif unit == "count":
        value = float(row["value"]) * 1e6
    else:
        value = float(row["value"])
    return [{"method": row["method"], "variant": row["variant"], "protocol": protocol, "metric": metric,
             "value": repr(round(value, 10)), "unit": unit, "normalisation": row["normalisation"], "basis": basis,
             "group": group, "source_title": row["source_title"], "source_location": row["source_location"],
             "image_read": "1" if row["quote"].startswith("[transcribed from image") else "0",
             "shared_file": shared_file}]


def build(shared: Path) -> tuple[list[dict], list[tuple[str, int, str]]]:
    rows, skipped = [], []
    for path in sorted(shared.glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            for i, row in enumerate(csv.DictReader(f)):
                try:
                    rows += convert(row, path.name)
                except Skip as why:
                    skipped.append((path.name, i, str(why)))
    return rows, skipped


def render(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data" / "reported")
    parser.add_argument("--check", action="store_true", help="exit 1 if the shipped file differs")
    parser.add_argument("--verbose", action="store_true", help="list every figure left out, with the reason")
    args = parser.parse_args()
    rows, skipped = build(args.shared)
    text = render(rows)
    per_protocol: dict[str, int] = {}
    for r in rows:
        per_protocol[r["protocol"]] = per_protocol.get(r["protocol"], 0) + 1
    print(f"{len(rows)} figures kept: " + ", ".join(f"{k} {v}" for k, v in sorted(per_protocol.items())))
    reasons: dict[str, int] = {}
    for name, _, why in skipped:
        reasons[f"{name}: {why}"] = reasons.get(f"{name}: {why}", 0) + 1
    print(f"{len(skipped)} left out:")
    for why, n in sorted(reasons.items()):
        print(f"  {n:3d}  {why}")
    if args.verbose:
        for name, i, why in skipped:
            print(f"  {name} row {i}: {why}")
    if args.check:
        same = OUT.is_file() and OUT.read_text(encoding="utf-8") == text
        print("up to date" if same else f"{OUT} differs from what the shared files give")
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
