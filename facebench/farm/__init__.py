"""The device farm: timing models on phones over ADB.

``inventory`` (which phones) -> ``adb`` (one phone: shell with exit status, push
when changed) -> ``bench`` (all phones at once, stored measurements, resume),
reading the tool's text with ``benchmark_output``. The stand-in phone and
benchmark tool the tests use live in :mod:`facebench.testing`.
"""
