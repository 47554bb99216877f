"""Read W&B's run files (`<run>/wandb/*-<id>/run-<id>.wandb`) back.

wandb 0.31 writes them from its Go core and ships no Python reader of its own (the old
`wandb.sdk.internal.datastore` is gone). The format is LevelDB's log: a 7-byte header
(`:W&B`, magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each with a 7-byte header
(CRC-32 of type + data, length, type: full / first / middle / last) carrying one serialised
`wandb_internal_pb2.Record`, wandb's own protobuf class. The tracker reads them on resume to
know which rows an earlier process already wrote; the tests read them to check a run.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Iterator

_MAGIC = b":W&B"
_BLOCK = 32768
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def raw_records(path: Path) -> Iterator[bytes]:
    """Each complete record of a run file; stops at the first torn or damaged chunk (a process
    killed mid-write leaves one), so what comes back is what was durably written."""
    data = Path(path).read_bytes()
    if data[:4] != _MAGIC:
        return
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # a block's tail too short for a chunk header is zero padding
            pos += left
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        if len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != checksum:
            return
        pos += _HEADER + length
        if kind in (_FULL, _FIRST):
            pending = chunk
        elif kind in (_MIDDLE, _LAST):
            pending += chunk
        else:
            return
        if kind in (_FULL, _LAST):
            yield pending


def records(path: Path) -> Iterator[object]:
    """The run file's records as wandb's protobuf `Record` objects."""
    from wandb.proto import wandb_internal_pb2

    for raw in raw_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        yield record


def history_rows(path: Path) -> list[dict]:
    """The history rows of one run file, each {key: value} with W&B's `_step` among them."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def exit_code(path: Path) -> int | None:
    """The exit code the run file's process finished with; None when it never finished (killed)."""
    codes = [r.exit.exit_code for r in records(path) if r.WhichOneof("record_type") == "exit"]
    return codes[-1] if codes else None


def run_files(wandb_root: Path, run_id: str) -> list[Path]:
    """Every run file of `run_id` under `<run>/wandb/`, oldest first (one per process that logged)."""
    def started(path: Path) -> str:  # <offline-run|run>-YYYYMMDD_HHMMSS-<id>[-suffix]
        return path.parent.name.split("run-", 1)[-1]

    return sorted(Path(wandb_root).glob(f"*-{run_id}*/run-{run_id}.wandb"), key=started)
