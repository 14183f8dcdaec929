"""Load check of ``facebench serve``: requests per second and latency percentiles of the index and a protocol
page over HTTP, against the same pages rendered in-process (a function call, no HTTP) as the reference.

    python benchmarks/serve_load.py [--models 40] [--requests 2000] [--concurrency 8] [--cap-s 120]
                                    [--engine sqlite|postgresql]

A synthetic store (an SQLite file, or with ``--engine postgresql`` a database of a throwaway PostgreSQL
cluster, facebench.testing.postgres; ``--models`` models x 8 protocols, 20 items per run, phone timings for a
quarter of the models) is written with the Store API; ``facebench serve`` runs on 127.0.0.1 in a child process (so the
client threads do not share its GIL), with its page cache (a page is rendered once per store state). After
a warm-up (which also draws the protocol page's figures into the cache), a bounded number of requests go
out from ``--concurrency`` threads, each with its own httpx client, alternating the two pages, until done
or ``--cap-s`` seconds have passed. The ratio printed is HTTP requests/s over in-process pages/s of the
same mix (the same page functions, page cache included): what the server, its thread pool and HTTP cost
beyond producing the page. The rate of rendering every time (no page cache) is printed last.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from facebench.protocol import get_protocol
from facebench.results.store import Store, run_key
from facebench.types import ItemResult, Landmarks, Prediction

PROTOCOLS = ("mini-ap50", "wider-ap50", "mini-nme", "300w-ip", "300w-io", "wflw-io", "cofw-io", "aflw2000-3d")
PAGES = ("/", "/protocol/300w-ip")
ITEMS = 20


def build_store(path: Path | str, n_models: int, seed: int = 0) -> None:
    """``n_models`` models on every protocol of :data:`PROTOCOLS`, complete runs with per-item numbers."""
    rng = random.Random(seed)
    prediction = Prediction(landmarks=Landmarks(np.zeros((68, 2)), "ibug68"))
    env = {"facebench": "0.1.0", "python": "3.11", "platform": "Linux", "cpu": "bench CPU", "cpu_count": 16,
           "packages": {}, "runtime": {"runtime": "tflite", "version": "2.14.0"}}
    with Store(path) as store:
        for pid in PROTOCOLS:
            protocol = get_protocol(pid)
            detector = protocol.task == "detector"
            for m in range(n_models):
                model, runtime = f"model-{m:02d}", ("tflite", "onnxruntime")[m % 2]
                card = {"name": model, "task": "detector" if detector else "landmarks",
                        "scheme": "none" if detector else "ibug68", "input_shape": [1, 128, 128, 3],
                        "input_range": [0.0, 1.0], "macs": {"main": 10_000_000 * (m + 1)},
                        "artifacts": {runtime: f"{model}.{runtime}"}, "options": {}, "box_convention": "image"}
                parts = {"card": f"{m:016x}", "artifacts": {runtime: "sha256:" + f"{m:02d}" * 32},
                         "runtime": runtime, "protocol_hash": protocol.content_hash, "dataset_fingerprint": "f" * 16,
                         "framing": "" if detector else "ground truth -> image", "settings": {}}
                key = run_key(parts)
                store.start_run(key, model, pid, protocol.content_hash, "f" * 16, runtime, card, env, parts)
                store.add_items(key, [ItemResult(f"item{i}#0", None if detector else prediction, None, 0.001,
                                                 0.002 + rng.random() * 0.01, 0.0005) for i in range(ITEMS)])
                metrics = {c: rng.random() for c in protocol.columns}
                per_item = ({f"item{i}#0": {"tp": 1, "fp": rng.randint(0, 2), "ignored": 0, "faces": 1}
                             for i in range(ITEMS)} if detector else
                            {f"item{i}#0": {"nme": rng.random() * 0.1, "points": 68} for i in range(ITEMS)})
                store.complete_run(key, metrics, per_item, ITEMS, 0)
        for m in range(0, n_models, 4):
            for repeat in range(3):
                store.put_device_result({"key": f"phone-{m}-{repeat}", "model": f"model-{m:02d}", "device": "pixel-7",
                                         "repeat": repeat, "settings": "cpu 4 threads", "status": "ok",
                                         "processor": "CPU, 4 threads", "median_ms": 5 + rng.random(),
                                         "finished": time.time() + repeat})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_process_rate(path: Path | str, seconds: float = 10.0, page_cache: bool = True) -> tuple[float, dict[str, float]]:
    """Pages per second of the same alternating mix by function call (one thread), and per page; with the
    server's page cache (what a request does), or rendering every time."""
    from facebench.serve.app import load_protocols, open_store
    from facebench.serve.figures import FigureCache
    from facebench.serve.pages import PageCache, Site, index, protocol_page

    with tempfile.TemporaryDirectory() as cache:
        site = Site(load_protocols(None), FigureCache(cache), pages=PageCache() if page_cache else None)
        render = {"/": lambda db: index(db, site, {}),
                  "/protocol/300w-ip": lambda db: protocol_page(db, site, "300w-ip", {})}
        with open_store(str(path)) as db:  # warm: figures drawn into this cache once
            for page in PAGES:
                render[page](db)
        per_page = {}
        for page in PAGES:
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 2:
                with open_store(str(path)) as db:  # as the server does: a store per request
                    render[page](db)
                n += 1
            per_page[page] = n / (time.perf_counter() - start)
    mix = len(PAGES) / sum(1 / r for r in per_page.values())  # alternating the pages: harmonic mean
    return mix, per_page


def main() -> None:
    import httpx

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=40)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--cap-s", type=float, default=120.0)
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        path: Path | str = Path(tmp) / "results.sqlite"
        if args.engine == "postgresql":
            from facebench.testing.postgres import TemporaryCluster

            path = stack.enter_context(TemporaryCluster()).new_database()
        start = time.perf_counter()
        build_store(path, args.models)
        print(f"{args.engine} store: {args.models} models x {len(PROTOCOLS)} protocols, {ITEMS} items per run "
              f"({time.perf_counter() - start:.1f} s to write)")
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "facebench", "serve", "--store", str(path), "--port",
                                   str(port), "--cache-dir", str(Path(tmp) / "cache")],
                                  env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    httpx.get(base + "/models", timeout=5)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            for page in PAGES:  # warm-up: imports, the figures drawn and cached
                for _ in range(3):
                    assert httpx.get(base + page, timeout=120).status_code == 200
            latencies: dict[str, list[float]] = {p: [] for p in PAGES}
            errors, lock, counter = [0], threading.Lock(), iter(range(args.requests))
            deadline = time.perf_counter() + args.cap_s

            def worker() -> None:
                with httpx.Client(base_url=base, timeout=60) as client:
                    while time.perf_counter() < deadline:
                        with lock:
                            i = next(counter, None)
                        if i is None:
                            return
                        page = PAGES[i % len(PAGES)]
                        t0 = time.perf_counter()
                        r = client.get(page)
                        dt = time.perf_counter() - t0
                        with lock:
                            latencies[page].append(dt)
                            errors[0] += r.status_code != 200

            start = time.perf_counter()
            threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - start
        finally:
            server.terminate()
            server.wait(10)
        done = sum(len(v) for v in latencies.values())
        rate = done / elapsed
        every = np.array([x for v in latencies.values() for x in v]) * 1e3
        print(f"HTTP: {done} requests ({errors[0]} not 200) in {elapsed:.1f} s at concurrency {args.concurrency}: "
              f"{rate:.1f} requests/s; latency p50 {np.percentile(every, 50):.0f} ms, "
              f"p95 {np.percentile(every, 95):.0f} ms, p99 {np.percentile(every, 99):.0f} ms")
        for page, values in latencies.items():
            ms = np.array(values) * 1e3
            print(f"  {page:<20} {len(ms)} requests, p50 {np.percentile(ms, 50):.0f} ms, "
                  f"p95 {np.percentile(ms, 95):.0f} ms, p99 {np.percentile(ms, 99):.0f} ms")
        mix, per_page = in_process_rate(path)
        print(f"reference, in-process (function call, one thread): {mix:.1f} pages/s of the same mix ("
              + ", ".join(f"{p} {r:.1f}/s" for p, r in per_page.items()) + ")")
        print(f"ratio HTTP / in-process: {rate / mix:.2f}")
        raw, raw_pages = in_process_rate(path, page_cache=False)
        print(f"rendering every time (no page cache), in-process: {raw:.1f} pages/s ("
              + ", ".join(f"{p} {r:.1f}/s" for p, r in raw_pages.items()) + ")")


if __name__ == "__main__":
    main()
