"""A stand-in Android device: the device side of the ADB protocol, on 127.0.0.1.

No phone is reachable from CI, so the farm runner is tested against this
daemon. It speaks the wire protocol a real ``adbd`` speaks, so both our client
(adb-shell) and Debian's ``adb`` work against it:

* 24-byte little-endian headers with the ``command ^ 0xffffffff`` magic and a
  data checksum. It announces protocol version 0x01000000, the last version
  that checksums every message, and drops a connection whose checksum is wrong;
* CNXN, then AUTH: a 20-byte token whose PKCS#1 v1.5 / SHA-1 signature is
  checked against the authorised public keys (Android's RSAPublicKey format).
  An unknown key offered with AUTH RSAPUBLICKEY waits for a user who never
  taps "Allow", exactly like an unauthorised phone;
* OPEN of ``shell:CMD`` (the legacy shell: output, then CLSE, no exit status),
  ``shell,v2[,raw|,pty][,TERM=..]:CMD`` (shell protocol v2: packets of a
  1-byte id, a 4-byte little-endian length and data; the device sends stdout 1,
  stderr 2 and the exit status 3, and takes stdin 0, close-stdin 4 and
  window-size 5, which this stand-in reads and ignores: commands get no stdin)
  and ``sync:`` (STAT, LIST, SEND/DATA/DONE, RECV, QUIT). The CNXN banner
  advertises ``features=shell_v2,cmd`` as real phones do (``features`` is
  settable, "" for a pre-Nougat phone), so adb servers use v2;
* flow control: one OKAY for each WRTE received, and each WRTE sent waits
  for the host's OKAY.

Shell commands run under ``/bin/sh`` in a sandbox directory (the device's
files); ``getprop`` and ``dumpsys`` there answer from ``props`` and
``battery_temperature``. ``dumpsys thermalservice`` prints ThermalManagerService's
block with "Thermal Status: N", N read from ``thermal_status``: a script of
values ("3 3 0"), each call consuming one and the last repeating; without the
file it is a phone with no thermal service. The shell's ``FACEBENCH_SYSFS``
points at a fake sysfs under the root (``sysfs/devices/system/cpu/cpuN/cpufreq``,
one CPU per host CPU: the lower half a little cluster, the rest big), which
:mod:`facebench.farm.conditions` reads as ``${FACEBENCH_SYSFS:-/sys}`` so the
host's own /sys is never what a test sees. Sync paths outside the sandbox are refused.
:class:`Faults` switches on each misbehaviour the runner must survive.
"""

from __future__ import annotations

import base64
import io
import os
import queue
import secrets
import selectors
import signal
import socket
import stat
import struct
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

CNXN, AUTH, OPEN, OKAY, CLSE, WRTE = (int.from_bytes(c, "little") for c in (b"CNXN", b"AUTH", b"OPEN", b"OKAY",
                                                                         b"CLSE", b"WRTE"))
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN, SHELL_WINDOW_SIZE = 0, 1, 2, 3, 4, 5
VERSION = 0x01000000  # below 0x01000001 (VERSION_SKIP_CHECKSUM): every message carries its checksum
MAX_DATA = 256 * 1024
SYNC_DATA_MAX = 64 * 1024
_HEADER = struct.Struct("<6I")
_SHA1_DIGEST_INFO = bytes.fromhex("3021300906052b0e03021a05000414")


class WireError(Exception):
    """The host broke the protocol; the connection is dropped."""


@dataclass
class Faults:
    """Misbehaviours, each matched against the shell command's text ("" is off)."""

    drop_push: bool = False  # the connection dies after the first DATA of a push
    drop_run: str = ""  # the connection dies once a matching command has started printing
    silent: str = ""  # a matching command prints nothing and never ends
    garbage: str = ""  # a matching command prints random bytes and exits 0


def checksum(data: bytes) -> int:
    return sum(data) & 0xFFFFFFFF


def packet(command: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    return _HEADER.pack(command, arg0, arg1, len(data), checksum(data), command ^ 0xFFFFFFFF) + data


def parse_public_key(text: bytes) -> tuple[int, int]:
    """(modulus, exponent) of an Android RSAPublicKey: base64 of len, n0inv, n[64], rr[64], e."""
    blob = base64.b64decode(text.strip(b"\0").split(b" ", 1)[0])
    words, _n0inv = struct.unpack_from("<2I", blob)
    size = words * 4
    modulus = int.from_bytes(blob[8:8 + size], "little")
    (exponent,) = struct.unpack_from("<I", blob, 8 + 2 * size)
    return modulus, exponent


def signature_matches(token: bytes, signature: bytes, key: tuple[int, int]) -> bool:
    """Whether ``signature`` is the PKCS#1 v1.5 signature of ``token`` taken as a SHA-1 digest."""
    modulus, exponent = key
    size = (modulus.bit_length() + 7) // 8
    if len(signature) != size:
        return False
    message = pow(int.from_bytes(signature, "big"), exponent, modulus).to_bytes(size, "big")
    suffix = b"\0" + _SHA1_DIGEST_INFO + token
    return message == b"\0\1" + b"\xff" * (size - 2 - len(suffix)) + suffix


class _Stream:
    """One OPENed service: its inbox of host data and the OKAY that unblocks its next WRTE."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int):
        self.conn, self.local_id, self.remote_id = conn, local_id, remote_id
        self.inbox: queue.Queue[bytes | None] = queue.Queue()
        self.acked = threading.Event()
        self.closed = threading.Event()
        self._close_lock = threading.Lock()
        self._buffer = bytearray()

    def write(self, data: bytes) -> None:
        for start in range(0, len(data), self.conn.max_data):
            self.acked.clear()
            self.conn.send(WRTE, self.local_id, self.remote_id, data[start:start + self.conn.max_data])
            while not self.acked.wait(0.2):
                if self.closed.is_set() or self.conn.dead.is_set():
                    raise ConnectionError("stream closed by the host")

    def read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self.inbox.get()
            if chunk is None:
                raise ConnectionError("stream closed by the host")
            self._buffer += chunk
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def close(self) -> None:
        """Close once, whoever asks first (the service ending, or the host's CLSE)."""
        with self._close_lock:
            if self.closed.is_set():
                return
            self.closed.set()
        self.inbox.put(None)
        self.conn.streams.pop(self.local_id, None)
        self.conn.send(CLSE, self.local_id, self.remote_id)


class _Connection:
    def __init__(self, device: StandInDevice, sock: socket.socket):
        self.device, self.sock = device, sock
        self.version, self.max_data = VERSION, MAX_DATA
        self.authenticated = False
        self.token = b""
        self.streams: dict[int, _Stream] = {}
        self.next_id = 1
        self.dead = threading.Event()
        self._send_lock = threading.Lock()
        self.processes: set[subprocess.Popen] = set()

    # -- wire ---------------------------------------------------------------
    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        with self._send_lock:
            if self.dead.is_set():
                raise ConnectionError("connection closed")
            try:
                self.sock.sendall(packet(command, arg0, arg1, data))
            except OSError as exc:
                self.drop()
                raise ConnectionError(str(exc)) from exc

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("host closed the connection")
            buf += chunk
        return bytes(buf)

    def _read_packet(self) -> tuple[int, int, int, bytes]:
        command, arg0, arg1, length, check, magic = _HEADER.unpack(self._recv_exact(_HEADER.size))
        if magic != command ^ 0xFFFFFFFF:
            raise WireError(f"bad magic {magic:#x} for command {command:#x}")
        if length > MAX_DATA:
            raise WireError(f"message of {length} bytes is over the maximum {MAX_DATA}")
        data = self._recv_exact(length) if length else b""
        if data and (self.version < 0x01000001 or check) and checksum(data) != check:
            raise WireError(f"checksum {check:#x} does not match the data ({checksum(data):#x})")
        return command, arg0, arg1, data

    def drop(self) -> None:
        """The cable is pulled: close the socket and stop everything this host started."""
        if self.dead.is_set():
            return
        self.dead.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for stream in list(self.streams.values()):
            stream.closed.set()
            stream.inbox.put(None)
        for proc in list(self.processes):
            _kill(proc)

    # -- protocol -----------------------------------------------------------
    def serve(self) -> None:
        try:
            while not self.dead.is_set():
                self._handle(*self._read_packet())
        except (ConnectionError, WireError, OSError):
            pass
        finally:
            self.drop()

    def _handle(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        if command == CNXN:
            self.version, self.max_data = min(arg0, VERSION), min(arg1, MAX_DATA)
            self.authenticated = False
            self._send_token()
        elif command == AUTH:
            self._auth(arg0, data)
        elif not self.authenticated:
            return  # adbd ignores everything else until the host is authorised
        elif command == OPEN:
            self._open(arg0, data.rstrip(b"\0").decode("utf-8", "replace"))
        elif command == WRTE:
            stream = self.streams.get(arg1)
            if stream is not None:
                self.send(OKAY, stream.local_id, stream.remote_id)  # one OKAY per WRTE
                stream.inbox.put(data)
        elif command == OKAY:
            stream = self.streams.get(arg1)
            if stream is not None:
                stream.acked.set()
        elif command == CLSE:
            stream = self.streams.get(arg1)
            if stream is not None:
                stream.close()  # adbd answers the host's CLSE with its own
        else:
            raise WireError(f"unknown command {command:#x}")

    def _send_token(self) -> None:
        self.token = secrets.token_bytes(20)
        self.send(AUTH, AUTH_TOKEN, 0, self.token)

    def _auth(self, kind: int, data: bytes) -> None:
        if kind == AUTH_SIGNATURE:
            if any(signature_matches(self.token, data, key) for key in self.device.authorized_keys()):
                self._accept()
            else:
                self._send_token()
        elif kind == AUTH_RSAPUBLICKEY:
            if self.device.accept_new_keys:  # the user taps "Allow" on the phone
                self.device.authorize(data)
                self._accept()
            # otherwise the prompt is never answered, as on an unattended phone
        else:
            raise WireError(f"unknown AUTH type {kind}")

    def _accept(self) -> None:
        self.authenticated = True
        props = self.device.properties
        banner = (f"device::ro.product.name={props.get('ro.product.name', '')};"
                  f"ro.product.model={props.get('ro.product.model', '')};"
                  f"ro.product.device={props.get('ro.product.device', '')};features={self.device.features}")
        self.send(CNXN, self.version, self.max_data, banner.encode())

    def _open(self, remote_id: int, service: str) -> None:
        target: Callable[[_Stream, str], None]
        name, _, argument = service.partition(":")
        options = name.split(",")[1:]
        if name == "shell" or (name.startswith("shell,") and "v2" not in options):
            target = self._shell
        elif name.startswith("shell,") and "shell_v2" in self.device.feature_set:
            target = self._shell_v2
        elif service == "sync:":
            target, argument = self._sync, ""
        else:
            self.send(CLSE, 0, remote_id)  # unsupported service
            return
        stream = _Stream(self, self.next_id, remote_id)
        self.next_id += 1
        self.streams[stream.local_id] = stream
        self.send(OKAY, stream.local_id, remote_id)
        threading.Thread(target=self._run_service, args=(target, stream, argument), daemon=True).start()

    def _run_service(self, target, stream: _Stream, argument: str) -> None:
        try:
            target(stream, argument)
        except (ConnectionError, OSError):
            pass
        except WireError:
            self.drop()
        finally:
            if not self.dead.is_set():
                try:
                    stream.close()
                except ConnectionError:
                    pass

    # -- services -----------------------------------------------------------
    def _shell(self, stream: _Stream, command: str) -> None:
        faults = self.device.faults
        if faults.silent and faults.silent in command:
            stream.closed.wait()  # prints nothing, never ends
            return
        if faults.garbage and faults.garbage in command:
            stream.write(secrets.token_bytes(512))
            return
        proc = self._spawn(command, subprocess.STDOUT)
        self.processes.add(proc)
        try:
            stdout = proc.stdout
            if not isinstance(stdout, io.BufferedReader):  # stdout=PIPE, binary, buffered: always one
                raise RuntimeError(f"unexpected stdout pipe {stdout!r}")
            while chunk := stdout.read1(self.max_data):
                if faults.drop_run and faults.drop_run in command:
                    self.drop()  # the command is running (it printed), and the cable goes
                    return
                stream.write(chunk)
            proc.wait()
        finally:
            self.processes.discard(proc)
            _kill(proc)

    def _spawn(self, command: str, stderr: int) -> subprocess.Popen:
        """``command`` in the phone's shell (its own session, so a kill takes its children), stdout piped."""
        return subprocess.Popen(["/bin/sh", "-c", command or "true"], cwd=self.device.root, env=self.device.env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                                start_new_session=True)

    def _shell_v2(self, stream: _Stream, command: str) -> None:
        """Shell protocol v2: stdout and stderr in their own packets, then the exit status."""
        faults = self.device.faults

        def send(kind: int, data: bytes) -> None:
            for start in range(0, max(len(data), 1), self.max_data - 5):
                part = data[start:start + self.max_data - 5]
                stream.write(struct.pack("<BI", kind, len(part)) + part)

        if faults.silent and faults.silent in command:
            stream.closed.wait()
            return
        if faults.garbage and faults.garbage in command:
            send(SHELL_STDOUT, secrets.token_bytes(512))
            send(SHELL_EXIT, b"\0")
            return
        proc = self._spawn(command, subprocess.PIPE)
        self.processes.add(proc)
        try:
            pipes = {pipe: kind for pipe, kind in ((proc.stdout, SHELL_STDOUT), (proc.stderr, SHELL_STDERR)) if pipe}
            with selectors.DefaultSelector() as sel:
                for pipe in pipes:
                    sel.register(pipe, selectors.EVENT_READ)
                while sel.get_map():
                    for key, _ in sel.select():
                        chunk = os.read(key.fd, self.max_data - 5)
                        if not chunk:
                            sel.unregister(key.fileobj)
                            continue
                        if faults.drop_run and faults.drop_run in command:
                            self.drop()
                            return
                        send(pipes[key.fileobj], chunk)  # type: ignore[index]
            send(SHELL_EXIT, bytes([proc.wait() & 0xFF]))
        finally:
            self.processes.discard(proc)
            _kill(proc)

    def _sync(self, stream: _Stream, _argument: str) -> None:
        while True:
            request, length = struct.unpack("<4sI", stream.read(8))
            if request == b"QUIT":
                return
            if length > 1024:
                raise WireError(f"sync path of {length} bytes")
            path = stream.read(length).decode("utf-8", "replace")
            if request == b"STAT":
                stream.write(self._stat(path))
            elif request == b"LIST":
                stream.write(self._list(path))
            elif request == b"SEND":
                self._receive_file(stream, path)
            elif request == b"RECV":
                self._send_file(stream, path)
            else:
                raise WireError(f"unknown sync request {request!r}")

    def _stat(self, path: str) -> bytes:
        try:
            st = os.stat(self.device.local(path))
            return b"STAT" + struct.pack("<3I", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime))
        except OSError:
            return b"STAT" + bytes(12)

    def _list(self, path: str) -> bytes:
        out = bytearray()
        try:
            directory = self.device.local(path)
            for name in sorted(os.listdir(directory)):
                st = os.lstat(directory / name)
                encoded = name.encode()
                out += b"DENT" + struct.pack("<4I", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime),
                                              len(encoded)) + encoded
        except OSError:
            pass
        return bytes(out) + b"DONE" + bytes(16)

    def _receive_file(self, stream: _Stream, spec: str) -> None:
        path, _, mode = spec.rpartition(",")
        chunks = []
        while True:
            kind, size = struct.unpack("<4sI", stream.read(8))
            if kind == b"DATA":
                if size > SYNC_DATA_MAX:
                    raise WireError(f"sync DATA of {size} bytes")
                chunks.append(stream.read(size))
                if self.device.faults.drop_push:
                    self.drop()
                    return
            elif kind == b"DONE":
                mtime = size
                break
            else:
                raise WireError(f"unexpected {kind!r} during SEND")
        try:
            target = self.device.local(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.partial")
            partial.write_bytes(b"".join(chunks))
            os.chmod(partial, stat.S_IMODE(int(mode)))  # sent in decimal, as st_mode
            os.utime(partial, (mtime, mtime))
            os.replace(partial, target)
        except (OSError, ValueError) as exc:
            message = f"couldn't create file: {exc}".encode()
            stream.write(b"FAIL" + struct.pack("<I", len(message)) + message)
            return
        stream.write(b"OKAY" + bytes(4))

    def _send_file(self, stream: _Stream, path: str) -> None:
        try:
            data = self.device.local(path).read_bytes()
        except OSError as exc:
            message = f"remote object '{path}' does not exist or cannot be read: {exc}".encode()
            stream.write(b"FAIL" + struct.pack("<I", len(message)) + message)
            return
        for start in range(0, len(data), SYNC_DATA_MAX):
            chunk = data[start:start + SYNC_DATA_MAX]
            stream.write(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
        stream.write(b"DONE" + bytes(4))


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


_GETPROP = """#!/bin/sh
if [ $# -eq 0 ]; then sed 's/^\\([^=]*\\)=\\(.*\\)$/[\\1]: [\\2]/' "$DEVICE_ROOT/props"
else grep -m1 "^$1=" "$DEVICE_ROOT/props" | cut -d= -f2-; fi
"""
_DUMPSYS = """#!/bin/sh
case "$1" in
SurfaceFlinger) echo "GLES: $(grep -m1 '^facebench.gles=' "$DEVICE_ROOT/props" | cut -d= -f2-)";;
battery) echo "Current Battery Service state:"; echo "  temperature: $(cat "$DEVICE_ROOT/battery_temperature")";;
thermalservice)
  [ -f "$DEVICE_ROOT/thermal_status" ] || { echo "Can't find service: thermalservice"; exit 1; }
  set -- $(cat "$DEVICE_ROOT/thermal_status"); status=${1:-0}
  if [ $# -gt 1 ]; then shift; echo "$*" > "$DEVICE_ROOT/thermal_status"; fi
  echo "IsStatusOverride: false"; echo "ThermalEventListeners:"; echo "	callbacks: 1"
  echo "ThermalStatusListeners:"; echo "	callbacks: 1"; echo "Thermal Status: $status"
  echo "Cached temperatures:"; echo "	Temperature{mValue=30.0, mType=2, mName=battery, mStatus=$status}"
  echo "HAL Ready: true";;
*) echo "Can't find service: $1"; exit 1;;
esac
"""


@dataclass
class StandInDevice:
    """One stand-in phone: ``with StandInDevice(root, keys) as d: d.address``."""

    root: Path
    authorized: list[bytes] = field(default_factory=list)  # public keys as in ~/.android/adbkey.pub
    properties: dict[str, str] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    accept_new_keys: bool = False
    port: int = 0
    features: str = "shell_v2,cmd"  # the CNXN banner's features; "" is a phone without shell v2

    @property
    def feature_set(self) -> set[str]:
        return set(filter(None, self.features.split(",")))

    def __post_init__(self):
        self.root = Path(self.root).resolve()
        (self.root / "bin").mkdir(parents=True, exist_ok=True)
        for name, text in (("getprop", _GETPROP), ("dumpsys", _DUMPSYS)):
            tool = self.root / "bin" / name
            tool.write_text(text)
            tool.chmod(0o755)
        props = {"ro.product.name": "facebench_standin", "ro.product.model": "facebench stand-in (host CPU)",
                 "ro.product.device": "standin", "ro.board.platform": "host", "ro.soc.model": _cpu(),
                 "ro.build.fingerprint": f"facebench/standin/host:{os.uname().release}",
                 "ro.product.cpu.abi": os.uname().machine, "ro.facebench.host_stand_in": "1",
                 "facebench.gles": "none (host CPU stand-in, no GPU)", **self.properties}
        self.properties = props
        (self.root / "props").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        if not (self.root / "battery_temperature").exists():
            (self.root / "battery_temperature").write_text("300\n")
        if not (self.root / "thermal_status").exists():
            (self.root / "thermal_status").write_text("0\n")
        cpus = self.root / "sysfs" / "devices" / "system" / "cpu"
        if not cpus.exists():  # as many CPUs as the host has, so taskset masks work on the host
            count = max(os.cpu_count() or 1, 1)
            for cpu in range(count):
                freq = cpus / f"cpu{cpu}" / "cpufreq" / "cpuinfo_max_freq"
                freq.parent.mkdir(parents=True)
                freq.write_text("1804800\n" if cpu < count // 2 else "2841600\n")
        self._keys_lock = threading.Lock()
        self._server: socket.socket | None = None
        self._connections: list[_Connection] = []

    # -- keys ---------------------------------------------------------------
    def authorized_keys(self) -> list[tuple[int, int]]:
        with self._keys_lock:
            return [parse_public_key(k) for k in self.authorized]

    def authorize(self, public_key: bytes) -> None:
        with self._keys_lock:
            self.authorized.append(public_key)

    # -- sandbox ------------------------------------------------------------
    def local(self, device_path: str) -> Path:
        """The sandbox file behind a device path; anything outside the sandbox is refused."""
        path = Path(device_path)
        path = (path if path.is_absolute() else self.root / path).resolve()
        if path != self.root and self.root not in path.parents:
            raise PermissionError(f"{device_path}: outside the device's sandbox")
        return path

    def env(self) -> dict[str, str]:
        return {"PATH": f"{self.root / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(self.root),
                "DEVICE_ROOT": str(self.root), "LANG": "C.UTF-8", "FACEBENCH_SYSFS": str(self.root / "sysfs")}

    # -- server -------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._server = server = socket.create_server(("127.0.0.1", self.port))
        self.port = server.getsockname()[1]
        threading.Thread(target=self._accept_loop, args=(server,), daemon=True).start()
        return self

    def _accept_loop(self, server: socket.socket) -> None:
        while True:
            try:
                sock, _ = server.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            self._connections.append(conn)
            threading.Thread(target=conn.serve, daemon=True).start()

    def drop_all(self) -> None:
        """Every host loses its connection at once (the phone is unplugged)."""
        for conn in self._connections:
            conn.drop()

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_all()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return "host " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "host CPU"
