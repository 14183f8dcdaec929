"""What a result was made on: facebench and package versions, Python, platform and CPU (stored with every run)."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

from facebench import __version__


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(runtime_info: dict) -> dict:
    versions: dict[str, str | None] = {}
    for package in ("numpy", "tflite-runtime", "onnxruntime", "pillow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"facebench": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
            "cpu": cpu_name(), "cpu_count": os.cpu_count(), "packages": versions, "runtime": runtime_info}
