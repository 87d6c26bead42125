"""The history rows of an offline wandb run, read from its ``run-<id>.wandb`` transaction log.

wandb 0.31 ships no Python reader for offline runs (the run is written by the ``wandb-core``
service; ``wandb sync`` only uploads), so this reads the file's two public layers: LevelDB's log
framing (32 KiB blocks of records, each ``crc32 | length | kind | data``, kinds full / first /
middle / last, after wandb's 7-byte ``:W&B`` header) and the protocol buffer messages of
``wandb.proto.wandb_internal_pb2.Record``.
"""

import json
import struct
from pathlib import Path
from typing import Dict, Iterator, List

from wandb.proto import wandb_internal_pb2

HEADER = b":W&B"
HEADER_SIZE = 7
BLOCK_SIZE = 32768
RECORD_HEADER = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    """Every record of the transaction log ``path``, in order."""
    data = path.read_bytes()
    assert data.startswith(HEADER), f"{path} is not a wandb transaction log (starts {data[:7]!r})"
    position, pending = HEADER_SIZE, b""
    while position + RECORD_HEADER.size <= len(data):
        left_in_block = BLOCK_SIZE - position % BLOCK_SIZE
        if left_in_block < RECORD_HEADER.size:  # the block's tail is padding
            position += left_in_block
            continue
        _, length, kind = RECORD_HEADER.unpack_from(data, position)
        start = position + RECORD_HEADER.size
        position = start + length
        if kind not in (FULL, FIRST, MIDDLE, LAST):
            continue
        pending += data[start:position]
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def history(path: Path) -> List[Dict[str, object]]:
    """The ``wandb.log`` rows of the run: ``{metric: value}`` each, wandb's ``_step`` etc. included."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
    return rows
