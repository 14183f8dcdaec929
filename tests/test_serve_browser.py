"""``facebench serve`` in a real browser: headless Chromium loads each main page from a live server,
and a script injected into the page counts images (none broken) and tables, and sorts a table by a
header click, both ways.

As in the report's Chromium test, the page is fetched, the check script added, and the result written
to a file whose ``<base href>`` is the server, so its figures load over HTTP; ``--dump-dom`` then shows
what the script found.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from test_serve import build_store  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# after load: the images (broken: not loaded or no pixels), the sortable tables, and one header clicked twice:
# the first table with two rows or more, its first column whose cells are all numbers with two values or more
# (else its first column), checked ascending then descending with the page's own rule (numbers as numbers)
CHECK = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const broken = images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute("src"));
  const tables = [...document.querySelectorAll("table.sortable")];
  const table = tables.find(t => t.tBodies[0] && t.tBodies[0].rows.length >= 2);
  let result = "none";
  if (table) {
    const headers = [...table.tHead.rows[0].cells];
    const texts = i => [...table.tBodies[0].rows].map(r => (r.cells[i] ? r.cells[i].textContent : "").trim());
    const numeric = i => texts(i).every(t => /^[-+]?(\\d|\\.\\d)/.test(t)) && new Set(texts(i)).size >= 2;
    let column = headers.findIndex((_, i) => numeric(i));
    if (column < 0) column = 0;
    const num = numeric(column);
    const inOrder = (values, sign) => values.every((v, k) => k === 0 || sign * (num
      ? parseFloat(v) - parseFloat(values[k - 1]) : v.localeCompare(values[k - 1])) >= 0);
    headers[column].click();
    const asc = inOrder(texts(column), 1) && headers[column].getAttribute("aria-sort") === "ascending";
    headers[column].click();
    const desc = inOrder(texts(column), -1) && headers[column].getAttribute("aria-sort") === "descending";
    result = `column=${headers[column].textContent.replace(/\\s+/g, "_")} numeric=${num} asc=${asc} desc=${desc}`;
  }
  const out = document.createElement("pre");
  out.id = "facebench-check";
  out.textContent = `images=${images.length} broken=${broken.length} tables=${tables.length} ${result} `
    + `[${broken.join(",")}]`;
  document.body.appendChild(out);
});
</script></body>"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(tmp_path):
    import uvicorn

    from facebench.serve.app import create_app

    path = tmp_path / "results.sqlite"
    keys = build_store(path)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(str(path), cache_dir=tmp_path / "cache"), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(250):
        if server.started:
            break
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", keys
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_pages_render_and_sort_in_headless_chromium(live_server, tmp_path):
    import httpx

    base, keys = live_server
    pages = {"index": "/", "protocol": "/protocol/mini-nme", "model": "/model/face-mesh",
             "run": f"/run/{keys['face-mesh']}"}
    found = {}
    for name, url in pages.items():
        page = httpx.get(base + url, timeout=60).text
        check = tmp_path / f"{name}.html"
        check.write_text(page.replace("<head>", f'<head><base href="{base}/">', 1).replace("</body>", CHECK))
        dom = subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                              "--virtual-time-budget=5000", "--dump-dom", check.as_uri()],
                             capture_output=True, text=True, timeout=120, check=False)
        match = re.search(r'id="facebench-check">images=(\d+) broken=(\d+) tables=(\d+) (.*?) \[', dom.stdout)
        assert match, (name, dom.stderr[-2000:])
        images, broken, tables = map(int, match.groups()[:3])
        found[name] = (images, broken, tables, match.group(4))
        assert broken == 0, (name, dom.stdout[dom.stdout.find("facebench-check"):][:500])
        assert tables >= 1 and "asc=true desc=true" in match.group(4), (name, match.group(4))
    assert found["protocol"][0] >= 2  # the protocol's figures (CED, tradeoff, latency), every one loaded
    assert "numeric=true" in found["protocol"][3]  # a column of numbers sorted as numbers
