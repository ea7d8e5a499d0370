"""Training a character LSTM on reviews with `transformers.Trainer`, and measuring held-out bits per character: what
`charlstm train` and `charlstm eval` run.

The Trainer does the loop, checkpoints, resuming, mixed precision and DDP (`torchrun`/`accelerate launch`); this
module adds what a char-level LM needs on top: packed data, bits per character, a wall-clock budget, the best
checkpoint by held-out bpc, and a final directory that is ready for the Hub.
"""

import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
)
from transformers.trainer_callback import ExportableState, PrinterCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from .. import register
from ..configuration_charlstm import CharLSTMConfig
from ..errors import UsageError
from ..generation.loading import GENERATOR, check_kind, display_name, load_config, load_model
from ..hub.push import check_push_target, push_to_hub
from ..modeling_charlstm import CharLSTMCache, CharLSTMForCausalLM
from ..quantization import is_quantized, quantize
from ..runfiles import CARRIED_STATE, TRAINER_STATE, TRAINING_CURVES, TRAINING_LOG, check_output_file, write_json
from ..tokenization_charlstm import CharLSTMTokenizer
from .data import IGNORE_INDEX, ParallelStreams, Reviews, build_tokenizer, framed_stream, load_reviews, pack_reviews
from .defaults import DATA_DEFAULTS, PRESETS
from .star_prior import star_shares
from .warm_start import add_rating_input

# `trainer.save_model` writes the three code files and `auto_map` only for registered classes.
register()

# Model sizes. `base` is the two-layer [1024, 512] model of the IBM "generate fake reviews" code pattern.
# Files a finished or running training leaves in its output directory.
RUN_MARKERS = (TRAINING_LOG, "config.json", "model.safetensors", TRAINER_STATE)

# Sampling defaults saved as generation_config.json: temperature 0.8 keeps reviews coherent but varied.
SAMPLING_DEFAULTS = {"do_sample": True, "temperature": 0.8, "top_k": 50, "top_p": 0.95, "max_new_tokens": 600}

LN2 = math.log(2.0)


# --- bits per character -------------------------------------------------------------------------------------------


def summed_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """
    Per block: [summed negative log-likelihood in nats, number of predicted characters]. The Trainer's own
    eval loss is a mean of batch means; summing first makes bpc exact when blocks hold different counts.
    """
    logits, labels = logits[:, :-1].float(), labels[:, 1:].to(logits.device)
    nll = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), labels.long(), ignore_index=IGNORE_INDEX, reduction="none"
    )
    return torch.stack([nll.sum(dim=1), (labels != IGNORE_INDEX).sum(dim=1).float()], dim=1)


def bits_per_character(prediction) -> dict[str, float]:
    """`compute_metrics` for the Trainer: held-out bits per character (nats per character / ln 2)."""
    totals = np.asarray(prediction.predictions, dtype=np.float64).reshape(-1, 2).sum(axis=0)
    return {"bpc": float(totals[0] / max(totals[1], 1.0) / LN2), "characters": int(totals[1])}


# --- wall-clock budget --------------------------------------------------------------------------------------------


class WallClockBudget(TrainerCallback, ExportableState):
    """
    Keeps the training time of a run across resumes and, given `max_minutes`, stops training at that budget with a
    last evaluation and checkpoint. The time spent so far is saved in each checkpoint's trainer state and a resumed
    run starts from it (`time_spent`); the budget is the resumed command's, so `--resume --max-minutes` can extend
    a run. Held-out evaluations are not training: the clock stops while they run, so how often a run evaluates
    changes neither its training time nor its learning-rate schedule. Under DDP every process takes the slowest
    clock, so all stop at the same step with the same learning rate.
    """

    def __init__(self, max_minutes: float | None = None, elapsed_seconds: float = 0.0):
        self.max_minutes = max_minutes
        self.elapsed_seconds = elapsed_seconds
        self._before_session = elapsed_seconds
        self._session_start = time.monotonic()
        self._last_training_moment = self._session_start

    def state(self) -> dict:
        return {"args": {"max_minutes": self.max_minutes}, "attributes": {"elapsed_seconds": self.elapsed_seconds}}

    @property
    def fraction(self) -> float:
        """Share of the budget used (0 without a budget)."""
        return min(self.elapsed_seconds / (60.0 * self.max_minutes), 1.0) if self.max_minutes else 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._before_session = self.elapsed_seconds
        self._session_start = self._last_training_moment = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        elapsed = torch.tensor(self._before_session + time.monotonic() - self._session_start, dtype=torch.float64)
        if self.max_minutes and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(elapsed, op=torch.distributed.ReduceOp.MAX)
        self.elapsed_seconds = float(elapsed)
        if self.fraction >= 1.0:
            control.should_training_stop = True
            control.should_evaluate = True
            control.should_save = True
        self._last_training_moment = time.monotonic()
        return control

    def on_evaluate(self, args, state, control, **kwargs):
        # The Trainer evaluates right after a step ends: the time since then was spent evaluating.
        now = time.monotonic()
        self._session_start += now - self._last_training_moment
        self._last_training_moment = now


def time_spent(checkpoint: str | None) -> float:
    """Training seconds the run of a checkpoint had used (0 for a fresh run)."""
    if checkpoint is None:
        return 0.0
    with open(os.path.join(checkpoint, TRAINER_STATE), encoding="utf-8") as handle:
        saved = json.load(handle).get("stateful_callbacks", {}).get(WallClockBudget.__name__, {})
    return float(saved.get("attributes", {}).get("elapsed_seconds", 0.0))


# --- carried state (truncated backpropagation through time) ---------------------------------------------------------


@dataclass
class CarriedState:
    """The LSTM state this process's rows ended a block with (detached), and the block of their streams it continues."""

    hidden: list[torch.Tensor]
    cell: list[torch.Tensor]
    next_block: int

    def cache(self) -> CharLSTMCache:
        # Fresh lists: the model replaces the cache's entries in place.
        return CharLSTMCache(list(self.hidden), list(self.cell))

    def save(self, checkpoint: str, process: int, streams: ParallelStreams, world_size: int) -> None:
        """Atomic, like the checkpoint's other files; the layout it belongs to goes with it, to check on resume."""
        os.makedirs(checkpoint, exist_ok=True)
        tensors = {f"{kind}.{layer}": state.contiguous() for kind, states in (("hidden", self.hidden),
                   ("cell", self.cell)) for layer, state in enumerate(states)}
        layout = {"next_block": self.next_block, "streams": streams.rows, "seq_len": streams.seq_len,
                  "world_size": world_size}
        path = os.path.join(checkpoint, CARRIED_STATE.format(process=process))
        save_file(tensors, f"{path}.tmp", metadata={key: str(value) for key, value in layout.items()})
        os.replace(f"{path}.tmp", path)

    @classmethod
    def load(cls, checkpoint: str, process: int, streams: ParallelStreams, world_size: int, device) -> "CarriedState":
        path = os.path.join(checkpoint, CARRIED_STATE.format(process=process))
        if not os.path.isfile(path):
            raise UsageError(f"{checkpoint!r} holds no carried LSTM state for process {process}: resume it with the "
                             "options and number of processes it was trained with")
        with safe_open(path, framework="pt") as handle:
            layout = {key: int(value) for key, value in handle.metadata().items()}
        wanted = {"streams": streams.rows, "seq_len": streams.seq_len, "world_size": world_size}
        if any(layout[key] != value for key, value in wanted.items()):
            raise UsageError(f"{checkpoint!r} carries the state of {layout['streams']} streams of {layout['seq_len']}-"
                             f"character blocks over {layout['world_size']} process(es); this run lays out "
                             f"{streams.rows} streams of {streams.seq_len} over {world_size}: resume with the same "
                             "--batch-size, --seq-len and number of processes")
        tensors = load_file(path, device=str(device))
        layers = len(tensors) // 2
        return cls([tensors[f"hidden.{layer}"] for layer in range(layers)],
                   [tensors[f"cell.{layer}"] for layer in range(layers)], layout["next_block"])


def carries_state(checkpoint: str) -> bool:
    """Whether a checkpoint's run carried the LSTM state across blocks (--carry-state)."""
    return os.path.isfile(os.path.join(checkpoint, CARRIED_STATE.format(process=0)))


class CharLSTMTrainer(Trainer):
    """
    A Trainer whose learning-rate schedule runs on max(steps done, budget used) when a time budget is set, and
    which, when its training data are `ParallelStreams`, carries each row's LSTM state from one block into the next.
    """

    carried: CarriedState | None = None

    def train(self, resume_from_checkpoint=None, **kwargs):
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
        self.carried = None
        if resume_from_checkpoint and isinstance(self.train_dataset, ParallelStreams):
            # The Trainer puts the data back at the checkpoint's step; this puts back the state the rows had there.
            self.carried = CarriedState.load(resume_from_checkpoint, self.args.process_index, self.train_dataset,
                                             self.args.world_size, self.args.device)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def get_train_dataloader(self) -> DataLoader:
        if not isinstance(self.train_dataset, ParallelStreams):
            return super().get_train_dataloader()
        # In order, whole batches: batch t holds block t of every stream (see ParallelStreams).
        batches = BatchSampler(SequentialSampler(self.train_dataset), self._train_batch_size, drop_last=False)
        loader = DataLoader(self.train_dataset, batch_sampler=batches, collate_fn=default_data_collator,
                            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory)
        return self.accelerator.prepare(loader)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "block" not in inputs:  # independent blocks: training without --carry-state, and every evaluation
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        block = int(inputs["block"][0])
        labels = inputs["labels"]
        # The last token of a block is the first of the next: the state to carry is the one before it, so it is not
        # fed here. Its logits predicted nothing (the label after it is the next block's), so the loss is unchanged.
        stream_inputs = {"input_ids": inputs["input_ids"][:, :-1], "labels": labels,
                         "shift_labels": labels[:, 1:].contiguous(), "cache": self._incoming_state(block),
                         "use_cache": True}
        if "star_ids" in inputs:  # the rating of each position's review (see pack_reviews)
            stream_inputs["star_ids"] = inputs["star_ids"][:, :-1]
        loss, outputs = super().compute_loss(model, stream_inputs, True, num_items_in_batch)
        cache = outputs.cache
        self.carried = CarriedState([h.detach() for h in cache.hidden], [c.detach() for c in cache.cell], block + 1)
        return (loss, outputs) if return_outputs else loss

    def _incoming_state(self, block: int) -> CharLSTMCache | None:
        """None (zeros) where the rows' streams start, else the state the previous block of the same rows ended with."""
        if block == 0:
            return None
        if self.carried is None or self.carried.next_block != block:
            expected = None if self.carried is None else self.carried.next_block
            raise RuntimeError(f"the data is at block {block} of its streams but the carried LSTM state continues "
                               f"block {expected}: the state and the data position went apart")
        return self.carried.cache()

    def _save_checkpoint(self, model, trial):
        if self.carried is not None:
            # Before the trainer state, whose presence marks a complete checkpoint.
            checkpoint = os.path.join(self._get_output_dir(trial=trial),
                                      f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            self.carried.save(checkpoint, self.args.process_index, self.train_dataset, self.args.world_size)
        super()._save_checkpoint(model, trial)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is not None or not self.clock.max_minutes:
            return super().create_scheduler(num_training_steps, optimizer)
        warmup = self.args.get_warmup_steps(num_training_steps)
        shape = str(getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(max(step / max(num_training_steps, 1), self.clock.fraction), 1.0)
            if shape == "cosine":
                return 0.5 * (1.0 + math.cos(math.pi * progress))
            if shape == "linear":
                return 1.0 - progress
            return 1.0

        self.lr_scheduler = LambdaLR(optimizer or self.optimizer, factor)
        return self.lr_scheduler

    @property
    def clock(self) -> WallClockBudget:
        return next(cb for cb in self.callback_handler.callbacks if isinstance(cb, WallClockBudget))


def make_trainer(model, tokenizer, training_args, train_blocks, eval_blocks, max_minutes=None, callbacks=(),
                 elapsed_seconds=0.0):
    """The Trainer every command and benchmark uses, so they all measure the same loop."""
    return CharLSTMTrainer(
        model=model,
        args=training_args,
        train_dataset=train_blocks,
        eval_dataset=eval_blocks,
        processing_class=tokenizer,
        compute_metrics=bits_per_character,
        preprocess_logits_for_metrics=summed_nll,
        callbacks=[WallClockBudget(max_minutes, elapsed_seconds), *callbacks],
    )


def evaluate_bpc(trainer, reviews, tokenizer, seq_len, condition_on_stars, num_proc=None) -> dict:
    """Held-out bpc overall and, when the reviews have star ratings, per rating (each rating packed on its own)."""
    blocks = pack_reviews(reviews, tokenizer, seq_len, condition_on_stars, num_proc, desc="packing held-out")
    overall = trainer.evaluate(blocks, metric_key_prefix="final")
    per_star = None
    if "stars" in reviews.column_names:
        per_star = {}
        stars = np.asarray(reviews["stars"])
        for rating in range(1, 6):
            subset = reviews.select(np.flatnonzero(stars == rating))
            if len(subset) == 0:
                continue
            packed = pack_reviews(subset, tokenizer, seq_len, condition_on_stars, num_proc, desc=f"packing {rating}*")
            per_star[str(rating)] = trainer.evaluate(packed, metric_key_prefix=f"final_{rating}star")[
                f"final_{rating}star_bpc"
            ]
    return {
        "eval_bpc": overall["final_bpc"],
        "eval_characters": overall["final_characters"],
        "eval_reviews": len(reviews),
        "eval_bpc_per_star": per_star,
    }


# --- charlstm train -----------------------------------------------------------------------------------------------


def train_model(args) -> int:
    """`charlstm train`: `args` are its parsed options (`charlstm.cli.train`)."""
    if args.push_to_hub != bool(args.hub_model_id):
        raise UsageError("--push-to-hub and --hub-model-id NAMESPACE/NAME go together")
    if args.push_to_hub:
        check_push_target(args.hub_model_id)  # a bad id or a missing token fails now, not after training
    started = time.time()
    run = prepare_run(args)
    reviews, tokenizer, checkpoint = run.reviews, run.tokenizer, run.checkpoint
    trainer = make_trainer(run.model, tokenizer, run.training_args, run.train_blocks, run.eval_blocks, args.max_minutes,
                           elapsed_seconds=time_spent(checkpoint))
    result = trainer.train(resume_from_checkpoint=checkpoint)
    # load_best_model_at_end has put the best checkpoint's weights back in place.
    final = evaluate_bpc(trainer, reviews.held_out, tokenizer, args.seq_len, args.condition_on_stars, args.num_proc)

    if trainer.is_world_process_zero():
        model = trainer.model
        model.config.use_cache = True  # Trainer turns it off for training; generation wants it on
        model.generation_config = saved_generation_config(tokenizer)
        trainer.save_model(args.output_dir)
        log = _training_log(args, reviews, tokenizer, model, trainer, result, final, checkpoint, time.time() - started,
                            run.start)
        write_json(os.path.join(args.output_dir, TRAINING_LOG), log)
        plot_training_curves(log, os.path.join(args.output_dir, TRAINING_CURVES))
        print(f"held-out bpc {final['eval_bpc']:.4f} after {trainer.state.global_step} steps; "
              f"model saved to {args.output_dir}")
        if args.push_to_hub:
            pushed = push_to_hub(args.output_dir, args.hub_model_id)
            print(f"pushed to {pushed.url}; load it with revision={pushed.pinned_revision!r}")
    # Under torchrun the other ranks would otherwise exit while the main one still saves, and a rank that exits with
    # its process group alive can abort ("terminate called without an active exception") and fail the whole run.
    trainer.accelerator.wait_for_everyone()
    _free_distributed_wrapper(trainer)
    trainer.accelerator.end_training()
    return 0


def _free_distributed_wrapper(trainer) -> None:
    """Free DDP's wrapper, and with it its gradient reducer, while the process group is still registered.

    The reducer owns a reference to the process group. Freed after `end_training` has destroyed the group, it is the
    group's last owner: its deallocation keeps the GIL while it joins gloo's worker threads, and a worker that needs
    the GIL to drop a finished collective's tensor never returns, so the process hangs at exit now and then
    (pytorch/pytorch#56297). Freed first, the group ends in destroy_process_group, whose binding releases the GIL.
    """
    trainer.model_wrapped = trainer.model
    trainer.accelerator.free_memory()  # drops the accelerator's own references, then collects


@dataclass
class PreparedRun:
    """Everything a training run needs before the loop starts; the benchmarks build theirs the same way."""

    reviews: Reviews
    tokenizer: CharLSTMTokenizer
    train_blocks: Dataset | ParallelStreams  # the streams with --carry-state
    eval_blocks: Dataset
    model: CharLSTMForCausalLM
    training_args: TrainingArguments
    checkpoint: str | None  # the checkpoint a resumed run continues from
    start: "StartingModel | None" = None  # the saved generator a warm-started run began with


def prepare_run(args) -> PreparedRun:
    """Checks the output directory, loads and packs the data, and builds (or reloads the shape of) the model."""
    _check_train_arguments(args)
    checkpoint = _prepare_output_dir(args)
    if checkpoint and carries_state(checkpoint) != args.carry_state:
        trained = "with" if carries_state(checkpoint) else "without"
        raise UsageError(f"{checkpoint!r} was trained {trained} --carry-state: resume it the same way")
    if args.threads:
        torch.set_num_threads(args.threads)
    # A resumed warm start finds the weights it began with in its checkpoint, and only needs the starting model's log.
    start = _starting_model(args, load_weights=not checkpoint) if args.init_from else None
    training_args = _training_arguments(args)
    with training_args.main_process_first(local=False, desc="preparing data"):
        reviews = load_reviews(
            args.dataset, args.text_column, args.label_column, need_stars=args.condition_on_stars,
            held_out_split=args.eval_split, validation_fraction=args.validation_fraction, seed=args.seed,
        )
        # A resumed run keeps the vocabulary and model shape of its checkpoint, a warm start those of its model.
        if checkpoint:
            tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        else:
            tokenizer = start.tokenizer if start else build_tokenizer(reviews, args.vocab_coverage)
        if args.carry_state:
            rows = args.batch_size * training_args.world_size
            train_blocks = ParallelStreams(*framed_stream(reviews.train, tokenizer, args.condition_on_stars,
                                                          args.unrated_share),
                                           args.seq_len, rows)
        else:
            train_blocks = pack_reviews(reviews.train, tokenizer, args.seq_len, args.condition_on_stars,
                                        args.num_proc, desc="packing train", unrated_share=args.unrated_share)
        eval_blocks = pack_reviews(reviews.held_out, tokenizer, args.seq_len, args.condition_on_stars, args.num_proc,
                                   desc="packing held-out")
    model = start.model if start and not checkpoint else _new_model(args, tokenizer, checkpoint)
    if args.condition_on_stars:  # the rating a review asked for none draws from (see config.star_shares)
        model.config.star_shares = star_shares(reviews.train)
    return PreparedRun(reviews, tokenizer, train_blocks, eval_blocks, model, training_args, checkpoint, start)


@dataclass
class StartingModel:
    """The saved generator a warm-started run (`--init-from`) begins with: a new optimiser and schedule on its
    weights, vocabulary and shape."""

    source: str
    log: dict  # its training log ({} where it has none), which the new run's log carries on
    model: CharLSTMForCausalLM | None = None
    tokenizer: CharLSTMTokenizer | None = None


def _starting_model(args, load_weights: bool) -> StartingModel:
    """Loads `--init-from` (only its config and log where `load_weights` is false) and refuses a start that would
    make the run's figures wrong."""
    if load_weights:
        model, tokenizer, source = load_model(args.init_from, GENERATOR)
        config = model.config
    else:
        model = tokenizer = None
        source = check_kind(args.init_from, GENERATOR)
        config = load_config(source)
    if config.conditioned_on_stars != args.condition_on_stars:
        trained = "with" if config.conditioned_on_stars else "without"
        raise UsageError(f"{source} was trained {trained} --condition-on-stars: continue it the same way")
    for option, value, kept in (("--hidden-sizes", args.hidden_sizes, list(config.hidden_sizes)),
                                ("--embedding-dim", args.embedding_dim, config.embedding_dim)):
        if value is not None and value != kept:
            raise UsageError(f"{option} {value} differs from {source}'s {kept}: a warm start keeps its model's shape")
    log = training_log_of(source) or {}
    # Scored on reviews it trained on, the model would look better than it is, and so would the run's held-out bpc.
    if log.get("dataset") == args.dataset:
        for option, key in (("--validation-fraction", "validation_fraction"), ("--eval-split", "eval_split"),
                            ("--seed", "seed")):
            value = getattr(args, key)
            if key in log and log[key] != value:
                raise UsageError(f"{source} held out its reviews with {option} {log[key]}, not {value}: on the same "
                                 "data keep its split, or the held-out reviews include ones it trained on")
    if model is not None:
        model.config.dropout = model.model.dropout.p = args.dropout  # a training setting, not part of the shape
        if args.condition_on_stars:  # a model that reads the rating from its star token only gets the rating input
            add_rating_input(model, args.star_embedding_dim, args.seed)
        model.train()
    return StartingModel(source, log, model, tokenizer)


def training_log_of(source: str) -> dict | None:
    """The training log saved beside a local model, if it has one."""
    path = os.path.join(source, TRAINING_LOG)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _check_train_arguments(args) -> None:
    positive = {"--seq-len": args.seq_len, "--batch-size": args.batch_size, "--eval-steps": args.eval_steps,
                "--logging-steps": args.logging_steps,
                "--gradient-accumulation-steps": args.gradient_accumulation_steps,
                "--embedding-dim": args.embedding_dim, "--threads": args.threads}
    for name, value in positive.items():
        if value is not None and value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}")
    if args.warmup_steps < 0:
        raise UsageError(f"--warmup-steps must not be negative, got {args.warmup_steps}")
    for name, value in {"--max-steps": args.max_steps, "--epochs": args.epochs, "--max-minutes": args.max_minutes,
                        "--learning-rate": args.learning_rate}.items():
        if value is not None and value <= 0:
            raise UsageError(f"{name} must be positive, got {value}")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other: continue the run, or start over")
    if not 0.0 < args.vocab_coverage <= 1.0:
        raise UsageError(f"--vocab-coverage must be in (0, 1], got {args.vocab_coverage}")
    if not 0.0 <= args.dropout < 1.0:
        raise UsageError(f"--dropout must be in [0, 1), got {args.dropout}")


def _prepare_output_dir(args) -> str | None:
    """Refuses to mix two runs in one directory; returns the checkpoint to resume from, if any."""
    output = args.output_dir
    if os.path.exists(output) and not os.path.isdir(output):
        raise UsageError(f"--output-dir {output!r} is a file")
    checkpoints = _checkpoints(output)
    holds_run = bool(checkpoints) or any(os.path.exists(os.path.join(output, name)) for name in RUN_MARKERS)
    if args.resume:
        complete = [path for path in checkpoints if os.path.isfile(os.path.join(path, TRAINER_STATE))]
        if not complete:
            raise UsageError(f"nothing to resume in {output!r}: it holds no complete checkpoint")
        # A checkpoint without its trainer state was cut off while being written: never resume from it.
        if _is_main_process():
            for path in checkpoints:
                if path not in complete:
                    shutil.rmtree(path, ignore_errors=True)
        return complete[-1]
    if holds_run and not args.overwrite:
        raise UsageError(f"--output-dir {output!r} holds another run; pass --resume to continue it or --overwrite "
                         "to start over")
    if holds_run and _is_main_process():
        for path in checkpoints:
            shutil.rmtree(path)
        for name in RUN_MARKERS:
            if os.path.exists(os.path.join(output, name)):
                os.remove(os.path.join(output, name))
    return None


def _checkpoints(output: str) -> list[str]:
    """Checkpoint directories in step order."""
    if not os.path.isdir(output):
        return []
    paths = [os.path.join(output, name) for name in os.listdir(output)]
    return sorted((path for path in paths if os.path.isdir(path) and _checkpoint_step(path) is not None),
                  key=_checkpoint_step)


def _checkpoint_step(path: str) -> int | None:
    name = os.path.basename(path)
    step = name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")
    return int(step) if step != name and step.isdigit() else None


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _training_arguments(args) -> TrainingArguments:
    precision = args.precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if torch.cuda.is_available() else "fp32"
    if args.max_steps:
        length = {"max_steps": args.max_steps}
    else:
        # With only a time budget, the budget ends the run; the epoch count just has to be out of reach.
        length = {"num_train_epochs": args.epochs or (10_000 if args.max_minutes else 1)}
    return TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type=args.lr_schedule,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        **length,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        seed=args.seed,
        data_seed=args.seed,
        eval_strategy="steps",
        eval_steps=args.eval_steps,
        save_strategy="steps",
        save_steps=args.eval_steps,
        save_total_limit=args.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="bpc",
        greater_is_better=False,
        logging_steps=args.logging_steps,
        report_to="none",
        dataloader_pin_memory=torch.cuda.is_available(),
        # On a machine with no accelerator, say so: only then does `torchrun` get DDP over gloo between CPU
        # processes (otherwise each process would train alone).
        use_cpu=torch.accelerator.current_accelerator() is None,
    )


def _new_model(args, tokenizer, checkpoint: str | None) -> CharLSTMForCausalLM:
    if checkpoint:
        # The Trainer loads the checkpoint's weights; the shape must be the checkpoint's, whatever the flags say.
        config = CharLSTMConfig.from_pretrained(checkpoint)
    else:
        preset = PRESETS[args.preset]
        config = CharLSTMConfig(
            vocab_size=len(tokenizer),
            embedding_dim=args.embedding_dim or preset["embedding_dim"],
            hidden_sizes=args.hidden_sizes or preset["hidden_sizes"],
            dropout=args.dropout,
            conditioned_on_stars=args.condition_on_stars,
            star_embedding_dim=args.star_embedding_dim if args.condition_on_stars else 0,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    torch.manual_seed(args.seed)
    return CharLSTMForCausalLM(config)


def _training_log(args, reviews, tokenizer, model, trainer, result, final, checkpoint, seconds, start) -> dict:
    state = trainer.state
    world = trainer.args.world_size
    characters_per_step = args.batch_size * world * args.gradient_accumulation_steps * args.seq_len
    characters_seen = state.global_step * characters_per_step
    resumed_from = _checkpoint_step(checkpoint) if checkpoint else None
    characters_this_session = (state.global_step - (resumed_from or 0)) * characters_per_step
    runtime = result.metrics.get("train_runtime") or 0.0
    return {
        "dataset": args.dataset,
        "text_column": args.text_column,
        "label_column": reviews.label_column,
        "conditioned_on_stars": bool(args.condition_on_stars),
        "hidden_sizes": list(model.config.hidden_sizes),
        "embedding_dim": model.config.embedding_dim,
        "dropout": model.config.dropout,
        "num_parameters": model.num_parameters(),
        "vocab_size": len(tokenizer),
        "vocab_coverage": args.vocab_coverage,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "world_size": world,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "learning_rate": args.learning_rate,
        "lr_schedule": args.lr_schedule,
        "warmup_steps": args.warmup_steps,
        "max_grad_norm": args.max_grad_norm,
        "max_steps": args.max_steps,
        "epochs": args.epochs,
        "max_minutes": args.max_minutes,
        "carry_state": bool(args.carry_state),
        "seed": args.seed,
        "eval_split": args.eval_split,
        "validation_fraction": args.validation_fraction,
        "train_characters": sum(len(text) for text in reviews.train["text"]),
        "train_reviews": len(reviews.train),
        "eval_reviews": len(reviews.held_out),
        "steps": state.global_step,
        "characters_seen": characters_seen,
        "epochs_done": state.epoch,
        "train_minutes": round(trainer.clock.elapsed_seconds / 60.0, 3),  # across resumes
        "session_minutes": round(runtime / 60.0, 3),  # this command's train() only
        "characters_per_second": round(characters_this_session / runtime, 1) if runtime else None,
        "wall_minutes": round(seconds / 60.0, 2),
        "device": device_name(trainer.args.device, world),
        "precision": "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32",
        "best_checkpoint_step": state.best_global_step,
        "resumed_from_step": resumed_from,
        "initialised_from": _starting_point(start),
        "history": _history(state.log_history),
        "final": final,
        "versions": {"torch": torch.__version__, "transformers": sys.modules["transformers"].__version__},
    }


def _starting_point(start: StartingModel | None) -> dict | None:
    """The model a warm start began with and how it was trained (and what it began with), so a card can say how the
    whole model was made, not only its last stage."""
    if start is None:
        return None
    kept = ("steps", "characters_seen", "epochs_done", "train_minutes", "device", "batch_size", "learning_rate",
            "lr_schedule", "initialised_from")
    earlier = {key: start.log[key] for key in kept if start.log.get(key) is not None}
    return {"model": display_name(start.source), **earlier}


def device_name(device: torch.device, world: int = 1) -> str:
    """What a run trained on, for its log: the GPU's name, or the CPU and its torch threads."""
    threads = torch.get_num_threads()
    cpu = f"CPU ({threads} thread{'s' * (threads > 1)})"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return f"{world} x {name}" if world > 1 else name


def _history(log_history: list[dict]) -> list[dict]:
    """One entry per logged step: training loss (nats) and held-out bpc where measured."""
    by_step = {}
    for entry in log_history:
        if "loss" not in entry and "eval_bpc" not in entry:
            continue
        row = by_step.setdefault(entry["step"], {"step": entry["step"], "epoch": round(entry.get("epoch", 0.0), 4)})
        if "loss" in entry:
            row["loss"] = entry["loss"]
        if "eval_bpc" in entry:
            row["eval_bpc"] = entry["eval_bpc"]
    return [by_step[step] for step in sorted(by_step)]


def plot_training_curves(log: dict, path: str) -> None:
    """Training loss and held-out bpc against steps, both in bits per character, for the model card."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    history = log["history"]
    train = [(row["step"], row["loss"] / LN2) for row in history if "loss" in row]
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


def saved_generation_config(tokenizer) -> GenerationConfig:
    """
    The generation_config.json a trained model is saved with: its sampling defaults, and the special tokens that
    never belong inside a review (<pad>, <bos>, <unk>, the star tokens; <eos> ends it) as `suppress_tokens`, so
    `pipeline("text-generation")`, a Hub user's `generate` and the endpoint handler never write them either.
    """
    return GenerationConfig(
        **SAMPLING_DEFAULTS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        suppress_tokens=sorted(set(tokenizer.all_special_ids) - {tokenizer.eos_token_id}),
    )


# --- charlstm eval ------------------------------------------------------------------------------------------------


def evaluate_model(args) -> int:
    """`charlstm eval`: `args` are its parsed options (`charlstm.cli.train`)."""
    if args.json:
        check_output_file(args.json, "--json")  # before minutes of evaluation, not after
    model, tokenizer, log = _load_for_eval(args.model)
    if args.int8:
        model = quantize(model, inplace=True)
    _fill_from_training_log(args, log)
    conditioned = bool(model.config.conditioned_on_stars)
    reviews = load_reviews(
        args.dataset, args.text_column, args.label_column, need_stars=conditioned,
        held_out_split=args.eval_split, validation_fraction=args.validation_fraction, seed=args.seed,
    )
    chosen = reviews.held_out
    if args.max_reviews is not None:
        if args.max_reviews < 1:
            raise UsageError(f"--max-reviews must be at least 1, got {args.max_reviews}")
        chosen = chosen.select(range(min(args.max_reviews, len(chosen))))
    if args.seq_len < 1 or args.batch_size < 1:
        raise UsageError("--seq-len and --batch-size must be at least 1")

    trainer = CharLSTMTrainer(
        model=model,
        args=TrainingArguments(
            output_dir=os.path.join(os.path.expanduser("~"), ".cache", "charlstm", "eval"),
            per_device_eval_batch_size=args.batch_size, report_to="none", disable_tqdm=True,
            dataloader_pin_memory=torch.cuda.is_available(),
        ),
        processing_class=tokenizer,
        compute_metrics=bits_per_character,
        preprocess_logits_for_metrics=summed_nll,
    )
    trainer.remove_callback(PrinterCallback)  # the summary below says it once, readably
    result = evaluate_bpc(trainer, chosen, tokenizer, args.seq_len, conditioned, args.num_proc)
    split = args.eval_split or f"held-out {args.validation_fraction:g} of train, seed {args.seed}"
    report = {
        "model": args.model, "weights": "int8" if is_quantized(model) else "fp32", "dataset": args.dataset,
        "split": split, "seq_len": args.seq_len, **result,
    }
    _print_eval(report)
    if args.json:
        write_json(args.json, report)
    return 0


def _load_for_eval(model_id: str):
    model, tokenizer, model_id = load_model(model_id, GENERATOR)
    return model.eval(), tokenizer, training_log_of(model_id)


def _fill_from_training_log(args, log: dict | None) -> None:
    """Unset data options take the training run's values: same held-out reviews, same block length."""
    for name, fallback in DATA_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, (log or {}).get(name, fallback))
    for name in ("label_column", "eval_split"):
        if getattr(args, name) is None and log:
            setattr(args, name, log.get(name))


def _print_eval(report: dict) -> None:
    print(f"{report['model']} ({report['weights']} weights) on {report['dataset']} ({report['split']}, "
          f"{report['eval_reviews']} reviews, {report['eval_characters']} characters predicted)")
    print(f"bits per character: {report['eval_bpc']:.4f}")
    for rating, bpc in (report["eval_bpc_per_star"] or {}).items():
        print(f"  {rating} star{'s' if rating != '1' else ''}: {bpc:.4f}")
