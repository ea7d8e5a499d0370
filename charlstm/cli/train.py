"""`charlstm train` and `charlstm eval`: their options, which fill a `TrainConfig` / `EvalConfig`, and thin callers of
`charlstm.training.run`.

The defaults are the configs' own: an option left out is not in the parsed namespace at all (`argparse.SUPPRESS`),
so the config, or the recipe named with `--recipe`, supplies it, and `--help` quotes the config.
"""

import argparse
from dataclasses import fields

from ..errors import UsageError
from ..training.config import LR_SCHEDULES, PRECISIONS, PRESETS, RECIPES, DataConfig, EvalConfig, TrainConfig
from .numbers import integer, number

TRAIN_DEFAULTS = TrainConfig()


def add_commands(subparsers) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a character LSTM on a review dataset",
        description="Train a character-level LSTM on reviews with transformers.Trainer. Runs on CPU, on a GPU "
        "(bf16/fp16) and on several GPUs or machines via `torchrun` or `accelerate launch` with no change.",
        argument_default=argparse.SUPPRESS,
    )
    train.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                       help="start from a named recipe (charlstm.training.config.RECIPES; `yelp` made the bundled "
                       "model); the options given override it")
    _add_data_arguments(train, TRAIN_DEFAULTS)
    train.add_argument("--condition-on-stars", action="store_true",
                       help="start each review with its star token, so generation can ask for a rating")
    train.add_argument("--star-embedding-dim", type=integer,
                       help="with --condition-on-stars, size of the rating input fed beside every character "
                       f"(0: the star token alone){_default('star_embedding_dim')}")
    train.add_argument("--unrated-share", type=number,
                       help="with --condition-on-stars, share of training reviews framed without their star token "
                       f"and rating, so the model also writes reviews given no rating{_default('unrated_share')}")
    train.add_argument("--rating-loss-weight", type=number,
                       help="with --condition-on-stars, weight of a loss that asks each review's likelihood to pick "
                       "its own rating (as `charlstm rate` reads it); five passes a step instead of one"
                       f"{_default('rating_loss_weight')}")
    train.add_argument("--vocab-coverage", type=number, help="share of training characters the vocabulary covers; "
                       f"the rest become <unk>{_default('vocab_coverage')}")
    model = train.add_argument_group("model")
    model.add_argument("--preset", choices=sorted(PRESETS), help=f"model size{_default('preset')}")
    model.add_argument("--hidden-sizes", type=_positive_ints, help="LSTM sizes, one per layer, e.g. 1024,512")
    model.add_argument("--embedding-dim", type=integer, help="character embedding size (default: the preset's)")
    model.add_argument("--dropout", type=number, help=f"dropout after each LSTM layer{_default('dropout')}")
    model.add_argument("--init-from", metavar="MODEL",
                       help="start from this saved generator (a directory or Hub id): its weights, vocabulary and "
                       "shape, with a new optimiser and learning-rate schedule; for a second stage with another "
                       "recipe, or to fine-tune on other reviews")
    loop = train.add_argument_group("optimisation")
    loop.add_argument("--learning-rate", type=number, help=_default("learning_rate", alone=True))
    loop.add_argument("--lr-schedule", choices=LR_SCHEDULES, help=_default("lr_schedule", alone=True))
    loop.add_argument("--warmup-steps", type=integer, help=_default("warmup_steps", alone=True))
    loop.add_argument("--weight-decay", type=number, help=_default("weight_decay", alone=True))
    loop.add_argument("--max-grad-norm", type=number, help=f"gradient clipping, 0 = off{_default('max_grad_norm')}")
    loop.add_argument("--gradient-accumulation-steps", type=integer, help=_default("gradient_accumulation_steps", True))
    loop.add_argument("--max-steps", type=integer, help="stop after this many optimiser steps")
    loop.add_argument("--epochs", type=number, help="passes over the training blocks (default 1, or unlimited "
                      "with --max-minutes)")
    loop.add_argument("--max-minutes", type=number, help="wall-clock budget of training (held-out evaluations are not "
                      "counted); the learning-rate schedule follows it")
    loop.add_argument("--carry-state", action="store_true",
                      help="truncated backpropagation through time: lay the training reviews out as --batch-size "
                      "parallel streams and start each row's block from the LSTM state its previous block ended "
                      "with (gradients stop there), instead of from zeros; evaluation still starts every block "
                      "from zeros")
    loop.add_argument("--precision", choices=PRECISIONS, help="auto: bf16 (or fp16) on a GPU, fp32 on CPU")
    loop.add_argument("--threads", type=integer, help="torch threads on CPU (default: torch's, one per core); "
                      "fewer leave cores to other work")
    run = train.add_argument_group("run")
    run.add_argument("--output-dir", required=True, help="checkpoints, then the final model directory")
    run.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last checkpoint")
    run.add_argument("--overwrite", action="store_true", help="start over in an --output-dir that holds a run")
    run.add_argument("--eval-steps", type=integer,
                     help=f"evaluate and checkpoint every N steps{_default('eval_steps')}")
    run.add_argument("--logging-steps", type=integer, help=_default("logging_steps", alone=True))
    run.add_argument("--save-total-limit", type=integer, help="checkpoints kept (the best one is never deleted)"
                     f"{_default('save_total_limit')}")
    publish = train.add_argument_group("publishing")
    publish.add_argument("--push-to-hub", action="store_true", default=False,
                         help="push the final model to the Hugging Face Hub (as `charlstm push` does; token from "
                         "HF_TOKEN or `hf auth login`)")
    publish.add_argument("--hub-model-id", default=None, help="NAMESPACE/NAME of the model repo to push to")
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser(
        "eval",
        help="bits per character of a model on a dataset, overall and per star rating",
        description="Bits per character of a model on held-out reviews, overall and per star rating. Defaults "
        "for the data options come from the model's training_log.json, so the held-out part is the one it "
        "was trained without.",
        argument_default=argparse.SUPPRESS,
    )
    evaluate.add_argument("--model", required=True, help="a model directory or Hub id")
    _add_data_arguments(evaluate, None)
    evaluate.add_argument("--max-reviews", type=integer, help="evaluate only the first N reviews of the split")
    evaluate.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    evaluate.add_argument("--int8", action="store_true",
                          help="evaluate with int8 weights, as `charlstm generate` and the Space run the model")
    evaluate.set_defaults(func=run_eval)


def _default(name: str, alone: bool = False) -> str:
    value = getattr(TRAIN_DEFAULTS, name)
    return f"default: {value}" if alone else f" (default: {value})"


def _add_data_arguments(parser: argparse.ArgumentParser, defaults: DataConfig | None) -> None:
    """Options `train` and `eval` share; `defaults` None: `eval`, which takes them from the model's training log."""

    def default(name: str) -> str:
        if defaults is None:
            return " (default: the model's training run's)"
        return f" (default: {getattr(defaults, name)})"

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", help="Hub dataset id or local .jsonl/.json/.csv/.parquet/.txt file or saved dataset "
                      f"directory{default('dataset')}")
    data.add_argument("--text-column", help=f"text column{default('text_column')}")
    data.add_argument("--label-column",
                      help="star rating column (default: 'stars' or 'label'); 1-5, or 0-4 as the Hub Yelp set")
    data.add_argument("--eval-split",
                      help="held-out split name, or 'all' for every review (default: the dataset's validation/test "
                      "split, else a fraction; for eval, every review of a dataset the model did not train on)")
    data.add_argument("--validation-fraction", type=number,
                      help=f"share of the train split held out when the dataset has no held-out split"
                      f"{default('validation_fraction')}")
    data.add_argument("--seed", type=integer, help=f"seed for the held-out part, init and order{default('seed')}")
    data.add_argument("--seq-len", type=integer, help=f"characters per block{default('seq_len')}")
    data.add_argument("--batch-size", type=integer, help=f"blocks per step (per device){default('batch_size')}")
    data.add_argument("--num-proc", type=integer, help="processes for data preparation")


def _positive_ints(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return sizes


def _config_of(args: argparse.Namespace, config_class, base: dict | None = None):
    """The config the options describe: `base` (a recipe), then every option given."""
    given = {item.name: getattr(args, item.name) for item in fields(config_class) if hasattr(args, item.name)}
    return config_class(**{**(base or {}), **given})


def run_train(args) -> int:
    if args.push_to_hub != bool(args.hub_model_id):
        raise UsageError("--push-to-hub and --hub-model-id NAMESPACE/NAME go together")
    config = _config_of(args, TrainConfig, RECIPES.get(args.recipe))
    from ..hub.push import check_push_target, push_to_hub
    from ..training.run import train_model
    from ..training.rundir import is_main_process

    if args.push_to_hub:
        check_push_target(args.hub_model_id)  # a bad id or a missing token fails now, not after training
    log = train_model(config)
    if is_main_process():
        print(f"held-out bpc {log['final']['eval_bpc']:.4f} after {log['steps']} steps; "
              f"model saved to {config.output_dir}")
        if args.push_to_hub:
            pushed = push_to_hub(config.output_dir, args.hub_model_id)
            print(f"pushed to {pushed.url}; load it with revision={pushed.pinned_revision!r}")
    return 0


def run_eval(args) -> int:
    from ..training.run import evaluate_model

    report = evaluate_model(_config_of(args, EvalConfig))
    print(f"{report['model']} ({report['weights']} weights) on {report['dataset']} ({report['split']}, "
          f"{report['eval_reviews']} reviews, {report['eval_characters']} characters predicted)")
    print(f"bits per character: {report['eval_bpc']:.4f}")
    for rating, bpc in (report["eval_bpc_per_star"] or {}).items():
        print(f"  {rating} star{'s' if rating != '1' else ''}: {bpc:.4f}")
    return 0
