"""One phone over ADB: adb-shell straight to the device's adbd, with exit statuses and timeouts.

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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self

from facebench.errors import FacebenchError
from facebench.farm.inventory import Device

if TYPE_CHECKING:
    from adb_shell.adb_device import AdbDevice

QUICK_TIMEOUT_S = 15.0


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
    """The host's private key (and ``.pub`` beside it), created with 0600 permissions if missing."""
    from adb_shell.auth.keygen import write_public_keyfile
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    path = Path(path or default_key_path()).expanduser()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never world-readable, not even briefly
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    if not Path(f"{path}.pub").exists():
        write_public_keyfile(str(path), f"{path}.pub")
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


class Connection:
    """An authenticated ADB session with one device: ``with Connection(device, key) as c: c.shell(...)``."""

    def __init__(self, device: Device, key: Path, connect_timeout_s: float = 5.0, auth_timeout_s: float = 10.0):
        self.device, self.key = device, key
        self.connect_timeout_s, self.auth_timeout_s = connect_timeout_s, auth_timeout_s
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
            if d.address:
                host, port = d.host_port
                adb = adb_device.AdbDevice(_tcp_transport(host, port),
                                           default_transport_timeout_s=self.connect_timeout_s)
            else:
                adb = adb_device.AdbDeviceUsb(serial=d.serial, default_transport_timeout_s=self.connect_timeout_s)
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
        """Run ``command`` in the device shell; its exit status comes back with the output."""
        marker = f"FBX{secrets.token_hex(8)}"
        raw = self._call(f"`{command}`", self._connected().shell, f"({command}\n); echo {marker}:$?",
                         transport_timeout_s=timeout_s, read_timeout_s=timeout_s, timeout_s=timeout_s, decode=False)
        text = raw.decode("utf-8", "replace").replace("\r\n", "\n")
        body, sep, tail = text.rstrip("\n").rpartition(f"{marker}:")
        if not sep or not tail.strip().isdigit():
            raise DeviceError("garbage", f"{self.device.name}: `{command}` returned no exit status; "
                                         f"output began {text[:120]!r}")
        return ShellResult(int(tail.strip()), body)

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
        self._call(f"push {local} -> {remote}", self._connected().push, str(local), remote, st_mode=0o100000 | mode,
                   transport_timeout_s=timeout_s, read_timeout_s=timeout_s)
        got = self.remote_sha256(remote)
        if got != want:
            raise DeviceError("push", f"{self.device.name}: {remote} on the device is {got}, expected {want} "
                                      "after the push")
        if mode & 0o111:
            self.check(f"chmod {mode:o} {quote(remote)}")
        return True
