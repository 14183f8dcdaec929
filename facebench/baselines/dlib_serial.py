"""Read files in dlib's serialization format with numpy (no dlib needed).

dlib writes every integer as a control byte (low nibble: how many bytes
follow; bit 7: negative) and then the magnitude's bytes, least significant
first. A float is two such integers, a mantissa and a binary exponent
(value = mantissa * 2**exponent). A ``std::vector`` is its length and then
its items; a ``matrix`` is its row and column counts (written negated by
current dlib) and then its values row by row.

A shape-predictor file holds about 33 million of these variable-length
numbers. Where one number starts depends on the lengths of all before it,
so reading them one by one in Python takes half a minute. :meth:`Reader.many`
instead walks all chunks of a block in lockstep (see ``_starts``), in about
a thousand vectorised steps whatever the block's length.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facebench.errors import FacebenchError

CHUNK = 512  # bytes walked in lockstep per chunk by Reader.many


class DlibFormatError(FacebenchError, ValueError):
    """The file is not what the reader expected; the message names it and the byte offset."""


class Reader:
    """A cursor over the bytes of one dlib-serialized file."""

    def __init__(self, data: bytes | np.ndarray, source: str = "<bytes>"):
        self.buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
        self.pos = 0
        self.source = source

    @classmethod
    def open(cls, path: str | Path) -> Reader:
        return cls(Path(path).read_bytes(), str(path))

    def error(self, message: str) -> DlibFormatError:
        return DlibFormatError(f"{self.source}: {message} (at byte {self.pos})")

    def read_int(self) -> int:
        """One integer."""
        if self.pos >= len(self.buf):
            raise self.error("file ends where an integer was expected")
        control = int(self.buf[self.pos])
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise self.error(f"bad integer control byte {control:#04x}")
        end = self.pos + 1 + size
        if end > len(self.buf):
            raise self.error("file ends inside an integer")
        value = int.from_bytes(self.buf[self.pos + 1:end].tobytes(), "little")
        self.pos = end
        return -value if control & 0x80 else value

    def many(self, count: int) -> np.ndarray:
        """The next ``count`` integers as int64, read in one vectorised pass."""
        if count == 0:
            return np.zeros(0, np.int64)
        # most numbers take 1-4 bytes; look further only if the run does not fit
        for bytes_per_number in (4, 9):
            found = self._starts(count, min(len(self.buf), self.pos + bytes_per_number * count))
            if found is not None:
                break
        else:
            raise self.error(f"file ends inside a run of {count} integers")
        block, starts, end = found
        control = block[starts]
        size = (control & 0x0F).astype(np.int64)
        if np.any(size > 8) or np.any(control & 0x70):
            raise self.error("bad integer control byte in a run of integers")
        magnitude = np.zeros(count, np.uint64)
        padded = np.append(block, np.zeros(8, np.uint8))
        for j in range(int(size.max())):
            digit = np.where(size > j, padded[starts + 1 + j], 0).astype(np.uint64)
            magnitude |= digit << np.uint64(8 * j)
        self.pos += end
        magnitude = magnitude.astype(np.int64)
        return np.where(control & 0x80, -magnitude, magnitude)

    def _starts(self, count: int, stop: int):
        """Offsets (from ``pos``) of the next ``count`` numbers, if they end before ``stop``.

        The block is cut into chunks. A number can start anywhere in the first
        9 bytes of a chunk, so each chunk is walked from all 9 entry points at
        once (vectorised over chunks), which says where each walk leaves the
        chunk; chaining those exits from chunk 0 gives each chunk's true
        entry, and a second walk from the true entries lists the starts.
        """
        block = self.buf[self.pos:stop]
        length = len(block)
        width = np.empty(length + 1, np.int32)  # bytes of a number starting here
        np.add(block & 0x0F, 1, out=width[:length], dtype=np.int32)
        width[length] = 1  # index ``length`` (past the end) steps nowhere useful
        base = np.arange(0, length, CHUNK, dtype=np.int32)
        ends = np.minimum(base + CHUNK, length)

        def walk(pos, end, record=None):
            active = pos < end
            while active.any():
                if record is not None:
                    record.append(np.where(active, pos, -1))
                pos = pos + width[np.minimum(pos, length)] * active
                active = pos < end
            return pos

        exits = walk(base[:, None] + np.arange(9), ends[:, None]) - ends[:, None]
        entry = np.zeros(len(base), np.int32)
        for c in range(1, len(base)):
            entry[c] = exits[c - 1, min(int(entry[c - 1]), 8)]
        steps: list[np.ndarray] = []
        walk(base + entry, ends, steps)
        starts = np.stack(steps, axis=1).ravel() if steps else np.zeros(0, np.int64)
        starts = starts[starts >= 0]
        if len(starts) < count or starts[count - 1] + width[starts[count - 1]] > length:
            return None
        starts = starts[:count]
        return block, starts, int(starts[-1] + width[starts[-1]])

    def floats(self, count: int) -> np.ndarray:
        """The next ``count`` floats (float32, exact: dlib stores 24-bit mantissas)."""
        pairs = self.many(2 * count).reshape(count, 2)
        return np.ldexp(pairs[:, 0].astype(np.float64), pairs[:, 1]).astype(np.float32)

    def matrix_shape(self) -> tuple[int, int]:
        rows, cols = abs(self.read_int()), abs(self.read_int())
        return rows, cols

    def expect(self, value: int, what: str) -> None:
        found = self.read_int()
        if found != value:
            raise self.error(f"expected {what} = {value}, found {found}")

    def at_end(self) -> bool:
        return self.pos == len(self.buf)
