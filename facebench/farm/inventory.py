"""The farm inventory: which phones there are, how to reach them, and the host's settings.

A TOML file (``devices/farm.toml`` by default, ``--inventory`` or
``$FACEBENCH_DEVICES`` otherwise)::

    [host]
    key = "~/.android/adbkey"                       # the host's ADB key; created (0600) if missing
    benchmark_model = "~/android/benchmark_model"   # TFLite's benchmark tool for Android arm64
    server = "lab-host:5037"                        # optional: the adb server for devices given by serial

    [devices.pixel7]
    address = "192.168.1.23:5555"    # ADB over TCP, straight to the phone's adbd (adb-shell)
    tags = ["tensor-g2", "mali-g710"]
    workdir = "/data/local/tmp/facebench"   # optional; where files are pushed

    [devices.a71]
    serial = "R58M40ABCDE"           # a device of an adb server, chosen by its serial
    server = "127.0.0.1:5037"        # optional: else [host] server, else the local server

A device gives ``address`` (direct TCP) or ``serial`` (through an adb server),
never both. ``server`` is ``host[:port]`` (port 5037 by default). A ``serial``
with no server anywhere goes through the local adb server, 127.0.0.1:5037:
USB phones are claimed by that server (adb-shell's own USB transport cannot
take a phone the server already owns), so facebench asks the server for them.
A device may also name its own ``benchmark_model`` (a different ABI). Unknown
keys are errors that name the file, so a typo never silently drops a setting.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from facebench.errors import FacebenchError

DEFAULT_WORKDIR = "/data/local/tmp/facebench"
_HOST_KEYS = {"key", "benchmark_model", "server"}
_DEVICE_KEYS = {"address", "serial", "server", "tags", "workdir", "benchmark_model"}
LOCAL_SERVER = "127.0.0.1:5037"
DEFAULT_SERVER_PORT = 5037
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class InventoryError(FacebenchError, ValueError):
    """The inventory file is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class Device:
    name: str
    address: str = ""  # host:port for ADB over TCP, straight to the device's adbd
    serial: str = ""  # the device's serial on an adb server
    tags: tuple[str, ...] = ()
    workdir: str = DEFAULT_WORKDIR
    benchmark_model: Path | None = None  # overrides the host's
    server: str = ""  # host[:port] of the adb server that has ``serial``; "" is the local one

    @property
    def where(self) -> str:
        if self.address:
            return self.address
        return f"{self.serial}@{self.server}" if self.server else f"usb:{self.serial}"

    @property
    def server_host_port(self) -> tuple[str, int]:
        """The adb server a ``serial`` device is reached through (the local one unless named)."""
        return split_server(self.server or LOCAL_SERVER)

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.address.rpartition(":")
        return host, int(port)


@dataclass(frozen=True)
class Inventory:
    path: Path | None
    devices: dict[str, Device] = field(default_factory=dict)
    key: Path | None = None
    benchmark_model: Path | None = None

    def select(self, names: list[str] | tuple[str, ...]) -> list[Device]:
        """Devices by name; ``all`` (or nothing) is every device, comma lists are accepted."""
        wanted = [n for item in names for n in item.split(",") if n]
        if not wanted or wanted == ["all"]:
            return list(self.devices.values())
        unknown = [n for n in wanted if n not in self.devices]
        if unknown:
            raise InventoryError(f"{self.path}: no device named {', '.join(unknown)} "
                                 f"(known: {', '.join(self.devices) or 'none'})")
        return [self.devices[n] for n in dict.fromkeys(wanted)]

    def binary_for(self, device: Device) -> Path:
        binary = device.benchmark_model or self.benchmark_model
        if binary is None:
            raise InventoryError(f"{self.path}: no benchmark_model configured: set [host] benchmark_model to TFLite's "
                                 "benchmark tool for Android arm64 "
                                 "(facebench cannot download it; see devices/README.md)")
        if not binary.is_file():
            raise InventoryError(f"{self.path}: benchmark_model {binary} does not exist")
        return binary


def split_server(value: str) -> tuple[str, int]:
    """``host[:port]`` of an adb server; ValueError when it is not one."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = value, str(DEFAULT_SERVER_PORT)
    # a host name or an IPv4 address: IPv6 would need brackets the adb client does not take
    if not re.fullmatch(r"[A-Za-z0-9._-]+", host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host[:port] (a host name or IPv4 address; IPv6 is not supported)")
    return host, int(port)


def _server(value, where: str) -> str:
    if not isinstance(value, str):
        raise InventoryError(f"{where} must be a string \"host[:port]\"")
    try:
        host, port = split_server(value)
    except ValueError as exc:
        raise InventoryError(f"{where}: {exc}") from None
    return f"{host}:{port}"


def default_inventory_path() -> Path:
    return Path(os.environ.get("FACEBENCH_DEVICES") or "devices/farm.toml")


def _path(value, where: str, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise InventoryError(f"{where} must be a non-empty string")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def load_inventory(path: Path | str | None = None) -> Inventory:
    path = Path(path) if path is not None else default_inventory_path()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InventoryError(f"{path}: no inventory file (see devices/README.md for the format)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InventoryError(f"{path}: {exc}") from None
    unknown = set(data) - {"host", "devices"}
    if unknown:
        raise InventoryError(f"{path}: unknown table(s) {', '.join(sorted(unknown))} (expected [host], [devices.NAME])")
    base = path.resolve().parent
    host = data.get("host", {})
    if not isinstance(host, dict) or set(host) - _HOST_KEYS:
        raise InventoryError(f"{path}: [host] takes only {', '.join(sorted(_HOST_KEYS))}")
    host_server = _server(host["server"], f"{path}: [host] server") if "server" in host else ""
    devices = {}
    for name, spec in data.get("devices", {}).items():
        where = f"{path}: [devices.{name}]"
        if not _NAME.match(name):
            raise InventoryError(f"{where}: a name is letters, digits, '.', '_' and '-'")
        if not isinstance(spec, dict):
            raise InventoryError(f"{where} must be a table")
        if set(spec) - _DEVICE_KEYS:
            raise InventoryError(f"{where}: unknown key(s) {', '.join(sorted(set(spec) - _DEVICE_KEYS))}")
        address, serial = spec.get("address", ""), spec.get("serial", "")
        if not isinstance(address, str) or not isinstance(serial, str) or bool(address) == bool(serial):
            raise InventoryError(f"{where}: give exactly one of address = \"host:port\" (TCP) "
                                 "or serial = \"...\" (a device of an adb server: USB or `adb connect`)")
        if serial and (serial != serial.strip() or any(c.isspace() or not c.isprintable() for c in serial)):
            raise InventoryError(f"{where}: serial {serial!r} has spaces or control characters; adb serials have none")
        if "server" in spec and address:
            raise InventoryError(f"{where}: server is for a serial; address is a direct TCP connection "
                                 "(give one of address, or serial with server)")
        server = _server(spec["server"], f"{where} server") if "server" in spec else (host_server if serial else "")
        if address:
            host_part, _, port = address.rpartition(":")
            if not host_part or not port.isdigit() or not 0 < int(port) < 65536:
                raise InventoryError(f"{where}: address {address!r} is not host:port")
        tags = spec.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InventoryError(f"{where}: tags must be a list of strings")
        workdir = spec.get("workdir", DEFAULT_WORKDIR)
        if not isinstance(workdir, str) or not workdir.startswith("/"):
            raise InventoryError(f"{where}: workdir must be an absolute device path")
        binary = spec.get("benchmark_model")
        devices[name] = Device(name, address, serial, tuple(tags), workdir.rstrip("/") or "/",
                               _path(binary, f"{where} benchmark_model", base) if binary is not None else None,
                               server)
    return Inventory(path, devices,
                     _path(host["key"], f"{path}: [host] key", base) if "key" in host else None,
                     _path(host["benchmark_model"], f"{path}: [host] benchmark_model", base)
                     if "benchmark_model" in host else None)
