"""``facebench score``: prediction files from other tools against ground-truth files."""

from __future__ import annotations

from pathlib import Path

import click

from facebench.cli.main import main
from facebench.paths import dumps_json


@main.group()
def score():
    """Score prediction files from other tools against ground-truth files (no adapter)."""


def _score_call(fn, *args, **kwargs) -> dict:

    try:
        return fn(*args, **kwargs)
    except ValueError as exc:  # the pure metric functions' own checks (facebench's errors are main's)
        raise click.ClickException(str(exc)) from exc


def _report_pairing(result: dict, what: str) -> None:
    for key, label in (("unknown", f"predictions for {what} not in the ground truth (not scored)"),
                       ("missing", f"{what} without a prediction (scored as misses)")):
        names = result.get(key) or []
        if names:
            shown = ", ".join(names[:5]) + (" …" if len(names) > 5 else "")
            click.echo(f"warning: {len(names)} {label}: {shown}", err=True)


@score.command("wider")
@click.option("--gt", "gt", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat.")
@click.option("--pred", "pred", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of <event>/<image>.txt files in the WIDER submission format.")
@click.option("--json", "as_json", is_flag=True)
def score_wider_cmd(gt, pred, as_json):
    """WIDER FACE easy / medium / hard AP (the official procedure, see facebench.metrics.wider)."""
    from facebench.offline.score_files import score_wider

    result = _score_call(score_wider, gt, pred)
    _report_pairing(result, "images")
    if as_json:
        click.echo(dumps_json(result, indent=2))  # NaN/inf: null, reason under non_finite
        return
    ap = result["ap"]
    click.echo(f"easy {ap['easy']:.4f}  medium {ap['medium']:.4f}  hard {ap['hard']:.4f}  "
               f"({result['predicted_images']}/{result['images']} images, {result['detections']} detections)")


@score.command("fddb")
@click.option("--gt", "gt", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder with FDDB-fold-NN-ellipseList.txt.")
@click.option("--pred", "pred", required=True, type=click.Path(exists=True, path_type=Path),
              help="FDDB detection file, or a folder of them.")
@click.option("--fp", "false_positives", default=1000, show_default=True,
              help="Report the true-positive rate at this many false positives.")
@click.option("--json", "as_json", is_flag=True)
def score_fddb_cmd(gt, pred, false_positives, as_json):
    """FDDB discrete ROC (see facebench.metrics.fddb for the ellipse rule)."""
    from facebench.offline.score_files import score_fddb

    result = _score_call(score_fddb, gt, pred, false_positives)
    _report_pairing(result, "images")
    if as_json:
        click.echo(dumps_json(result, indent=2))  # NaN/inf: null, reason under non_finite
        return
    click.echo(f"TPR {result['tpr_at_fp']:.4f} at {false_positives} false positives "
               f"({result['faces']} faces, {result['detections']} detections)")


@score.command("landmarks")
@click.option("--gt", "gt", required=True, type=click.Path(exists=True, path_type=Path),
              help="Folder of .pts files, a .csv or a .npy array.")
@click.option("--pred", "pred", required=True, type=click.Path(exists=True, path_type=Path),
              help="Same kinds as --gt; paired by name (.pts, .csv) or by row (.npy).")
@click.option("--norm", default="inter-ocular", show_default=True,
              help="inter-ocular, inter-pupil, box, box-mean-side, box-diagonal, or a pair 'i,j'.")
@click.option("--scheme", default=None, help="Landmark scheme (default: from the number of points).")
@click.option("--threshold", default=0.08, show_default=True, help="Failure threshold for FR and AUC.")
@click.option("--yaw", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Per-face yaw in degrees (.npy, ground-truth order) for the AFLW2000-3D bins.")
@click.option("--json", "as_json", is_flag=True)
def score_landmarks_cmd(gt, pred, norm, scheme, threshold, yaw, as_json):
    """NME, failure rate and AUC (see facebench.metrics.landmarks for the definitions)."""
    from facebench.offline.score_files import score_landmarks

    result = _score_call(score_landmarks, gt, pred, norm, scheme, threshold, yaw)
    _report_pairing(result, "faces")
    if as_json:
        click.echo(dumps_json(result, indent=2))  # NaN/inf: null, reason under non_finite
        return
    click.echo(f"NME {100 * result['nme']:.3f}%  FR@{threshold:g} {100 * result['fr']:.2f}%  "
               f"AUC@{threshold:g} {result['auc']:.4f}  ({result['faces']} faces, {norm}, {result['scheme']})")
    for name, value in result.get("yaw_bins", {}).items():
        click.echo(f"  yaw {name:<9} NME {100 * value:.3f}%")
