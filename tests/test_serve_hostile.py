"""Hostile tests of ``facebench serve`` and its submission service: each test is an attack that once gave a 500,
a hang or a page no one could use (or a guard that must stay), over real HTTP (Starlette's TestClient, or a
plain ``http.server`` posing as a broken server), real archives and real files."""

from __future__ import annotations

import errno
import gzip
import http.server
import io
import json
import socket
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

import facebench.cli.submit as submit_cli
import facebench.serve.submissions as service_module
from facebench.cli import main
from facebench.protocol import builtin_protocols
from facebench.results import submissions as db
from facebench.results.store import Store
from facebench.serve.app import create_app
from facebench.serve.figures import figure_rows
from facebench.serve.uploads import Limits

from test_serve import add_run, nme_items
from test_submissions import app_for, make_service, post, server, wait, world, zip_bytes  # noqa: F401 - fixtures

# the card


@pytest.mark.parametrize("card, message", [
    ("[" * 60_000, "nested too deeply"),  # json.loads: RecursionError, once a 500
    ('{"name": "x", "macs": 1' + "0" * 400 + "}", "non-negative number up to"),  # math.isfinite: OverflowError
    ('{"name": "x", "params": 1e400}', "non-negative number up to"),
])
def test_a_hostile_card_is_a_400_naming_the_problem(server, card, message):  # noqa: F811 - fixtures
    response = post(server["client"], server["token"], "fddb-held", b"x\n", card=card)
    assert response.status_code == 400 and message in response.json()["error"]


@pytest.mark.parametrize("name, code", [("Good\u202eteNrettaB", "U+202E"), ("a\u0085b", "U+0085"),
                                        ("a\u2028b", "U+2028"), ("a\u200bb", "U+200B"), ("a\u2066b", "U+2066")])
def test_a_model_name_with_a_bidi_override_or_invisible_character_is_refused(server, name, code):  # noqa: F811 - fixtures
    """A right-to-left override shows 'GoodBatterNet' as something else on the leaderboard: no such name is
    taken, nor a C1 control, a line separator or a zero-width character; an emoji sequence (joiner) is."""
    response = post(server["client"], server["token"], "fddb-held", b"x\n", card={"name": name})
    assert response.status_code == 400 and code in response.json()["error"], response.text
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467 net"
    ok = post(server["client"], server["token"], "fddb-held", b"x\n", card={"name": family})
    assert ok.status_code == 202, ok.text
    # the upload's file name is shown on the submission's page too: its invisible characters are replaced
    client = server["client"]
    boundary = "b0undary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="protocol"\r\n\r\nfddb-held\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="card"\r\n\r\n{{"name": "n"}}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="evil\u202etxt.exe"\r\n\r\n'
            f"x\n\r\n--{boundary}--\r\n").encode()
    response = client.post("/api/submissions", content=body, headers={
        "Authorization": f"Bearer {server['token']}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 202, response.text
    assert client.get(f"/api/submissions/{response.json()['id']}").json()["upload"]["name"] == "evil\ufffdtxt.exe"


# the multipart framing


def _raw_post(served: dict, body: bytes, content_type: str):
    return served["client"].post("/api/submissions", content=body, headers={
        "Authorization": f"Bearer {served['token']}", "Content-Type": content_type})


_PARTS = (b'--zz\r\nContent-Disposition: form-data; name="protocol"\r\n\r\nfddb-held\r\n'
          b'--zz\r\nContent-Disposition: form-data; name="card"\r\n\r\n{"name": "n"}\r\n'
          b'--zz\r\nContent-Disposition: form-data; name="file"; filename="p.txt"\r\n\r\n'
          b"2002/08/11/big/img_0\n1\n30 45 40 30 0.9\n2002/08/11/big/img_1\n1\n31 45 40 30 0.9")


@pytest.mark.parametrize("body, content_type, status, message", [
    (b"--" + b"a" * 300 + b"\r\n", "multipart/form-data; boundary=" + "a" * 300, 400, "boundary is over 70"),
    (b"--\r\n", "multipart/form-data; boundary=", 400, "send multipart/form-data"),
    # the last part cut short with no closing boundary (chunked, so no length to miss): once scored as sent
    (_PARTS, "multipart/form-data; boundary=zz", 400, "ended before its closing boundary"),
    (_PARTS.split(b"--zz", 2)[2].join([b"--zz", b""]) + b"\r\n--zz--\r\n", "multipart/form-data; boundary=zz",
     400, "no protocol field"),
])
def test_malformed_multipart_framing_is_a_400_saying_what(server, body, content_type, status, message):  # noqa: F811
    with Store(server["service"].store, read_only=True) as store:
        before = len(db.list_for(store))
    response = _raw_post(server, body, content_type)
    assert response.status_code == status and message in response.json()["error"], response.text
    with Store(server["service"].store, read_only=True) as store:
        assert len(db.list_for(store)) == before
    whole = _raw_post(server, _PARTS + b"\n\r\n--zz--\r\n", "multipart/form-data; boundary=zz")
    assert whole.status_code == 202, whole.text  # the same parts, closed: taken


# the upload folder


@pytest.mark.slow  # scores submissions in a scorer process
def test_a_store_that_cannot_be_opened_is_a_503_on_the_submission_routes_too(world, tmp_path):  # noqa: F811
    """The leaderboard's pages said 503 for a store replaced by garbage; the submission routes said 500."""
    service = make_service(world, tmp_path)
    with Store(service.store) as store:
        token = db.add_account(store, "t")
    client = TestClient(app_for(service))  # no lifespan: intake and views only
    sid = post(client, token, "fddb-held", world["fddb_file"].read_bytes()).json()["id"]
    Path(service.store).write_bytes(b"garbage" * 5000)
    response = post(client, token, "fddb-held", world["fddb_file"].read_bytes())
    assert response.status_code == 503 and "cannot be opened" in response.json()["error"]
    assert response.headers["retry-after"] and str(tmp_path) not in response.text
    assert client.get(f"/api/submissions/{sid}").status_code == 503
    for url in (f"/submission/{sid}", "/submissions"):
        page = client.get(url)
        assert page.status_code == 503 and "cannot be opened" in page.text


@pytest.mark.slow  # a scorer process of its own: about 3 s
def test_an_upload_removed_before_scoring_fails_saying_so_without_a_server_path(world, tmp_path):  # noqa: F811
    service = make_service(world, tmp_path)
    with Store(service.store) as store:
        token = db.add_account(store, "t")
    sid = post(TestClient(app_for(service)), token, "fddb-held", world["fddb_file"].read_bytes()).json()["id"]
    for upload in (tmp_path / "uploads").glob("upload-*.bin"):  # an operator's clean-up, while it was queued
        upload.unlink()
    with TestClient(app_for(service)) as client:
        view = wait(client, sid)
        assert view["status"] == "failed" and "no longer on the server" in view["error"]
        assert str(tmp_path) not in view["error"]
        assert wait(client, post(client, token, "fddb-held", world["fddb_file"].read_bytes()).json()["id"])[
            "status"] == "scored"  # the queue goes on


@pytest.mark.slow  # scores submissions in a scorer process
def test_an_upload_folder_that_is_gone_or_full_is_a_503_not_a_500(world, tmp_path, monkeypatch):  # noqa: F811 - fixtures
    service = make_service(world, tmp_path)
    with Store(service.store) as store:
        token = db.add_account(store, "t")
    data = world["fddb_file"].read_bytes()
    with TestClient(app_for(service)) as client:
        uploads = tmp_path / "uploads"
        for path in sorted(uploads.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        uploads.rmdir()
        uploads.write_text("not a folder")  # the folder replaced by a file: nothing can be stored
        response = post(client, token, "fddb-held", data)
        assert response.status_code == 503, response.text
        assert "cannot store uploads" in response.json()["error"] and response.headers["retry-after"]
        assert str(tmp_path) not in response.text  # no server path to the client
        uploads.unlink()  # removed while the server runs: made again, uploaded and scored
        response = post(client, token, "fddb-held", data)
        assert response.status_code == 202, response.text
        assert wait(client, response.json()["id"])["status"] == "scored"

        class Full(io.FileIO):  # a disk that fills up as the upload is written
            def write(self, data):
                raise OSError(errno.ENOSPC, "No space left on device")

        kept = set(uploads.glob("upload-*.bin"))
        monkeypatch.setattr(service_module, "open", lambda path, mode: Full(path, mode), raising=False)
        response = post(client, token, "fddb-held", data)
        assert response.status_code == 503 and "No space left on device" in response.json()["error"], response.text
        assert set(uploads.glob("upload-*.bin")) == kept  # the partial upload is not left behind
        with Store(service.store, read_only=True) as store:
            assert len(db.list_for(store)) == 1  # the refused posts queued nothing


@pytest.mark.slow  # scores submissions in a scorer process
def test_the_daily_limit_holds_under_concurrent_posts(world, tmp_path, store_location):  # noqa: F811 - fixtures
    """Limit N, 3N posts at once: exactly N queued, the others 429 (on each engine)."""
    service = make_service(world, tmp_path, store=store_location)
    with Store(service.store) as store:
        token = db.add_account(store, "small", submissions_per_day=4)
    client = TestClient(app_for(service))  # no lifespan: intake only
    data = world["fddb_file"].read_bytes()
    codes: list[int] = []
    threads = [threading.Thread(target=lambda: codes.append(post(client, token, "fddb-held", data).status_code))
               for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [202] * 4 + [429] * 8
    with Store(service.store, read_only=True) as store:
        assert len(db.list_for(store, team="small")) == 4


@pytest.mark.slow  # scores submissions in a scorer process
def test_a_pickled_npy_and_an_absurd_shape_fail_alone_naming_what(server):  # noqa: F811 - fixtures
    client, token = server["client"], server["token"]
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    view = wait(client, post(client, token, "lm-held", buffer.getvalue(), name="p.npy").json()["id"])
    assert view["status"] == "failed" and "predictions.npy" in view["error"] and "allow_pickle=False" in view["error"]
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000, 68, 2), }"
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    absurd = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * 64
    view = wait(client, post(client, token, "lm-held", absurd, name="p.npy").json()["id"])
    assert view["status"] == "failed" and "MemoryError" in view["error"]


@pytest.mark.slow  # scores submissions in a scorer process
def test_an_error_quoting_a_huge_line_is_cut_short(server):  # noqa: F811 - fixtures
    """The readers quote the offending line: a 200 kB line once became a 200 kB error, stored and served on every
    view (up to the member limit, 256 MB, on a real server)."""
    client, token = server["client"], server["token"]
    body = b"2002/08/11/big/img_0\n1\n" + b"x" * 200_000 + b"\n"
    view = wait(client, post(client, token, "fddb-held", body, name="p.txt").json()["id"])
    assert view["status"] == "failed" and view["error"].startswith("p.txt:3: not numbers")  # as the team named it
    assert len(view["error"]) < 2100 and view["error"].endswith("characters in all)")


@pytest.mark.slow  # scores submissions in a scorer process
@pytest.mark.parametrize("protocol, name, data", [
    ("lm-held", "p.csv", b"nope," + b",".join([b"1"] * 136) + b"\n"),
    ("fddb-held", "p.txt", b"2002/08/11/big/img_99\n1\n30 45 40 30 0.9\n"),
    ("wider-held", "p.zip", zip_bytes({"9--X/zz.txt": b"zz\n0\n"})),
])
def test_predictions_that_match_no_ground_truth_item_fail_instead_of_scoring(server, protocol, name, data):  # noqa: F811
    """Predictions whose names match none of the held-out images were 'scored': AP 0, or an NME of NaN (null in
    the JSON) on the leaderboard. Now the submission fails saying so, with an example of the names sent."""
    view = wait(server["client"], post(server["client"], server["token"], protocol, data, name=name).json()["id"])
    assert view["status"] == "failed" and view["metrics"] is None and "no prediction is for an item" in view["error"]
    assert "such as" in view["error"]


# facebench submit against a broken server


class _Broken(http.server.BaseHTTPRequestHandler):
    """Takes the upload (202, or 202 with no id), then answers every poll with a proxy's HTML error (or 404)."""

    post_answer = {"id": "abc", "url": "http://x/submission/abc", "status": "queued"}
    poll_status = 502

    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        if self.post_answer.get("slow"):
            time.sleep(1)
        self._send(202, json.dumps(self.post_answer).encode(), "application/json")

    def do_GET(self):
        self._send(self.poll_status, b"<html>bad gateway</html>", "text/html")

    def _send(self, status, body, kind):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def broken_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Broken)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    _Broken.post_answer = {"id": "abc", "url": "http://x/submission/abc", "status": "queued"}
    _Broken.poll_status = 502


def _submit(url: str, path: Path, *extra: str):
    return CliRunner(env={"FACEBENCH_TOKEN": "t"}).invoke(
        main, ["submit", "--server", url, "--protocol", "fddb-held", "--name", "x", "--timeout", "5", *extra,
               str(path)])


@pytest.mark.slow  # the CLI against live servers
def test_submit_wait_ends_when_the_server_stops_answering_as_itself(broken_server, world, monkeypatch):  # noqa: F811 - fixtures
    """--wait once polled forever when the status endpoint answered an error page or 404; now it gives up after a
    few such answers (404: at once) with exit 1 and a message naming the submission."""
    monkeypatch.setattr(submit_cli, "_FIRST_POLL_S", 0.01)
    result = _submit(broken_server, world["fddb_file"], "--wait")
    assert result.exit_code == 1 and "submission abc" in result.output and "502" in result.output, result.output
    _Broken.poll_status = 404
    result = _submit(broken_server, world["fddb_file"], "--wait")
    assert result.exit_code == 1 and "no longer knows it" in result.output, result.output
    _Broken.post_answer = {"status": "queued"}  # 202, but not a facebench server's answer
    result = _submit(broken_server, world["fddb_file"])
    assert result.exit_code == 1 and "no submission id" in result.output and "Traceback" not in result.output
    _Broken.post_answer = {"slow": True}
    result = CliRunner(env={"FACEBENCH_TOKEN": "t"}).invoke(main, [
        "submit", "--server", broken_server, "--protocol", "p", "--name", "x", "--timeout", "0.3",
        str(world["fddb_file"])])
    assert result.exit_code == 1 and "no answer from" in result.output and "within 0.3 s" in result.output
    with socket.socket() as probe:  # a server that is down
        probe.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{probe.getsockname()[1]}"
    result = _submit(down, world["fddb_file"])
    assert result.exit_code == 1 and "cannot reach" in result.output
    result = _submit("http://[::1", world["fddb_file"])  # httpx.InvalidURL is no HTTPError: once a traceback
    assert result.exit_code == 1 and "cannot reach http://[::1" in result.output, result.exception


# the leaderboard


@pytest.mark.slow  # draws figures
def test_a_protocol_with_many_runs_draws_its_best_rows_only(tmp_path):
    """A figure once drew every run: 1500 runs took minutes under the drawing lock and gave a 7 MB PNG. Now at most
    ``max_rows`` rows, the best by the headline metric, and the page says so."""
    path = tmp_path / "results.sqlite"
    with Store(path) as store:
        for i in range(8):
            add_run(store, f"m{i}", "mini-nme", "landmarks",
                    {"nme": 0.09 - 0.01 * i, "fr": 0.0, "auc": 0.5, "faces": 2, "points": 68}, nme_items([0.05]))
    app = create_app(str(path), cache_dir=tmp_path / "cache")
    app.state.site.figures.max_rows = 3
    client = TestClient(app)
    page = client.get("/protocol/mini-nme").text
    assert "best 3 of the 8 rows" in page and page.count("<tr") >= 9  # the table keeps them all
    with Store(path, read_only=True) as store:
        from facebench.report.leaderboard import leaderboard_rows

        rows = leaderboard_rows(store, "mini-nme", protocols=builtin_protocols())
    assert sorted(r.model for r in figure_rows(rows, builtin_protocols()["mini-nme"], 3)) == ["m5", "m6", "m7"]
    figure = client.get("/figure/mini-nme/ced.png")
    assert figure.status_code == 200 and figure.content.startswith(b"\x89PNG")


@pytest.mark.parametrize("url", ["/figure/..%2F..%2Fetc/ced.png", "/figure/mini-nme/..%2F..%2Fx.png",
                                 "/figure/mini-nme/tradeoff%00.png", "/model/..%2F..%2Fetc%2Fpasswd",
                                 "/run/%00", "/protocol/" + "x" * 5000])
def test_path_tricks_are_404_and_write_nothing(tmp_path, url):
    path = tmp_path / "results.sqlite"
    with Store(path) as store:
        add_run(store, "m", "mini-nme", "landmarks", {"nme": 0.05, "fr": 0.0, "auc": 0.5, "faces": 1, "points": 68},
                nme_items([0.05]))
    cache = tmp_path / "cache"
    client = TestClient(create_app(str(path), cache_dir=cache))
    response = client.get(url)
    assert response.status_code == 404 and "<h1>Not found</h1>" in response.text
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.parent != tmp_path]


@pytest.mark.slow  # draws figures
def test_a_figure_cache_folder_removed_while_serving_is_made_again(tmp_path):
    """A /tmp cleaner removing the cache folder once made every protocol page and figure a 500."""
    import shutil

    path = tmp_path / "results.sqlite"
    with Store(path) as store:
        add_run(store, "m", "mini-nme", "landmarks", {"nme": 0.05, "fr": 0.0, "auc": 0.5, "faces": 1, "points": 68},
                nme_items([0.05]))
    client = TestClient(create_app(str(path), cache_dir=tmp_path / "cache"))
    shutil.rmtree(tmp_path / "cache")
    assert client.get("/protocol/mini-nme").status_code == 200
    shutil.rmtree(tmp_path / "cache")
    figure = client.get("/figure/mini-nme/ced.png")
    assert figure.status_code == 200 and figure.content.startswith(b"\x89PNG")


def test_concurrent_requests_for_one_figure_draw_it_once_and_all_get_the_whole_png(tmp_path):
    import facebench.serve.figures as figures

    path = tmp_path / "results.sqlite"
    with Store(path) as store:
        for i in range(3):
            add_run(store, f"m{i}", "mini-nme", "landmarks",
                    {"nme": 0.05 + i / 100, "fr": 0.0, "auc": 0.5, "faces": 1, "points": 68}, nme_items([0.05]))
    client = TestClient(create_app(str(path), cache_dir=tmp_path / "cache"))
    before, answers = figures.draws, []
    threads = [threading.Thread(target=lambda: answers.append(client.get("/figure/mini-nme/ced.png")))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [200] * 8 and len({a.content for a in answers}) == 1
    assert answers[0].content.endswith(b"IEND\xaeB`\x82") and figures.draws - before == 1
    assert not list((tmp_path / "cache").glob(".draw-*"))  # no drawing folder left


@pytest.mark.slow  # scores submissions in a scorer process
def test_a_submission_named_after_a_measured_model_does_not_take_over_its_card(server, world):  # noqa: F811
    """A team that calls its predictions 'hijack-mesh' (a model facebench measured) once became that model's card on
    /model/hijack-mesh and /models (its description and link), its row listed as measured."""
    with Store(server["service"].store) as store:
        add_run(store, "hijack-mesh", "mini-nme", "landmarks",
                {"nme": 0.05, "fr": 0.0, "auc": 0.5, "faces": 1, "points": 68}, nme_items([0.05]))
    card = {"name": "hijack-mesh", "description": "HIJACKED card", "link": "https://evil.example/x"}
    sid = post(server["client"], server["token"], "fddb-held", world["fddb_file"].read_bytes(), card=card).json()["id"]
    assert wait(server["client"], sid)["status"] == "scored"
    client = TestClient(create_app(server["service"].store, cache_dir=server["root"] / "cache"))
    page = client.get("/model/hijack-mesh").text
    assert "HIJACKED" not in page and "evil.example" not in page and "hijack-mesh for tests" in page
    assert '<tr class="submitted"><td><a href="/protocol/fddb-held">' in page and "submitted by team-a" in page
    models = client.get("/models").text
    assert "HIJACKED" not in models and "evil.example" not in models


def test_a_figure_that_cannot_draw_leaves_the_page_up(tmp_path, capsys):
    """One run whose AUC is stored as null (any producer that writes None for a metric it could not compute) made
    the CED plot raise (TypeError in facebench/report/plots.py), and with it the whole protocol page: a 500. Now the
    page comes without that figure, the other figures are drawn, and the server says which figure failed."""
    path = tmp_path / "results.sqlite"
    with Store(path) as store:
        add_run(store, "no-auc", "mini-nme", "landmarks",
                {"nme": 0.3, "fr": 1.0, "auc": None, "faces": 1, "points": 68},
                nme_items([float("nan")]))
        add_run(store, "fine", "mini-nme", "landmarks", {"nme": 0.05, "fr": 0.0, "auc": 0.5, "faces": 1, "points": 68},
                nme_items([0.05]))
    client = TestClient(create_app(str(path), cache_dir=tmp_path / "cache"))
    page = client.get("/protocol/mini-nme")
    assert page.status_code == 200 and "no-auc" in page.text and "/figure/mini-nme/tradeoff.png" in page.text
    assert "the ced figure of mini-nme failed to draw" in capsys.readouterr().err
    assert client.get("/figure/mini-nme/ced.png").status_code == 404
    assert client.get("/figure/mini-nme/tradeoff.png").status_code == 200


def test_a_gzip_header_of_megabytes_is_refused_at_once(server, tmp_path):  # noqa: F811
    """A gzip header's file-name field is read byte by byte by :mod:`gzip`: 48 MB of it took about 3 s to sniff, on
    the event loop (every other request waited), and again in the scorer. Now a header over 64 KiB is refused."""
    import zlib

    from facebench.serve.uploads import UploadError, extract

    payload = zlib.compress(b"x" * 600)[2:-4] + b"\0" * 8
    bomb = b"\x1f\x8b\x08\x08" + b"\0" * 4 + b"\0\xff" + b"a" * (200 << 10) + b"\0" + payload
    start = time.monotonic()
    response = post(server["client"], server["token"], "fddb-held", bomb)
    assert response.status_code == 400 and "a gzip header over 65536 bytes" in response.json()["error"]
    assert time.monotonic() - start < 1.0
    (tmp_path / "bomb.tar.gz").write_bytes(bomb)
    with pytest.raises(UploadError, match="gzip header over"):
        extract(tmp_path / "bomb.tar.gz", tmp_path / "out")
    # an ordinary .tar.gz with a file name in its header still passes
    good = io.BytesIO()
    with gzip.GzipFile(filename="preds.tar", mode="wb", fileobj=good) as g:
        g.write(tarfile_bytes({"2002/a.txt": b"x"}))
    (tmp_path / "good.tar.gz").write_bytes(good.getvalue())
    assert [p.name for p in extract(tmp_path / "good.tar.gz", tmp_path / "good")] == ["a.txt"]


def tarfile_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_missing_ground_truth_is_named_plainly(world, tmp_path):  # noqa: F811 - fixtures
    """The message once read 'no ground truth given (or None is missing)'."""
    from facebench.errors import UsageError
    from facebench.serve.submissions import SubmissionService

    truth = dict(world["ground_truth"])
    del truth["fddb-held"]
    with pytest.raises(UsageError, match=r"fddb-held: no ground truth given \(--ground-truth fddb-held=PATH\)"):
        SubmissionService(str(tmp_path / "s.sqlite"), world["protocols"], truth, tmp_path / "up", Limits())
    truth["fddb-held"] = tmp_path / "nowhere"
    with pytest.raises(UsageError, match=f"fddb-held: its ground truth {tmp_path / 'nowhere'} does not exist"):
        SubmissionService(str(tmp_path / "s.sqlite"), world["protocols"], truth, tmp_path / "up", Limits())


@pytest.mark.slow  # scores submissions in a scorer process
def test_macos_appledouble_files_in_a_tar_are_ignored_like_macosx(server, world):  # noqa: F811 - fixtures
    """macOS's tar writes '._name' (extended attributes) beside each file that has some: the server ignored Finder's
    __MACOSX folder but read '0--Parade/._a.txt' as a WIDER prediction file and failed the submission."""
    from test_submissions import tar_bytes, tar_info

    apple = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\x00" * 40
    members = [(tar_info("preds/" + p.relative_to(world["wider_dir"]).as_posix()), p.read_bytes())
               for p in sorted(world["wider_dir"].rglob("*.txt"))]
    members += [(tar_info("preds/0--Parade/._a.txt"), apple), (tar_info("preds/._0--Parade"), apple)]
    view = wait(server["client"], post(server["client"], server["token"], "wider-held", tar_bytes(members, gz=True),
                                       name="preds.tar.gz").json()["id"])
    assert view["status"] == "scored", view["error"]


@pytest.mark.parametrize("team, message", [("", "not blank"), ("  ", "not blank"), ("evil\u202eteam", "U+202E"),
                                           ("a\nb", "U+000A"), ("x" * 101, "up to 100")])
def test_serve_token_add_refuses_a_team_name_the_pages_cannot_show(tmp_path, team, message):
    """An empty name, or one with a right-to-left override, was taken and shown beside every submitted row."""
    store = str(tmp_path / "store.sqlite")
    result = CliRunner().invoke(main, ["serve-token", "add", team, "--store", store])
    assert result.exit_code == 2 and message in result.output, result.output
    ok = CliRunner().invoke(main, ["serve-token", "add", "Équipe 7 👩‍🔬", "--store", store])
    assert ok.exit_code == 0, ok.output
