"""The submission service of ``facebench serve``: accounts and the queue (data access), hostile uploads,
scoring equal to ``facebench score``, concurrency, rate limits and restarts.

Ground truth is made here (a tiny WIDER .mat set, an FDDB fold list, a .pts folder) with the builders of
tests/test_score_cli.py. The data-access tests run on both engines (``store_location`` of tests/conftest.py: an
SQLite file, then a fresh database of a throwaway PostgreSQL cluster, skipped where none can start).
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import socket
import tarfile
import threading
import time
import zipfile
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.testclient import TestClient

import facebench.protocols
from facebench.cli import main
from facebench.offline.score_files import score_fddb, score_landmarks, score_wider
from facebench.protocol import ProtocolError, builtin_protocols, load_protocol_file, parse_protocol
from facebench.report.leaderboard import leaderboard_rows, render
from facebench.results import submissions as db
from facebench.results.store import Store, StoreError
from facebench.serve.submissions import SubmissionService
from facebench.serve.uploads import Limits, UploadError, extract

from test_score_cli import _write_fddb_folds, _write_pts, write_wider_gt, write_wider_pred

KiB, MiB = 1024, 1024 * 1024
LIMITS = Limits(max_upload_bytes=256 * KiB, max_members=50, max_total_bytes=2 * MiB, max_member_bytes=1 * MiB,
                max_path_length=120, max_path_depth=5)

WIDER = """id = "wider-held"
title = "WIDER held out"
dataset = "wider-face"
split = "val"
task = "detector"
metric = "wider_ap"
columns = ["easy", "medium", "hard", "faces", "detections"]
held_out = true
submission = "wider"
[options]
iou_threshold = 0.5
settings = ["easy", "medium", "hard"]
"""
FDDB = """id = "fddb-held"
title = "FDDB held out"
dataset = "fddb"
task = "detector"
metric = "roc"
columns = ["tpr@1", "tpr@2", "tpr@10", "faces", "detections"]
held_out = true
submission = "fddb"
[options]
false_positives = [1, 2, 10]
"""
LANDMARKS = """id = "lm-held"
title = "300-W style, held out"
dataset = "300w"
task = "landmarks"
metric = "nme"
scheme = "ibug68"
columns = ["nme", "fr", "auc", "faces"]
held_out = true
submission = "landmarks"
[options]
norm = "inter-ocular"
threshold = 0.08
"""
OPEN = WIDER.replace('"wider-held"', '"wider-open"').replace("held_out = true\n", "")


# ground truth and predictions


WIDER_GT = {"0--Parade": {"a": ([[0, 0, 20, 20], [100, 0, 20, 20]], {"easy": [1], "medium": [1, 2], "hard": [1, 2]}),
                          "b": ([[10, 10, 30, 30]], {"easy": [1], "medium": [1], "hard": [1]})},
            "1--Handshaking": {"c": ([[50, 50, 10, 10]], {"easy": [], "medium": [], "hard": [1]})}}


def wider_pred(folder: Path) -> Path:
    write_wider_pred(folder, "0--Parade", "a", [(0, 0, 20, 20, 0.9), (100, 0, 20, 20, 0.8), (300, 300, 5, 5, 0.1)])
    write_wider_pred(folder, "0--Parade", "b", [(10, 10, 30, 30, 0.7)])
    write_wider_pred(folder, "1--Handshaking", "c", [(52, 50, 10, 10, 0.4)])
    return folder


def fddb_pred(path: Path) -> Path:
    lines = []
    for i in range(10):
        lines += [f"2002/08/11/big/img_{i}", "1", f"{30 + i} 45 40 30 {0.5 + 0.04 * i:.2f}"]
    lines += ["2002/08/11/big/img_11", "2", "500 500 40 30 0.95", "41 45 40 30 0.3"]
    path.write_text("\n".join(lines) + "\n")
    return path


def landmark_pred(path: Path, gt: np.ndarray) -> Path:
    rng = np.random.default_rng(5)
    rows = [",".join([f"img{i}", *(f"{v:.4f}" for v in (gt[i] + rng.normal(0, 2, gt[i].shape)).ravel())])
            for i in range(len(gt) - 1)]  # the last face has no prediction: a failure
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Ground truth of the three held-out protocols, the protocols, and good predictions for each."""
    root = tmp_path_factory.mktemp("world")
    write_wider_gt(root / "wider-gt", WIDER_GT)
    _write_fddb_folds(root / "fddb-gt", {f"2002/08/11/big/img_{i}": [(20.0, 15.0, 0.0, 50.0 + i, 60.0)]
                                         for i in range(12)})
    rng = np.random.default_rng(0)
    points = rng.uniform(50, 250, (4, 68, 2))
    for i in range(4):
        _write_pts(root / "lm-gt" / f"img{i}.pts", points[i])
    protocols = {p.id: p for p in (parse_protocol(t, f"{n}.toml") for n, t in
                                   (("wider", WIDER), ("fddb", FDDB), ("lm", LANDMARKS), ("open", OPEN)))}
    ground_truth = {"wider-held": root / "wider-gt", "fddb-held": root / "fddb-gt", "lm-held": root / "lm-gt"}
    wider_dir = wider_pred(root / "wider-pred")
    fddb_file = fddb_pred(root / "fddb.txt")
    lm_file = landmark_pred(root / "lm.csv", points)
    for i in range(4):
        _write_pts(root / "lm-pts" / f"img{i}.pts", points[i] + rng.normal(0, 1.5, (68, 2)))
    return {"root": root, "protocols": protocols, "ground_truth": ground_truth, "wider_dir": wider_dir,
            "fddb_file": fddb_file, "lm_file": lm_file, "lm_pts": root / "lm-pts"}


def zip_bytes(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return buffer.getvalue()


def zip_folder(folder: Path, prefix: str = "") -> bytes:
    return zip_bytes({prefix + p.relative_to(folder).as_posix(): p.read_bytes()
                      for p in sorted(folder.rglob("*.txt"))})


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], gz: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w", encoding="utf-8",
                      errors="surrogateescape") as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def tar_info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


# data access


def test_tokens_are_stored_only_as_hashes_and_duplicates_refused(store_location):
    with Store(store_location) as store:
        token = db.add_account(store, "team-a", submissions_per_day=3)
        assert db.team_for_token(store, token) == "team-a" and db.team_for_token(store, token + "x") is None
        assert db.daily_limit(store, "team-a") == 3
        rows = store.db.execute("SELECT * FROM accounts").fetchall()
        assert token not in json.dumps(rows, default=str)
        assert rows[0][1] == hashlib.sha256(token.encode()).hexdigest()
        with pytest.raises(StoreError, match="already has an account"):
            db.add_account(store, "team-a")


def test_claims_are_exclusive_and_the_stale_are_requeued_then_failed(store_location):
    with Store(store_location) as store:
        ids = [db.add_submission(store, "t", "p", {"name": f"m{i}"}, "u", "sha", 1, "/x") for i in range(6)]
        assert db.count_since(store, "t", 0.0) == 6
        assert db.add_submission(store, "t", "p", {"name": "over"}, "u", "s", 1, "/x", limit=6) is None
    claimed: list[str] = []

    def worker(k):
        with Store(store_location) as mine:
            while (job := db.claim_next(mine, f"w{k}")) is not None:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)  # each claimed exactly once
    with Store(store_location) as store:
        db.finish(store, ids[0], "run1")
        db.fail(store, ids[1], "bad file:3: not numbers")
        db.release(store, ids[5])  # a clean stop's abandoned job: queued again, its attempt counted
        assert db.get(store, ids[5]).status == "queued"
        assert db.requeue_or_fail_stale(store, max_attempts=2) == (3, 0)
        for _ in range(4):
            assert db.claim_next(store, "w").attempts == 2
        assert db.requeue_or_fail_stale(store, max_attempts=2) == (0, 4)
        failed = db.get(store, ids[2])
        assert failed.status == "failed" and failed.error == "the server stopped while scoring it 2 times"
        assert db.get(store, ids[0]).status == "scored" and db.get(store, ids[0]).run_key == "run1"
        assert {s.id for s in db.list_for(store, status="failed")} == set(ids[1:])
        assert len(db.list_for(store, team="t", protocol="p")) == 6


def test_protocol_held_out_and_submission_fields(tmp_path):
    held = parse_protocol(WIDER)
    assert held.held_out and held.submission == "wider"
    # who may see the ground truth, and the reader, never change a score: the hash is the open protocol's
    assert held.content_hash == parse_protocol(OPEN.replace('"wider-open"', '"wider-held"')).content_hash
    # an operator marks a built-in protocol held out in their own folder: accepted, the built-in's hash
    builtin = (Path(facebench.protocols.__file__).parent / "wider-ap50.toml").read_text()
    (tmp_path / "wider-ap50.toml").write_text(builtin.replace("[options]", 'held_out = true\nsubmission = "wider"\n'
                                                                           "\n[options]"))
    mine = load_protocol_file(tmp_path / "wider-ap50.toml")
    assert mine.held_out and mine.content_hash == builtin_protocols()["wider-ap50"].content_hash
    with pytest.raises(ProtocolError, match="held_out must be bool"):
        parse_protocol(WIDER.replace("held_out = true", 'held_out = "yes"'))
    with pytest.raises(ProtocolError, match="submission must be one of"):
        parse_protocol(WIDER.replace('submission = "wider"', 'submission = "coco"'))
    with pytest.raises(ProtocolError, match="scores metric 'nme'"):
        parse_protocol(WIDER.replace('submission = "wider"', 'submission = "landmarks"'))
    with pytest.raises(ProtocolError, match="needs submission"):
        parse_protocol(WIDER.replace('submission = "wider"\n', ""))


# unpacking, without the web


@pytest.mark.parametrize("archive, message", [
    (lambda: zip_bytes({"../evil.txt": b"x"}), "'..' component"),
    (lambda: zip_bytes({"a\\b.txt": b"x"}), "backslash"),
    (lambda: zip_bytes({"C:/x.txt": b"x"}), "absolute path"),
    (lambda: zip_bytes({"a/\x01.txt": b"x"}), "control characters"),
    (lambda: zip_bytes({"/".join("d" * 6) + "/x.txt": b"x"}), "levels deep"),
    (lambda: zip_bytes({"x" * 130: b"x"}), "a path over 120 bytes"),
    (lambda: zip_bytes({"a.txt": b"x", "./a.txt": b"y"}), "second member of the same name"),
    (lambda: zip_bytes({"a": b"x", "a/b.txt": b"y"}), "is a file in this archive"),
    (lambda: tar_bytes([(tar_info("/abs.txt"), b"x")]), "absolute path"),
    (lambda: tar_bytes([(tar_info("bad\udcff.txt"), b"x")]), "not valid UTF-8"),
    (lambda: tar_bytes([(tar_info("fifo", tarfile.FIFOTYPE), None)]), "device, fifo"),
    (lambda: tar_bytes([(tar_info("x.txt"), b"a" * (MiB + 1))], gz=True), "over 1048576"),
])
def test_extract_refuses_naming_the_member(tmp_path, archive, message):
    upload = tmp_path / "upload"
    upload.write_bytes(archive())
    with pytest.raises(UploadError, match=message):
        extract(upload, tmp_path / "out", LIMITS)
    assert not any(p.name == "evil.txt" for p in tmp_path.rglob("*"))


def test_zip_header_that_understates_its_size_writes_no_more_than_it_claims(tmp_path):
    data = zip_bytes({"x.txt": b"0" * (3 * MiB)})
    # patch the local header's and the central directory's uncompressed size to 10 bytes
    size = (3 * MiB).to_bytes(4, "little")
    (tmp_path / "liar.zip").write_bytes(data.replace(size, (10).to_bytes(4, "little")))
    with pytest.raises(UploadError):
        extract(tmp_path / "liar.zip", tmp_path / "out", LIMITS)
    assert sum(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file()) <= 10


def test_a_zip_whose_end_record_understates_its_members_is_still_counted(tmp_path):
    data = bytearray(_bomb_members(LIMITS.max_members + 10))
    end = data.rfind(b"PK\x05\x06")
    data[end + 8:end + 12] = (1).to_bytes(2, "little") * 2  # "1 member" on this disk and in all
    (tmp_path / "liar.zip").write_bytes(bytes(data))
    with pytest.raises(UploadError, match="over 50 members"):
        extract(tmp_path / "liar.zip", tmp_path / "out", LIMITS)


def test_plain_files_pass_through_by_content_not_name(tmp_path):
    (tmp_path / "p.zip").write_text("img0,1,2\n")  # text, whatever its name says
    assert [p.name for p in extract(tmp_path / "p.zip", tmp_path / "a", LIMITS, plain_name="predictions.csv")] \
        == ["predictions.csv"]
    np.save(tmp_path / "x.npy", np.zeros((2, 68, 2)))
    (tmp_path / "x.txt").write_bytes((tmp_path / "x.npy").read_bytes())
    assert [p.name for p in extract(tmp_path / "x.txt", tmp_path / "b", LIMITS, plain_name="predictions.csv")] \
        == ["predictions.npy"]
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(UploadError, match="neither an archive nor UTF-8"):
        extract(tmp_path / "latin1.txt", tmp_path / "c", LIMITS)


# the service over HTTP


def make_service(world, tmp_path: Path, store: str | None = None, **kwargs) -> SubmissionService:
    options = {"submissions_per_day": 1000, "poll_s": 0.05, "stop_grace_s": 5.0, **kwargs}
    return SubmissionService(store or str(tmp_path / "store.sqlite"), world["protocols"], world["ground_truth"],
                             tmp_path / "uploads", LIMITS, **options)


def app_for(service: SubmissionService) -> Starlette:
    @asynccontextmanager
    async def lifespan(app):
        service.start()
        yield
        service.stop()

    return Starlette(routes=service.routes(), lifespan=lifespan)


@pytest.fixture(scope="module")
def server(world, tmp_path_factory):
    """One service (one scorer process) for the tests that only post and read."""
    root = tmp_path_factory.mktemp("server")
    service = make_service(world, root)
    with Store(service.store) as store:
        token = db.add_account(store, "team-a")
        other = db.add_account(store, "team-b")
    with TestClient(app_for(service)) as client:
        yield {"client": client, "service": service, "token": token, "other": other, "root": root}


def post(client, token, protocol, data: bytes, name: str = "predictions.zip", card: dict | str | None = None):
    card = {"name": "TinyNet", "macs": 1e6, "params": 1000, "link": "https://example.org/tiny"} if card is None \
        else card
    return client.post("/api/submissions", headers={"Authorization": f"Bearer {token}"},
                       data={"protocol": protocol, "card": card if isinstance(card, str) else json.dumps(card)},
                       files={"file": (name, data, "application/octet-stream")})


def wait(client, sid: str) -> dict:
    """Poll until scored or failed (a safety limit, not a timing assertion)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        view = client.get(f"/api/submissions/{sid}").json()
        if view["status"] in ("scored", "failed"):
            return view
        time.sleep(0.02)
    raise AssertionError(f"submission {sid} still {view['status']}")


def submit_and_wait(server, protocol, data, **kwargs) -> dict:
    response = post(server["client"], server["token"], protocol, data, **kwargs)
    assert response.status_code == 202, response.text
    assert response.json()["url"].endswith(f"/submission/{response.json()['id']}")
    return wait(server["client"], response.json()["id"])


def test_good_submissions_score_exactly_as_facebench_score(server, world):
    gt = world["ground_truth"]
    # WIDER: a zip with one wrapping folder, as zipping the folder itself gives
    view = submit_and_wait(server, "wider-held", zip_folder(world["wider_dir"], prefix="my-preds/"))
    assert view["status"] == "scored", view
    expected = score_wider(gt["wider-held"], world["wider_dir"])
    assert [view["metrics"][s] for s in ("easy", "medium", "hard")] == [expected["ap"][s] for s in
                                                                        ("easy", "medium", "hard")]
    assert view["metrics"]["detections"] == expected["detections"] and view["metrics"]["faces"] == 4
    # FDDB: the plain detection list
    view = submit_and_wait(server, "fddb-held", world["fddb_file"].read_bytes(), name="out.txt")
    assert view["status"] == "scored", view
    for n in (1, 2, 10):
        assert view["metrics"][f"tpr@{n}"] == score_fddb(gt["fddb-held"], world["fddb_file"], n)["tpr_at_fp"]
    # landmarks: a CSV, sent under a misleading name
    view = submit_and_wait(server, "lm-held", world["lm_file"].read_bytes(), name="preds.bin")
    assert view["status"] == "scored", view
    expected = score_landmarks(gt["lm-held"], world["lm_file"], "inter-ocular", "ibug68", 0.08)
    assert {k: view["metrics"][k] for k in ("nme", "fr", "auc", "faces")} == \
        {k: expected[k] for k in ("nme", "fr", "auc", "faces")}
    assert view["metrics"]["missing_predictions"] == 1
    # the runs: kind submitted, on the leaderboard as submitted rows naming the team
    with Store(server["service"].store, read_only=True) as store:
        run = store.get_run(view["run_key"])
        assert run.kind == "submitted" and run.model == "TinyNet" and run.card["team"] == "team-a"
        rows = [r for r in leaderboard_rows(store, include_reported=False, protocols=world["protocols"])
                if r.protocol in ("wider-held", "fddb-held", "lm-held")]
    assert {r.protocol for r in rows} == {"wider-held", "fddb-held", "lm-held"}
    assert all(r.kind == "submitted" and r.source == "submitted by team-a" and r.macs == 1e6 for r in rows)
    markdown = render(rows, "md", world["protocols"])
    assert "### Submitted" in markdown and "Measured here" not in markdown and "submitted by team-a" in markdown
    page = server["client"].get("/submissions").text
    assert "TinyNet" in page and "lm-held" in page


@pytest.mark.slow  # scores submissions in a scorer process
def test_a_pts_folder_in_a_tar_gz_scores_as_facebench_score_reads_the_folder(server, world):
    folder = world["lm_pts"]
    data = tar_bytes([(tar_info(f"preds/{p.name}"), p.read_bytes()) for p in sorted(folder.glob("*.pts"))], gz=True)
    view = submit_and_wait(server, "lm-held", data)
    assert view["status"] == "scored", view
    expected = score_landmarks(world["ground_truth"]["lm-held"], folder, "inter-ocular", "ibug68", 0.08)
    assert view["metrics"]["nme"] == expected["nme"] and view["metrics"]["missing_predictions"] == 0


@pytest.mark.slow  # scores submissions in a scorer process
def test_pages_escape_what_teams_send(server, world):
    view = submit_and_wait(server, "wider-held", zip_folder(world["wider_dir"]),
                           card={"name": "<script>alert(1)</script>", "description": "<b>bold</b>"})
    for page in (server["client"].get(f"/submission/{view['id']}").text, server["client"].get("/submissions").text):
        assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.slow  # scores submissions in a scorer process
def test_the_service_on_each_engine(store_location, world, tmp_path):
    service = make_service(world, tmp_path, store=store_location)
    with Store(store_location) as store:
        token = db.add_account(store, "engine-team")
    with TestClient(app_for(service)) as client:
        ids = []
        threads = [threading.Thread(target=lambda k=k: ids.append(post(
            client, token, "wider-held", zip_folder(world["wider_dir"]), card={"name": f"e{k}"}).json()["id"]))
            for k in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(wait(client, sid)["status"] == "scored" for sid in ids) and len(set(ids)) == 5
    with Store(store_location) as store:
        rows = leaderboard_rows(store, "wider-held", include_reported=False, protocols=world["protocols"])
    assert sorted(r.model for r in rows) == [f"e{k}" for k in range(5)] and {r.kind for r in rows} == {"submitted"}


@pytest.mark.slow  # scores submissions in a scorer process
def test_same_model_name_from_two_teams_gives_two_rows(server, world):
    data = zip_folder(world["wider_dir"])
    first = submit_and_wait(server, "wider-held", data, card={"name": "Twin"})
    response = post(server["client"], server["other"], "wider-held", data, card={"name": "Twin"})
    second = wait(server["client"], response.json()["id"])
    assert first["run_key"] != second["run_key"]
    with Store(server["service"].store, read_only=True) as store:
        rows = [r for r in leaderboard_rows(store, "wider-held", include_reported=False,
                                            protocols=world["protocols"]) if r.model == "Twin"]
    assert sorted(r.source for r in rows) == ["submitted by team-a", "submitted by team-b"]


def _bomb_members(n: int) -> bytes:
    return zip_bytes({f"0--Parade/f{i}.txt": b"" for i in range(n)})


@pytest.mark.slow  # scores submissions in a scorer process
@pytest.mark.parametrize("make, message", [
    (lambda w: zip_bytes({"0--Parade/a.txt": b"0" * (3 * MiB)}), "expands past 1048576 bytes"),
    (lambda w: zip_bytes({f"0--Parade/{i}.txt": b"0" * (900 * KiB) for i in range(3)}), "expands past 2097152"),
    (lambda w: _bomb_members(LIMITS.max_members + 1), "holds over 50 members"),
    (lambda w: zip_bytes({"../../evil.txt": b"x"}), "'..' component"),
    (lambda w: tar_bytes([(tar_info("/tmp/evil.txt"), b"x")]), "absolute path"),
    (lambda w: tar_bytes([(tar_info("0--Parade/a.txt", tarfile.SYMTYPE, "/etc/passwd"), None)], gz=True),
     "a symbolic link (to '/etc/passwd')"),
    (lambda w: tar_bytes([(tar_info("0--Parade/b.txt"), b"b\n0\n"),
                          (tar_info("0--Parade/a.txt", tarfile.LNKTYPE, "0--Parade/b.txt"), None)]), "a hard link"),
    (lambda w: zip_bytes({"XXname.txt": b"x"}).replace(b"XXname", b"\xff\xfename"), "not valid UTF-8"),
    (lambda w: zip_bytes({"0--Parade/a.txt": b"a\n1\n0 0 20 20 0.9\n",
                          "0--Parade/b.txt": b"b\n1\n10 10 thirty 30 0.7\n"}),
     "0--Parade/b.txt:3: not numbers: '10 10 thirty 30 0.7'"),
])
def test_hostile_upload_fails_with_its_reason_and_the_queue_goes_on(server, world, make, message):
    view = submit_and_wait(server, "wider-held", make(world))
    assert view["status"] == "failed"
    page = server["client"].get(f"/submission/{view['id']}").text
    assert message in html.unescape(page) and message in view["error"]
    assert not (server["root"] / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()
    assert not list((server["root"] / "uploads" / "work").iterdir())  # the unpacked files are gone
    good = submit_and_wait(server, "wider-held", zip_folder(world["wider_dir"]))
    assert good["status"] == "scored"


@pytest.mark.parametrize("data, message", [
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "a PNG image"),
    (b"", "the upload is empty"),
])
def test_wrong_format_and_empty_are_refused_at_once(server, data, message):
    response = post(server["client"], server["token"], "wider-held", data)
    assert response.status_code == 400 and message in response.json()["error"]


def test_intake_refusals(server):
    client, token = server["client"], server["token"]
    assert post(client, "not-a-token", "wider-held", b"x").status_code == 401
    assert client.post("/api/submissions", files={"file": ("x", b"x")}).status_code == 401
    assert post(client, token, "nope", b"x").status_code == 404
    response = post(client, token, "wider-open", b"x")
    assert response.status_code == 400 and "not held out" in response.json()["error"]
    for card, message in (({"macs": 3}, "name is required"), ({"name": "x", "link": "javascript:alert(1)"},
                                                              "http:// or https://"),
                          ({"name": "x" * 101}, "over 100"), ("[1]", "a JSON object"), ({"name": "x", "evil": 1},
                                                                                          "unknown keys")):
        response = post(client, token, "wider-held", b"x", card=card)
        assert response.status_code == 400 and message in response.json()["error"], card
    assert client.get("/api/submissions/nope").status_code == 404
    assert client.get("/submission/nope").status_code == 404


def test_oversize_body_is_cut_off_with_and_without_content_length(server):
    client, token = server["client"], server["token"]
    uploads = set((server["root"] / "uploads").iterdir())
    big = b"0" * (LIMITS.max_upload_bytes + 1)
    response = post(client, token, "wider-held", big)
    assert response.status_code == 413

    def chunked():  # no Content-Length: the server must count
        boundary = b"--b0undary"
        yield boundary + b'\r\nContent-Disposition: form-data; name="protocol"\r\n\r\nwider-held\r\n'
        yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="x.zip"\r\n\r\n'
        for _ in range(1000):  # 64 MiB offered; the server stops reading long before
            yield b"0" * (64 * KiB)

    response = client.post("/api/submissions", content=chunked(), headers={
        "Authorization": f"Bearer {token}", "Content-Type": "multipart/form-data; boundary=b0undary"})
    assert response.status_code == 413 and "over 262144 bytes" in response.json()["error"]
    assert set((server["root"] / "uploads").iterdir()) == uploads  # nothing of either kept


@pytest.mark.slow  # scores submissions in a scorer process
def test_concurrent_posts_all_queue_and_score_once(server, world):
    data = zip_folder(world["wider_dir"])
    ids: list[str] = []
    errors: list[str] = []

    def one(k):
        response = post(server["client"], server["token"], "wider-held", data, card={"name": f"c{k}"})
        (ids.append(response.json()["id"]) if response.status_code == 202 else errors.append(response.text))

    threads = [threading.Thread(target=one, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(ids)) == 20
    views = [wait(server["client"], sid) for sid in ids]
    assert all(v["status"] == "scored" for v in views)
    with Store(server["service"].store, read_only=True) as store:
        runs = store.db.execute("SELECT key FROM runs WHERE kind = 'submitted' AND model LIKE 'c%'").fetchall()
        assert len(runs) == 20 == len({v["run_key"] for v in views})
        assert sum(s.attempts for s in db.list_for(store) if s.id in ids) == 20


@pytest.mark.slow  # scores submissions in a scorer process
def test_daily_limit_gives_429_with_retry_after(world, tmp_path):
    service = make_service(world, tmp_path)
    with Store(service.store) as store:
        token = db.add_account(store, "small", submissions_per_day=2)
    client = TestClient(app_for(service))  # no lifespan: intake only
    for _ in range(2):
        assert post(client, token, "fddb-held", world["fddb_file"].read_bytes()).status_code == 202
    response = post(client, token, "fddb-held", world["fddb_file"].read_bytes())
    assert response.status_code == 429 and 0 < int(response.headers["retry-after"]) <= 86400


@pytest.mark.slow  # scores submissions in a scorer process
def test_restart_requeues_a_job_a_dead_server_was_scoring_and_fails_it_past_max_attempts(world, tmp_path):
    service = make_service(world, tmp_path, max_attempts=2)
    with Store(service.store) as store:
        token = db.add_account(store, "team")
    client = TestClient(app_for(service))  # intake only: no worker yet
    again = post(client, token, "fddb-held", world["fddb_file"].read_bytes()).json()["id"]
    doomed = post(client, token, "fddb-held", world["fddb_file"].read_bytes()).json()["id"]
    with Store(service.store) as store:  # a server claimed both and died; the doomed one had died once before
        assert db.claim_next(store, "dead").id == again and db.claim_next(store, "dead").id == doomed
        with store.db.transaction():
            store.db.execute("UPDATE submissions SET attempts = 2 WHERE id = ?", (doomed,))
    with TestClient(app_for(service)) as client:
        assert wait(client, again)["status"] == "scored"
        view = wait(client, doomed)
    assert view["status"] == "failed" and view["error"] == "the server stopped while scoring it 2 times"
    assert "the server stopped while scoring it 2 times" in client.get(f"/submission/{doomed}").text


@pytest.mark.slow  # scores submissions in a scorer process
def test_a_job_past_its_wall_limit_fails_alone_and_the_worker_goes_on(world, tmp_path):
    # a fresh scorer process takes far longer than a millisecond to start: every job here outlives its limit
    service = make_service(world, tmp_path, job_timeout_s=0.001)
    with Store(service.store) as store:
        token = db.add_account(store, "team")
    with TestClient(app_for(service)) as client:
        ids = [post(client, token, "fddb-held", world["fddb_file"].read_bytes()).json()["id"] for _ in range(2)]
        for sid in ids:
            view = wait(client, sid)
            assert view["status"] == "failed" and view["error"] == "scoring took longer than 0.001 s: stopped"
        service.job_timeout_s = 600.0
        sid = post(client, token, "fddb-held", world["fddb_file"].read_bytes()).json()["id"]
        assert wait(client, sid)["status"] == "scored"


@pytest.mark.slow  # scores submissions in a scorer process
def test_stopping_puts_the_job_being_scored_back_in_the_queue(world, tmp_path):
    service = make_service(world, tmp_path, stop_grace_s=0.0)  # abandon at once: a new scorer takes far longer
    with Store(service.store) as store:
        token = db.add_account(store, "team")
    with TestClient(app_for(service)) as client:
        sid = post(client, token, "fddb-held", world["fddb_file"].read_bytes()).json()["id"]
    with Store(service.store) as store:
        assert db.get(store, sid).status == "queued"  # claimed and released, or not claimed yet
    with TestClient(app_for(service)) as client:
        assert wait(client, sid)["status"] == "scored"


def test_cli_token_add(world, tmp_path):
    store = str(tmp_path / "store.sqlite")
    result = CliRunner().invoke(main, ["serve-token", "add", "cli-team", "--per-day", "5", "--store", store])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    with Store(store) as opened:
        assert db.team_for_token(opened, token) == "cli-team"
    result = CliRunner().invoke(main, ["serve-token", "add", "cli-team", "--store", store])
    assert result.exit_code == 1 and "already has an account" in result.output
    listed = CliRunner().invoke(main, ["serve-token", "list", "--store", store])
    assert listed.exit_code == 0 and listed.stdout.startswith("cli-team\t5 per day") and token not in listed.output
    revoked = CliRunner().invoke(main, ["serve-token", "revoke", "cli-team", "--store", store])
    assert revoked.exit_code == 0
    with Store(store) as opened:
        assert db.team_for_token(opened, token) is None  # the old token no longer works
    again = CliRunner().invoke(main, ["serve-token", "revoke", "cli-team", "--store", store])
    assert again.exit_code == 1 and "no account for team 'cli-team'" in again.output
    fresh = CliRunner().invoke(main, ["serve-token", "add", "cli-team", "--store", store])
    assert fresh.exit_code == 0 and fresh.stdout.strip() != token


def test_submit_without_a_token_names_the_variable(tmp_path):
    result = CliRunner(env={"FACEBENCH_TOKEN": ""}).invoke(
        main, ["submit", "--server", "http://127.0.0.1:9", "--protocol", "p", "--name", "n", str(tmp_path)])
    assert result.exit_code == 2 and "set FACEBENCH_TOKEN" in result.output


@pytest.mark.slow  # scores submissions in a scorer process
def test_submit_command_and_slow_client_over_a_real_server(world, tmp_path):
    """uvicorn on a free port: a client trickling its body holds nothing up; facebench submit --wait zips a
    folder, waits and prints the metrics (and exits 1 on a failed submission)."""
    import uvicorn

    service = make_service(world, tmp_path)
    with Store(service.store) as store:
        token = db.add_account(store, "team")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app_for(service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    try:
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST /api/submissions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode() +
                     b"\r\nContent-Type: multipart/form-data; boundary=zz\r\nContent-Length: 100000\r\n\r\n"
                     b'--zz\r\nContent-Disposition: form-data; name="file"; filename="slow.txt"\r\n\r\n')
        stop = threading.Event()

        def trickle():
            while not stop.is_set():
                try:
                    slow.sendall(b"0")
                except OSError:
                    return
                stop.wait(0.05)

        trickler = threading.Thread(target=trickle)
        trickler.start()
        env = {"FACEBENCH_TOKEN": token}
        result = CliRunner(env=env).invoke(main, ["submit", "--server", url, "--protocol", "wider-held", "--name",
                                                  "CliNet", "--wait", str(world["wider_dir"])])
        assert result.exit_code == 0, result.output
        assert "/submission/" in result.stdout
        expected = score_wider(world["ground_truth"]["wider-held"], world["wider_dir"])
        assert json.loads(result.stdout.split("\n", 1)[1])["hard"] == expected["ap"]["hard"]
        bad = tmp_path / "bad.txt"
        bad.write_text("2002/08/11/big/img_0\n2\n30 45 40 30 0.9\n")
        result = CliRunner(env=env).invoke(main, ["submit", "--server", url, "--protocol", "fddb-held", "--name",
                                                  "Bad", "--wait", str(bad)])
        assert result.exit_code == 1 and "bad.txt:4" in result.output  # the file as the team named it
        slow.setblocking(False)
        with pytest.raises(BlockingIOError):  # the trickling upload is still being received: no answer yet
            slow.recv(1)
        stop.set()
        trickler.join()
        slow.close()
    finally:
        server.should_exit = True
        thread.join()
