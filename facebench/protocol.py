"""Evaluation protocols: declarative TOML files in ``protocols/``, checked against a schema.

A protocol names its dataset and split, the ground truth's landmark scheme
and which points are compared, how the face box a landmark model gets is
obtained, the metric and the metric's options (normaliser, thresholds). Its
content hash (of the parsed content, so comments and layout do not count) is
stored with every result: change a threshold and old results no longer pass
for new ones.

The schema is strict: an unknown key, a missing field or a value of the
wrong type is an error naming the file, so a typo never silently falls back
to a default.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from facebench.errors import FacebenchError
from facebench.metric_specs import SPECS
from facebench.paths import UnsafeNameError, check_name
from facebench.schemes import SCHEMES

REQUIRED = ("id", "title", "dataset", "task", "metric")
TASKS = ("detector", "landmarks", "any")  # any: the metric follows each model by its own task
# key -> its type (a tuple: any of them)
FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,  # the name results are stored under
    "title": str,  # one line for tables and reports
    "dataset": str,  # a dataset name (facebench datasets list)
    "split": str,  # the dataset's split (default: its first)
    "transform": str,  # 'shifted': every sample plus shifted copies (jitter)
    "task": str,  # detector | landmarks | any
    "metric": str,  # a metric record (facebench.metric_specs.SPECS)
    "scheme": str,  # the ground truth's landmark scheme
    "points": str,  # 'shared': points a prediction's scheme shares with the ground truth; 'all': every point
    "root": str,  # what --root must hold when the dataset is not embedded
    "faces": int,  # the official set's face count: a copy with another count is a partial copy, not comparable
    "reference": str,  # where the protocol comes from (paper, official tool)
    "columns": list,  # the metrics shown in the leaderboard, in order
    "face_box": dict,  # how a landmark model's face box is obtained
    "options": dict,  # the metric's options
    # items per chunk when a cell is split across shards or workers: how work is divided, never what is
    # scored, so it is left out of the content hash
    "chunk_items": int,
    # which matrix runs it by default: "default" (the photo benchmarks) or "rendered" (the controlled renders,
    # facebench run --suite rendered); where it is listed, never what is scored, so not hashed either
    "suite": str,
    # true: the ground truth is kept on the server (facebench serve) and scored only from uploaded predictions;
    # who may see the ground truth never changes a score, so not hashed (an operator marks a copy of a built-in
    # protocol held-out in their protocols folder and its runs stay comparable)
    "held_out": bool,
    # which `facebench score` reader scores an upload: wider | fddb | landmarks; it must agree with the metric
    # (wider_ap, roc, nme), which alone decides the numbers, so it is not hashed either
    "submission": str,
}
SUITES = ("default", "rendered")
DEFAULT_CHUNK_ITEMS = 512
NOT_HASHED = ("chunk_items", "suite", "held_out", "submission")
# submission reader -> the metric whose numbers it reproduces (facebench.offline.score_files)
SUBMISSION_METRICS = {"wider": "wider_ap", "fddb": "roc", "landmarks": "nme"}
FACE_BOX_FIELDS: dict[str, type | tuple[type, ...]] = {
    "source": str,  # ground-truth | detector
    "rule": str,  # how the ground-truth box is drawn, in words
    "margin": (int, float),  # fraction of the box's side added on every side
    "detector": str,  # registered detector whose box is used (source = detector; default: the card's own)
    "min_iou": (int, float),  # a detection counts for a face at this IoU or more
}
# metric -> option -> type, read from the metric records (facebench.metric_specs), never typed out here
METRIC_OPTIONS: dict[str, dict[str, type | tuple[type, ...]]] = {
    name: spec.option_types for name, spec in SPECS.items()
}



def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# a list option's (or field's) elements: option name -> (check, the check in words)
LIST_ELEMENTS: dict[str, tuple[Any, str]] = {
    "columns": (_is_str, "a list of strings (metric names)"),
    "settings": (_is_str, "a list of strings (setting names)"),
    "subset_flags": (_is_str, "a list of strings (attribute names)"),
    "regions": (_is_str, "a list of strings (region names)"),
    "false_positives": (_is_positive_int, "a list of positive integers"),
    "operating_points": (_is_number, "a list of finite numbers"),
}


def _check_list(name: str, value: list, source: str, where: str = "") -> None:
    check, must = LIST_ELEMENTS.get(name, (None, ""))
    if check is None:
        return
    for k, element in enumerate(value):
        if not check(element):
            raise ProtocolError(f"{source}: {where}{name} must be {must}; element {k} is "
                                f"{type(element).__name__} {element!r}")


class ProtocolError(FacebenchError, ValueError):
    """A protocol file is malformed; the message names the file."""


@dataclass(frozen=True)
class FaceBox:
    """Where a landmark model's face box comes from: one of the field's two framings.

    ``ground-truth``: drawn from the ground-truth landmarks in the convention
    the model's card declares (:mod:`facebench.run.framing`), grown by ``margin``
    (a fraction of its width and height on every side). ``detector``: the box
    of ``detector`` (default: the card's own ``options["detector"]``); a face
    it misses is a failure.
    """

    source: str = "ground-truth"
    rule: str = ""
    margin: float = 0.0
    detector: str | None = None
    min_iou: float = 0.3


@dataclass(frozen=True)
class Protocol:
    id: str
    title: str
    dataset: str
    task: str
    metric: str
    columns: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    split: str | None = None
    content_hash: str = ""
    source: str = ""
    scheme: str | None = None
    points: str = "shared"
    root: str = ""
    reference: str = ""
    transform: str | None = None
    face_box: FaceBox = field(default_factory=FaceBox)
    faces: int | None = None
    chunk_items: int = DEFAULT_CHUNK_ITEMS  # items per chunk when a cell is split (shards, workers)
    suite: str = "default"  # the matrix that runs it when no protocol is named (SUITES)
    held_out: bool = False  # ground truth kept on the server: scored from uploads only (facebench serve)
    submission: str | None = None  # the reader that scores uploads (SUBMISSION_METRICS)


def _check_fields(data: dict, fields: dict, where: str, source: str) -> None:
    for key, value in data.items():
        if key not in fields:
            raise ProtocolError(f"{source}: unknown key {where}{key!r}; known: {', '.join(fields)}")
        expected = fields[key]
        if (isinstance(value, bool) and expected is not bool) or not isinstance(value, expected):
            names = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
            raise ProtocolError(f"{source}: {where}{key} must be {names}, not {type(value).__name__} {value!r}")


def validate(data: dict, source: str) -> None:
    """Raise ProtocolError, naming ``source``, unless ``data`` follows the schema."""
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ProtocolError(f"{source}: missing {', '.join(missing)}")
    _check_fields(data, FIELDS, "", source)
    try:  # the id names the figures and files written under --out
        check_name(data["id"], "protocol id")
    except UnsafeNameError as exc:
        raise ProtocolError(f"{source}: {exc}") from None
    if data["id"] != data["id"].lower():  # ids that differ in case alone collide on case-insensitive disks
        raise ProtocolError(f"{source}: protocol id {data['id']!r} must be lower case")
    _check_list("columns", data.get("columns", []), source)
    if data["task"] not in TASKS:
        raise ProtocolError(f"{source}: task must be one of {', '.join(TASKS)}, not {data['task']!r}")
    metric = data["metric"]
    if metric not in SPECS:
        raise ProtocolError(f"{source}: unknown metric {metric!r}; known: {', '.join(SPECS)}")
    _check_fields(data.get("options", {}), SPECS[metric].option_types, "options.", source)
    for name, value in data.get("options", {}).items():
        option = SPECS[metric].options[name]
        if option.valid is not None and not option.valid(value):  # NaN fails every range
            raise ProtocolError(f"{source}: options.{name} must {option.must}, not {value!r}")
        if isinstance(value, list):
            _check_list(name, value, source, "options.")
    face_box = data.get("face_box", {})
    _check_fields(face_box, FACE_BOX_FIELDS, "face_box.", source)
    if face_box.get("source", "ground-truth") not in ("ground-truth", "detector"):
        raise ProtocolError(f"{source}: face_box.source must be ground-truth or detector")
    if face_box.get("source", "ground-truth") == "ground-truth" and "detector" in face_box:
        raise ProtocolError(f"{source}: face_box.detector is for source = detector")
    if not face_box.get("margin", 0.0) > -0.5:  # -0.5 of the side off every side leaves nothing
        raise ProtocolError(f"{source}: face_box.margin must be more than -0.5 (a fraction of the side added on "
                            f"every side), not {face_box['margin']!r}")
    if not 0.0 < face_box.get("min_iou", 0.3) <= 1.0:
        raise ProtocolError(f"{source}: face_box.min_iou must be in (0, 1], not {face_box['min_iou']!r}")
    if data["task"] == "landmarks" and "scheme" not in data:
        raise ProtocolError(f"{source}: a landmarks protocol needs scheme (the ground truth's landmark scheme)")
    if "scheme" in data and data["scheme"] not in SCHEMES:
        raise ProtocolError(f"{source}: unknown scheme {data['scheme']!r}; known: {', '.join(sorted(SCHEMES))}")
    if data.get("points", "shared") not in ("shared", "all"):
        raise ProtocolError(f"{source}: points must be shared or all")
    if data.get("transform") not in (None, "shifted"):
        raise ProtocolError(f"{source}: transform must be shifted")
    if data.get("suite", "default") not in SUITES:
        raise ProtocolError(f"{source}: suite must be one of {', '.join(SUITES)}, not {data['suite']!r}")
    submission = data.get("submission")
    if submission is not None and submission not in SUBMISSION_METRICS:
        raise ProtocolError(f"{source}: submission must be one of {', '.join(SUBMISSION_METRICS)}, "
                            f"not {submission!r}")
    if submission is not None and SUBMISSION_METRICS[submission] != metric:
        raise ProtocolError(f"{source}: submission {submission!r} scores metric {SUBMISSION_METRICS[submission]!r}, "
                            f"not this protocol's {metric!r}")
    if data.get("held_out") and submission is None:
        raise ProtocolError(f"{source}: a held_out protocol needs submission (wider, fddb or landmarks): "
                            "its ground truth is scored only from uploaded predictions")
    if not _is_positive_int(data.get("chunk_items", 1)):
        raise ProtocolError(f"{source}: chunk_items must be a positive integer, not {data['chunk_items']!r}")


def parse_protocol(text: str, source: str = "<string>") -> Protocol:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(f"{source}: not valid TOML ({exc})") from exc
    validate(data, source)
    hashed = {k: v for k, v in data.items() if k not in NOT_HASHED}
    canonical = json.dumps(hashed, sort_keys=True, separators=(",", ":"))
    return Protocol(
        id=data["id"], title=data["title"], dataset=data["dataset"], task=data["task"],
        metric=data["metric"], columns=tuple(data.get("columns", ())), options=dict(data.get("options", {})),
        split=data.get("split"), content_hash=hashlib.sha256(canonical.encode()).hexdigest()[:16], source=source,
        scheme=data.get("scheme"), points=data.get("points", "shared"), root=data.get("root", ""),
        reference=data.get("reference", ""), transform=data.get("transform"),
        face_box=FaceBox(**data.get("face_box", {})), faces=data.get("faces"),
        chunk_items=data.get("chunk_items", DEFAULT_CHUNK_ITEMS), suite=data.get("suite", "default"),
        held_out=data.get("held_out", False), submission=data.get("submission"),
    )


def load_protocol_file(path: str | Path) -> Protocol:
    """A protocol file; one that reuses a built-in id with other content is refused.

    Results are stored under the id: a file that redefined ``mini-nme`` would
    otherwise put rows measured on another protocol under the official name.
    A file identical (in parsed content) to the built-in is accepted.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"cannot read protocol file {path}: {exc}") from exc
    protocol = parse_protocol(text, str(path))
    builtin = builtin_protocols().get(protocol.id)
    if builtin is not None and builtin.content_hash != protocol.content_hash:
        raise ProtocolError(f"{path}: id {protocol.id!r} is a built-in protocol; this file's content differs "
                            f"(hash {protocol.content_hash} vs {builtin.content_hash}): give it another id")
    return protocol


def builtin_protocols() -> dict[str, Protocol]:
    """Every protocol shipped in ``protocols/``, by id."""
    found = {}
    for entry in sorted(resources.files("facebench.protocols").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            protocol = parse_protocol(entry.read_text(), f"protocols/{entry.name}")
            found[protocol.id] = protocol
    return found


def get_protocol(name: str) -> Protocol:
    """A built-in protocol by id, or a protocol file by path (see :func:`load_protocol_file`)."""
    if name.endswith(".toml") and Path(name).is_file():
        return load_protocol_file(name)
    protocols = builtin_protocols()
    try:
        return protocols[name]
    except KeyError:
        raise ProtocolError(f"unknown protocol {name!r}; known: {', '.join(protocols)}") from None
