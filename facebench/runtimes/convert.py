"""Derived artifacts: a pinned asset converted to another format by a pinned converter.

``CONVERTERS`` maps ``package==version`` to a function ``(source, target)``
that writes the converted file. :mod:`facebench.assets` runs one the first
time a converted asset (``ConvertedAsset``) is used, checks the result
against the pinned SHA-256 and caches it like a downloaded asset.

tflite2onnx 0.4.1 (pure Python, no TensorFlow) keeps the graph's initializers
and value_info in the iteration order of Python sets, so two runs with other
string-hash seeds write the same graph as different bytes. Sorting both lists
by name (ONNX gives their order no meaning; nodes keep the converter's
topological order, which does not vary) makes its output byte-identical
across runs and processes, which is what lets the cache pin its SHA-256. The
converted graph is NCHW, with the TFLite model's tensor names.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path


def canonical_onnx_bytes(model) -> bytes:
    """The model's bytes with initializers and value_info sorted by name (their order means nothing)."""
    for field in ("initializer", "value_info"):
        entries = getattr(model.graph, field)
        ordered = sorted(entries, key=lambda entry: entry.name)
        copies = [type(entry)() for entry in ordered]
        for copy, entry in zip(copies, ordered):
            copy.CopyFrom(entry)
        del entries[:]
        entries.extend(copies)
    return model.SerializeToString()


def tflite_to_onnx(source: Path, target: Path) -> None:
    """tflite2onnx's conversion of ``source``, canonicalised, written to ``target``."""
    import onnx
    import tflite2onnx

    log = logging.getLogger("tflite2onnx")
    level = log.level
    log.setLevel(logging.ERROR)  # it warns that float16 is "not supported/tested" even where it converts fine
    try:
        with tempfile.TemporaryDirectory(prefix="facebench-convert-") as tmp:
            raw = Path(tmp) / "model.onnx"
            tflite2onnx.convert(str(source), str(raw))
            model = onnx.load(str(raw))
    finally:
        log.setLevel(level)
    Path(target).write_bytes(canonical_onnx_bytes(model))


CONVERTERS: dict[str, Callable[[Path, Path], None]] = {"tflite2onnx==0.4.1": tflite_to_onnx}
# what else decides the converted bytes (named in errors when a hash does not match)
BYTES_DEPEND_ON = ("onnx", "protobuf")


def installed(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def converter_gap(converter: str) -> str | None:
    """Why ``converter`` (``package==version``) cannot run here, with the fix; None when it can."""
    if converter not in CONVERTERS:
        return f"unknown converter {converter!r} (known: {', '.join(CONVERTERS)})"
    package, _, version = converter.partition("==")
    found = installed(package)
    if found != version:
        return (f"it needs {converter} ({'found ' + found if found else 'not installed'}): "
                f"pip install '{converter}'")
    return None


def versions(converter: str) -> str:
    """The versions that decide a conversion's bytes, for messages."""
    package = converter.partition("==")[0]
    return ", ".join(f"{p} {installed(p) or 'absent'}" for p in (package, *BYTES_DEPEND_ON))


def convert(converter: str, source: Path, target: Path) -> None:
    """Run ``converter`` on ``source``, writing ``target`` (the caller checks the hash and renames)."""
    gap = converter_gap(converter)
    if gap:
        raise RuntimeError(gap)
    CONVERTERS[converter](Path(source), Path(target))
