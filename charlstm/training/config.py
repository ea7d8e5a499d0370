"""What a training run or an evaluation is asked to do, as dataclasses (like transformers' `TrainingArguments`).

The command line fills them, scripts and tests construct them, and the training log records them. Import-light (no
torch): `charlstm train --help` reads its defaults from here. `check()` refuses settings that cannot work before any
data is read or any file deleted.
"""

import math
from dataclasses import dataclass, fields, replace

from ..errors import UsageError

# The held-out split that holds out every review of every split: data a model never trained on, evaluated whole.
ALL_REVIEWS = "all"

DEFAULT_DATASET = "Yelp/yelp_review_full"

# Model sizes. `base` is the two-layer [1024, 512] model of the IBM "generate fake reviews" code pattern.
PRESETS = {
    "tiny": {"embedding_dim": 16, "hidden_sizes": [64]},
    "small": {"embedding_dim": 64, "hidden_sizes": [512, 512]},
    "base": {"embedding_dim": 64, "hidden_sizes": [1024, 512]},
    "large": {"embedding_dim": 128, "hidden_sizes": [1536, 1536]},
}
LR_SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class DataConfig:
    """Which reviews, which of them are held out, and how they are cut into blocks: what `train` and `eval` share."""

    dataset: str = DEFAULT_DATASET
    text_column: str = "text"
    label_column: str | None = None  # None: 'stars' or 'label'
    eval_split: str | None = None  # None: the dataset's validation/test split, else `validation_fraction`
    validation_fraction: float = 0.05
    seed: int = 0
    seq_len: int = 256
    batch_size: int = 32
    num_proc: int | None = None

    def check(self) -> None:
        _at_least_one({"--seq-len": self.seq_len, "--batch-size": self.batch_size, "--num-proc": self.num_proc})
        if not 0.0 < self.validation_fraction < 1.0:
            raise UsageError(f"--validation-fraction must be between 0 and 1, got {self.validation_fraction}")


@dataclass
class TrainConfig(DataConfig):
    """Everything `charlstm train` can be asked; the field names are its options' names."""

    output_dir: str = ""
    condition_on_stars: bool = False
    star_embedding_dim: int = 16  # with condition_on_stars: the rating input fed beside every character (0: none)
    unrated_share: float = 0.1  # with condition_on_stars: training reviews framed without their rating
    rating_loss_weight: float = 0.0  # with condition_on_stars: weight of the rating loss (trainer.py)
    vocab_coverage: float = 0.9999
    # model
    preset: str = "small"
    hidden_sizes: list[int] | None = None  # None: the preset's
    embedding_dim: int | None = None  # None: the preset's
    dropout: float = 0.0
    init_from: str | None = None
    # optimisation
    learning_rate: float = 2e-3
    lr_schedule: str = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1
    max_steps: int | None = None
    epochs: float | None = None  # None: 1, or unlimited with max_minutes
    max_minutes: float | None = None
    carry_state: bool = False
    precision: str = "auto"
    threads: int | None = None
    # run
    resume: bool = False
    overwrite: bool = False
    eval_steps: int = 500
    logging_steps: int = 50
    save_total_limit: int = 2

    def check(self) -> None:
        super().check()
        if not self.output_dir:
            raise UsageError("an output directory is needed (--output-dir)")
        _at_least_one({"--eval-steps": self.eval_steps, "--logging-steps": self.logging_steps,
                       "--gradient-accumulation-steps": self.gradient_accumulation_steps,
                       "--embedding-dim": self.embedding_dim, "--threads": self.threads,
                       "--save-total-limit": self.save_total_limit})
        if self.warmup_steps < 0:
            raise UsageError(f"--warmup-steps must not be negative, got {self.warmup_steps}")
        for name, value in {"--max-steps": self.max_steps, "--epochs": self.epochs, "--max-minutes": self.max_minutes,
                            "--learning-rate": self.learning_rate}.items():
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UsageError(f"{name} must be a positive finite number, got {value}")
        for name, value in {"--weight-decay": self.weight_decay, "--max-grad-norm": self.max_grad_norm}.items():
            if not (math.isfinite(value) and value >= 0):
                raise UsageError(f"{name} must be a finite number >= 0, got {value}")
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite contradict each other: continue the run, or start over")
        if not 0.0 < self.vocab_coverage <= 1.0:
            raise UsageError(f"--vocab-coverage must be in (0, 1], got {self.vocab_coverage}")
        if not 0.0 <= self.unrated_share < 1.0:
            raise UsageError(f"--unrated-share must be in [0, 1), got {self.unrated_share}")
        if not (math.isfinite(self.rating_loss_weight) and self.rating_loss_weight >= 0):
            raise UsageError(f"--rating-loss-weight must be a finite number >= 0, got {self.rating_loss_weight}")
        if self.rating_loss_weight and not self.condition_on_stars:
            raise UsageError("--rating-loss-weight needs --condition-on-stars: without ratings there is none to tell")
        if self.rating_loss_weight and self.carry_state:
            raise UsageError("--rating-loss-weight cannot be used with --carry-state: its passes read each rating "
                             "from the block's start, not from a state carried across blocks")
        if self.star_embedding_dim < 0:
            raise UsageError(f"--star-embedding-dim must not be negative, got {self.star_embedding_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"--dropout must be in [0, 1), got {self.dropout}")
        for name, value, allowed in (("--preset", self.preset, PRESETS), ("--lr-schedule", self.lr_schedule,
                                     LR_SCHEDULES), ("--precision", self.precision, PRECISIONS)):
            if value not in allowed:
                raise UsageError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.hidden_sizes is not None and (not self.hidden_sizes or min(self.hidden_sizes) < 1):
            raise UsageError(f"--hidden-sizes must be positive sizes, got {self.hidden_sizes}")

    @property
    def model_shape(self) -> dict:
        """embedding_dim and hidden_sizes: the preset's, where not given."""
        preset = PRESETS[self.preset]
        return {"embedding_dim": self.embedding_dim or preset["embedding_dim"],
                "hidden_sizes": list(self.hidden_sizes or preset["hidden_sizes"])}


@dataclass
class EvalConfig(DataConfig):
    """What `charlstm eval` is asked. A data field left at None takes the model's training run's value (see
    `filled_from`), so the held-out reviews are the ones it never trained on."""

    model: str = ""
    dataset: str | None = None
    text_column: str | None = None
    validation_fraction: float | None = None
    seed: int | None = None
    seq_len: int | None = None
    batch_size: int | None = None
    max_reviews: int | None = None
    int8: bool = False
    json: str | None = None

    def filled_from(self, log: dict | None) -> "EvalConfig":
        """
        Unset data options take the training run's values, and the defaults of a training run where it has none; a
        dataset other than the one the model trained on is evaluated whole, unless a split or fraction is named.
        """
        defaults = DataConfig()
        filled = {}
        foreign = self.dataset is not None and self.dataset != (log or {}).get("dataset")
        if foreign and self.eval_split is None and self.validation_fraction is None:
            filled["eval_split"] = ALL_REVIEWS
        for item in fields(DataConfig):
            if getattr(self, item.name) is None and item.name not in filled:
                fallback = getattr(defaults, item.name)
                filled[item.name] = (log or {}).get(item.name, fallback) if item.name != "num_proc" else None
        config = replace(self, **filled)
        DataConfig.check(config)
        _at_least_one({"--max-reviews": self.max_reviews})
        return config


# The recipes the project trains with, by name: `charlstm train --recipe NAME` starts from one, and
# scripts/compare_recipes.py trains the same definitions. `yelp` trains the bundled generator's first stage from
# scratch; `yelp-rated` is its second stage: a warm start from the first (which gains the rating input, see
# training/warm_start.py) at batch 16, the batch that led at equal time in compare_recipes.py.
YELP = dict(
    dataset="../shared/data/yelp_reviews.jsonl", condition_on_stars=True, validation_fraction=0.2, seed=0,
    preset="small", seq_len=256, batch_size=32, learning_rate=2e-3, lr_schedule="cosine", warmup_steps=30,
    max_grad_norm=1.0, threads=2, max_minutes=75, eval_steps=2500, logging_steps=10,
)
RECIPES = {
    "yelp": YELP,
    # One thread: beside other work on a 2-core machine, two threads made each step several times slower.
    "yelp-rated": {**YELP, "batch_size": 16, "learning_rate": 1e-3, "max_minutes": 60, "eval_steps": 2000,
                   "threads": 1},
}


def recipe_config(name: str, **overrides) -> TrainConfig:
    """A recipe as a `TrainConfig`, with `overrides` on top."""
    if name not in RECIPES:
        raise UsageError(f"no recipe {name!r}: the recipes are {', '.join(RECIPES)}")
    return TrainConfig(**{**RECIPES[name], **overrides})


def _at_least_one(values: dict) -> None:
    for name, value in values.items():
        if value is not None and value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}")

