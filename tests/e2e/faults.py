"""Fault injection for the end-to-end tests: a real tmpfs, and a checkpoint that carries code."""

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
import torch


@contextlib.contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (``mount -o size=``) on ``directory``; skip the test if impossible."""
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def resize_tmpfs(directory: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(directory)], check=True)


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: a file appears if the loader executes code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_crafted_checkpoint(source: Path, target: Path, marker: Path) -> Path:
    """A copy of the valid checkpoint ``source`` with a code-running object added, saved as ``target``."""
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    checkpoint["payload"] = _Payload(marker)
    torch.save(checkpoint, target)
    return target
