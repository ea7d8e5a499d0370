"""A warm start (`charlstm train --init-from MODEL`): a saved generator's weights, vocabulary and shape, with a new
optimiser and schedule; refused where it would make the run's held-out figures wrong."""

from dataclasses import dataclass

from ..errors import UsageError
from ..loading import GENERATOR, check_kind, load_config, load_model
from ..modeling_charlstm import CharLSTMForCausalLM
from ..tokenization_charlstm import CharLSTMTokenizer
from .config import TrainConfig
from .report import training_log_of
from .warm_start import add_rating_input


@dataclass
class StartingModel:
    """The saved generator a warm-started run (`--init-from`) begins with: a new optimiser and schedule on its
    weights, vocabulary and shape."""

    source: str
    log: dict  # its training log ({} where it has none), which the new run's log carries on
    model: CharLSTMForCausalLM | None = None
    tokenizer: CharLSTMTokenizer | None = None


def starting_model(config: TrainConfig, load_weights: bool) -> StartingModel:
    """Loads `--init-from` (only its config and log where `load_weights` is false) and refuses a start that would
    make the run's figures wrong."""
    if load_weights:
        model, tokenizer, source = load_model(config.init_from, GENERATOR)
        saved = model.config
    else:
        model = tokenizer = None
        source = check_kind(config.init_from, GENERATOR)
        saved = load_config(source)
    if saved.conditioned_on_stars != config.condition_on_stars:
        trained = "with" if saved.conditioned_on_stars else "without"
        raise UsageError(f"{source} was trained {trained} --condition-on-stars: continue it the same way")
    for option, value, kept in (("--hidden-sizes", config.hidden_sizes, list(saved.hidden_sizes)),
                                ("--embedding-dim", config.embedding_dim, saved.embedding_dim)):
        if value is not None and value != kept:
            raise UsageError(f"{option} {value} differs from {source}'s {kept}: a warm start keeps its model's shape")
    log = training_log_of(source) or {}
    # Scored on reviews it trained on, the model would look better than it is, and so would the run's held-out bpc.
    if log.get("dataset") == config.dataset:
        for option, key in (("--validation-fraction", "validation_fraction"), ("--eval-split", "eval_split"),
                            ("--seed", "seed")):
            value = getattr(config, key)
            if key in log and log[key] != value:
                raise UsageError(f"{source} held out its reviews with {option} {log[key]}, not {value}: on the same "
                                 "data keep its split, or the held-out reviews include ones it trained on")
    if model is not None:
        model.config.dropout = model.model.dropout.p = config.dropout  # a training setting, not part of the shape
        if config.condition_on_stars:  # a model that reads the rating from its star token only gets the rating input
            add_rating_input(model, config.star_embedding_dim, config.seed)
        model.train()
    return StartingModel(source, log, model, tokenizer)
