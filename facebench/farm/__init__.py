"""The device farm: timing models on phones over ADB.

``inventory`` (which phones) -> ``adb`` (one phone: shell with exit status, push
when changed) -> ``bench`` (all phones at once, stored measurements, resume),
reading the tool's text with ``benchmark_output``. ``adbd`` and
``host_benchmark`` are the stand-in phone and benchmark tool the tests use.
"""
