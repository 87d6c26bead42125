"""``python -m arlm.runtime.consolidate SOURCE TARGET``: any checkpoint as one ``.ckpt`` file.

SOURCE is whatever :func:`arlm.checkpoints.read.read_checkpoint` reads, typically a sharded
checkpoint directory (``trainer_strategy=fsdp2``'s ``last.ckpt/``, or xlm-core's
``trainer_strategy=fsdp``), consolidated on the CPU in this process (no GPU, no process group).
TARGET receives the single-file checkpoint a one-process run writes (weights under ``model.``,
position-keyed optimizer states, EMA shadows, Lightning's entries), written atomically; an
existing TARGET is refused, never overwritten.
"""

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import torch

from arlm.checkpoints.read import CheckpointError, read_checkpoint
from arlm.runtime.atomic_files import AtomicWriteError, write_file_atomically


def consolidate(source: Path, target: Path) -> None:
    """Write the checkpoint ``source`` holds to the new file ``target``.

    Raises:
        CheckpointError: ``source`` cannot be read.
        FileExistsError: ``target`` exists.
        AtomicWriteError: ``target`` cannot be written (nothing is left behind).
    """
    if target.exists():
        raise FileExistsError(f"{target} exists; consolidating writes a new file only. Fix: name another target")
    contents = read_checkpoint(source).contents
    write_file_atomically(target, lambda handle: torch.save(contents, handle))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m arlm.runtime.consolidate", description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a checkpoint: a sharded directory (last.ckpt/) or a file")
    parser.add_argument("target", type=Path, help="the single .ckpt file to write")
    args = parser.parse_args(argv)
    try:
        consolidate(args.source, args.target)
    except (CheckpointError, FileExistsError, AtomicWriteError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{args.source} -> {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
