"""Names of the files a training run leaves in its output directory, and how they are written.

Here rather than in the module that writes each one, so that training, detection and the Hub code can all read
them without importing one another.
"""

import json
import os

from .errors import UsageError

TRAINING_LOG = "training_log.json"  # `charlstm train`: the run's settings, history and held-out figures
TRAINING_CURVES = "training_curves.png"  # `charlstm train`: loss and held-out bpc against steps
DETECTOR_LOG = "detector_log.json"  # `charlstm detector train / calibrate`: the detector's run and test figures
TRAINER_STATE = "trainer_state.json"  # written last into a checkpoint: its presence marks a complete checkpoint
# The LSTM state each process's rows ended the checkpoint's last block with (--carry-state), one file per process.
CARRIED_STATE = "carried_state_{process}.safetensors"


def write_json(path: str | os.PathLike, value) -> None:
    """Atomic: a reader never sees half a file."""
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    os.replace(temporary, path)


def check_output_file(path: str | os.PathLike, option: str) -> None:
    """A file a command will write: refused now if it names a directory or lies in a folder that does not exist."""
    if os.path.isdir(path):
        raise UsageError(f"{option} {path} is a directory: give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {path}: the folder {folder} does not exist")
