"""A training run from start to end (`charlstm train`), and held-out bits per character (`charlstm eval`).

`prepare_run` checks the settings and the output directory, loads and packs the data and builds the model;
`train_model` trains it with `CharLSTMTrainer` and saves a directory that is ready for the Hub (weights, tokenizer,
code files, generation config, log, curves). Publishing is the caller's: training never talks to the Hub.
"""

import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset
from transformers import AutoTokenizer, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from ..configuration_charlstm import CharLSTMConfig
from ..errors import UsageError
from ..generation.sampling import saved_generation_config
from ..loading import GENERATOR, load_model
from ..modeling_charlstm import CharLSTMForCausalLM
from ..quantization import is_quantized, quantize
from ..runfiles import TRAINING_CURVES, TRAINING_LOG, check_output_file, write_json
from ..tokenization_charlstm import CharLSTMTokenizer
from . import rundir
from .config import ALL_REVIEWS, EvalConfig, TrainConfig
from .data import ParallelStreams, Reviews, build_tokenizer, framed_stream, load_reviews, pack_reviews
from .report import plot_training_curves, training_log, training_log_of
from .star_prior import star_shares
from .starting_model import StartingModel, starting_model
from .trainer import CharLSTMTrainer, bits_per_character, carries_state, make_trainer, summed_nll, time_spent


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
    start: StartingModel | None = None  # the saved generator a warm-started run began with


def prepare_run(config: TrainConfig) -> PreparedRun:
    """Checks the output directory, loads and packs the data, and builds (or reloads the shape of) the model."""
    config.check()
    checkpoint = rundir.claim(config.output_dir, config.resume, config.overwrite)
    if checkpoint and carries_state(checkpoint) != config.carry_state:
        trained = "with" if carries_state(checkpoint) else "without"
        raise UsageError(f"{checkpoint!r} was trained {trained} --carry-state: resume it the same way")
    if config.threads:
        torch.set_num_threads(config.threads)
    # A resumed warm start finds the weights it began with in its checkpoint, and only needs the starting model's log.
    start = starting_model(config, load_weights=not checkpoint) if config.init_from else None
    training_args = _training_arguments(config)
    with training_args.main_process_first(local=False, desc="preparing data"):
        reviews = load_reviews(
            config.dataset, config.text_column, config.label_column, need_stars=config.condition_on_stars,
            held_out_split=config.eval_split, validation_fraction=config.validation_fraction, seed=config.seed,
        )
        # A resumed run keeps the vocabulary and model shape of its checkpoint, a warm start those of its model.
        if checkpoint:
            tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        else:
            tokenizer = start.tokenizer if start else build_tokenizer(reviews, config.vocab_coverage)
        if config.carry_state:
            rows = config.batch_size * training_args.world_size
            train_blocks = ParallelStreams(*framed_stream(reviews.train, tokenizer, config.condition_on_stars,
                                                          config.unrated_share),
                                           config.seq_len, rows)
        else:
            train_blocks = pack_reviews(reviews.train, tokenizer, config.seq_len, config.condition_on_stars,
                                        config.num_proc, desc="packing train", unrated_share=config.unrated_share)
        eval_blocks = pack_reviews(reviews.held_out, tokenizer, config.seq_len, config.condition_on_stars,
                                   config.num_proc, desc="packing held-out")
    model = start.model if start and not checkpoint else _new_model(config, tokenizer, checkpoint)
    if config.condition_on_stars:  # the rating a review asked for none draws from (see config.star_shares)
        model.config.star_shares = star_shares(reviews.train)
    if not checkpoint and rundir.holds_run(config.output_dir):
        rundir.clear_earlier_run(config.output_dir)  # --overwrite, now that nothing above failed
    return PreparedRun(reviews, tokenizer, train_blocks, eval_blocks, model, training_args, checkpoint, start)



def _training_arguments(config: TrainConfig) -> TrainingArguments:
    precision = config.precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if torch.cuda.is_available() else "fp32"
    if config.max_steps:
        length = {"max_steps": config.max_steps}
    else:
        # With only a time budget, the budget ends the run; the epoch count just has to be out of reach.
        length = {"num_train_epochs": config.epochs or (10_000 if config.max_minutes else 1)}
    return TrainingArguments(
        output_dir=config.output_dir,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_schedule,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        **length,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        seed=config.seed,
        data_seed=config.seed,
        eval_strategy="steps",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.eval_steps,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="bpc",
        greater_is_better=False,
        logging_steps=config.logging_steps,
        report_to="none",
        dataloader_pin_memory=torch.cuda.is_available(),
        # On a machine with no accelerator, say so: only then does `torchrun` get DDP over gloo between CPU
        # processes (otherwise each process would train alone).
        use_cpu=torch.accelerator.current_accelerator() is None,
    )


def _new_model(config: TrainConfig, tokenizer, checkpoint: str | None) -> CharLSTMForCausalLM:
    if checkpoint:
        # The Trainer loads the checkpoint's weights; the shape must be the checkpoint's, whatever the flags say.
        shape = CharLSTMConfig.from_pretrained(checkpoint)
    else:
        shape = CharLSTMConfig(
            vocab_size=len(tokenizer),
            **config.model_shape,
            dropout=config.dropout,
            conditioned_on_stars=config.condition_on_stars,
            star_embedding_dim=config.star_embedding_dim if config.condition_on_stars else 0,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    torch.manual_seed(config.seed)
    return CharLSTMForCausalLM(shape)


def train_model(config: TrainConfig) -> dict:
    """Trains as `config` says and saves the best model to `config.output_dir`; returns the run's training log. In a
    run of several processes (DDP) only the main one saves, and the others return the same log unsaved."""
    started = time.time()
    run = prepare_run(config)
    trainer = make_trainer(run.model, run.tokenizer, run.training_args, run.train_blocks, run.eval_blocks,
                           config.max_minutes, elapsed_seconds=time_spent(run.checkpoint),
                           rating_loss_weight=config.rating_loss_weight)
    result = trainer.train(resume_from_checkpoint=run.checkpoint)
    # load_best_model_at_end has put the best checkpoint's weights back in place.
    final = evaluate_bpc(trainer, run.reviews.held_out, run.tokenizer, config.seq_len, config.condition_on_stars,
                         config.num_proc)
    log = training_log(config, run, trainer, result, final, time.time() - started)
    if trainer.is_world_process_zero():
        model = trainer.model
        model.config.use_cache = True  # Trainer turns it off for training; generation wants it on
        model.generation_config = saved_generation_config(run.tokenizer)
        trainer.save_model(config.output_dir)
        write_json(os.path.join(config.output_dir, TRAINING_LOG), log)
        plot_training_curves(log, os.path.join(config.output_dir, TRAINING_CURVES))
    # Under torchrun the other ranks would otherwise exit while the main one still saves, and a rank that exits with
    # its process group alive can abort ("terminate called without an active exception") and fail the whole run.
    trainer.accelerator.wait_for_everyone()
    _free_distributed_wrapper(trainer)
    trainer.accelerator.end_training()
    return log


def _free_distributed_wrapper(trainer) -> None:
    """Free DDP's wrapper, and with it its gradient reducer, while the process group is still registered.

    The reducer owns a reference to the process group. Freed after `end_training` has destroyed the group, it is the
    group's last owner: its deallocation keeps the GIL while it joins gloo's worker threads, and a worker that needs
    the GIL to drop a finished collective's tensor never returns, so the process hangs at exit now and then
    (pytorch/pytorch#56297). Freed first, the group ends in destroy_process_group, whose binding releases the GIL.
    """
    trainer.model_wrapped = trainer.model
    trainer.accelerator.free_memory()  # drops the accelerator's own references, then collects


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


def evaluate_model(config: EvalConfig) -> dict:
    """Held-out bits per character of `config.model`, overall and per star rating: the report `charlstm eval` prints."""
    if config.json:
        check_output_file(config.json, "--json")  # before minutes of evaluation, not after
    model, tokenizer, source = load_model(config.model, GENERATOR)
    if config.int8:
        model = quantize(model, inplace=True)
    config = config.filled_from(training_log_of(source))
    conditioned = bool(model.config.conditioned_on_stars)
    reviews = load_reviews(
        config.dataset, config.text_column, config.label_column, need_stars=conditioned,
        held_out_split=config.eval_split, validation_fraction=config.validation_fraction, seed=config.seed,
    )
    chosen = reviews.held_out
    if config.max_reviews is not None:
        chosen = chosen.select(range(min(config.max_reviews, len(chosen))))
    trainer = CharLSTMTrainer(
        model=model,
        args=TrainingArguments(
            output_dir=os.path.join(os.path.expanduser("~"), ".cache", "charlstm", "eval"),
            per_device_eval_batch_size=config.batch_size, report_to="none", disable_tqdm=True,
            dataloader_pin_memory=torch.cuda.is_available(),
        ),
        processing_class=tokenizer,
        compute_metrics=bits_per_character,
        preprocess_logits_for_metrics=summed_nll,
    )
    trainer.remove_callback(PrinterCallback)  # the caller reports the figures once, readably
    result = evaluate_bpc(trainer, chosen, tokenizer, config.seq_len, conditioned, config.num_proc)
    if config.eval_split == ALL_REVIEWS:
        split = "every review: the model did not train on this dataset"
    else:
        split = config.eval_split or f"held-out {config.validation_fraction:g} of train, seed {config.seed}"
    report = {"model": config.model, "weights": "int8" if is_quantized(model) else "fp32", "dataset": config.dataset,
              "split": split, "seq_len": config.seq_len, **result}
    if config.json:
        write_json(config.json, report)
    return report
