"""Unpacking an uploaded predictions file on the server, where whoever sends it may be hostile.

An upload is a zip, a tar (plain or gzip), or one plain file (an FDDB list, a landmark CSV,
a ``.npy`` array); the format is read from the first bytes, never from the name the client
gave. Every archive member is checked before a byte of it is written: a path that is absolute,
climbs out (``..``), uses backslashes or a drive letter, is not UTF-8, holds control characters,
is too long or too deep, or repeats another member's; a member that is a link, device or fifo;
an encrypted member. Sizes are counted as the bytes come out of the decompressor, never taken
from headers, so a zip bomb stops at the limit however small it claims to be; the members of a
zip are counted in its central directory before :mod:`zipfile` parses it, and a tar's
whole decompressed stream is capped, so pax and long-name headers cannot exhaust memory either; a gzip
header (its name, comment and extra fields) over 64 KiB is refused before :mod:`gzip` reads it byte by byte.
macOS's additions (the ``__MACOSX`` folder, AppleDouble ``._name`` files) are skipped, never predictions.
Files are created with ``O_EXCL | O_NOFOLLOW`` under a fresh folder and nothing is ever made a
link, so no member can write outside it. No web framework here: the service calls :func:`extract`.
"""

from __future__ import annotations

import codecs
import gzip
import os
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from facebench.errors import FacebenchError

MiB = 1024 * 1024
_CHUNK = 256 * 1024
_NPY = b"\x93NUMPY"
_ZIP = (b"PK\x03\x04", b"PK\x05\x06")
_GZIP = b"\x1f\x8b"
_GZIP_HEADER = 64 * 1024  # bytes a gzip header (its optional name, comment and extra fields) may take
# formats an upload is sometimes by mistake: named in the error instead of "unknown bytes"
_KNOWN = {b"\x89PNG\r\n\x1a\n": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"%PDF": "a PDF document",
          b"7z\xbc\xaf\x27\x1c": "a 7z archive", b"Rar!": "a RAR archive", b"BZh": "a bzip2 file",
          b"\xfd7zXZ\x00": "an xz file", b"\x28\xb5\x2f\xfd": "a zstd file"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_DRIVE = re.compile(r"^[A-Za-z]:")
_IGNORED = "__MACOSX"  # the resource forks macOS's Archive Utility adds: never predictions (see _ignored)


def _ignored(parts: tuple[str, ...]) -> bool:
    """Members macOS adds that are never predictions: Archive Utility's ``__MACOSX`` folder, and the AppleDouble
    ``._name`` files (extended attributes) its tar writes beside every file that has some."""
    return parts[0] == _IGNORED or parts[-1].startswith("._")


class UploadError(FacebenchError, ValueError):
    """An upload refused; the message names the archive member and the rule it broke."""


@dataclass(frozen=True)
class Limits:
    """What one upload may be. Sizes are bytes as decompressed (counted, not read from headers)."""

    max_upload_bytes: int = 64 * MiB  # the request body as sent
    max_members: int = 20_000
    max_total_bytes: int = 512 * MiB
    max_member_bytes: int = 256 * MiB
    max_path_length: int = 255  # bytes of a member's UTF-8 path
    max_path_depth: int = 8  # folders in a member's path, the file included


def sniff(path: Path) -> str:
    """``zip``, ``tar``, ``tar.gz``, ``npy``, ``text`` or ``empty`` from the first bytes; anything else is an
    UploadError naming what it looks like."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "empty"
    if head.startswith(_ZIP):
        return "zip"
    if head.startswith(_GZIP):
        _check_gzip_header(path)
        try:
            with gzip.open(path, "rb") as g:
                block = g.read(512)
        except (OSError, EOFError, zlib.error) as exc:
            raise UploadError(f"a gzip file that cannot be decompressed ({exc})") from None
        if block[257:262] == b"ustar":
            return "tar.gz"
        raise UploadError("a gzip file that is not a tar archive: send a .tar.gz, a .zip or the plain file")
    if head[257:262] == b"ustar":
        return "tar"
    if head.startswith(_NPY):
        return "npy"
    for magic, what in _KNOWN.items():
        if head.startswith(magic):
            raise UploadError(f"the upload is {what}, not predictions: send a .zip, .tar or .tar.gz archive, a .npy "
                              "array or a text file")
    return "text"


def _check_gzip_header(path: Path) -> None:
    """Refuse a gzip header over ``_GZIP_HEADER`` bytes: its extra, name and comment fields may be as long as the
    sender likes, and :mod:`gzip` reads a name byte by byte (seconds of a thread for tens of megabytes)."""
    with open(path, "rb") as f:
        head = f.read(_GZIP_HEADER + 1)
    if len(head) < 10:
        raise UploadError("a gzip file cut short in its header")
    flags, at = head[3], 10
    if flags & 0x04:  # FEXTRA: a two-byte length, then that many bytes
        at += 2 + int.from_bytes(head[at:at + 2], "little")
    for flag in (0x08, 0x10):  # FNAME, FCOMMENT: zero-terminated
        if flags & flag:
            end = head.find(b"\0", at)
            if end < 0:
                at = len(head) + 1
                break
            at = end + 1
    if at > _GZIP_HEADER:
        raise UploadError(f"a gzip header over {_GZIP_HEADER} bytes (its extra, file name or comment field): "
                          "not an archive a tool writes")


def extract(archive_path: str | Path, dest: str | Path, limits: Limits = Limits(), *,
            plain_name: str = "predictions.txt") -> list[Path]:
    """Unpack ``archive_path`` into the folder ``dest`` (made here; it must not exist yet) and return the files
    written. A plain text file is copied as ``dest/plain_name`` (its suffix is what the reader keys on: ``.csv``
    for landmarks), a ``.npy`` array as ``plain_name`` with the suffix ``.npy``. Raises :class:`UploadError`."""
    archive_path, dest = Path(archive_path), Path(dest)
    dest.mkdir(parents=True)
    kind = sniff(archive_path)
    if kind == "empty":
        raise UploadError("the upload is empty")
    if kind == "zip":
        return _extract_zip(archive_path, dest, limits)
    if kind in ("tar", "tar.gz"):
        return _extract_tar(archive_path, dest, limits, kind == "tar.gz")
    target = dest / (Path(plain_name).with_suffix(".npy").name if kind == "npy" else Path(plain_name).name)
    with open(archive_path, "rb") as source, _create(target) as out:
        decoder = codecs.getincrementaldecoder("utf-8")() if kind == "text" else None
        written = 0
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > limits.max_member_bytes:
                raise UploadError(f"the file is over {limits.max_member_bytes} bytes")
            if decoder is not None:
                _check_text(decoder, chunk, written)
            out.write(chunk)
        if decoder is not None:
            _check_text(decoder, b"", written, final=True)
    return [target]


def _check_text(decoder, chunk: bytes, offset: int, final: bool = False) -> None:
    if b"\x00" in chunk:
        raise UploadError("the upload is binary (a NUL byte), not a zip, tar or tar.gz archive, a .npy array or a "
                          "UTF-8 text file")
    try:
        decoder.decode(chunk, final)
    except UnicodeDecodeError as exc:
        raise UploadError(f"the upload is neither an archive nor UTF-8 text (byte {offset - len(chunk) + exc.start}: "
                          f"{exc.reason})") from None


def member_path(name: str, limits: Limits) -> tuple[str, ...]:
    """The checked parts of an archive member's path (``.`` and empty parts dropped); UploadError naming it."""
    shown = repr(name)
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):  # tarfile's surrogateescape of bytes that are not UTF-8
        raise UploadError(f"archive member {shown}: its name is not valid UTF-8")
    if _CONTROL.search(name):
        raise UploadError(f"archive member {shown}: control characters in its name")
    if "\\" in name:
        raise UploadError(f"archive member {shown}: a backslash in its name (a Windows path?): use '/'")
    if name.startswith("/") or _DRIVE.match(name):
        raise UploadError(f"archive member {shown}: an absolute path")
    if len(name.encode("utf-8")) > limits.max_path_length:
        raise UploadError(f"archive member {shown[:80]}…: a path over {limits.max_path_length} bytes")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UploadError(f"archive member {shown}: a '..' component (it would leave the upload's folder)")
    if not parts:
        raise UploadError(f"archive member {shown}: an empty name")
    if len(parts) > limits.max_path_depth:
        raise UploadError(f"archive member {shown}: {len(parts)} levels deep, over {limits.max_path_depth}")
    return parts


class _Budget:
    """Members and bytes written so far, against the limits; the error names the member that crossed one."""

    def __init__(self, limits: Limits):
        self.limits, self.members, self.total = limits, 0, 0
        self.seen: dict[tuple[str, ...], bool] = {}  # path -> is a folder
        self.files: list[Path] = []

    def member(self, name: str, parts: tuple[str, ...], is_dir: bool) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise UploadError(f"archive member {name!r}: over {self.limits.max_members} members")
        if parts in self.seen and not (is_dir and self.seen[parts]):
            raise UploadError(f"archive member {name!r}: a second member of the same name")
        for k in range(1, len(parts)):  # a file may not also be a folder on the way to another member
            if self.seen.get(parts[:k]) is False:
                raise UploadError(f"archive member {name!r}: {'/'.join(parts[:k])!r} is a file in this archive")
            self.seen[parts[:k]] = True
        if not is_dir and self.seen.get(parts) is True:
            raise UploadError(f"archive member {name!r}: a folder of that name is also in this archive")
        self.seen[parts] = is_dir

    def copy(self, name: str, source: IO[bytes], target: Path) -> None:
        written = 0
        with _create(target) as out:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                self.total += len(chunk)
                if written > self.limits.max_member_bytes:
                    raise UploadError(f"archive member {name!r}: expands past {self.limits.max_member_bytes} bytes")
                if self.total > self.limits.max_total_bytes:
                    raise UploadError(f"archive member {name!r}: the archive expands past "
                                      f"{self.limits.max_total_bytes} bytes")
                out.write(chunk)
        self.files.append(target)


def _create(path: Path) -> BinaryIO:
    """A new file that was not there and is not reached through a link."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    return os.fdopen(fd, "wb")


def _zip_entries(path: Path, most: int) -> int | None:
    """How many members the zip's central directory holds, counted by walking its headers (stopping past
    ``most``), before zipfile builds an object per member: neither a lying count in the end record nor a
    directory of millions of tiny entries gets that far. None when the end record or a header is not where it
    should be."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 65557))
        tail = f.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return None
        cd_size, cd_offset = struct.unpack("<II", tail[at + 12:at + 20])
        locator = at - 20
        if 0xFFFFFFFF in (cd_size, cd_offset) and locator >= 0 and tail[locator:locator + 4] == b"PK\x06\x07":
            f.seek(struct.unpack("<Q", tail[locator + 8:locator + 16])[0])
            record = f.read(56)
            if record[:4] != b"PK\x06\x06" or len(record) < 56:
                return None
            cd_size, cd_offset = struct.unpack("<QQ", record[40:56])
        f.seek(cd_offset)
        count, walked = 0, 0
        while walked < cd_size and count <= most:
            header = f.read(46)
            if len(header) < 46 or header[:4] != b"PK\x01\x02":
                return None
            name, extra, comment = struct.unpack("<HHH", header[28:34])
            f.seek(name + extra + comment, os.SEEK_CUR)
            walked += 46 + name + extra + comment
            count += 1
    return count


def _zip_name(info: zipfile.ZipInfo) -> str:
    """The member's name as UTF-8: zipfile reads a name without the UTF-8 flag as cp437, which any bytes are;
    many tools write UTF-8 without the flag, so such a name is taken as UTF-8 when its bytes are, else refused."""
    if info.flag_bits & 0x800:
        return info.filename
    raw = info.orig_filename.encode("cp437")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UploadError(f"archive member {raw!r}: its name is not valid UTF-8") from None


def _extract_zip(path: Path, dest: Path, limits: Limits) -> list[Path]:
    counted = _zip_entries(path, limits.max_members)
    if counted is None:
        raise UploadError("a damaged zip: its central directory is not where its end record says")
    if counted > limits.max_members:
        raise UploadError(f"the zip holds over {limits.max_members} members")
    budget = _Budget(limits)
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = _zip_name(info)
                parts = member_path(name, limits)
                is_dir = name.endswith("/")
                budget.member(name, parts, is_dir)
                # the Unix file type, when the writer set one (many write permission bits alone)
                kind = stat.S_IFMT(info.external_attr >> 16)
                if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                    what = "a symbolic link" if kind == stat.S_IFLNK else "a device, fifo or other special file"
                    raise UploadError(f"archive member {name!r}: {what}")
                if info.flag_bits & 0x1:
                    raise UploadError(f"archive member {name!r}: encrypted")
                if _ignored(parts):
                    continue
                if is_dir:
                    dest.joinpath(*parts).mkdir(parents=True, exist_ok=True)
                    continue
                with archive.open(info) as source:
                    budget.copy(name, source, dest.joinpath(*parts))
    except UploadError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError) as exc:
        raise UploadError(f"a damaged or unsupported zip ({exc})") from None
    return budget.files


class _Capped:
    """A read-only stream that refuses to give more than ``cap`` bytes in all (a tar's decompressed size)."""

    def __init__(self, raw: IO[bytes], cap: int):
        self.raw, self.cap, self.read_bytes = raw, cap, 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.read_bytes += len(data)
        if self.read_bytes > self.cap:
            raise UploadError(f"the archive expands past {self.cap} bytes")
        return data


def _extract_tar(path: Path, dest: Path, limits: Limits, gzipped: bool) -> list[Path]:
    budget = _Budget(limits)
    # headers (512 bytes, more for pax and long names) count towards the cap with the data
    cap = limits.max_total_bytes + 4096 * (limits.max_members + 1)
    try:
        with open(path, "rb") as raw:
            stream: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw  # type: ignore[assignment]
            # stream mode: members are read in order, nothing is seeked, and names keep undecodable bytes as
            # surrogates (refused by member_path)
            with tarfile.open(fileobj=_Capped(stream, cap), mode="r|") as archive:  # type: ignore[call-overload]
                for member in archive:
                    name = member.name
                    parts = member_path(name, limits)
                    budget.member(name, parts, member.isdir())
                    if member.issym() or member.islnk():
                        kind = "a symbolic link" if member.issym() else "a hard link"
                        raise UploadError(f"archive member {name!r}: {kind} (to {member.linkname!r})")
                    if not (member.isreg() or member.isdir()):
                        raise UploadError(f"archive member {name!r}: a device, fifo or other special file")
                    if member.size > limits.max_member_bytes:
                        raise UploadError(f"archive member {name!r}: {member.size} bytes, over "
                                          f"{limits.max_member_bytes}")
                    if _ignored(parts):
                        continue
                    if member.isdir():
                        dest.joinpath(*parts).mkdir(parents=True, exist_ok=True)
                        continue
                    source = archive.extractfile(member)
                    assert source is not None  # a regular file
                    budget.copy(name, source, dest.joinpath(*parts))
    except UploadError:
        raise
    except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
        raise UploadError(f"a damaged tar archive ({exc})") from None
    return budget.files
