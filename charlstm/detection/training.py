"""Training the detector: the generator's own embedding and LSTM layers, a new two-way head, and `Trainer`.

Starting from the generator means the detector begins with everything the generator knows about how reviews are
written; fine-tuning teaches it where the generator's writing differs. Each step shows the model crops of a random
length, so it learns to judge a 60-character snippet as well as a whole review.
"""

import math
import random
import shutil
import time
from pathlib import Path

import torch
from datasets import DatasetDict
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

from .. import register
from ..errors import UsageError
from ..runfiles import DETECTOR_LOG, write_json
from ..training.report import device_name
from ..training.rundir import last_complete_checkpoint
from .detector import Detector, evaluate
from .settings import DETECTOR_TOKENIZER, LABELS, TOKENIZER_KWARGS, DetectorTraining

# The generator loads through the Auto classes, and the saved detector gets the code files and `auto_map`.
register()



class EqualLengthCrops:
    """
    The data collator: draws one length per batch (log-uniform between `min_chars` and `max_chars`, so short
    snippets are common), caps it at the batch's shortest text and cuts every text to exactly that length, half the
    time from its start and otherwise from a random place. Equal lengths mean no padding, which matters on a CPU:
    an LSTM backward pass over a padded (packed) batch measured 9x slower than over the same batch unpadded. The
    trainer puts texts of similar length in one batch (`group_by_length`), so the cap seldom bites.
    """

    def __init__(self, tokenizer, min_chars: int, max_chars: int, seed: int):
        self.tokenizer = tokenizer
        self.min_chars, self.max_chars = min_chars, max_chars
        self.rng = random.Random(seed)

    def crop(self, text: str, length: int) -> str:
        start = 0 if self.rng.random() < 0.5 else self.rng.randrange(len(text) - length + 1)
        return text[start : start + length]

    def __call__(self, rows: list[dict]) -> dict:
        drawn = round(math.exp(self.rng.uniform(math.log(self.min_chars), math.log(self.max_chars))))
        length = min([drawn] + [len(row["text"]) for row in rows])
        batch = self.tokenizer(
            [self.crop(row["text"], length) for row in rows], return_tensors="pt", **TOKENIZER_KWARGS
        )
        batch["labels"] = torch.tensor([row["label"] for row in rows])
        return batch


def train_detector(
    generator_dir: str,
    data: DatasetDict,
    output_dir: str,
    training: DetectorTraining = DetectorTraining(),
    left_out_sources: tuple[str, ...] = (),
) -> dict:
    """
    Trains on `data["train"]` and saves the detector to `output_dir` (weights, config, tokenizer, code files).
    Checkpoints go to `output_dir/checkpoints` and a rerun resumes from the last one; they are removed once the
    detector is saved. The tokenizer is saved with `model_max_length = training.max_chars + 1` (`<bos>` and the longest
    crop seen in training), so longer texts are cut to what the detector has learned to judge. `layers` keeps only
    the generator's first LSTM layers (all when None), for a smaller, faster detector. `pooling` is the head's
    `classifier_pooling`: with "mean" every character's state counts, so evidence spread over a long review adds up.
    The detector's log (`detector_log.json`) records the run, the sources `data` was trained without
    (`left_out_sources`, for the caller's record) and, where `data` has a test split, the detector's figures on it.
    """
    max_steps, batch_size, learning_rate = training.max_steps, training.batch_size, training.learning_rate
    min_chars, max_chars, layers, pooling, seed = (training.min_chars, training.max_chars, training.layers,
                                                   training.pooling, training.seed)
    if "train" not in data:
        raise UsageError(f"the detector data has no 'train' split (splits: {', '.join(data)})")
    if not 1 <= min_chars <= max_chars:
        raise UsageError(f"need 1 <= --min-chars <= --max-chars, got {min_chars} and {max_chars}")
    hidden_sizes = AutoConfig.from_pretrained(generator_dir).hidden_sizes
    if layers is not None and not 1 <= layers <= len(hidden_sizes):
        raise UsageError(f"--layers must be from 1 to {len(hidden_sizes)} (the generator's layers), got {layers}")
    tokenizer = AutoTokenizer.from_pretrained(generator_dir, model_max_length=max_chars + 1, **DETECTOR_TOKENIZER)
    model = AutoModelForSequenceClassification.from_pretrained(
        generator_dir,
        hidden_sizes=hidden_sizes[:layers],  # the layers left out are not loaded
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: index for index, label in enumerate(LABELS)},
        classifier_pooling=pooling,
        dtype=torch.float32,
    )
    checkpoints = Path(output_dir) / "checkpoints"
    args = TrainingArguments(
        output_dir=str(checkpoints),
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, max_steps // 20),
        max_grad_norm=1.0,
        logging_steps=max(1, max_steps // 20),
        save_steps=max(1, max_steps // 5),
        save_total_limit=1,
        remove_unused_columns=False,  # the collator needs the raw text
        train_sampling_strategy="group_by_length",  # by the data's `length` column
        report_to="none",
        seed=seed,
        use_cpu=not torch.cuda.is_available(),
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data["train"].select_columns(["text", "label", "length"]),
        data_collator=EqualLengthCrops(tokenizer, min_chars, max_chars, seed),
    )
    started = time.perf_counter()
    resume = last_complete_checkpoint(str(checkpoints))
    # The loss sits at the last character only, so gradients fade along the text into denormal floats, which a
    # CPU handles very slowly: flushing them to zero made an LSTM backward pass 15x faster (9.8 s -> 0.6 s,
    # 32 x 200 characters, hidden size 512). The change is process-wide, so it is undone afterwards.
    torch.set_flush_denormal(True)
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    finally:
        torch.set_flush_denormal(False)
    # Not `trainer.save_model`, which adds a pickled training_args.bin that no user of the detector needs.
    trainer.model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    shutil.rmtree(checkpoints)
    log = {
        "generator": str(generator_dir),
        "train_texts": len(data["train"]),
        "train_sources": source_counts(data["train"]),
        "max_steps": max_steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "crop_chars": [min_chars, max_chars],
        "seed": seed,
        "kept_layers": list(model.config.hidden_sizes),
        "pooling": pooling,
        "num_parameters": model.num_parameters(),
        "train_loss": result.training_loss,
        "loss_history": [
            {"step": entry["step"], "loss": entry["loss"]} for entry in trainer.state.log_history if "loss" in entry
        ],
        "train_seconds": round(time.perf_counter() - started, 1),
        "device": device_name(trainer.args.device, trainer.args.world_size),
        "resumed_from": resume,
        "left_out_sources": list(left_out_sources),
    }
    if "test" in data:
        log["test"] = evaluate(Detector(output_dir), data["test"])
    write_json(Path(output_dir) / DETECTOR_LOG, log)
    return log


def source_counts(rows) -> list[dict]:
    """Per source of `rows` (build-data's `source` column): its domain, who wrote its machine texts, and counts."""
    if "source" not in rows.column_names:
        return []
    counts: dict[str, dict] = {}
    for source, domain, generator, label in zip(rows["source"], rows["domain"], rows["generator"], rows["label"]):
        entry = counts.setdefault(source, {"source": source, "domain": domain, "generators": set(), "human": 0,
                                           "machine": 0})
        entry[LABELS[label]] += 1
        if LABELS[label] == "machine":
            entry["generators"].add(generator)
    return [{**entry, "generators": sorted(entry["generators"])} for entry in counts.values()]
