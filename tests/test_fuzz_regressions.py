"""Inputs the coverage-guided fuzzer (``make fuzz``, fuzz/targets.py) found, kept as
regression tests: bad bytes may only raise the decoder's documented error."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import msgpack
import pytest

from raftpy.errors import CorruptLog
from raftpy.storage import records, segments


def test_an_entry_whose_kind_is_a_list_is_a_value_error_not_a_type_error() -> None:
    # fuzz target "records", 2026-12-03: `kind not in _KINDS` hashed a list.
    crash = base64.b64decode("lF03lF034eF7")
    with pytest.raises(ValueError, match="kind"):
        records.decode_entry(crash)


def test_a_checksummed_record_with_a_malformed_kind_is_corruption(tmp_path: Path) -> None:
    payload = msgpack.packb([1, 1, [1], b"x"], use_bin_type=True)
    head = struct.pack("<II", len(payload), records.crc32c(payload))
    record = head + struct.pack("<I", records.crc32c(head)) + payload
    path = tmp_path / segments.segment_name(1)
    path.write_bytes(segments._header(1) + record)
    with pytest.raises(CorruptLog) as failed:
        segments.recover(str(path), 1, last=True, sync=False)
    assert failed.value.offset == segments.SEG_HEADER_SIZE
