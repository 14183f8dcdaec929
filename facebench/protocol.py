"""Evaluation protocols: declarative TOML files in ``protocols/``.

A protocol names its dataset, the task it applies to, the metric and the
metric's options. Its content hash (of the parsed content, so comments and
layout do not count) is stored with every result: change a threshold and old
results no longer pass for new ones.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

REQUIRED = ("id", "title", "dataset", "task", "metric")


class ProtocolError(ValueError):
    """A protocol file is malformed; the message names the file."""


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


def parse_protocol(text: str, source: str = "<string>") -> Protocol:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(f"{source}: not valid TOML ({exc})") from exc
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ProtocolError(f"{source}: missing {', '.join(missing)}")
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return Protocol(
        id=data["id"], title=data["title"], dataset=data["dataset"], task=data["task"],
        metric=data["metric"], columns=tuple(data.get("columns", ())), options=dict(data.get("options", {})),
        split=data.get("split"),
        content_hash=hashlib.sha256(canonical.encode()).hexdigest()[:16], source=source,
    )


def load_protocol_file(path: str | Path) -> Protocol:
    path = Path(path)
    return parse_protocol(path.read_text(), str(path))


def builtin_protocols() -> dict[str, Protocol]:
    """Every protocol shipped in ``protocols/``, by id."""
    found = {}
    for entry in sorted(resources.files("facebench.protocols").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            protocol = parse_protocol(entry.read_text(), f"protocols/{entry.name}")
            found[protocol.id] = protocol
    return found


def get_protocol(name: str) -> Protocol:
    """A built-in protocol by id, or a protocol file by path."""
    if name.endswith(".toml") and Path(name).is_file():
        return load_protocol_file(name)
    protocols = builtin_protocols()
    try:
        return protocols[name]
    except KeyError:
        raise ProtocolError(f"unknown protocol {name!r}; known: {', '.join(protocols)}") from None
