"""Checkpoints a killed run cannot fake: a ``checkpoint-N`` folder counts only once it is marked complete.

The Trainer writes a checkpoint as several files in turn (adapter, optimizer, scheduler, RNG states, trainer
state); a run killed in between leaves a folder that looks like a checkpoint but cannot be resumed from (or,
worse, resumes with a mismatched optimizer). :class:`CompleteCheckpoints` (a mixin for the trainer) writes a
marker file last, after every process has finished writing, by an atomic rename; resuming takes the newest
marked folder and deletes unmarked ones, so nothing is lost but the steps since the last complete save.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Optional

MARKER = "rlpc-checkpoint-complete"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(folder: Path) -> Optional[int]:
    m = _CHECKPOINT.match(Path(folder).name)
    return int(m.group(1)) if m else None


def is_complete(folder: Path) -> bool:
    folder = Path(folder)
    return (folder / MARKER).is_file() and (folder / "trainer_state.json").is_file()


def mark_complete(folder: Path) -> None:
    folder = Path(folder)
    tmp = folder / (MARKER + ".tmp")
    with open(tmp, "w") as fh:
        fh.write("complete\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, folder / MARKER)


def checkpoints(out: Path) -> list[Path]:
    """Every ``checkpoint-N`` folder in ``out``, oldest step first."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [p for p in out.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def latest_complete(out: Path) -> Optional[Path]:
    complete = [p for p in checkpoints(out) if is_complete(p)]
    return complete[-1] if complete else None


def remove_incomplete(out: Path) -> list[Path]:
    """Delete the checkpoint folders a killed run left half-written; returns what was removed."""
    removed = []
    for p in checkpoints(out):
        if not is_complete(p):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def rotate(out: Path, keep: Optional[int]) -> list[Path]:
    """Keep the newest ``keep`` complete checkpoints (the Trainer's own rotation runs before our marker is
    written, so it could delete the last complete checkpoint while the new one is still unmarked)."""
    if not keep:
        return []
    complete = [p for p in checkpoints(out) if is_complete(p)]
    removed = complete[:-keep] if len(complete) > keep else []
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


__all__ = ["MARKER", "checkpoint_step", "checkpoints", "is_complete", "latest_complete", "mark_complete",
           "remove_incomplete", "rotate"]
