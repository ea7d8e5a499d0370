"""A training run's output directory: which run it holds, which checkpoint to resume from, and when an earlier run
may be cleared away.

Nothing is deleted while the new run can still fail on its settings: `claim` only checks, and `clear_earlier_run`
runs once the data and the model are ready.
"""

import json
import os
import shutil
import sys

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..errors import UsageError
from ..runfiles import TRAINER_STATE, TRAINING_CURVES, TRAINING_LOG

# Files a finished or running training leaves in its output directory.
RUN_MARKERS = (TRAINING_LOG, TRAINING_CURVES, "config.json", "model.safetensors", TRAINER_STATE)


def claim(output: str, resume: bool, overwrite: bool) -> str | None:
    """Refuses to mix two runs in one directory; returns the checkpoint to resume from, if any."""
    if os.path.exists(output) and not os.path.isdir(output):
        raise UsageError(f"--output-dir {output!r} is a file")
    checkpoints = checkpoints_of(output)
    if resume:
        newest = last_complete_checkpoint(output)
        if newest is None:
            raise UsageError(f"nothing to resume in {output!r}: it holds no complete checkpoint")
        broken = [os.path.basename(path) for path in checkpoints if not is_complete(path)]
        if broken:
            print(f"charlstm train: note: resuming from {os.path.basename(newest)}; "
                  f"{', '.join(broken)} {'is' if len(broken) == 1 else 'are'} incomplete and left as found",
                  file=sys.stderr)
        return newest
    if holds_run(output) and not overwrite:
        raise UsageError(f"--output-dir {output!r} holds another run; pass --resume to continue it or --overwrite "
                         "to start over")
    return None


def holds_run(output: str) -> bool:
    return bool(checkpoints_of(output)) or any(os.path.exists(os.path.join(output, name)) for name in RUN_MARKERS)


def clear_earlier_run(output: str) -> None:
    """Deletes the checkpoints and files of the run `output` held (--overwrite), in the main process only."""
    if not is_main_process():
        return
    for path in checkpoints_of(output):
        shutil.rmtree(path)
    for name in RUN_MARKERS:
        if os.path.exists(os.path.join(output, name)):
            os.remove(os.path.join(output, name))


def checkpoints_of(output: str) -> list[str]:
    """Checkpoint directories in step order."""
    if not os.path.isdir(output):
        return []
    paths = [os.path.join(output, name) for name in os.listdir(output)]
    return sorted((path for path in paths if os.path.isdir(path) and checkpoint_step(path) is not None),
                  key=checkpoint_step)


def last_complete_checkpoint(folder: str) -> str | None:
    """The newest complete checkpoint in `folder` (None if it holds none)."""
    complete = [path for path in checkpoints_of(folder) if is_complete(path)]
    return complete[-1] if complete else None


def is_complete(checkpoint: str) -> bool:
    """The Trainer writes the trainer state last: a checkpoint whose state is missing or unreadable was cut off."""
    try:
        with open(os.path.join(checkpoint, TRAINER_STATE), encoding="utf-8") as handle:
            return isinstance(json.load(handle), dict)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def checkpoint_step(path: str) -> int | None:
    name = os.path.basename(path)
    step = name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")
    return int(step) if step != name and step.isdigit() else None


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
