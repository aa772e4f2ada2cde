"""Log segment files: ``log-<first index>.seg``, a header then framed records.

Header (24 bytes)::

    magic        8 bytes  b"RAFTPYLG"
    version      u32      1
    first_index  u64      index of the first record (also in the file name)
    crc          u32      CRC32C of the 20 bytes above

then records (:mod:`raftpy.storage.records`) holding consecutive entries. Only
the last segment is ever written; the others are sealed (fsynced before the next
one is created).
"""

from __future__ import annotations

import logging
import os
import re
import struct
from array import array
from collections.abc import Iterable

from raftpy.errors import CorruptLog
from raftpy.messages import Entry
from raftpy.storage.metadata import fsync_dir
from raftpy.storage.records import crc32c, decode_entry, scan

logger = logging.getLogger(__name__)

SEG_MAGIC = b"RAFTPYLG"
SEG_VERSION = 1
_HEAD = struct.Struct("<8sIQ")
_CRC = struct.Struct("<I")
SEG_HEADER_SIZE = _HEAD.size + _CRC.size
_NAME = re.compile(r"^log-(\d{20})\.seg$")
_datasync = getattr(os, "fdatasync", os.fsync)  # fdatasync also flushes the file size


def segment_name(first_index: int) -> str:
    """The file name of the segment starting at ``first_index`` (names sort by index)."""
    return f"log-{first_index:020d}.seg"


def segment_first_index(name: str) -> int | None:
    """The first index a segment file name stands for, or None if it is not one."""
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def _header(first_index: int) -> bytes:
    head = _HEAD.pack(SEG_MAGIC, SEG_VERSION, first_index)
    return head + _CRC.pack(crc32c(head))


class Segment:
    """One segment file: where each of its records starts, and its size.

    Only the offsets stay in memory (8 bytes per entry); entries are read back
    from the file when :meth:`read_entries` or :meth:`term_at` needs them.
    """

    __slots__ = ("_fd", "first_index", "offsets", "path", "size")

    def __init__(self, path: str, first_index: int, offsets: Iterable[int], size: int) -> None:
        self.path = path
        self.first_index = first_index
        self.offsets = array("Q", offsets)
        self.size = size
        self._fd: int | None = None

    @property
    def last_index(self) -> int:
        """Index of the last record (``first_index - 1`` when it holds none)."""
        return self.first_index + len(self.offsets) - 1

    @classmethod
    def new(cls, directory: str, first_index: int) -> Segment:
        """A segment not yet on disk: its file is created by the first :meth:`append`."""
        return cls(os.path.join(directory, segment_name(first_index)), first_index, [], 0)

    # ------------------------------------------------------------------ writing

    def append(self, records: list[bytes], *, sync: bool) -> None:
        """Write ``records`` at the end in one write and (if ``sync``) one fdatasync;
        a new segment also fsyncs its directory so that its name is durable."""
        created = self.size == 0
        data = b"".join(records)
        if created:
            data = _header(self.first_index) + data
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        fd = self._open()
        start = self.size
        try:
            written = 0
            while written < len(data):
                written += os.pwrite(fd, data[written:], start + written)
            if sync:
                _datasync(fd)
        except OSError:
            # Leave no half record behind for the next append to build on.
            try:
                os.ftruncate(fd, start)
            except OSError:
                logger.exception("cannot cut %s back to %d bytes", self.path, start)
            raise
        if created and sync:
            fsync_dir(os.path.dirname(self.path))
        pos = start + (SEG_HEADER_SIZE if created else 0)
        for record in records:
            self.offsets.append(pos)
            pos += len(record)
        self.size = pos

    def truncate_from(self, index: int, *, sync: bool) -> None:
        """Drop the records at ``index`` and after (``index`` must be held, and not
        the first: a segment cut to nothing is removed instead)."""
        cut = self.offsets[index - self.first_index]
        fd = self._open()
        os.ftruncate(fd, cut)
        if sync:
            os.fsync(fd)
        del self.offsets[index - self.first_index:]
        self.size = cut

    def remove(self) -> None:
        """Delete the file (the caller fsyncs the directory)."""
        self.close()
        os.unlink(self.path)

    def close(self) -> None:
        """Close the open file descriptor, if any."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR)
        return self._fd

    # ------------------------------------------------------------------ reading

    def read_entries(self, start: int) -> list[Entry]:
        """The held entries from index ``start`` on, checked again."""
        with open(self.path, "rb") as f:
            buf = f.read(self.size)
        found = scan(buf, SEG_HEADER_SIZE)
        if found.damage is not None:
            raise CorruptLog(self.path, found.damage.offset, found.damage.reason)
        if array("Q", found.offsets) != self.offsets:
            raise CorruptLog(self.path, found.end, "segment changed since it was opened")
        skip = max(start - self.first_index, 0)
        return [decode_entry(buf[lo:hi]) for lo, hi in found.payloads[skip:]]

    def term_at(self, index: int) -> int:
        """The term of the held entry at ``index``."""
        offset = self.offsets[index - self.first_index]
        end = (self.offsets[index - self.first_index + 1]
               if index < self.last_index else self.size)
        with open(self.path, "rb") as f:
            f.seek(offset)
            raw = f.read(end - offset)
        found = scan(raw, 0)
        if found.damage is not None or len(found.payloads) != 1:
            reason = found.damage.reason if found.damage else "record boundary moved"
            raise CorruptLog(self.path, offset, reason)
        lo, hi = found.payloads[0]
        return decode_entry(raw[lo:hi]).term


def recover(path: str, first_index: int, *, last: bool, sync: bool) -> Segment | None:
    """Check every record of a segment file and return it opened.

    In the ``last`` segment, damage that can be a torn write (a record cut short
    or failing its checksum, with no intact record after it) is cut off;
    a last segment left with no records is deleted (None). Any other damage
    raises :class:`CorruptLog` naming the file and offset.
    """
    with open(path, "rb") as f:
        buf = f.read()
    if last and (len(buf) < SEG_HEADER_SIZE or buf.count(0) == len(buf)):
        logger.warning("%s: removing a segment whose header was never completely written", path)
        _remove(path, sync=sync)
        return None
    _check_header(path, buf, first_index)
    found = scan(buf, SEG_HEADER_SIZE)
    damage = found.damage
    offsets = found.offsets
    for n, (lo, hi) in enumerate(found.payloads):
        try:
            entry = decode_entry(buf[lo:hi])
        except ValueError as exc:
            raise CorruptLog(path, offsets[n], str(exc)) from None
        if entry.index != first_index + n:
            raise CorruptLog(path, offsets[n],
                             f"record holds index {entry.index}, expected {first_index + n}")
    if damage is not None:
        if not (last and damage.maybe_torn):
            raise CorruptLog(path, damage.offset, damage.reason)
        logger.warning("%s: cutting a torn tail at offset %d (%s); %d bytes dropped",
                       path, damage.offset, damage.reason, len(buf) - damage.offset)
        with open(path, "r+b") as f:
            f.truncate(damage.offset)
            if sync:
                os.fsync(f.fileno())
    if not offsets:
        if not last:
            raise CorruptLog(path, SEG_HEADER_SIZE, "a segment before the last holds no records")
        _remove(path, sync=sync)
        return None
    return Segment(path, first_index, offsets, found.end)


def _check_header(path: str, buf: bytes, first_index: int) -> None:
    if len(buf) < SEG_HEADER_SIZE:
        raise CorruptLog(path, len(buf), "segment is shorter than its header")
    magic, version, found = _HEAD.unpack_from(buf)
    (crc,) = _CRC.unpack_from(buf, _HEAD.size)
    if crc32c(buf[:_HEAD.size]) != crc:
        raise CorruptLog(path, 0, "segment header checksum mismatch")
    if magic != SEG_MAGIC or version != SEG_VERSION:
        raise CorruptLog(path, 0, f"not a version {SEG_VERSION} segment ({magic!r}, {version})")
    if found != first_index:
        raise CorruptLog(path, 12, f"header says first index {found}, name says {first_index}")


def _remove(path: str, *, sync: bool) -> None:
    os.unlink(path)
    if sync:
        fsync_dir(os.path.dirname(path))
