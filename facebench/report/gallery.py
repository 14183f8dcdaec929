"""The error gallery of the HTML report: each measured landmark model's worst faces, drawn.

Per protocol with landmark results (its items carry a per-face ``nme``), the
:data:`WORST` worst faces of each measured row: failures first (marked), then
by per-face NME, highest first. Each is a small PNG crop around the ground
truth (green) with the prediction mapped onto the ground truth's scheme (red),
the per-face error in its caption. Beside them, ``gallery/<protocol>--<model>.csv``
holds every face's result (item, nme, error reason).

The images are read through the dataset (:func:`facebench.datasets.load_dataset`
with the protocol's dataset and split): the embedded datasets always, others
only where ``roots`` names their copy. Where images are not available the
section says so (the CSV is still written); nothing here fails the report.
"""

from __future__ import annotations

import hashlib
import html
import io
import re
from pathlib import Path

import numpy as np

from facebench.paths import write_atomic
from facebench.protocol import Protocol
from facebench.report.leaderboard import Row, _SafeWriter
from facebench.results.store import Store

WORST = 4  # faces per model
CROP = 192  # pixels, the longer side of a crop
GREEN, RED = (0, 170, 0), (220, 0, 0)


def _slug(*parts: str) -> str:
    """A file name for ``parts``: safe characters only, with a short hash so two names never collide."""
    text = "--".join(parts)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:80] or "item"
    return f"{safe}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def face_results(store: Store, run_key: str) -> list[dict]:
    """Every face of a run: item, nme (None: failed), error reason, prediction."""
    metrics = store.item_metrics(run_key)
    out = []
    for item in store.items(run_key):
        m = metrics.get(item.key, {})
        if m.get("unscored"):  # a face whose compared points the head hides: left out, not failed (sweep_nme)
            continue
        value = m.get("nme", m.get("all"))  # the regions metric calls its all-points NME "all"
        if isinstance(value, list):  # an early-exit cascade's per-stage errors: its answer is the last stage's
            value = value[-1] if value else None
        failed = item.error is not None or item.prediction is None or value is None or bool(m.get("failed"))
        reason = item.error or ("no prediction" if item.prediction is None else "no score" if value is None else "")
        out.append({"item": item.key, "nme": None if value is None else float(value), "failed": failed,
                    "error": reason if failed else "", "prediction": item.prediction})
    return sorted(out, key=lambda f: (not f["failed"], -(f["nme"] or 0.0), f["item"]))


def _csv(faces: list[dict]) -> str:
    out = io.StringIO()
    writer = _SafeWriter(out)
    writer.writerow(["item", "nme", "error"])
    for f in sorted(faces, key=lambda f: f["item"]):
        writer.writerow([f["item"], "" if f["nme"] is None else repr(f["nme"]), f["error"]])
    return out.getvalue()


def dataset_samples(protocol: Protocol, roots: dict[str, Path]) -> tuple[dict | None, str]:
    """The protocol's samples by id, or None and why its images are not available."""
    from facebench.datasets import get_spec, load_dataset

    try:
        spec = get_spec(protocol.dataset)
        root = roots.get(protocol.dataset)
        if spec.needs_root and root is None:
            return None, (f"the images of dataset {protocol.dataset!r} are not available at report time "
                          "(its root is not known here)")
        return {s.id: s for s in load_dataset(protocol.dataset, root, protocol.split)}, ""
    except Exception as exc:  # noqa: BLE001 - a missing or unreadable copy: said, never fails the report
        return None, f"the images of dataset {protocol.dataset!r} could not be read ({exc})"


def crop(sample, index: int, prediction) -> bytes:
    """A PNG of the face: its ground truth in green, the prediction (on the ground truth's scheme) in red."""
    from PIL import Image, ImageDraw

    from facebench.schemes import convert

    landmarks = sample.faces[index].landmarks
    gt = np.asarray(landmarks.points, dtype=np.float64)[:, :2]
    pred = None
    if prediction is not None and prediction.landmarks is not None:
        try:
            pred = convert(np.asarray(prediction.landmarks.points, dtype=np.float64)[:, :2],
                           prediction.landmarks.scheme, landmarks.scheme)
        except (KeyError, ValueError):  # a scheme with no mapping: draw the points as given
            pred = np.asarray(prediction.landmarks.points, dtype=np.float64)[:, :2]
    image = np.asarray(sample.image())
    h, w = image.shape[:2]
    visible = gt if landmarks.visible is None else gt[np.asarray(landmarks.visible, bool)]
    x0, y0 = visible.min(axis=0)
    x1, y1 = visible.max(axis=0)
    margin = 0.3 * max(x1 - x0, y1 - y0, 1.0)
    left, top = int(max(0, np.floor(x0 - margin))), int(max(0, np.floor(y0 - margin)))
    right, bottom = int(min(w, np.ceil(x1 + margin))), int(min(h, np.ceil(y1 + margin)))
    crop = Image.fromarray(image[top:bottom, left:right].astype(np.uint8)).convert("RGB")
    scale = CROP / max(crop.size)
    crop = crop.resize((max(1, round(crop.size[0] * scale)), max(1, round(crop.size[1] * scale))))
    draw = ImageDraw.Draw(crop)

    def dots(points, colour):
        for x, y in points:
            if np.isfinite(x) and np.isfinite(y):
                cx, cy = (x - left) * scale, (y - top) * scale
                draw.ellipse((cx - 1.5, cy - 1.5, cx + 1.5, cy + 1.5), fill=colour)

    dots(visible, GREEN)
    if pred is not None:
        dots(pred, RED)
    buffer = io.BytesIO()
    crop.save(buffer, format="PNG")
    return buffer.getvalue()


def _caption(face: dict) -> str:
    if face["failed"]:
        return f'<strong class="failed">FAILED</strong> {html.escape(face["item"])}: {html.escape(face["error"])}'
    return f'{html.escape(face["item"])}: NME {face["nme"] * 100:.2f}%'


def _prune(folder: Path, written: set[Path]) -> None:
    """Remove the crops and CSVs of earlier passes (another fingerprint, a model gone): nothing on the page
    links them, and an old face would read as current."""
    if folder.is_dir():
        for path in folder.iterdir():
            if path.suffix in (".png", ".csv") and path.is_file() and path not in written:
                path.unlink(missing_ok=True)


def write_gallery(store: Store, rows: list[Row], protocols: dict[str, Protocol], out: str | Path,
                  roots: dict[str, Path] | None = None) -> str:
    """Write ``out/gallery/`` (crops and per-face CSVs) and return the report's HTML section ("" when no
    protocol has landmark results). ``roots``: dataset name -> its copy, for datasets that are not embedded."""
    out = Path(out)
    roots = dict(roots or {})
    parts = []
    written: set[Path] = set()
    for pid in sorted({r.protocol for r in rows if r.kind == "measured"}):
        protocol = protocols.get(pid)
        if protocol is None or protocol.task != "landmarks":
            continue
        measured = [r for r in rows if r.kind == "measured" and r.protocol == pid and r.run_key]
        copies = {r.model: sum(m.model == r.model for m in measured) for r in measured}
        results = {}
        for r in measured:
            faces = face_results(store, r.run_key)
            if any(f["nme"] is not None or f["failed"] for f in faces) and store.item_metrics(r.run_key):
                results[r.run_key] = (r, faces)
        if not results:
            continue
        samples, why = dataset_samples(protocol, roots)
        body = [f'<h3 id="gallery-{html.escape(pid)}">{html.escape(pid)}</h3>']
        if samples is None:
            body.append(f'<p class="none">No crops: {html.escape(why)}. The per-face CSVs are below.</p>')
        for row, faces in results.values():
            label = row.model if copies[row.model] == 1 else f"{row.model} [{row.dataset[:8]}]"
            stem = _slug(pid, row.model, row.dataset[:8])
            csv_path = write_atomic(out / "gallery" / f"{stem}.csv", _csv(faces))
            written.add(csv_path)
            failed = sum(f["failed"] for f in faces)
            figures = []
            for n, face in enumerate(faces[:WORST] if samples is not None else []):
                sample_id, _, index = face["item"].rpartition("#")
                sample = samples.get(sample_id) if samples is not None else None
                try:
                    png = crop(sample, int(index), face["prediction"]) if sample is not None else None
                except Exception as exc:  # noqa: BLE001 - an unreadable image: its caption says why
                    png, face = None, {**face, "error": f"{face['error']} (image not drawn: {exc})".strip()}
                if png is None:
                    figures.append(f'<figure class="gallery"><figcaption>{_caption(face)} '
                                   "(image not available)</figcaption></figure>")
                    continue
                image = write_atomic(out / "gallery" / f"{stem}-{n}.png", png)
                written.add(image)
                rel = image.relative_to(out).as_posix()
                alt = html.escape(face["item"])
                figures.append(f'<figure class="gallery"><img src="{html.escape(rel)}" alt="{alt}" width="{CROP}">'
                               f"<figcaption>{_caption(face)}</figcaption></figure>")
            rel_csv = csv_path.relative_to(out).as_posix()
            body.append(f"<h4>{html.escape(label)}</h4><p>{len(faces)} faces, {failed} failed; worst "
                        f"{min(WORST, len(faces))} shown (failures first, then by per-face NME). "
                        f'Per-face results: <a href="{html.escape(rel_csv)}">{html.escape(rel_csv)}</a>.</p>'
                        f'<div class="gallery">{"".join(figures)}</div>')
        parts.append("\n".join(body))
    _prune(out / "gallery", written)
    if not parts:
        return ""
    return ('<h2 id="gallery">Error gallery</h2><p>Each measured landmark model\'s worst faces: ground truth '
            '<span style="color:#00aa00">green</span>, prediction <span style="color:#dc0000">red</span> (on the '
            "ground truth's points), the per-face NME in the caption; failed faces first, marked FAILED.</p>"
            '<style>div.gallery { display: flex; flex-wrap: wrap; gap: 8px; } figure.gallery { margin: 0; '
            "font-size: 11px; max-width: 200px; } .failed { color: #c00; }</style>\n" + "\n".join(parts))
