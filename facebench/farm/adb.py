"""One phone over ADB, with exit statuses, timeouts and bounded output.

Two transports share one interface (:class:`Connection`): a device with an
``address`` is reached straight through its adbd over TCP (adb-shell, below);
a device with a ``serial`` goes through an adb server
(:class:`facebench.farm.adb_server.ServerConnection`, adbutils), the local one
unless the inventory names another. :func:`session` picks the transport from
the inventory entry.

Output is read as a stream into a buffer capped at ``max_output_bytes``
(16 MiB by default): a tool that never stops printing is cut off and reported
as garbage with the head and tail of what it printed, instead of growing the
host's memory until its timeout.

adb-shell's legacy shell returns only output, so every command gets
``; echo <nonce>:$?`` appended (in a subshell, so ``exit`` cannot skip it) and the status is read back from the last
line; output without that line (a dropped stream, a garbled reply) is an
error, never a success. Every call has an explicit timeout, because the
benchmark tool prints nothing while it measures. adb-shell keeps reading an
orderly-closed socket until its timeout; our transport turns that into an
immediate "device dropped". Every failure is a :class:`DeviceError` whose
``kind`` says what happened (unreachable, unauthorised, dropped, timeout,
exit, garbage, push).

The host's key is ``~/.android/adbkey`` by default (the one ``adb`` itself
uses, so phones that already trust this computer trust facebench); it is
created with 0600 permissions if missing. Nothing is auto-accepted: a phone
that does not know the key shows its "Allow USB debugging?" prompt and the
device is reported unauthorised until someone taps Allow.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shlex
import stat
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self

from facebench.errors import FacebenchError
from facebench.farm.inventory import Device

if TYPE_CHECKING:
    from adb_shell.adb_device import AdbDevice

QUICK_TIMEOUT_S = 15.0
DEFAULT_MAX_OUTPUT_BYTES = 16 * 1024 * 1024
KEEP_BYTES = 2048  # head and tail of a flood kept in its error message


class DeviceError(FacebenchError):
    """A device-side failure; ``kind`` is one of KINDS."""

    KINDS = ("unreachable", "unauthorised", "dropped", "timeout", "exit", "garbage", "push")

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind

    def __str__(self) -> str:
        return f"{self.kind}: {self.args[0]}"


@dataclass
class ShellResult:
    status: int
    output: str


def default_key_path() -> Path:
    return Path(os.environ.get("FACEBENCH_ADB_KEY") or Path.home() / ".android" / "adbkey")


def ensure_host_key(path: Path | None = None) -> Path:
    """The host's private key (and ``.pub`` beside it), created with 0600 permissions if missing.

    An existing key is checked, not trusted blindly: one readable by group or
    others gets a warning (anyone who can read it can run commands on every
    phone that allowed it), and one that is not an RSA private key is a clean
    error naming the file.
    """
    from adb_shell.auth.keygen import write_public_keyfile
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    path = Path(path or default_key_path()).expanduser()
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never world-readable, not even briefly
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
        elif not path.is_file():
            raise FacebenchError(f"{path}: the host's ADB key path is not a file (a directory?); "
                                 "point --key or [host] key at the private key file")
        else:
            try:
                loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
            except (ValueError, TypeError) as exc:
                raise FacebenchError(f"{path}: not a usable ADB private key (an unencrypted PEM RSA key, as "
                                     f"`adb keygen` writes): {exc}") from None
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise FacebenchError(f"{path}: an ADB key is RSA, this is {type(loaded).__name__}")
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                print(f"warning: the host's ADB key {path} is readable by others (mode {mode:o}); "
                      f"run `chmod 600 {path}`", file=sys.stderr)
        if not Path(f"{path}.pub").exists():
            write_public_keyfile(str(path), f"{path}.pub")
    except OSError as exc:
        raise FacebenchError(f"{path}: cannot use the host's ADB key: {exc}") from None
    return path


def quote(text: str) -> str:
    """A device-shell word: model names and paths never reach the shell unquoted."""
    return shlex.quote(str(text))


def _tcp_transport(host: str, port: int):
    from adb_shell.transport.tcp_transport import TcpTransport

    class Transport(TcpTransport):
        """adb-shell's TCP transport, except that a closed socket is an error, not an empty read."""

        def bulk_read(self, numbytes, transport_timeout_s):
            data = super().bulk_read(numbytes, transport_timeout_s)
            if not data:
                raise ConnectionResetError(f"{host}:{port} closed the connection")
            return data

    return Transport(host, port)


class Flood(Exception):
    """Output past the cap; the message keeps its head and tail."""


class BoundedOutput:
    """Shell output up to ``cap`` bytes; one more byte raises :class:`Flood` (the caller stops reading)."""

    def __init__(self, cap: int):
        self.cap, self.data, self.total = cap, bytearray(), 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.cap - len(self.data)
        if len(chunk) <= room:
            self.data += chunk
            return
        tail = (bytes(self.data[-KEEP_BYTES:]) + chunk)[-KEEP_BYTES:]  # no copy of the whole buffer
        head = bytes(self.data[:KEEP_BYTES]) if self.data else chunk[:KEEP_BYTES]
        raise Flood(f"printed more than {self.cap} bytes (the output cap, max_output_bytes); cut off. "
                    f"It began {head.decode('utf-8', 'replace')!r} ... and last printed "
                    f"{tail.decode('utf-8', 'replace')!r}")


def parse_marked(raw: bytes, marker: str, name: str, command: str) -> ShellResult:
    """The ``; echo MARKER:$?`` technique: status from the last line, an error when it is missing."""
    text = raw.decode("utf-8", "replace").replace("\r\n", "\n")
    body, sep, tail = text.rstrip("\n").rpartition(f"{marker}:")
    if not sep or not tail.strip().isdigit():
        raise DeviceError("garbage", f"{name}: `{command}` returned no exit status; output began {text[:120]!r}")
    return ShellResult(int(tail.strip()), body)


def session(device: Device, key: Path, connect_timeout_s: float = 5.0, auth_timeout_s: float = 10.0,
            max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES) -> Connection:
    """A session with ``device`` (not yet connected: ``with session(...) as conn``) over the transport its
    inventory entry names: :class:`Connection` for an ``address``, an adb server's
    :class:`~facebench.farm.adb_server.ServerConnection` for a ``serial``."""
    if device.address:
        return Connection(device, key, connect_timeout_s, auth_timeout_s, max_output_bytes)
    from facebench.farm.adb_server import ServerConnection

    return ServerConnection(device, key, connect_timeout_s, auth_timeout_s, max_output_bytes)


class Connection:
    """An authenticated ADB session with one device straight to its adbd over TCP (``address``):
    ``with Connection(device, key) as c: c.shell(...)``. :func:`session` picks this or the adb server's
    transport from the inventory entry."""

    def __init__(self, device: Device, key: Path, connect_timeout_s: float = 5.0, auth_timeout_s: float = 10.0,
                 max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES):
        self.device, self.key = device, key
        self.connect_timeout_s, self.auth_timeout_s = connect_timeout_s, auth_timeout_s
        self.max_output_bytes = max_output_bytes
        self._adb: AdbDevice | None = None

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self) -> None:
        from adb_shell import adb_device, exceptions
        from adb_shell.auth.sign_cryptography import CryptographySigner

        d = self.device
        prompted = []
        try:
            host, port = d.host_port
            adb = adb_device.AdbDevice(_tcp_transport(host, port), default_transport_timeout_s=self.connect_timeout_s)
            adb.connect(rsa_keys=[CryptographySigner(str(self.key))], transport_timeout_s=self.connect_timeout_s,
                        auth_timeout_s=self.auth_timeout_s, read_timeout_s=self.connect_timeout_s,
                        auth_callback=lambda _: prompted.append(True))
        except exceptions.InvalidTransportError as exc:
            raise DeviceError("unreachable", f"{d.name} ({d.where}): {exc}") from None
        except Exception as exc:  # noqa: BLE001 - adb-shell raises many kinds; each is classified here
            if prompted:
                raise DeviceError("unauthorised",
                                  f"{d.name} ({d.where}) did not accept this host's key {self.key}.pub: "
                                  "tap 'Allow' on the phone's USB-debugging prompt, then rerun") from None
            if isinstance(exc, exceptions.DeviceAuthError):
                raise DeviceError("unauthorised", f"{d.name} ({d.where}): {exc}") from None
            raise DeviceError("unreachable", f"{d.name} ({d.where}): {type(exc).__name__}: {exc}") from None
        self._adb = adb

    @property
    def connected(self) -> bool:
        """False once the session died (a drop, a timeout or a protocol error closes it)."""
        return self._adb is not None

    def close(self) -> None:
        if self._adb is not None:
            try:
                self._adb.close()
            except Exception:  # noqa: BLE001, S110 - closing a dead socket must not hide the real error
                pass
            self._adb = None

    def _connected(self) -> AdbDevice:
        """The live adb-shell session; DeviceError("dropped") once it is gone (or before connect())."""
        if self._adb is None:
            raise DeviceError("dropped", f"{self.device.name}: not connected")
        return self._adb

    def _call(self, what: str, fn, *args, **kwargs):
        from adb_shell import exceptions

        if self._adb is None:
            raise DeviceError("dropped", f"{self.device.name}: not connected")
        try:
            return fn(*args, **kwargs)
        except Flood as exc:  # the stream is abandoned mid-way: only closing the session stops the device
            self.close()
            raise DeviceError("garbage", f"{self.device.name}: {what}: {exc}") from None
        except (exceptions.AdbTimeoutError, exceptions.TcpTimeoutException, TimeoutError) as exc:
            self.close()
            raise DeviceError("timeout", f"{self.device.name}: {what}: silent past its timeout ({exc})") from None
        except (ConnectionError, OSError) as exc:
            self.close()
            raise DeviceError("dropped", f"{self.device.name}: {what}: connection lost ({exc})") from None
        except (exceptions.InvalidChecksumError, exceptions.InvalidCommandError,
                exceptions.InvalidResponseError) as exc:
            self.close()
            raise DeviceError("garbage", f"{self.device.name}: {what}: protocol error ({exc})") from None
        except exceptions.PushFailedError as exc:
            raise DeviceError("push", f"{self.device.name}: {what}: {exc}") from None

    def shell(self, command: str, timeout_s: float = QUICK_TIMEOUT_S) -> ShellResult:
        """Run ``command`` in the device shell; its exit status comes back with the output (at most the cap)."""
        from adb_shell.exceptions import AdbTimeoutError

        marker = f"FBX{secrets.token_hex(8)}"
        out = BoundedOutput(self.max_output_bytes)
        deadline = time.monotonic() + timeout_s

        def collect(chunks: Iterable[bytes]) -> None:
            for chunk in chunks:  # adb-shell's read_timeout_s bounds each silence, the deadline the whole
                out.add(chunk)
                if time.monotonic() > deadline:
                    raise AdbTimeoutError(f"the command did not complete within {timeout_s} s")

        adb = self._connected()
        self._call(f"`{command}`", lambda: collect(adb.streaming_shell(
            f"({command}\n); echo {marker}:$?", transport_timeout_s=timeout_s, read_timeout_s=timeout_s,
            decode=False)))
        return parse_marked(bytes(out.data), marker, self.device.name, command)

    def check(self, command: str, timeout_s: float = QUICK_TIMEOUT_S) -> str:
        """Output of a command that must succeed."""
        result = self.shell(command, timeout_s)
        if result.status != 0:
            raise DeviceError("exit", f"{self.device.name}: `{command}` exited {result.status}: "
                                      f"{result.output.strip()[-300:]}")
        return result.output

    def remote_sha256(self, remote: str) -> tuple[int, str] | None:
        """(size, sha256) of a device file, or None when it is absent or unreadable."""
        result = self.shell(f"[ -f {quote(remote)} ] && stat -c %s {quote(remote)} && sha256sum {quote(remote)}")
        words = result.output.split()
        if result.status != 0 or len(words) < 2 or not words[0].isdigit():
            return None
        return int(words[0]), words[1].lower()

    def push_if_changed(self, local: Path, remote: str, mode: int = 0o644, timeout_s: float = 300.0) -> bool:
        """Push unless the device already has the same bytes (size and SHA-256); True if pushed."""
        data = Path(local).read_bytes()
        want = (len(data), hashlib.sha256(data).hexdigest())
        if self.remote_sha256(remote) == want:
            return False
        self.check(f"mkdir -p {quote(remote.rsplit('/', 1)[0] or '/')}")
        self._push(local, remote, mode, timeout_s)
        got = self.remote_sha256(remote)
        if got != want:
            raise DeviceError("push", f"{self.device.name}: {remote} on the device is {got}, expected {want} "
                                      "after the push")
        if mode & 0o111:
            self.check(f"chmod {mode:o} {quote(remote)}")
        return True

    def _push(self, local: Path, remote: str, mode: int, timeout_s: float) -> None:
        self._call(f"push {local} -> {remote}", self._connected().push, str(local), remote, st_mode=0o100000 | mode,
                   transport_timeout_s=timeout_s, read_timeout_s=timeout_s)
