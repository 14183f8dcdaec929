"""Where facebench keeps its files.

``$FACEBENCH_HOME`` overrides everything (assets under ``assets/``, the results
store as ``results.sqlite``); otherwise assets go to the user's cache
directory and results to the user's data directory (XDG on Linux).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
    """Write text or bytes to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if isinstance(content, bytes) else "w") as f:
            f.write(content)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
