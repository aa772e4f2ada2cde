"""The ``state`` file: the durable term and vote, in two slots overwritten in turn.

The file is exactly two slots of ``SLOT_SIZE`` bytes. Each slot starts with a
40-byte record; the rest of the slot is zero padding, written once::

    magic      8 bytes  b"RAFTPYHS"
    seq        u64      sequence number: one more on every write
    term       u64
    has_vote   u32      1 if a vote is recorded, else 0
    voted_for  i64      the vote (0 when there is none)
    crc        u32      CRC32C of the 36 bytes above

Record ``seq`` lives in slot ``seq % 2``. A write puts the next record in the
other slot from the current one with one ``pwrite`` and one ``fdatasync``; the
file never changes size, so the sync carries no file metadata. Reading picks the
valid record with the highest ``seq``.

Why a crash cannot lose an acknowledged hard state: the slot being written holds
the *older* of the two records, and the newer one (the current hard state) sits
in the other slot, which no write touches. A write cut short can therefore only
damage the older record, and reading falls back to the newer one, which is the
last hard state a ``save()`` returned for. Slots are a page (4 KiB) apart so
that they never share a disk sector (on 4Kn and 512e disks too) nor a page of
the page cache: writing one slot never makes the kernel write the other back.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass

from raftpy.errors import CorruptLog, StorageError
from raftpy.ready import HardState
from raftpy.storage.metadata import TMP_SUFFIX
from raftpy.storage.records import crc32c

logger = logging.getLogger(__name__)

STATE_MAGIC = b"RAFTPYHS"
SLOT_SIZE = 4096
STATE_FILE_SIZE = 2 * SLOT_SIZE
_BODY = struct.Struct("<8sQQIq")
_CRC = struct.Struct("<I")
RECORD_SIZE = _BODY.size + _CRC.size
_datasync = getattr(os, "fdatasync", os.fsync)


@dataclass(frozen=True, slots=True)
class Slot:
    """What one slot holds: a record, or why it holds none (``error``)."""

    offset: int
    seq: int = -1
    hard_state: HardState | None = None
    error: str | None = None
    blank: bool = False  # all zeros: never written (the second slot of a new file)


def encode_record(seq: int, hard_state: HardState) -> bytes:
    """The record of ``hard_state`` with sequence number ``seq``."""
    vote = hard_state.voted_for
    try:
        body = _BODY.pack(STATE_MAGIC, seq, hard_state.term, vote is not None, vote or 0)
    except struct.error:
        raise StorageError(f"hard state {hard_state} does not fit the state file "
                           f"(term u64, vote i64)") from None
    return body + _CRC.pack(crc32c(body))


def decode_slot(path: str, buf: bytes, index: int) -> Slot:
    """The record in slot ``index`` of ``buf``, the contents of the file ``path``."""
    offset = index * SLOT_SIZE
    raw = buf[offset:offset + RECORD_SIZE]
    if raw.count(0) == RECORD_SIZE:
        return Slot(offset, error="slot never written", blank=True)
    magic, seq, term, has_vote, vote = _BODY.unpack_from(raw)
    (crc,) = _CRC.unpack_from(raw, _BODY.size)
    if crc32c(raw[:_BODY.size]) != crc:
        return Slot(offset, error="record checksum mismatch")
    if magic != STATE_MAGIC or has_vote not in (0, 1) or (not has_vote and vote):
        # Checksummed yet malformed: written by a bug, not torn by a crash.
        raise CorruptLog(path, offset, "malformed state record")
    if seq % 2 != index:
        raise CorruptLog(path, offset, f"record {seq} belongs in slot {seq % 2}, found in {index}")
    return Slot(offset, seq, HardState(term, vote if has_vote else None))


def read_slots(path: str) -> tuple[Slot, Slot]:
    """Both slots of the state file at ``path`` (CorruptLog if it has the wrong size
    or a slot holds a checksummed record that makes no sense)."""
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) != STATE_FILE_SIZE:
        raise CorruptLog(path, min(len(buf), STATE_FILE_SIZE),
                         f"state file is {len(buf)} bytes, expected {STATE_FILE_SIZE}")
    return decode_slot(path, buf, 0), decode_slot(path, buf, 1)


class StateFile:
    """The open state file: the current hard state and the slot it is in."""

    __slots__ = ("_fd", "hard_state", "path", "seq")

    def __init__(self, path: str, seq: int, hard_state: HardState) -> None:
        self.path = path
        self.seq = seq
        self.hard_state = hard_state
        self._fd = os.open(path, os.O_RDWR)

    @staticmethod
    def create(path: str, *, sync: bool) -> None:
        """Write a new state file holding term 0 and no vote, atomically (temporary
        file, fsync, rename; the caller fsyncs the directory). The second slot is
        left zero: it is written, in place, by the first :meth:`write`."""
        data = encode_record(0, HardState(0, None)).ljust(STATE_FILE_SIZE, b"\0")
        tmp = path + TMP_SUFFIX
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)  # 8 KiB to a new regular file: written whole
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    @classmethod
    def open(cls, path: str) -> StateFile:
        """Open the state file, picking the valid record with the highest ``seq``;
        CorruptLog naming the file if neither slot holds one."""
        slots = read_slots(path)
        valid = [s for s in slots if s.error is None]
        if not valid:
            details = "; ".join(f"offset {s.offset}: {s.error}" for s in slots)
            raise CorruptLog(path, 0, f"no valid slot ({details})")
        best = max(valid, key=lambda s: s.seq)
        for slot in slots:
            if slot.error is not None and not slot.blank:
                # Only the slot being written when the machine stopped can be torn,
                # and it held the older record: nothing acknowledged is lost.
                logger.warning("%s: slot at offset %d is damaged (%s), probably a write "
                               "cut short; using record %d", path, slot.offset, slot.error,
                               best.seq)
        assert best.hard_state is not None
        return cls(path, best.seq, best.hard_state)

    def write(self, hard_state: HardState, *, sync: bool) -> None:
        """Make ``hard_state`` the current one: one pwrite into the slot not holding
        the current record, and (if ``sync``) one fdatasync."""
        seq = self.seq + 1
        record = encode_record(seq, hard_state)
        offset = (seq % 2) * SLOT_SIZE
        try:
            if os.pwrite(self._fd, record, offset) != len(record):
                raise OSError(f"short write to {self.path}")
            if sync:
                _datasync(self._fd)
        except OSError:
            # Blank the slot (best effort) so that a reopen reads the current record,
            # whatever part of the failed write the page cache kept.
            try:
                os.pwrite(self._fd, bytes(RECORD_SIZE), offset)
            except OSError:
                logger.exception("cannot blank slot %d of %s", seq % 2, self.path)
            raise
        self.seq = seq
        self.hard_state = hard_state

    def close(self) -> None:
        """Close the file descriptor (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
