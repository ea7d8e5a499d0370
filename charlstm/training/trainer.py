"""The training loop's parts: `CharLSTMTrainer` (a `transformers.Trainer`), bits per character, the wall-clock budget
and the LSTM state carried across blocks. `charlstm.training.run` puts them together for `charlstm train` and
`charlstm eval`, and the benchmarks use the same `make_trainer`, so they all measure the same loop.
"""

import json
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler
from transformers import Trainer, TrainerCallback, default_data_collator
from transformers.trainer_callback import ExportableState, ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from .. import register
from ..errors import UsageError
from ..generation.rating import RATINGS, rating_prior
from ..modeling_charlstm import CharLSTMCache, star_ratings, star_token_ids
from ..runfiles import CARRIED_STATE, TRAINER_STATE
from .data import IGNORE_INDEX, ParallelStreams

# `trainer.save_model` writes the three code files and `auto_map` only for registered classes.
register()

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


# --- the rating loss ----------------------------------------------------------------------------------------------


def language_and_rating_losses(model, input_ids, labels, star_ids, bos_token_id, log_prior=None
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The language-model loss (nats per predicted character) and the rating loss of packed blocks, from one forward
    pass per rating.

    The rating loss is how badly the text's likelihood picks its own rating: for each piece of a rated review in a
    block, -log P(its stars | piece) by Bayes' rule over the five ratings, as `charlstm rate` reads it. Trained on
    likelihood alone, the generator learned to use the rating only as much as it lowers bpc, and rating a review by
    likelihood stayed well behind a word n-gram classifier; this term asks the likelihoods to tell the ratings apart
    as well (the hybrid generative/discriminative objective of generative classifiers). The prior is the training
    reviews' shares (`log_prior`, [5]; uniform where None): with a uniform one on ratings as unequal as Yelp's, the
    loss falls most by raising every text's likelihood under the common ratings, which rates balanced reviews worse.

    Pass k reads every rated review of the block with rating k (its star token and its rating input). A character's
    language-model loss is read from the pass of its own review's rating: the plain pass, but for the ratings of the
    earlier reviews in the same block. Unrated reviews keep rating 0 in every pass and count in the first.
    """
    rated = star_ids > 0
    is_star = star_ratings(input_ids) > 0
    passes_ids = torch.cat([torch.where(rated & is_star, star_token_ids(k), input_ids) for k in RATINGS])
    passes_stars = torch.cat([torch.where(rated, k, star_ids) for k in RATINGS])
    logits = model(input_ids=passes_ids, star_ids=passes_stars, use_cache=False).logits[:, :-1].float()
    batch, steps = labels.shape[0], labels.shape[1] - 1
    targets = labels[:, 1:]
    counted = targets != IGNORE_INDEX
    log_likelihood = -torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), targets.repeat(len(RATINGS), 1).long(), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(len(RATINGS), batch, steps)

    ratings = star_ids[:, 1:]
    own_pass = (ratings - 1).clamp(min=0).unsqueeze(0)
    language_loss = -log_likelihood.gather(0, own_pass).squeeze(0)[counted].mean()

    # Sum each piece's log-likelihood under every rating: a piece is the part of one review inside one block.
    piece = torch.cumsum(input_ids == bos_token_id, dim=1)[:, 1:] + (steps + 1) * torch.arange(
        batch, device=input_ids.device).unsqueeze(1)
    scored = counted & (ratings > 0)
    if not scored.any():
        return language_loss, language_loss.new_zeros(())
    pieces, index = torch.unique(piece[scored], return_inverse=True)
    summed = log_likelihood.new_zeros(len(RATINGS), len(pieces)).index_add_(1, index, log_likelihood[:, scored])
    truth = torch.zeros(len(pieces), dtype=torch.long, device=index.device).scatter_(0, index, ratings[scored] - 1)
    if log_prior is not None:
        summed = summed + log_prior.to(summed).unsqueeze(1)
    rating_loss = torch.nn.functional.cross_entropy(summed.T, truth)
    return language_loss, rating_loss


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
    rating_loss_weight: float = 0.0  # > 0: the language-model loss plus this times `language_and_rating_losses`'
    _split_losses: list[tuple[float, float]] | None = None  # (language, rating) losses of the steps since the last log

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
        if self.rating_loss_weight and model.training and "star_ids" in inputs:
            language_loss, rating_loss = language_and_rating_losses(
                model, inputs["input_ids"], inputs["labels"], inputs["star_ids"], self.processing_class.bos_token_id,
                torch.tensor(rating_prior(model, "training")).log())
            parts = (float(language_loss.detach()), float(rating_loss.detach()))
            self._split_losses = [*(self._split_losses or []), parts]
            loss = language_loss + self.rating_loss_weight * rating_loss
            return (loss, None) if return_outputs else loss
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

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._split_losses and "loss" in logs:
            logs["language_loss"], logs["rating_loss"] = (round(float(x), 4) for x in np.mean(self._split_losses, 0))
            self._split_losses = None
        super().log(logs, start_time)

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


class ReadableProgress(ProgressCallback):
    """The Trainer's progress bar, with each log as a line a person reads ("step 50: loss 1.08 (1.56 bits per
    character), lr 0.001, epoch 0.02") instead of a dict of numbers written as strings."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        shown = []
        for name, value in logs.items():
            if name == "total_flos" or not isinstance(value, (int, float)):
                continue
            words = f"{name.replace('_', ' ')} {value:.4g}"
            if name == ("language_loss" if "language_loss" in logs else "loss"):
                words += f" ({value / LN2:.3g} bits per character)"
            shown.append(words)
        self.training_bar.write(f"step {state.global_step}: {', '.join(shown)}")


def make_trainer(model, tokenizer, training_args, train_blocks, eval_blocks, max_minutes=None, callbacks=(),
                 elapsed_seconds=0.0, rating_loss_weight=0.0):
    """The Trainer every command and benchmark uses, so they all measure the same loop."""
    trainer = CharLSTMTrainer(
        model=model,
        args=training_args,
        train_dataset=train_blocks,
        eval_dataset=eval_blocks,
        processing_class=tokenizer,
        compute_metrics=bits_per_character,
        preprocess_logits_for_metrics=summed_nll,
        callbacks=[WallClockBudget(max_minutes, elapsed_seconds), *callbacks],
    )
    trainer.rating_loss_weight = rating_loss_weight
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(ReadableProgress())
    return trainer
