"""facebench: benchmark and evaluation suite for on-device face detectors, landmark aligners and face meshes.

The public API (documented in the README's "Python API" section)::

    import facebench as fb
    fb.models(); fb.builtin_protocols()              # what is registered and shipped
    samples = fb.load_dataset("mini")
    result = fb.evaluate("dlib-68", "mini-nme")      # .metrics, .items (DataFrame), .framing
    fb.leaderboard(protocol="mini-nme")              # DataFrame
    fb.metrics.nme(pred, gt, norm="inter-ocular")

Plugins keep importing :mod:`facebench.adapter` (the four-method contract),
:mod:`facebench.types` and :mod:`facebench.runtimes`. Everything else is reached
through these names, loaded on first use so that ``import facebench`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_API = {
    "evaluate": "facebench.api", "leaderboard": "facebench.api", "load_model": "facebench.api",
    "models": "facebench.api", "builtin_protocols": "facebench.protocol", "predict": "facebench.api",
    "EvaluationResult": "facebench.api", "load_dataset": "facebench.datasets", "get_protocol": "facebench.protocol",
    "Adapter": "facebench.adapter", "ModelCard": "facebench.types", "Sample": "facebench.types",
    "Prediction": "facebench.types", "Landmarks": "facebench.types", "Detection": "facebench.types",
    "Box": "facebench.types", "FacebenchError": "facebench.errors",
}
_MODULES = ("metrics", "schemes", "datasets", "adapter", "types", "runtimes", "errors")

__all__ = ["__version__", *_API, *_MODULES]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    if name in _MODULES:
        return import_module(f"facebench.{name}")
    raise AttributeError(f"module 'facebench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
