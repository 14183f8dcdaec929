"""Accounts and submissions of ``facebench serve``: every SQL statement about them, over :attr:`Store.db`.

A team holds one bearer token; only its SHA-256 is stored, so a copy of the store leaks no
token. A submission is a row that moves ``queued`` -> ``scoring`` -> ``scored`` | ``failed``;
:func:`claim_next` is one exclusive transaction, so two workers (threads or processes, on
either engine) never score one upload twice, and :func:`requeue_or_fail_stale` is how a
restarted server picks up what a dead one left half done. Tables: migration 3
(facebench/results/migrations.py).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from dataclasses import dataclass

from facebench.results.database import StoreError
from facebench.results.store import Store

QUEUED, SCORING, SCORED, FAILED = "queued", "scoring", "scored", "failed"
_COLUMNS = ("id, team, protocol, status, card, upload_name, upload_sha256, upload_bytes, upload_path, error, run_key,"
            " worker, attempts, created, started, finished")


@dataclass(frozen=True)
class Submission:
    id: str
    team: str
    protocol: str
    status: str  # queued | scoring | scored | failed
    card: dict  # name, macs, params, description, link (as the team sent them, checked)
    upload_name: str
    upload_sha256: str
    upload_bytes: int
    upload_path: str
    error: str | None
    run_key: str | None
    worker: str | None
    attempts: int
    created: float
    started: float | None
    finished: float | None


def _submission(row) -> Submission:
    values = list(row)
    values[4] = json.loads(values[4])
    return Submission(*values)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_account(store: Store, team: str, submissions_per_day: int | None = None) -> str:
    """A new team's token (shown once: only its hash is kept). A team that exists is refused."""
    token = secrets.token_urlsafe(32)
    with store.db.transaction(exclusive=True):
        if store.db.execute("SELECT 1 FROM accounts WHERE team = ?", (team,)).fetchone():
            raise StoreError(f"team {team!r} already has an account")
        store.db.execute("INSERT INTO accounts (team, token_hash, created, submissions_per_day) VALUES (?, ?, ?, ?)",
                         (team, token_hash(token), time.time(), submissions_per_day))
    return token


def accounts(store: Store) -> list[tuple[str, int | None, float]]:
    """Every team with an account: (team, its own submissions per day or None, when it was made)."""
    rows = store.db.execute("SELECT team, submissions_per_day, created FROM accounts ORDER BY team").fetchall()
    return [(team, per_day, created) for team, per_day, created in rows]


def remove_account(store: Store, team: str) -> bool:
    """Delete ``team``'s account (its token stops working; its submissions stay); False when it had none."""
    with store.db.transaction():
        found = store.db.execute("SELECT 1 FROM accounts WHERE team = ?", (team,)).fetchone() is not None
        store.db.execute("DELETE FROM accounts WHERE team = ?", (team,))
    return found


def team_for_token(store: Store, token: str) -> str | None:
    """The team holding ``token``, None for an unknown one (looked up by hash; the token is never logged)."""
    row = store.db.execute("SELECT team FROM accounts WHERE token_hash = ?", (token_hash(token),)).fetchone()
    return row[0] if row else None


def daily_limit(store: Store, team: str) -> int | None:
    """The team's own submissions per day, None for the server's default."""
    row = store.db.execute("SELECT submissions_per_day FROM accounts WHERE team = ?", (team,)).fetchone()
    return row[0] if row else None


def add_submission(store: Store, team: str, protocol: str, card: dict, upload_name: str, upload_sha256: str,
                   upload_bytes: int, upload_path: str, limit: int | None = None, since: float = 0.0) -> str | None:
    """Queue an upload; its id. With ``limit``: None (nothing written) when ``team`` already has ``limit``
    submissions since ``since`` (the count and the insert are one exclusive transaction, so concurrent posts
    cannot all slip under the limit)."""
    sid = uuid.uuid4().hex
    with store.db.transaction(exclusive=True):
        if limit is not None and count_since(store, team, since) >= limit:
            return None
        store.db.execute(
            f"INSERT INTO submissions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, 0, ?, NULL,"
            " NULL)", (sid, team, protocol, QUEUED, json.dumps(card, sort_keys=True), upload_name, upload_sha256,
                       upload_bytes, upload_path, time.time()))
    return sid


def count_since(store: Store, team: str, since: float) -> int:
    """Submissions ``team`` made since ``since`` (a ``time.time()``), whatever became of them: the rate limit."""
    row = store.db.execute("SELECT count(*) FROM submissions WHERE team = ? AND created >= ?", (team, since)).fetchone()
    return int(row[0])


def oldest_since(store: Store, team: str, since: float) -> float | None:
    """When the oldest of ``team``'s submissions since ``since`` was made (when the limit frees a slot)."""
    row = store.db.execute("SELECT min(created) FROM submissions WHERE team = ? AND created >= ?",
                           (team, since)).fetchone()
    return row[0]


def claim_next(store: Store, worker: str) -> Submission | None:
    """The oldest queued submission, now ``scoring`` by ``worker`` (attempts + 1); None when none is queued."""
    with store.db.transaction(exclusive=True):
        row = store.db.execute(f"SELECT {_COLUMNS} FROM submissions WHERE status = ? ORDER BY created, id LIMIT 1",
                               (QUEUED,)).fetchone()
        if row is None:
            return None
        now = time.time()
        store.db.execute("UPDATE submissions SET status = ?, worker = ?, attempts = attempts + 1, started = ?"
                         " WHERE id = ? AND status = ?", (SCORING, worker, now, row[0], QUEUED))
    return get(store, row[0])


def finish(store: Store, sid: str, run_key: str) -> None:
    with store.db.transaction():
        store.db.execute("UPDATE submissions SET status = ?, run_key = ?, error = NULL, finished = ? WHERE id = ?",
                         (SCORED, run_key, time.time(), sid))


def fail(store: Store, sid: str, reason: str) -> None:
    with store.db.transaction():
        store.db.execute("UPDATE submissions SET status = ?, error = ?, finished = ? WHERE id = ?",
                         (FAILED, reason, time.time(), sid))


def release(store: Store, sid: str) -> None:
    """A job its worker gave up without a verdict (the server is stopping): back in the queue."""
    with store.db.transaction():
        store.db.execute("UPDATE submissions SET status = ?, worker = NULL, started = NULL WHERE id = ? AND status = ?",
                         (QUEUED, sid, SCORING))


def requeue_or_fail_stale(store: Store, max_attempts: int) -> tuple[int, int]:
    """Submissions a stopped server left ``scoring``: queued again while attempts < ``max_attempts``, else
    failed saying so (an upload that kills the server every time must not kill it forever). Call before any
    worker starts; returns (requeued, failed)."""
    with store.db.transaction(exclusive=True):
        rows = store.db.execute("SELECT id, attempts FROM submissions WHERE status = ?", (SCORING,)).fetchall()
        requeue = [(QUEUED, sid) for sid, attempts in rows if attempts < max_attempts]
        failed = [(FAILED, f"the server stopped while scoring it {attempts} times", time.time(), sid)
                  for sid, attempts in rows if attempts >= max_attempts]
        store.db.executemany("UPDATE submissions SET status = ?, worker = NULL, started = NULL WHERE id = ?", requeue)
        store.db.executemany("UPDATE submissions SET status = ?, error = ?, finished = ? WHERE id = ?", failed)
    return len(requeue), len(failed)


def get(store: Store, sid: str) -> Submission | None:
    row = store.db.execute(f"SELECT {_COLUMNS} FROM submissions WHERE id = ?", (sid,)).fetchone()
    return _submission(row) if row else None


def list_for(store: Store, team: str | None = None, protocol: str | None = None,
             status: str | None = None) -> list[Submission]:
    """Submissions, newest first, of one team, protocol or status (None: any)."""
    query, args = f"SELECT {_COLUMNS} FROM submissions WHERE 1 = 1", []
    for column, value in (("team", team), ("protocol", protocol), ("status", status)):
        if value is not None:
            query += f" AND {column} = ?"
            args.append(value)
    return [_submission(r) for r in store.db.execute(query + " ORDER BY created DESC, id", args)]
