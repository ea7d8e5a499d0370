"""`charlstm train` and `charlstm eval`: their options, and thin callers of `charlstm.training.trainer`."""

import argparse

from ..training.defaults import DATA_DEFAULTS, DEFAULT_DATASET, PRESETS, STAR_EMBEDDING_DIM


def add_commands(subparsers) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a character LSTM on a review dataset",
        description="Train a character-level LSTM on reviews with transformers.Trainer. Runs on CPU, on a GPU "
        "(bf16/fp16) and on several GPUs or machines via `torchrun` or `accelerate launch` with no change.",
    )
    _add_data_arguments(train)
    train.add_argument("--condition-on-stars", action="store_true",
                       help="start each review with its star token, so generation can ask for a rating")
    train.add_argument("--star-embedding-dim", type=int, default=STAR_EMBEDDING_DIM,
                       help="with --condition-on-stars, size of the rating input fed beside every character "
                       "(0: the star token alone; default: %(default)s)")
    train.add_argument("--unrated-share", type=float, default=0.1,
                       help="with --condition-on-stars, share of training reviews framed without their star token "
                       "and rating, so the model also writes reviews given no rating (default: %(default)s)")
    train.add_argument("--vocab-coverage", type=float, default=0.9999,
                       help="share of training characters the vocabulary covers; the rest become <unk>")
    model = train.add_argument_group("model")
    model.add_argument("--preset", choices=sorted(PRESETS), default="small", help="model size (default: small)")
    model.add_argument("--hidden-sizes", type=_positive_ints, help="LSTM sizes, one per layer, e.g. 1024,512")
    model.add_argument("--embedding-dim", type=int, help="character embedding size (default: the preset's)")
    model.add_argument("--dropout", type=float, default=0.0, help="dropout after each LSTM layer")
    model.add_argument("--init-from", metavar="MODEL",
                       help="start from this saved generator (a directory or Hub id): its weights, vocabulary and "
                       "shape, with a new optimiser and learning-rate schedule; for a second stage with another "
                       "recipe, or to fine-tune on other reviews")
    loop = train.add_argument_group("optimisation")
    loop.add_argument("--learning-rate", type=float, default=2e-3)
    loop.add_argument("--lr-schedule", choices=["cosine", "linear", "constant"], default="cosine")
    loop.add_argument("--warmup-steps", type=int, default=0)
    loop.add_argument("--weight-decay", type=float, default=0.0)
    loop.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping (0 = off)")
    loop.add_argument("--gradient-accumulation-steps", type=int, default=1)
    loop.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    loop.add_argument("--epochs", type=float, help="passes over the training blocks (default 1, or unlimited "
                      "with --max-minutes)")
    loop.add_argument("--max-minutes", type=float, help="wall-clock budget of training (held-out evaluations are not "
                      "counted); the learning-rate schedule follows it")
    loop.add_argument("--carry-state", action="store_true",
                      help="truncated backpropagation through time: lay the training reviews out as --batch-size "
                      "parallel streams and start each row's block from the LSTM state its previous block ended "
                      "with (gradients stop there), instead of from zeros; evaluation still starts every block "
                      "from zeros")
    loop.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                      help="auto: bf16 (or fp16) on a GPU, fp32 on CPU")
    loop.add_argument("--threads", type=int, help="torch threads on CPU (default: torch's, one per core); "
                      "fewer leave cores to other work")
    run = train.add_argument_group("run")
    run.add_argument("--output-dir", required=True, help="checkpoints, then the final model directory")
    run.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last checkpoint")
    run.add_argument("--overwrite", action="store_true", help="start over in an --output-dir that holds a run")
    run.add_argument("--eval-steps", type=int, default=500, help="evaluate and checkpoint every N steps")
    run.add_argument("--logging-steps", type=int, default=50)
    run.add_argument("--save-total-limit", type=int, default=2, help="checkpoints kept (the best one is never "
                     "deleted)")
    run.add_argument("--num-proc", type=int, default=None, help="processes for data preparation")
    publish = train.add_argument_group("publishing")
    publish.add_argument("--push-to-hub", action="store_true", help="push the final model to the Hugging Face Hub "
                         "(as `charlstm push` does; token from HF_TOKEN or `hf auth login`)")
    publish.add_argument("--hub-model-id", help="NAMESPACE/NAME of the model repo to push to")
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser(
        "eval",
        help="bits per character of a model on a dataset, overall and per star rating",
        description="Bits per character of a model on held-out reviews, overall and per star rating. Defaults "
        "for the data options come from the model's training_log.json, so the held-out part is the one it "
        "was trained without.",
    )
    evaluate.add_argument("--model", required=True, help="a model directory or Hub id")
    _add_data_arguments(evaluate, from_training_log=True)
    evaluate.add_argument("--max-reviews", type=int, help="evaluate only the first N reviews of the split")
    evaluate.add_argument("--num-proc", type=int, default=None)
    evaluate.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    evaluate.add_argument("--int8", action="store_true",
                          help="evaluate with int8 weights, as `charlstm generate` and the Space run the model")
    evaluate.set_defaults(func=run_eval)


def _add_data_arguments(parser: argparse.ArgumentParser, from_training_log: bool = False) -> None:
    """Options `train` and `eval` share; for `eval`, None means: take it from the model's training log."""
    def default(name):
        return None if from_training_log else DATA_DEFAULTS[name]

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default=default("dataset"),
                      help=f"Hub dataset id or local .jsonl/.json/.csv/.parquet/.txt file or saved dataset directory "
                      f"(default: {DEFAULT_DATASET})")
    data.add_argument("--text-column", default=default("text_column"))
    data.add_argument("--label-column", default=None,
                      help="star rating column (default: 'stars' or 'label'); 1-5, or 0-4 as the Hub Yelp set")
    data.add_argument("--eval-split", default=None,
                      help="held-out split name (default: the dataset's validation/test split, else a fraction)")
    data.add_argument("--validation-fraction", type=float, default=default("validation_fraction"),
                      help="share of the train split held out when the dataset has no held-out split")
    data.add_argument("--seed", type=int, default=default("seed"), help="seed for the held-out part, init and order")
    data.add_argument("--seq-len", type=int, default=default("seq_len"), help="characters per training block")
    data.add_argument("--batch-size", type=int, default=default("batch_size"), help="blocks per step (per device)")


def _positive_ints(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return sizes


def run_train(args) -> int:
    from ..training.trainer import train_model

    return train_model(args)


def run_eval(args) -> int:
    from ..training.trainer import evaluate_model

    return evaluate_model(args)
