"""One phone through an adb server (adbutils): the transport for devices given by ``serial``.

The server (``adb start-server``, port 5037 by default) owns USB phones and
the ones it was told to ``adb connect``; it holds the host key, so the phone's
"Allow USB debugging?" prompt is the server's business and a device it lists
as ``unauthorized`` is reported unauthorised. adbutils speaks the server's
protocol; facebench reads the shell stream itself, because adbutils' ``shell2``
keeps all output in memory and its timeout bounds each read, not the command.

Shell v2 (the device's ``shell_v2`` feature, which every phone since Android 7
has) frames output as packets (id 1 stdout, 2 stderr, 3 exit status) and so
carries the exit status; without it the ``; echo MARKER:$?`` technique of the
direct transport is used. Every fault is a :class:`DeviceError` of the same
kinds as the direct transport's.
"""

from __future__ import annotations

import secrets
import socket
import struct
import time
from pathlib import Path
from typing import Any

from facebench.farm.adb import (
    DEFAULT_MAX_OUTPUT_BYTES,
    QUICK_TIMEOUT_S,
    BoundedOutput,
    Connection,
    DeviceError,
    Flood,
    ShellResult,
    parse_marked,
)
from facebench.farm.inventory import Device

SYNC_CHUNK = 64 * 1024
SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN = 1, 2, 3, 4


def _client(host: str, port: int, timeout_s: float):
    """An adbutils client that never starts a server itself (adbutils runs `adb start-server` on a refusal)."""
    import adbutils
    from adbutils._adb import AdbConnection

    class Conn(AdbConnection):
        def _safe_connect(self):
            return self._create_socket()

    class Client(adbutils.AdbClient):
        def make_connection(self, timeout: float | None = None) -> AdbConnection:
            conn = Conn(self.host, self.port)
            conn.conn.settimeout(timeout or timeout_s)
            return conn

    return Client(host, port, socket_timeout=timeout_s)


def server_error(server: str, exc: BaseException) -> DeviceError:
    return DeviceError("unreachable", f"no adb server answers at {server} ({type(exc).__name__}: {exc}); "
                                      f"start one with `adb -P {server.rpartition(':')[2]} start-server` on that host")


def list_devices(server: str, timeout_s: float = 5.0) -> list[tuple[str, str]]:
    """(serial, state) of every device the server at ``host:port`` sees; DeviceError when none answers."""
    from adbutils.errors import AdbError

    host, _, port = server.rpartition(":")
    try:
        return [(i.serial, i.state) for i in _client(host, int(port), timeout_s).list()]
    except (AdbError, OSError, EOFError) as exc:
        raise server_error(server, exc) from None


def discover(server: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """What a server sees: serial, state and (for ready devices) the model, for ``devices discover``."""
    found = []
    for serial, state in list_devices(server, timeout_s):
        record: dict[str, Any] = {"server": server, "serial": serial, "state": state, "model": ""}
        if state == "device":
            dev = Device(serial, serial=serial, server=server)
            try:
                with ServerConnection(dev, None, timeout_s, timeout_s) as conn:
                    record["model"] = conn.check("getprop ro.product.model", timeout_s).strip()
            except DeviceError as exc:
                record["error"] = str(exc)
        found.append(record)
    return found


class ServerConnection(Connection):
    """A device of an adb server, with :class:`Connection`'s methods and error kinds."""

    def __init__(self, device: Device, key: Path | None = None, connect_timeout_s: float = 5.0,
                 auth_timeout_s: float = 10.0, max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES):
        self.device = device
        self.key = key if key is not None else Path()  # unused: the server holds the key the phone allowed
        self.connect_timeout_s, self.auth_timeout_s = connect_timeout_s, auth_timeout_s
        self.max_output_bytes = max_output_bytes
        host, port = device.server_host_port
        self.server = f"{host}:{port}"
        self._adb = None
        self._dev: Any = None
        self.shell_v2 = False

    def connect(self) -> None:
        from adbutils.errors import AdbError

        d = self.device
        host, port = d.server_host_port
        states = dict(list_devices(self.server, self.connect_timeout_s))
        state = states.get(d.serial)
        if state is None:
            raise DeviceError("unreachable", f"{d.name}: the adb server at {self.server} has no device {d.serial!r} "
                                             f"(it lists {', '.join(states) or 'none'})")
        if state == "unauthorized":
            raise DeviceError("unauthorised", f"{d.name} ({d.where}) did not accept the adb server's key: tap "
                                              "'Allow' on the phone's USB-debugging prompt, then rerun")
        if state != "device":
            raise DeviceError("unreachable", f"{d.name} ({d.where}) is {state!r} on the adb server")
        dev = _client(host, port, self.connect_timeout_s).device(d.serial)
        try:
            features = set(dev.get_features().split(","))
        except (AdbError, OSError, EOFError) as exc:
            raise DeviceError("unreachable", f"{d.name} ({d.where}): {type(exc).__name__}: {exc}") from None
        self.shell_v2 = "shell_v2" in features
        self._dev = dev

    @property
    def connected(self) -> bool:
        return self._dev is not None

    def close(self) -> None:
        self._dev = None  # nothing held open between commands: each one is its own server connection

    def _open(self, service: str, timeout_s: float):
        """A server connection switched to ``service`` on the device; DeviceError on any refusal."""
        from adbutils.errors import AdbError

        if self._dev is None:
            raise DeviceError("dropped", f"{self.device.name}: not connected")
        try:
            conn = self._dev.open_transport(timeout=timeout_s)
        except (AdbError, OSError) as exc:
            self.close()
            raise server_error(self.server, exc) from None
        try:
            conn.send_command(service)
            conn.check_okay()
        except (AdbError, OSError, EOFError) as exc:  # the device left the server: gone mid-session
            conn.close()
            self.close()
            raise DeviceError("dropped", f"{self.device.name} ({self.device.where}): {exc}") from None
        return conn

    def _stream(self, what: str, conn, deadline: float, timeout_s: float, body):
        """Run ``body(recv)`` on an open server connection, classifying every fault."""
        sock: socket.socket = conn.conn

        def recv(n: int) -> bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            chunk = sock.recv(n)
            if not chunk:
                raise EOFError("the stream closed")
            return chunk

        try:
            return body(sock, recv)
        except Flood as exc:
            raise DeviceError("garbage", f"{self.device.name}: {what}: {exc}") from None
        except TimeoutError:
            raise DeviceError("timeout", f"{self.device.name}: {what}: silent past its timeout "
                                         f"({timeout_s} s)") from None
        except (EOFError, OSError) as exc:
            self.close()
            raise DeviceError("dropped", f"{self.device.name}: {what}: connection lost ({exc})") from None
        finally:
            conn.close()  # the server closes the device's stream, which ends the command there

    def shell(self, command: str, timeout_s: float = QUICK_TIMEOUT_S) -> ShellResult:
        what = f"`{command}`"
        deadline = time.monotonic() + timeout_s
        out = BoundedOutput(self.max_output_bytes)
        if not self.shell_v2:
            marker = f"FBX{secrets.token_hex(8)}"
            conn = self._open(f"shell:({command}\n); echo {marker}:$?", timeout_s)

            def legacy(sock, recv):
                while True:
                    try:
                        out.add(recv(65536))
                    except EOFError:
                        return

            self._stream(what, conn, deadline, timeout_s, legacy)
            return parse_marked(bytes(out.data), marker, self.device.name, command)

        conn = self._open(f"shell,v2,raw:{command}", timeout_s)

        def exact(recv, n: int) -> bytes:
            buf = bytearray()
            while len(buf) < n:
                buf += recv(n - len(buf))
            return bytes(buf)

        def v2(sock, recv) -> int:
            sock.sendall(struct.pack("<BI", SHELL_CLOSE_STDIN, 0))  # no input: the command sees EOF, as with shell:
            while True:
                kind, length = struct.unpack("<BI", exact(recv, 5))
                if length > 1 << 24:
                    raise DeviceError("garbage", f"{self.device.name}: {what}: a shell packet of {length} bytes")
                data = exact(recv, length) if length else b""
                if kind in (SHELL_STDOUT, SHELL_STDERR):
                    out.add(data)
                elif kind == SHELL_EXIT:
                    if length != 1:
                        raise DeviceError("garbage", f"{self.device.name}: {what}: exit packet of {length} bytes")
                    return data[0]

        status = self._stream(what, conn, deadline, timeout_s, v2)
        return ShellResult(status, bytes(out.data).decode("utf-8", "replace").replace("\r\n", "\n"))

    def _push(self, local: Path, remote: str, mode: int, timeout_s: float) -> None:
        """sync: SEND in 64 KiB DATA chunks, then DONE; the device answers OKAY or FAIL with its reason."""
        what = f"push {local} -> {remote}"
        spec = f"{remote},{0o100000 | mode}".encode()
        conn = self._open("sync:", timeout_s)

        def send(sock, recv) -> None:
            def exact(n: int) -> bytes:
                buf = bytearray()
                while len(buf) < n:
                    buf += recv(n - len(buf))
                return bytes(buf)

            sock.sendall(b"SEND" + struct.pack("<I", len(spec)) + spec)
            with open(local, "rb") as f:
                while chunk := f.read(SYNC_CHUNK):
                    sock.sendall(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
            sock.sendall(b"DONE" + struct.pack("<I", int(time.time())))
            reply, length = struct.unpack("<4sI", exact(8))
            if reply == b"FAIL":
                message = exact(length).decode("utf-8", "replace") if length < 65536 else ""
                raise DeviceError("push", f"{self.device.name}: {what}: {message}")
            if reply != b"OKAY":
                raise DeviceError("garbage", f"{self.device.name}: {what}: sync reply {reply!r}")
            sock.sendall(b"QUIT" + bytes(4))

        self._stream(what, conn, time.monotonic() + timeout_s, timeout_s, send)
