"""Work split without an engine: ``--shard K/N`` runs a deterministic part, ``facebench merge`` joins the stores.

For job arrays (Slurm, Kubernetes indexed jobs): each task runs the same command
with its own ``--shard K/N --store shard-K.sqlite``. The units of work are cells,
and the chunks of a cell with more than ``protocol.chunk_items`` items
(:class:`facebench.results.evaluate.CellPlan`). Unit ``(cell, chunk)`` belongs to shard
``(h + chunk) mod N`` where ``h`` is a hash of ``model on protocol``: a cell's chunks
go round the shards, and where a unit goes depends on nothing else (not on which
other cells a shard could plan), so every shard agrees without talking.

:func:`merge` copies the shard stores into one, refusing shards whose runs of the same
cell (model, protocol, runtime) have different keys (model code, artifacts, protocol
hash, dataset fingerprint, engine) or were made by another facebench version, and
scores each run whose chunks are now all in (the same scoring as one machine, so
the merged store gives the same leaderboard). Missing chunks are reported.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from facebench.errors import FacebenchError, UsageError
from facebench.protocol import Protocol
from facebench.results.database import POSTGRESQL, StoreLocation, open_database, parse_location


class MergeError(FacebenchError, ValueError):
    """Shard stores that cannot be merged (their runs of one cell were made differently); names them."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``: ``--shard K/N`` is ``Shard(K - 1, N)``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.count}"

    def owns(self, model: str, protocol_id: str, chunk: int) -> bool:
        """Whether unit (``model on protocol_id``, ``chunk``) is this shard's."""
        digest = hashlib.sha256(f"{model} on {protocol_id}".encode()).digest()
        return (int.from_bytes(digest[:8], "big") + chunk) % self.count == self.index


def parse_shard(text: str) -> Shard:
    """``K/N`` (1 <= K <= N) as a :class:`Shard`."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise UsageError(f"--shard {text!r}: give K/N, the K-th of N shards (1/4 ... 4/4)")
    k, n = int(match[1]), int(match[2])
    if not 1 <= k <= n:
        raise UsageError(f"--shard {text}: K must be between 1 and N ({n})")
    return Shard(k - 1, n)


@dataclass
class MergeReport:
    """What :func:`merge` did: runs copied, runs scored now, and what is still missing (each in words)."""

    copied: int = 0
    scored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unscored: list[str] = field(default_factory=list)  # every chunk is in, but the run could not be scored here
    device_results: int = 0


def check_mergeable(sources: Sequence[Path], into: StoreLocation | None = None) -> None:
    """Refuse stores whose runs of one cell (model, protocol, runtime) differ in key or facebench version,
    or whose chunks of one run were cut differently (``chunk_items`` is not in the key: shards given protocol
    files with other ``chunk_items`` cut the same run into other chunks, and the chunks' numbers would not name
    the same items), naming the stores and the parts that differ; nothing is written. ``into``, when it
    exists, is checked for its chunks only (it may hold older runs of a cell)."""
    from facebench.results.store import Store

    seen: dict[tuple[str, str, str], tuple[StoreLocation, str, dict, str]] = {}
    cut: dict[str, tuple[StoreLocation, int, int]] = {}  # run key -> (store, n_chunks, n_items) of its chunks
    problems = []
    for path in [*sources, *([into] if into is not None and _exists(into) else [])]:
        with Store(path, read_only=True) as db:
            runs = db.runs(status=None)
            chunks = {run.key: db.chunks(run.key) for run in runs}
        for run in runs:
            for n_chunks, n_items in set(chunks[run.key].values()):
                first = cut.setdefault(run.key, (path, n_chunks, n_items))
                if first[1:] != (n_chunks, n_items):
                    problems.append(f"{run.model} on {run.protocol} ({run.runtime}): {first[0]} cut it into "
                                    f"{first[1]} chunks of its {first[2]} items, {path} into {n_chunks} of "
                                    f"{n_items} (their protocol files' chunk_items differ): rerun the odd shard "
                                    "with the others' protocol file")
            if path not in sources:
                continue
            cell = (run.model, run.protocol, run.runtime)
            version = str((run.environment or {}).get("facebench"))
            if cell not in seen:
                seen[cell] = (path, run.key, run.key_parts or {}, version)
                continue
            other, key, parts, other_version = seen[cell]
            if key == run.key and version == other_version:
                continue
            differ = sorted(k for k in set(parts) | set(run.key_parts or {})
                            if parts.get(k) != (run.key_parts or {}).get(k))
            if version != other_version:
                differ.append(f"facebench version ({other_version} vs {version})")
            problems.append(f"{run.model} on {run.protocol} ({run.runtime}): {other} and {path} differ in "
                            f"{', '.join(differ) or 'run key'}")
    if problems:
        raise MergeError("these stores hold runs of the same cell made differently, which would not be comparable; "
                         "rerun the odd shard with the others' install and data:\n  " + "\n  ".join(problems))


def _exists(location: StoreLocation) -> bool:
    """A store is there to check: a file, or a server's database holding facebench's tables (an empty database
    is a new store, made by the merge)."""
    dialect, target = parse_location(location)
    if dialect != POSTGRESQL:
        return Path(target).is_file()
    db = open_database(location, read_only=True)
    try:
        return "runs" in db.tables()
    finally:
        db.close()


def merge(sources: Sequence[Path], into: StoreLocation, roots: dict[str, Path] | None = None,
          protocols: dict[str, Protocol] | None = None, skip_bad: bool = False) -> MergeReport:
    """Copy ``sources`` into the store ``into`` and score every run whose chunks are all in.

    Scoring a run needs its protocol (a built-in, or one of ``protocols``, with the
    stored content hash) and its dataset (``roots`` as ``--root`` gives them, else
    ``$FACEBENCH_DATA``; embedded ones need nothing), with the stored fingerprint (``skip_bad`` as the
    shards were run)."""
    from facebench.results.store import Store

    sources = [Path(s) for s in sources]
    dialect, into_file = parse_location(into)
    for path in sources:
        if not path.is_file():
            raise UsageError(f"no store at {path}")
        if dialect != POSTGRESQL and (path.resolve() == Path(into_file).resolve()
                                      or (Path(into_file).exists() and os.path.samefile(path, into_file))):
            raise UsageError(f"{path} is the store merged into: name the shard stores and another --into")
    check_mergeable(sources, into)
    report = MergeReport()
    with Store(into) as target:
        for path in sources:
            with Store(path, read_only=True) as source:
                for run in source.runs(status=None):
                    target.import_run(source, run.key)
                    report.copied += 1
                report.device_results += target.import_device_results(source)
        for run in target.runs(status=None):
            if run.status == "complete":
                continue
            _complete(target, run, roots or {}, protocols or {}, skip_bad, report)
    return report


def _complete(db, run, roots: dict[str, Path], protocols: dict[str, Protocol], skip_bad: bool,
              report: MergeReport) -> None:
    """Score ``run`` when every chunk is in; else say which are missing."""
    chunks = db.chunks(run.key)
    label = f"{run.model} on {run.protocol}"
    if not chunks and (run.n_items is None or len(db.item_keys(run.key)) < run.n_items):
        report.missing.append(f"{label}: an interrupted run, not a shard's part; rerun its command with --store "
                              f"{db.location} to finish it")
        return
    # a run scored before (whole, n_items kept) and running again: a shard brought successes for its failures
    n_chunks, n_items = next(iter(chunks.values())) if chunks else (1, run.n_items)
    absent = sorted(set(range(n_chunks)) - set(chunks)) if chunks else []
    if absent and len(db.item_keys(run.key)) < n_items:  # every item in (a whole run brought them): scored
        report.missing.append(f"{label}: chunk(s) {', '.join(str(i + 1) for i in absent)} of {n_chunks} missing "
                              "(in none of the stores): run their shards and merge again")
        return
    try:
        plan = _stored_plan(db, run, roots, protocols, skip_bad)
        if len(plan.item_keys) != n_items or not set(plan.item_keys) <= db.item_keys(run.key):
            raise MergeError(f"the dataset gives {len(plan.item_keys)} items, the shards stored "
                             f"{len(db.item_keys(run.key))} of {n_items}")
        from facebench.results.evaluate import finish_cell

        evaluation = finish_cell(plan, db)
    except (FacebenchError, OSError, ValueError) as exc:
        report.unscored.append(f"{label}: every chunk is in but it was not scored: {exc}")
        return
    from facebench.results.cells import format_metrics

    report.scored.append(f"{label}: {format_metrics(evaluation.run.metrics)}")


def _stored_plan(db, run, roots: dict[str, Path], protocols: dict[str, Protocol], skip_bad: bool):
    """The plan of a stored run, rebuilt from the store alone (card, key parts) and the dataset, each checked
    against what the run was made with."""

    from facebench.adapter import Adapter
    from facebench.datasets import fingerprint, root_for
    from facebench.protocol import builtin_protocols
    from facebench.results.evaluate import CellPlan, card_hash, protocol_samples
    from facebench.run.harness import items_for
    from facebench.types import ModelCard

    protocol = protocols.get(run.protocol) or builtin_protocols().get(run.protocol)
    if protocol is None:
        raise MergeError(f"protocol {run.protocol} is not built in: pass its file with -p")
    if protocol.content_hash != run.protocol_hash:
        raise MergeError(f"protocol {run.protocol} has changed since the run (hash {protocol.content_hash}, "
                         f"the run's {run.protocol_hash})")
    parts = run.key_parts or {}
    card = ModelCard.from_dict(run.card)
    if card_hash(run.card) != parts.get("card"):
        raise MergeError("its stored card does not match its key")
    root = root_for(protocol.dataset, roots)
    samples = protocol_samples(protocol, root, [] if skip_bad else None)
    fp = fingerprint(samples)
    if fp != run.dataset_fingerprint:
        raise MergeError(f"dataset {protocol.dataset} here (under {root}) has fingerprint {fp}, the run's is "
                         f"{run.dataset_fingerprint}: pass --root with the copy the shards read")
    stored_model = type(f"Stored_{card.name.replace('-', '_').replace('.', '_')}", (Adapter,), {"card": card})
    keys = tuple(item.key for item in items_for(card.task, samples))
    return CellPlan(stored_model, protocol, samples, fp, run.runtime, parts.get("framing", ""), run.key, parts, keys)


def shard_cells(cells, shard: Shard, settings) -> list:
    """This shard's units of ``cells`` for the local engine: whole cells, or ``Cell(chunk=i)`` for each chunk
    of a large cell that is this shard's. A cell that cannot be planned here stays whole in shard
    ``owns(…, 0)``: its worker reports why."""
    from dataclasses import replace

    from facebench import registry
    from facebench.results.evaluate import plan_cell

    units = []
    for cell in cells:
        try:
            plan = plan_cell(registry.resolve(cell.model), cell.protocol, root=cell.root, runtime=settings.runtime,
                             skip_bad=settings.skip_bad)
            n_chunks = plan.n_chunks
        except Exception:  # noqa: BLE001 - the cell's own run says what is wrong, in its shard
            n_chunks = 1
        if n_chunks == 1:
            if shard.owns(cell.model, cell.protocol.id, 0):
                units.append(cell)
            continue
        units += [replace(cell, chunk=i, n_chunks=n_chunks) for i in range(n_chunks)
                  if shard.owns(cell.model, cell.protocol.id, i)]
    return units
