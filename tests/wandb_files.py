"""Read what W&B wrote offline: the records of `<run dir>/wandb/offline-run-*/*.wandb` files.

wandb keeps no Python reader of its own files, so this parses their format: a 7-byte file header, then LevelDB
log blocks of 32 KiB, each record a 7-byte header (checksum, length, kind) and a piece of a protobuf `Record`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[pb.Record]:
    data = path.read_bytes()
    pos, pieces = HEADER, b""
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:  # a block's tail too short for a header is padding
            pos += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0:  # zero-filled rest of the last block
            break
        pieces += data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pieces)
            pieces = b""
            yield record


def offline_runs(run_dir: Path) -> list[Path]:
    """The `.wandb` file of every attempt logged into this run dir, oldest first."""
    return sorted((run_dir / "wandb").glob("offline-run-*/*.wandb"))


def history(run_dir: Path) -> list[dict[str, Any]]:
    """Every history row of every attempt, in order."""
    rows = []
    for path in offline_runs(run_dir):
        for record in records(path):
            if record.WhichOneof("record_type") == "history":
                rows.append(
                    {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
                )
    return rows


def run_info(path: Path) -> pb.RunRecord:
    """The run record (id, display name, group) of one attempt."""
    return next(r.run for r in records(path) if r.WhichOneof("record_type") == "run")


def config(path: Path) -> dict[str, Any]:
    """The config one attempt logged (hyperparameters), top-level keys merged in order."""
    merged: dict[str, Any] = {}
    for record in records(path):
        if record.WhichOneof("record_type") in ("config", "run"):
            updates = record.config.update if record.HasField("config") else record.run.config.update
            merged |= {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in updates}
    return merged
