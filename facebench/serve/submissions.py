"""The submission service of ``facebench serve``: teams upload predictions for a held-out protocol and the
server scores them with the code behind ``facebench score``.

Intake (``POST /api/submissions``) only checks and stores: the token (a bearer token; its hash is looked up),
the team's daily limit, the card, and the upload, streamed to a file in the upload folder while it is hashed
and counted, so a body over the limit is cut off at the limit (413) whether or not it said its length, and a
client trickling bytes holds one coroutine, never a thread or the queue. Scoring happens in worker threads,
each driving one spawned scorer process: a job (unpack, read, score) that outlives its wall limit, exhausts
memory or crashes kills that process only; the job fails and the next one gets a fresh process. Scored
submissions become runs of kind ``submitted`` (key: submission, team, protocol hash, ground-truth bytes,
upload hash, card), shown as such on the leaderboard, never mixed with what facebench measured.

Visibility: a submission's API entry and page are reachable by its id (128 random bits, handed to the
submitter), errors included; the public list (``GET /submissions``) shows scored submissions only.
A restarted server puts back in the queue what a stopped one left half scored, at most ``max_attempts``
times (facebench/results/submissions.py).
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
import unicodedata
import uuid
import warnings
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from facebench import __version__
from facebench.assets import sha256_file
from facebench.errors import FacebenchError, UsageError
from facebench.metric_specs import SPECS
from facebench.paths import dumps_json
from facebench.protocol import Protocol
from facebench.results import submissions as db
from facebench.results.store import Store, run_key
from facebench.serve.html import Html, page, table_html
from facebench.serve.uploads import Limits, UploadError, extract, sniff

DAY_S = 86400.0
_FIELD_BYTES = 64 * 1024  # the protocol and card parts
_BODY_SLACK = 256 * 1024  # multipart framing and the text parts, over the upload's own limit
_CARD_KEYS = {"name": 100, "description": 2000, "link": 500}  # text fields and their length caps
MAX_ERROR_CHARS = 2000  # a failed submission's error message, as stored and shown
_MAX_COUNT = 1e18  # macs, params: far past any model, and well inside a float
_PLAIN_NAMES = {"wider": "predictions.txt", "fddb": "predictions.txt", "landmarks": "predictions.csv"}


class _Refused(Exception):
    """An intake answer other than 202: status, message, extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass(frozen=True)
class _Job:
    """What the scorer process needs: plain values only (it is pickled to the process)."""

    upload_path: str
    workdir: str
    reader: str  # wider | fddb | landmarks
    ground_truth: str
    options: dict
    limits: Limits
    upload_name: str = ""  # as the team named its file: a single file's errors name it, not the server's copy


def _page(title: str, body: str) -> str:
    """A whole page in the web leaderboard's frame (its navigation shows the submissions link)."""
    return page(title, f"<h1>{html.escape(title)}</h1>{body}", submissions=True)


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Cells are HTML already (escaped by the caller); sortable like the leaderboard's."""
    return table_html(header, [[Html(c) for c in row] for row in rows], css_class="submissions")


def _refused_page(refused: _Refused) -> HTMLResponse:
    return HTMLResponse(_page("Submissions unavailable", f"<p>{html.escape(refused.message)}</p>"), refused.status,
                        refused.headers)


def _discard(upload: Path | None) -> None:
    """Remove a refused upload's file, if it was made (its folder may be gone, or not a folder, by now)."""
    if upload is not None:
        try:
            upload.unlink(missing_ok=True)
        except OSError:
            pass


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if t else ""


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps_json(value), status_code=status, headers=headers, media_type="application/json")


def _invisible(c: str) -> bool:
    """A character that is not shown as itself: C0/C1 controls, line and paragraph separators, and the format
    characters (Unicode category Cf: bidirectional overrides and isolates, zero-width marks) but the zero-width
    joiner emoji sequences need."""
    return unicodedata.category(c) in ("Cc", "Zl", "Zp") or (unicodedata.category(c) == "Cf" and c != "\u200d")


def check_card(text: str) -> dict:
    """The model card a team sends, checked: name (required), macs, params, description, link (http or https)."""
    try:
        card = json.loads(text)
    except RecursionError:  # "[[[[..." nested past the parser's depth: refused, not a server error
        raise _Refused(400, "card: nested too deeply (a flat JSON object is expected)") from None
    except ValueError as exc:
        raise _Refused(400, f"card: not JSON ({exc})") from None
    if not isinstance(card, dict):
        raise _Refused(400, "card: a JSON object with name, and optionally macs, params, description, link")
    unknown = set(card) - set(_CARD_KEYS) - {"macs", "params"}
    if unknown:
        raise _Refused(400, f"card: unknown keys {sorted(unknown)}; known: name, macs, params, description, link")
    out: dict[str, Any] = {}
    for key, cap in _CARD_KEYS.items():
        value = card.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise _Refused(400, f"card: {key} must be a non-empty string")
        if len(value) > cap:
            raise _Refused(400, f"card: {key} is {len(value)} characters, over {cap}")
        allowed = "\n\r\t" if key == "description" else ""
        bad = next((c for c in value if c not in allowed and _invisible(c)), None)
        if bad is not None:  # a control or bidirectional-override character would spoof the leaderboard's rows
            raise _Refused(400, f"card: {key} holds the control or formatting character U+{ord(bad):04X}")
        out[key] = value.strip()
    if "name" not in out:
        raise _Refused(400, "card: name is required (the model's name on the leaderboard)")
    if "link" in out:
        parts = urlsplit(out["link"])
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _Refused(400, "card: link must be an http:// or https:// URL")
    for key in ("macs", "params"):
        value = card.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value > _MAX_COUNT \
                or not math.isfinite(value):  # checked against the cap first: a 400-digit int overflows a float
            raise _Refused(400, f"card: {key} must be a non-negative number up to {_MAX_COUNT:g}")
        out[key] = value
    return out


def fingerprint_files(path: Path) -> str:
    """SHA-256 of a ground truth's files: each relative path and its bytes' SHA-256, in sorted order."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    listing = "".join(f"{f.relative_to(path) if path.is_dir() else f.name}\0{sha256_file(f)}\n" for f in files)
    return hashlib.sha256(listing.encode()).hexdigest()[:20]


def _option(protocol: Protocol, name: str) -> Any:
    return protocol.options.get(name, SPECS[protocol.metric].options[name].default)


class SubmissionService:
    """Routes for submitting and viewing submissions, and the workers that score them (see the module docstring).

    ``protocols``: every protocol the server knows; only held-out ones (``held_out = true`` with a
    ``submission`` reader) take submissions, each scored against ``ground_truth[protocol id]`` (a folder or
    file, as ``facebench score`` takes it). ``submissions_per_day``: the default limit of a team (an account
    may have its own), over the last 24 hours."""

    def __init__(self, store: str, protocols: dict[str, Protocol], ground_truth: dict[str, Path], upload_dir: Path,
                 limits: Limits, *, workers: int = 1, submissions_per_day: int = 20, max_attempts: int = 2,
                 job_timeout_s: float = 600.0, memory_limit_bytes: int | None = 4 << 30, stop_grace_s: float = 10.0,
                 poll_s: float = 1.0):
        self.store, self.protocols, self.limits = store, dict(protocols), limits
        self.upload_dir = Path(upload_dir)
        self.workers, self.submissions_per_day, self.max_attempts = workers, submissions_per_day, max_attempts
        self.job_timeout_s, self.stop_grace_s, self.poll_s = job_timeout_s, stop_grace_s, poll_s
        self.memory_limit_bytes = memory_limit_bytes  # the scorer process's address space (None: unlimited)
        self.held_out = {pid: p for pid, p in self.protocols.items() if p.held_out}
        self.ground_truth = {pid: Path(ground_truth[pid]) for pid in self.held_out if pid in ground_truth}
        for pid, protocol in self.held_out.items():
            if pid not in self.ground_truth:
                raise UsageError(f"held-out protocol {pid}: no ground truth given (--ground-truth {pid}=PATH): the "
                                 "server scores submissions against it")
            if not self.ground_truth[pid].exists():
                raise UsageError(f"held-out protocol {pid}: its ground truth {self.ground_truth[pid]} does not exist")
            overlap = protocol.options.get("iou_threshold", protocol.options.get("overlap", 0.5))
            if overlap != 0.5:  # facebench score's readers match at IoU 0.5, as the official tools do
                raise UsageError(f"held-out protocol {pid}: submissions are scored at IoU 0.5 "
                                 f"(facebench score), not {overlap}")
        (self.upload_dir / "work").mkdir(parents=True, exist_ok=True)  # uploads, and where jobs unpack them
        self._fingerprints: dict[str, str] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._scorers: list[_Scorer] = []

    # lifecycle

    def start(self) -> None:
        """Requeue (or fail) what a stopped server left scoring, then start the workers."""
        self._fingerprints = {pid: fingerprint_files(path) for pid, path in self.ground_truth.items()}
        with Store(self.store) as store:
            db.requeue_or_fail_stale(store, self.max_attempts)
        self._stop.clear()
        for k in range(self.workers):
            scorer = _Scorer(self.memory_limit_bytes)
            name = f"{os.uname().nodename}:{os.getpid()}:{k}"
            thread = threading.Thread(target=self._work, args=(name, scorer), name=f"facebench-scorer-{k}",
                                      daemon=True)
            self._scorers.append(scorer)
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        """Let the current jobs finish for ``stop_grace_s``, then abandon them (back in the queue) and end."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + self.stop_grace_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for scorer in self._scorers:
            scorer.shut()  # a job still running: its worker puts it back in the queue
        for thread in self._threads:
            thread.join()
        for scorer in self._scorers:
            scorer.close()
        self._threads, self._scorers = [], []

    def _work(self, name: str, scorer: _Scorer) -> None:
        while not self._stop.is_set():
            try:
                with Store(self.store) as store:
                    job = db.claim_next(store, name)
                if job is None:
                    self._wake.wait(self.poll_s)
                    self._wake.clear()
                    continue
            except Exception:  # noqa: BLE001 - a store hiccup must not end the worker; said, then retried
                traceback.print_exc()
                self._stop.wait(self.poll_s)
                continue
            try:
                self._score(job, scorer)
            except Exception as exc:  # noqa: BLE001 - this job fails, the worker goes on
                traceback.print_exc()
                try:
                    with Store(self.store) as store:
                        db.fail(store, job.id, f"the server failed while recording it ({type(exc).__name__})")
                except Exception:  # noqa: BLE001 - left scoring: the next start requeues it
                    traceback.print_exc()

    def _score(self, job: db.Submission, scorer: _Scorer) -> None:
        protocol = self.protocols.get(job.protocol)
        if protocol is None or job.protocol not in self.held_out:
            with Store(self.store) as store:
                db.fail(store, job.id, f"this server no longer scores protocol {job.protocol}")
            return
        assert protocol.submission is not None  # validated with held_out
        (self.upload_dir / "work").mkdir(parents=True, exist_ok=True)  # removed while the server runs: made again
        workdir = Path(tempfile.mkdtemp(prefix=f"{job.id}-", dir=self.upload_dir / "work"))
        try:
            options = {"norm": _option(protocol, "norm"), "threshold": _option(protocol, "threshold"),
                       "scheme": protocol.scheme} if protocol.submission == "landmarks" else {}
            if protocol.submission == "fddb":
                options["false_positives"] = [int(n) for n in _option(protocol, "false_positives")]
            if protocol.submission == "wider":
                options["settings"] = list(_option(protocol, "settings"))
            outcome = scorer.run(_Job(job.upload_path, str(workdir / "upload"), protocol.submission,
                                      str(self.ground_truth[job.protocol]), options, self.limits, job.upload_name),
                                 self.job_timeout_s)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        with Store(self.store) as store:
            if outcome.get("abandoned") and self._stop.is_set():
                db.release(store, job.id)
            elif "error" in outcome:
                db.fail(store, job.id, shorten(outcome["error"]))
            else:
                self._record(store, job, protocol, outcome)

    def _record(self, store: Store, job: db.Submission, protocol: Protocol, outcome: dict) -> None:
        fingerprint = self._fingerprints[job.protocol]
        parts = {"kind": "submitted", "submission": job.id, "team": job.team, "protocol_hash": protocol.content_hash,
                 "ground_truth": fingerprint, "predictions_sha256": job.upload_sha256, "card": job.card}
        key = run_key(parts)
        card = {"name": job.card["name"], "team": job.team, "submission": job.id,
                "macs": {"model": job.card["macs"]} if job.card.get("macs") else {},
                "options": {"parameters": job.card["params"]} if job.card.get("params") is not None else {},
                **{k: job.card[k] for k in ("description", "link") if k in job.card}}
        environment = {"facebench": __version__, "submission": job.id, "team": job.team,
                       "upload_sha256": job.upload_sha256, "reader": protocol.submission}
        store.start_run(key, job.card["name"], protocol.id, protocol.content_hash, fingerprint, "submitted", card,
                        environment, parts, kind="submitted")
        store.complete_run(key, outcome["metrics"], {}, outcome["n_items"], outcome["n_missing"])
        db.finish(store, job.id, key)

    # routes

    def routes(self) -> list[Route]:
        return [
            Route("/api/submissions", self.create, methods=["POST"], name="submission_create"),
            Route("/api/submissions/{sid}", self.api_get, methods=["GET"], name="submission_api"),
            Route("/submissions", self.list_page, methods=["GET"], name="submissions_page"),
            Route("/submission/{sid}", self.page, methods=["GET"], name="submission_page"),
        ]

    def _open(self) -> Store:
        """The store, for a request; one that cannot be opened (removed, replaced, its server down) is a 503
        answer, as on the leaderboard's pages, never a 500."""
        try:
            return Store(self.store)
        except (FacebenchError, OSError) as exc:
            print(f"facebench serve: the results store cannot be opened: {exc}", file=sys.stderr)
            raise _Refused(503, "the server's results store cannot be opened now: try again later",
                           {"Retry-After": "60"}) from exc

    async def create(self, request: Request) -> Response:
        upload: Path | None = None
        try:
            team, limit = await run_in_threadpool(self._authorise, request.headers.get("authorization", ""))
            await run_in_threadpool(self._check_rate, team, limit)
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.limits.max_upload_bytes + _BODY_SLACK:
                raise _Refused(413, f"the upload is over {self.limits.max_upload_bytes} bytes")
            upload = self.upload_dir / f"upload-{uuid.uuid4().hex}.bin"
            fields, name, sha, size = await self._receive(request, upload)
            pid = fields.get("protocol", "")
            if "protocol" not in fields:
                raise _Refused(400, "no protocol field: send the held-out protocol's id as the multipart field "
                                    "'protocol'")
            if pid not in self.protocols:
                raise _Refused(404, f"unknown protocol {pid!r}")
            if pid not in self.held_out:
                raise _Refused(400, f"protocol {pid} is not held out here: score it yourself with facebench run "
                                    "or facebench score")
            card = check_card(fields.get("card", ""))
            if name is None:
                raise _Refused(400, "no file part: send the predictions as the multipart field 'file'")
            try:  # in a thread: a gzip header's name field can be megabytes, read byte by byte
                if await run_in_threadpool(sniff, upload) == "empty":
                    raise _Refused(400, "the upload is empty")
            except UploadError as exc:
                raise _Refused(400, str(exc)) from None
            sid = await run_in_threadpool(self._queue, team, limit, pid, card, name, sha, size, upload)
        except _Refused as refused:
            _discard(upload)
            return _json({"error": refused.message}, refused.status, refused.headers)
        except BaseException:
            _discard(upload)
            raise
        self._wake.set()
        return _json({"id": sid, "status": db.QUEUED, "url": str(request.url_for("submission_page", sid=sid))}, 202)

    def _authorise(self, header: str) -> tuple[str, int]:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refused(401, "send the team's token: Authorization: Bearer TOKEN", {"WWW-Authenticate": "Bearer"})
        with self._open() as store:
            team = db.team_for_token(store, token.strip())
            if team is None:
                raise _Refused(401, "unknown token", {"WWW-Authenticate": "Bearer"})
            own = db.daily_limit(store, team)
        return team, self.submissions_per_day if own is None else own

    def _check_rate(self, team: str, limit: int) -> None:
        with self._open() as store:
            since = time.time() - DAY_S
            if db.count_since(store, team, since) >= limit:
                raise self._too_many(store, team, limit, since)

    def _too_many(self, store: Store, team: str, limit: int, since: float) -> _Refused:
        oldest = db.oldest_since(store, team, since) or time.time()
        wait = max(1, math.ceil(oldest + DAY_S - time.time()))
        return _Refused(429, f"team {team} has made its {limit} submissions of the last 24 hours",
                        {"Retry-After": str(wait)})

    def _queue(self, team: str, limit: int, pid: str, card: dict, name: str, sha: str, size: int,
               upload: Path) -> str:
        with self._open() as store:
            since = time.time() - DAY_S
            sid = db.add_submission(store, team, pid, card, name, sha, size, str(upload), limit=limit, since=since)
            if sid is None:  # others of the team's posts got in first
                raise self._too_many(store, team, limit, since)
        return sid

    async def _receive(self, request: Request, target: Path) -> tuple[dict[str, str], str | None, str, int]:
        """Stream the multipart body: the text fields, and the one file part into ``target`` while hashing and
        counting; refused (413) as soon as the body passes the limit."""
        content_type, params = parse_options_header(request.headers.get("content-type", ""))
        if content_type != b"multipart/form-data" or not params.get(b"boundary"):
            raise _Refused(400, "send multipart/form-data with the fields protocol, card and file")
        if len(params[b"boundary"]) > 70:  # RFC 2046's limit (python-multipart raises past 256)
            raise _Refused(400, "a malformed multipart body (its boundary is over 70 characters)")
        fields: dict[str, str] = {}
        state: dict[str, Any] = {"headers": [], "name": None, "field": None, "data": bytearray()}
        digest = hashlib.sha256()
        counts = {"file": 0}
        try:
            target.parent.mkdir(parents=True, exist_ok=True)  # the folder removed while the server runs: made again
            out = open(target, "xb")
        except OSError as exc:
            raise _Refused(503, f"the server cannot store uploads now ({exc.strerror or type(exc).__name__}): "
                                "try again later", {"Retry-After": "60"}) from None

        def header_field(data: bytes, start: int, end: int) -> None:
            state["headers"].append([data[start:end], b""])

        def header_value(data: bytes, start: int, end: int) -> None:
            state["headers"][-1][1] += data[start:end]

        def headers_finished() -> None:
            disposition = next((v for k, v in state["headers"] if k.lower() == b"content-disposition"), b"")
            _, options = parse_options_header(disposition)
            field = options.get(b"name", b"").decode("utf-8", "replace")
            state["headers"], state["data"] = [], bytearray()
            if field == "file":
                if state["name"] is not None:
                    raise _Refused(400, "more than one file part")
                sent = options.get(b"filename", b"upload").decode("utf-8", "replace")[:255]
                # shown on the submission's page: no control or bidirectional-override character survives
                state["name"] = "".join("\ufffd" if _invisible(c) else c for c in sent) or "upload"
                state["field"] = "file"
            elif field in ("protocol", "card"):
                if field in fields:
                    raise _Refused(400, f"field {field} sent twice")
                state["field"] = field
            else:
                raise _Refused(400, f"unknown field {field!r}: send protocol, card and file")

        def part_data(data: bytes, start: int, end: int) -> None:
            chunk = data[start:end]
            if state["field"] == "file":
                counts["file"] += len(chunk)
                if counts["file"] > self.limits.max_upload_bytes:
                    raise _Refused(413, f"the upload is over {self.limits.max_upload_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
            else:
                state["data"] += chunk
                if len(state["data"]) > _FIELD_BYTES:
                    raise _Refused(400, f"field {state['field']} is over {_FIELD_BYTES} bytes")

        def part_end() -> None:
            if state["field"] in ("protocol", "card"):
                try:
                    fields[state["field"]] = state["data"].decode("utf-8")
                except UnicodeDecodeError:
                    raise _Refused(400, f"field {state['field']} is not UTF-8") from None

        parser = MultipartParser(params[b"boundary"], {
            "on_header_field": header_field, "on_header_value": header_value,
            "on_headers_finished": headers_finished, "on_part_data": part_data, "on_part_end": part_end})
        received = 0
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > self.limits.max_upload_bytes + _BODY_SLACK:
                    raise _Refused(413, f"the upload is over {self.limits.max_upload_bytes} bytes")
                parser.write(chunk)
            parser.finalize()
            if parser.state != MultipartState.END:  # the body stopped mid-part: a truncated upload is not scored
                raise _Refused(400, "the multipart body ended before its closing boundary (a truncated upload?)")
        except ClientDisconnect:
            raise _Refused(400, "the client went away before the upload ended") from None
        except _Refused:
            raise
        except OSError as exc:  # writing the upload (a full disk): the server's trouble, not a malformed body
            raise _Refused(503, f"the server cannot store uploads now ({exc.strerror or type(exc).__name__}): "
                                "try again later", {"Retry-After": "60"}) from None
        except Exception as exc:  # noqa: BLE001 - python-multipart's parse errors (their classes vary by version)
            raise _Refused(400, f"a malformed multipart body ({exc})") from None
        finally:
            out.close()
        return fields, state["name"], digest.hexdigest(), counts["file"]

    def _view(self, sid: str) -> dict | None:
        with self._open() as store:
            sub = db.get(store, sid)
            if sub is None:
                return None
            run = store.get_run(sub.run_key) if sub.run_key else None
        return {"id": sub.id, "team": sub.team, "protocol": sub.protocol, "model": sub.card.get("name"),
                "card": sub.card, "status": sub.status, "error": sub.error,
                "metrics": None if run is None else run.metrics, "run_key": sub.run_key, "attempts": sub.attempts,
                "upload": {"name": sub.upload_name, "sha256": sub.upload_sha256, "bytes": sub.upload_bytes},
                "created": sub.created, "started": sub.started, "finished": sub.finished}

    async def api_get(self, request: Request) -> Response:
        try:
            view = await run_in_threadpool(self._view, request.path_params["sid"])
        except _Refused as refused:
            return _json({"error": refused.message}, refused.status, refused.headers)
        if view is None:
            return _json({"error": "no such submission"}, 404)
        view["url"] = str(request.url_for("submission_page", sid=view["id"]))
        return _json(view)

    async def page(self, request: Request) -> Response:
        try:
            view = await run_in_threadpool(self._view, request.path_params["sid"])
        except _Refused as refused:
            return _refused_page(refused)
        if view is None:
            return HTMLResponse(_page("No such submission", "<p>No submission has this id.</p>"), 404)
        e = html.escape
        facts = [("team", view["team"]), ("protocol", view["protocol"]), ("model", view["model"] or ""),
                 ("status", view["status"]), ("submitted", _when(view["created"])),
                 ("finished", _when(view["finished"])), ("upload", f"{view['upload']['name']} "
                                                                   f"({view['upload']['bytes']} bytes, SHA-256 "
                                                                   f"{view['upload']['sha256'][:16]}…)")]
        body = "<dl>" + "".join(f"<dt>{e(k)}</dt><dd>{e(str(v))}</dd>" for k, v in facts) + "</dl>"
        if view["error"]:
            body += f"<h2>Error</h2><pre class=error>{e(view['error'])}</pre>"
        if view["metrics"]:
            rows = [[e(k), e(f"{v:.4f}" if isinstance(v, float) else str(v))] for k, v in view["metrics"].items()]
            body += "<h2>Metrics</h2>" + _table(["metric", "value"], rows)
        return HTMLResponse(_page(f"Submission {view['id'][:8]}", body))

    def _scored(self) -> list[db.Submission]:
        with self._open() as store:
            return db.list_for(store, status=db.SCORED)

    async def list_page(self, request: Request) -> Response:
        try:
            subs = await run_in_threadpool(self._scored)
        except _Refused as refused:
            return _refused_page(refused)
        e = html.escape
        rows = [[e(s.team), e(s.protocol), f"<a href=\"{e(str(request.url_for('submission_page', sid=s.id)))}\">"
                 f"{e(str(s.card.get('name', '')))}</a>", e(s.status), e(_when(s.created))] for s in subs]
        body = (_table(["team", "protocol", "model", "status", "submitted"], rows) if rows
                else "<p>No scored submissions yet.</p>")
        return HTMLResponse(_page("Submissions", body))


class _Scorer:
    """One spawned process that scores jobs one at a time; killed (and respawned for the next job) when a job
    outlives its limit or the service stops."""

    def __init__(self, memory_limit_bytes: int | None = None) -> None:
        self.memory_limit_bytes = memory_limit_bytes
        self._shut = False  # the service is stopping: no new process, no new job
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> Connection:
        with self._lock:
            if self._shut:
                raise EOFError("the service is stopping")
            if self._process is None or not self._process.is_alive():
                self._close()
                context = multiprocessing.get_context("spawn")  # never fork a threaded server
                parent, child = context.Pipe()
                self._process = context.Process(target=_scorer_main, args=(child, self.memory_limit_bytes), daemon=True,
                                                name="facebench-scorer")
                self._process.start()
                child.close()
                self._conn = parent
            assert self._conn is not None
            return self._conn

    def run(self, job: _Job, timeout_s: float) -> dict:
        try:
            conn = self._ensure()
            conn.send(job)
            if not conn.poll(timeout_s):
                self.kill()
                return {"error": f"scoring took longer than {timeout_s:g} s: stopped"}
            return conn.recv()
        except (EOFError, OSError):
            with self._lock:
                code = None if self._process is None else self._process.exitcode
            self.kill()
            return {"abandoned": True, "error": f"the scorer process ended while scoring it (exit code {code})"}

    def shut(self) -> None:
        """Abandon the job running now, and take no more."""
        with self._lock:
            self._shut = True
        self.kill()

    def kill(self) -> None:
        with self._lock:
            if self._process is not None and self._process.is_alive():
                self._process.kill()
                self._process.join()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.join(timeout=0)
            self._process = None

    def close(self) -> None:
        self.kill()
        with self._lock:
            self._close()


def _scorer_main(conn: Connection, memory_limit_bytes: int | None) -> None:
    if memory_limit_bytes is not None:  # an upload that inflates in memory fails its job, not the host
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(score_upload(job))


def shorten(message: str, most: int = MAX_ERROR_CHARS) -> str:
    """An error message cut to ``most`` characters: a reader quotes the offending line, which in an upload can be
    megabytes long (stored, sent over the pipe, shown on every view of the submission)."""
    if len(message) <= most:
        return message
    return f"{message[:most]}… ({len(message)} characters in all)"


def score_upload(job: _Job) -> dict:
    """Unpack and score one upload (in the scorer process): ``{"metrics", "n_items", "n_missing"}``, or
    ``{"error"}`` with the reader's file-and-line message, paths shown relative to the upload."""
    workdir = Path(job.workdir)

    plain = workdir / _PLAIN_NAMES[job.reader]

    def public(message: str) -> str:  # no server paths: the upload's own, relative; the ground truth's, named
        if job.upload_name and plain.is_file():  # a single file: named as the team named it
            message = message.replace(str(plain), job.upload_name)
        return shorten(message.replace(f"{workdir}{os.sep}", "").replace(str(workdir), ".")
                       .replace(job.upload_path, "<upload>").replace(job.ground_truth, "<ground truth>"))

    if not Path(job.upload_path).is_file():  # removed from the upload folder while the job waited
        return {"error": "the uploaded file is no longer on the server (removed from its upload folder): "
                         "submit it again"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # negative box sizes: scored as given, as facebench score does
            files = extract(job.upload_path, workdir, job.limits, plain_name=_PLAIN_NAMES[job.reader])
            return _score(job, _predictions(workdir, files, job.reader))
    except FacebenchError as exc:  # UploadError, PredictionFileError: what facebench score would say
        return {"error": public(str(exc))}
    except Exception as exc:  # noqa: BLE001 - the scorer's own failure (MemoryError too) fails this job only
        return {"error": f"the scorer failed: {type(exc).__name__}: {public(str(exc))}"}


def _predictions(root: Path, files: list[Path], reader: str) -> Path:
    """What the reader is given: the upload's folder (one wrapping folder stepped into), or its one file."""
    if not files:
        raise UploadError("the archive holds no files")
    top = root
    while True:
        entries = [p for p in top.iterdir() if p.name != "__MACOSX"]
        if len(entries) == 1 and entries[0].is_dir():
            top = entries[0]
        else:
            break
    if reader == "wider":
        return top
    if len(files) == 1 and (reader == "fddb" or files[0].suffix in (".csv", ".npy")):
        return files[0]
    return top


def _score(job: _Job, predictions: Path) -> dict:
    from facebench.offline.score_files import score_fddb, score_landmarks, score_wider

    metrics: dict[str, Any]
    if job.reader == "wider":
        from facebench.datasets.wider import read_wider_eval_gt

        result = score_wider(job.ground_truth, predictions)
        settings = job.options["settings"]
        metrics = {s: result["ap"][s] for s in settings}
        metrics.update({f"{s}_faces": result["faces"][s] for s in settings})
        metrics["faces"] = int(sum(len(b) for b in read_wider_eval_gt(job.ground_truth).boxes))
        metrics["detections"] = result["detections"]
        n_items = result["images"]
    elif job.reader == "fddb":
        from facebench.metrics.fddb import FddbROC

        counts = job.options["false_positives"] or [1000]
        result = score_fddb(job.ground_truth, predictions, counts[0])  # read and matched once: every N from its ROC
        curve = result["roc"]
        roc = FddbROC(np.asarray(curve["threshold"]), np.asarray(curve["tp"]), np.asarray(curve["fp"]), result["faces"])
        metrics = {f"tpr@{n}": roc.tpr_at(n) for n in counts}
        metrics.update(faces=result["faces"], detections=result["detections"])
        n_items = result["images"]
    else:
        result = score_landmarks(job.ground_truth, predictions, job.options["norm"], job.options["scheme"],
                                 job.options["threshold"])
        metrics = {k: result[k] for k in ("nme", "fr", "auc", "faces", "nme_faces")}
        n_items = result["faces"]
    if n_items and len(result["missing"]) >= n_items:  # names that match nothing: not a score of 0 (or NaN)
        unknown = result["unknown"]
        example = f", such as {str(unknown[0])[:100]!r}" if unknown else ""
        raise UploadError(f"no prediction is for an item of the ground truth: all {n_items} are missing, and "
                          f"{len(unknown)} predictions name items it does not have{example}: name the predictions "
                          "as the held-out set's images are named")
    metrics.update(unmatched_predictions=len(result["unknown"]), missing_predictions=len(result["missing"]))
    return {"metrics": metrics, "n_items": n_items, "n_missing": len(result["missing"])}
