"""Where facebench keeps its files.

``$FACEBENCH_HOME`` overrides everything (assets under ``assets/``, the results
store as ``results.sqlite``); otherwise assets go to the user's cache
directory and results to the user's data directory (XDG on Linux).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from facebench.errors import FacebenchError


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def assets_dir() -> Path:
    home = os.environ.get("FACEBENCH_HOME")
    return Path(home) / "assets" if home else _xdg("XDG_CACHE_HOME", ".cache") / "facebench" / "assets"


def default_store_path() -> Path:
    home = os.environ.get("FACEBENCH_HOME")
    if home:
        return Path(home) / "results.sqlite"
    return _xdg("XDG_DATA_HOME", ".local/share") / "facebench" / "results.sqlite"


def write_atomic(path: str | Path, content: str | bytes) -> Path:
    """Write text or bytes to a temporary file beside ``path``, then rename it into place (mode ``0o666 & ~umask``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        make_readable(fd)
        with os.fdopen(fd, "wb" if isinstance(content, bytes) else "w") as f:
            f.write(content)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# ---- names that become file names, and files others must read --------------------------------

SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*", re.IGNORECASE)


class UnsafeNameError(FacebenchError, ValueError):
    """A name (protocol id, model name) that would not be a plain file name inside the output folder."""


def check_name(name: str, what: str = "name") -> str:
    """``name`` itself when it is a plain file name (``[a-z0-9][a-z0-9._-]*``, any case, no ``..``);
    else :class:`UnsafeNameError` naming it. Used for protocol ids and model names that become file names."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or ".." in name:
        raise UnsafeNameError(f"{what} {name!r} cannot be used in a file name: use letters, digits, '.', '_' "
                              "and '-' only, starting with a letter or digit (no '..', '/' or spaces)")
    return name


def printable_name(name: str) -> str:
    """A file name as text that JSON and SQLite accept: bytes that were not UTF-8 (``os.fsdecode``'s
    surrogate escapes) become ``\\xNN``; a valid name is returned unchanged."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _read_umask() -> int:
    # os.umask can only be read by setting it; set and restore at once (import time, one thread)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()
FILE_MODE = 0o666 & ~UMASK  # what open() would give: reports and cached assets are for other users too


def make_readable(fd_or_path: int | str | Path) -> None:
    """Give a ``mkstemp`` file (mode 0600) the mode a plain ``open()`` would: ``0o666 & ~umask``."""
    if isinstance(fd_or_path, int):
        os.fchmod(fd_or_path, FILE_MODE)
    else:
        os.chmod(fd_or_path, FILE_MODE)


def json_ready(value: Any) -> Any:
    """``value`` with every NaN/Infinity replaced by None (numpy scalars and arrays made plain).

    In a dict, a non-finite value's reason is kept: ``{"nme": inf}`` becomes
    ``{"nme": null, "non_finite": {"nme": "inf"}}``."""
    if isinstance(value, dict):
        out: dict = {}
        reasons: dict[str, str] = {}
        for key, item in value.items():
            number = _as_float(item)
            if number is not None and not math.isfinite(number):
                out[key] = None
                reasons[str(key)] = str(number)
            else:
                out[key] = json_ready(item)
        if reasons:
            previous = out.get("non_finite")
            out["non_finite"] = {**previous, **reasons} if isinstance(previous, dict) else reasons
        return out
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays and scalars
        return json_ready(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return value
    if hasattr(value, "dtype") and getattr(value, "shape", None) == () and value.dtype.kind == "f":
        return float(value)
    return None


def dumps_json(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that always writes valid JSON: non-finite numbers become null (:func:`json_ready`)."""
    return json.dumps(json_ready(value), allow_nan=False, **kwargs)
