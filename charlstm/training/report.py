"""What a finished training run leaves for people: its log (settings, history, held-out figures) and its curves.

The model card and `charlstm eval` read the log; `training_log_of` is how every reader finds it.
"""

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from ..errors import UsageError
from ..loading import display_name
from ..runfiles import TRAINING_LOG
from .config import TrainConfig
from .rundir import checkpoint_step
from .trainer import LN2


def training_log(config: TrainConfig, run, trainer, result, final: dict, seconds: float) -> dict:
    """
    The run's log: every setting it was given (`config`), what it became (the model's shape, the label column
    found), and what it measured. `run` is the `PreparedRun`, `result` what `trainer.train` returned, `final` the
    held-out figures of the saved model.
    """
    state, model = trainer.state, run.model
    world = trainer.args.world_size
    characters_per_step = config.batch_size * world * config.gradient_accumulation_steps * config.seq_len
    resumed_from = checkpoint_step(run.checkpoint) if run.checkpoint else None
    characters_this_session = (state.global_step - (resumed_from or 0)) * characters_per_step
    runtime = result.metrics.get("train_runtime") or 0.0
    return {
        **asdict(config),
        "label_column": run.reviews.label_column,
        "conditioned_on_stars": bool(config.condition_on_stars),
        "hidden_sizes": list(model.config.hidden_sizes),
        "embedding_dim": model.config.embedding_dim,
        "num_parameters": model.num_parameters(),
        "vocab_size": len(run.tokenizer),
        "world_size": world,
        "train_characters": sum(len(text) for text in run.reviews.train["text"]),
        "train_reviews": len(run.reviews.train),
        "eval_reviews": len(run.reviews.held_out),
        "steps": state.global_step,
        "characters_seen": state.global_step * characters_per_step,
        "epochs_done": state.epoch,
        "train_minutes": round(trainer.clock.elapsed_seconds / 60.0, 3),  # across resumes
        "session_minutes": round(runtime / 60.0, 3),  # this command's train() only
        "characters_per_second": round(characters_this_session / runtime, 1) if runtime else None,
        "wall_minutes": round(seconds / 60.0, 2),
        "device": device_name(trainer.args.device, world),
        "precision": "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32",
        "best_checkpoint_step": state.best_global_step,
        "resumed_from_step": resumed_from,
        "initialised_from": _starting_point(run.start),
        "history": _history(state.log_history),
        "final": final,
        "versions": {"torch": torch.__version__, "transformers": sys.modules["transformers"].__version__},
    }


def _starting_point(start) -> dict | None:
    """The model a warm start began with and how it was trained (and what it began with), so a card can say how the
    whole model was made, not only its last stage."""
    if start is None:
        return None
    kept = ("steps", "characters_seen", "epochs_done", "train_minutes", "device", "batch_size", "learning_rate",
            "lr_schedule", "initialised_from")
    earlier = {key: start.log[key] for key in kept if start.log.get(key) is not None}
    return {"model": display_name(start.source), **earlier}


def cpu_name() -> str:
    """The CPU's model and how many cores this process sees: absolute timings move with both."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0] if names else 'unknown CPU'} ({os.cpu_count()} cores seen)"


def device_name(device: torch.device, world: int = 1) -> str:
    """What a run trained on, for its log: the GPU's name, or the CPU and its torch threads."""
    threads = torch.get_num_threads()
    cpu = f"CPU ({threads} thread{'s' * (threads > 1)})"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return f"{world} x {name}" if world > 1 else name


def _history(log_history: list[dict]) -> list[dict]:
    """One entry per logged step: training loss (nats; with a rating loss, also its two parts) and held-out bpc where
    measured."""
    by_step = {}
    for entry in log_history:
        if "loss" not in entry and "eval_bpc" not in entry:
            continue
        row = by_step.setdefault(entry["step"], {"step": entry["step"], "epoch": round(entry.get("epoch", 0.0), 4)})
        for name in ("loss", "language_loss", "rating_loss"):
            if name in entry:
                row[name] = entry[name]
        if "eval_bpc" in entry:
            row["eval_bpc"] = entry["eval_bpc"]
    return [by_step[step] for step in sorted(by_step)]


def plot_training_curves(log: dict, path: str) -> None:
    """Training loss and held-out bpc against steps, both in bits per character, for the model card."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    history = log["history"]
    # With a rating loss, the language-model part is what is measured in bits per character.
    train = [(row["step"], row.get("language_loss", row["loss"]) / LN2) for row in history if "loss" in row]
    held_out = [(row["step"], row["eval_bpc"]) for row in history if "eval_bpc" in row]
    figure, axes = pyplot.subplots(figsize=(7, 4), dpi=100)
    if train:
        axes.plot(*zip(*train), label="training (bits per character)", color="tab:blue", alpha=0.7)
    if held_out:
        axes.plot(*zip(*held_out), "o-", label="held-out bpc", color="tab:orange")
    axes.set_xlabel("optimiser step")
    axes.set_ylabel("bits per character")
    sizes = "x".join(str(size) for size in log["hidden_sizes"])
    axes.set_title(f"char-LSTM [{sizes}] on {os.path.basename(log['dataset'])}")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)


def training_log_of(source: str | os.PathLike) -> dict | None:
    """The training log saved beside a local model, if it has one; a log that cannot be read is a UsageError."""
    path = Path(source) / TRAINING_LOG
    if not path.is_file():
        return None
    try:
        log = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{path} cannot be read ({error}): restore it from the model's source, or delete it") from None
    if not isinstance(log, dict):
        raise UsageError(f"{path} is not a training log (a JSON object)")
    return log
