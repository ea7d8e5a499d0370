"""Names of the files a training run leaves in its output directory, and how they are written.

Here rather than in the module that writes each one, so that training, detection and the Hub code can all read
them without importing one another.
"""

import contextlib
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
    """`value` as indented JSON in `path`, by `write_text`."""
    write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """
    Atomic: a reader never sees half a file, and a write that fails (a full disk, a read-only folder) leaves no
    file behind and is a UsageError naming the file. A device or pipe (`/dev/stdout`) is written straight to: it
    cannot be replaced, only written.
    """
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        targets = [path]
    else:
        targets = [f"{path}.tmp", path]
    try:
        with open(targets[0], "w", encoding="utf-8") as handle:
            handle.write(text)
        if len(targets) == 2:
            os.replace(*targets)
    except OSError as error:
        if len(targets) == 2:
            with contextlib.suppress(OSError):
                os.remove(targets[0])
        raise UsageError(f"could not write {path}: {error.strerror or error}") from None


def check_output_file(path: str | os.PathLike, option: str) -> None:
    """A file a command will write: refused now if it names a directory, or lies in a folder that does not exist
    or that this process cannot write to, rather than after minutes of work."""
    if os.path.isdir(path):
        raise UsageError(f"{option} {path} is a directory: give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {path}: the folder {folder} does not exist")
    if os.path.exists(path) and not os.path.isfile(path):
        writable = os.access(path, os.W_OK)  # a device or pipe is written straight to
    else:
        writable = os.access(folder, os.W_OK) and (not os.path.exists(path) or os.access(path, os.W_OK))
    if not writable:
        raise UsageError(f"{option} {path}: cannot write there (permission denied or a read-only file system)")
