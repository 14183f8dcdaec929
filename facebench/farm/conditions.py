"""Measurement conditions: a phone measured cool, on chosen cores, and a record that says which.

Thermal gating. A throttled phone is tens of percent slower, and one measured
right after another model starts warm. Before each run the runner polls
``dumpsys thermalservice`` (ThermalManagerService's dump prints
"Thermal Status: N", N being PowerManager's THERMAL_STATUS_*: 0 none, 1 light,
2 moderate, 3 severe, 4 critical, 5 emergency, 6 shutdown) and the battery
temperature about once a second until the status is 0 and the battery is below
``max_battery_c``, for at most ``thermal_wait_s``. A phone still hot after the
cap is measured anyway (the farm must finish) but marked ``started_hot`` and
its ``processor`` label says so, so a hot run never pools with cool ones. A
phone without the service (before Android 10) has status None: recorded, not
waited on, not an error.

Core pinning. On big.LITTLE phones the same graph runs at very different
speeds depending on the cluster the scheduler picks, so ``cores`` = big |
little | a hex mask prefixes the command with ``taskset <mask>``. Clusters are
CPUs grouped by ``cpufreq/cpuinfo_max_freq``: little the lowest, big the
highest. Toybox's taskset (Android's) reads bare hex digits (``0x`` is a bad
mask to it), so the command gets ``f0`` while the record stores ``0xf0``.

Test seam: sysfs is read as ``${FACEBENCH_SYSFS:-/sys}``. A phone's shell has no
FACEBENCH_SYSFS and reads /sys; the stand-in phone (:mod:`facebench.testing.adbd`)
sets it to a fake cpufreq tree under its root, so tests never read the host's.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from facebench.errors import FacebenchError
from facebench.farm.adb import Connection, DeviceError

SYSFS = "${FACEBENCH_SYSFS:-/sys}"
THERMAL_NAMES = ("none", "light", "moderate", "severe", "critical", "emergency", "shutdown")
_STATUS = re.compile(r"^\s*Thermal Status:\s*(-?\d+)\s*$", re.M)
_MASK = re.compile(r"^(0x)?[0-9a-f]+$")
_FREQ = re.compile(r"/cpu(\d+)/cpufreq/cpuinfo_max_freq\s+(\d+)\s*$")


class ConditionError(FacebenchError, ValueError):
    """A condition cannot be set up on this device (bad --cores, no cpufreq): that cell fails with the reason."""


def parse_thermal_status(text: str) -> int | None:
    match = _STATUS.search(text)
    return int(match.group(1)) if match else None


def thermal_status(conn: Connection) -> int | None:
    """The device's thermal status (0 none .. 6 shutdown), or None where it has no thermal service."""
    try:
        out = conn.shell("dumpsys thermalservice").output
    except DeviceError as exc:
        if exc.kind in ("dropped", "timeout"):
            raise
        return None
    return parse_thermal_status(out)


def normalise_cores(spec: str | None) -> str | None:
    """``big``, ``little``, a mask as ``0x..`` (lower case), or None for no pinning (``all`` or unset)."""
    if spec is None:
        return None
    spec = spec.strip().lower()
    if spec in ("", "all"):
        return None
    if spec in ("big", "little"):
        return spec
    if not _MASK.match(spec) or int(spec, 16) == 0:
        raise ConditionError(f"cores {spec!r}: not big, little, all or a non-zero hex CPU mask such as 0xf0")
    return f"{int(spec, 16):#x}"


def parse_clusters(text: str) -> dict[int, list[int]]:
    """``path max_freq`` lines -> {max frequency (kHz): sorted CPU numbers}."""
    clusters: dict[int, list[int]] = {}
    for line in text.splitlines():
        match = _FREQ.search(line.strip())
        if match:
            clusters.setdefault(int(match.group(2)), []).append(int(match.group(1)))
    return {freq: sorted(cpus) for freq, cpus in sorted(clusters.items())}


def read_clusters(conn: Connection) -> dict[int, list[int]]:
    script = (f'for f in {SYSFS}/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq; do '
              '[ -r "$f" ] && echo "$f $(cat "$f")"; done; true')
    return parse_clusters(conn.check(script))


def core_mask(conn: Connection, spec: str | None) -> str | None:
    """The ``0x..`` mask ``spec`` means on this device (None: not pinned)."""
    spec = normalise_cores(spec)
    if spec is None or spec.startswith("0x"):
        return spec
    clusters = read_clusters(conn)
    if not clusters:
        raise ConditionError(f"--cores {spec}: the device reports no CPU clusters "
                             "(no /sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq)")
    cpus = clusters[max(clusters) if spec == "big" else min(clusters)]
    return f"{sum(1 << c for c in cpus):#x}"


def taskset_prefix(mask: str | None) -> str:
    """``taskset f0 `` (bare hex, as toybox wants), or "" when not pinned."""
    return f"taskset {int(mask, 16):x} " if mask else ""


def is_hot(status: int | None, battery_c: float | None, max_battery_c: float | None) -> bool:
    """Throttling, or a battery at or over the limit; an unknown reading does not count as hot."""
    return bool(status) or (max_battery_c is not None and battery_c is not None and battery_c >= max_battery_c)


@dataclass
class Readiness:
    status: int | None
    battery_c: float | None
    waited_s: float
    hot: bool

    def label(self) -> str:
        """What a hot start adds to the processor label, e.g. " (started hot: thermal 3, battery 45.0 C)"."""
        if not self.hot:
            return ""
        battery = f", battery {self.battery_c:.1f} C" if self.battery_c is not None else ""
        thermal = "?" if self.status is None else str(self.status)
        return f" (started hot: thermal {thermal}{battery})"


def wait_until_cool(conn: Connection, cap_s: float, max_battery_c: float | None, poll_s: float = 1.0) -> Readiness:
    """Poll until thermal status 0 and a cool battery, for at most ``cap_s`` (0: read once, no wait)."""
    from facebench.farm.bench import battery_temperature  # bench imports this module

    t0 = time.monotonic()
    while True:
        status, battery = thermal_status(conn), battery_temperature(conn)
        hot = is_hot(status, battery, max_battery_c)
        left = cap_s - (time.monotonic() - t0)
        if not hot or left <= 0:
            return Readiness(status, battery, time.monotonic() - t0, hot)
        time.sleep(min(poll_s, left))
