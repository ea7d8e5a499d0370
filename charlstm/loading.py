"""The one place that turns what a user names (a local directory, a Hub id, or nothing: the bundled model) into a
model of the kind the command needs, a generator or a detector, or one line that says why it cannot.

Every command and the Space load through here, so a detector given to `generate`, a `config.json` that does not
match its weights or a truncated `model.safetensors` reads the same everywhere, instead of loading in silence with
a random head or ending deep inside torch.
"""

import json
import os
from contextlib import contextmanager
from pathlib import Path

import torch
from huggingface_hub.utils import logging as hub_logging
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as transformers_logging

from . import register
from .errors import MissingFileError, UsageError
from .weights import check_finite_weights

# The models the project ships, as package data: used whenever no model is named. The generator is made by
# `charlstm train` (scripts/train_yelp.sh), the detector by `charlstm detector train --frozen`
# (scripts/build_frozen_detector.sh).
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
BUNDLED_MODEL = BUNDLED_DIR / "charlstm-yelp"
BUNDLED_DETECTOR = BUNDLED_DIR / "charlstm-yelp-detector"

GENERATOR, DETECTOR = "generator", "detector"
DETECTOR_LABELS = ["human", "machine"]
# What each kind is made by, which option names another one, and which command uses the other kind.
_KINDS = {
    GENERATOR: {"bundled": BUNDLED_MODEL, "made_by": "charlstm train", "option": "--model / MODEL_ID",
               "auto_class": AutoModelForCausalLM, "use": "charlstm generate --model"},
    DETECTOR: {"bundled": BUNDLED_DETECTOR, "made_by": "charlstm detector train", "option": "--detector",
              "auto_class": AutoModelForSequenceClassification, "use": "charlstm detect --detector"},
}

# A saved directory loads through the Auto classes without trust_remote_code.
register()


def display_name(source: str | os.PathLike) -> str:
    """What a user is shown for a model: its Hub id, or a local directory's name, never a path on this machine."""
    source = str(source)
    return Path(source).name if os.path.isdir(source) else source


def model_source(model: str | os.PathLike | None, kind: str = GENERATOR) -> str:
    """
    `model` as a string (None: the bundled model of `kind`), after refusing a local path that does not exist or
    holds no config.json, rather than letting it be looked up on the Hub. Anything else is taken for a Hub id.
    """
    if model is None:
        bundled = _KINDS[kind]["bundled"]
        if not (bundled / "config.json").is_file():
            raise MissingFileError(
                f"the bundled {bundled.name} is missing: {bundled} has no config.json. It is made by "
                f"`{_KINDS[kind]['made_by']}` (see the README); or pass a model directory or Hub id with "
                f"{_KINDS[kind]['option']}"
            )
        return str(bundled)
    source = str(model)
    looks_local = isinstance(model, Path) or os.path.isabs(source) or source.startswith((".", "~")) or (
        os.path.exists(source))
    if looks_local and not os.path.isdir(source):
        raise MissingFileError(f"model directory {source} does not exist: give a saved model directory or a Hub id")
    if os.path.isdir(source) and not os.path.isfile(os.path.join(source, "config.json")):
        raise MissingFileError(f"{source} is not a saved model directory: it has no config.json")
    return source


def load_config(source: str):
    """The charlstm config of `source`, or a UsageError naming what is wrong with its config.json."""
    if os.path.isdir(source):
        try:
            json.loads(Path(source, "config.json").read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UsageError(f"{source}/config.json is not valid JSON ({error})") from None
        except OSError as error:
            raise MissingFileError(f"cannot read {source}/config.json: {error.strerror}") from None
    try:
        with _quiet_loading():
            config = AutoConfig.from_pretrained(source)
    except OSError as error:
        raise MissingFileError(f"could not load the model {source}: {_first_line(error)}") from None
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise UsageError(f"{source}/config.json is not a charlstm config: {_first_line(error)}") from None
    if getattr(config, "model_type", None) != "charlstm":
        raise UsageError(f"{source} is a {config.model_type} model, not a charlstm one")
    return config


def kind_of(config) -> str:
    """A detector is a charlstm classifier whose labels are human and machine; anything else is a generator."""
    return DETECTOR if sorted(config.label2id) == DETECTOR_LABELS else GENERATOR


def check_kind(model: str | os.PathLike | None, kind: str) -> str:
    """The source of `model` after checking that its config is of `kind` (no weights are read): for commands that
    hand the model on to code that loads it."""
    source = model_source(model, kind)
    found = kind_of(load_config(source))
    if found != kind:
        raise UsageError(f"{source} is a {found}, not a {kind}: use `{_KINDS[found]['use']} {source}`")
    return source


def load_model(model: str | os.PathLike | None, kind: str):
    """
    (model, tokenizer, source) of `kind`, in float32, from a directory, a Hub id or the bundled model; every way
    this can fail is one UsageError: wrong kind, missing or malformed config.json, weights that the config does not
    describe, unreadable weights, no tokenizer.
    """
    source = check_kind(model, kind)
    try:
        with _quiet_loading():
            # float32 whatever the stored dtype: half-precision LSTM steps on a CPU are slow or unsupported.
            loaded, info = _KINDS[kind]["auto_class"].from_pretrained(
                source, dtype=torch.float32, output_loading_info=True, ignore_mismatched_sizes=True
            )
    except OSError as error:
        raise MissingFileError(f"could not load the weights of {source}: {_first_line(error)}") from None
    except SafetensorError as error:
        raise MissingFileError(f"the weights of {source} are corrupt or truncated: {_first_line(error)}") from None
    if info["mismatched_keys"]:
        name, stored, expected = min(info["mismatched_keys"])
        raise UsageError(
            f"{source}/config.json does not match its weights: {name} is {list(stored)} in the weights but "
            f"{list(expected)} by the config (hidden_sizes {loaded.config.hidden_sizes}); re-save the model"
        )
    if info["missing_keys"]:
        raise UsageError(
            f"the weights of {source} lack {', '.join(sorted(info['missing_keys']))}: not a saved charlstm {kind}"
        )
    check_finite_weights(loaded, source)
    try:
        with _quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise MissingFileError(f"could not load the tokenizer of {source}: {_first_line(error)}") from None
    return loaded.eval(), tokenizer, source


@contextmanager
def _quiet_loading():
    """No load report, retry notes or progress bar on stderr: what they would say comes out as one error above."""
    verbosity, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    hub_verbosity = hub_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    hub_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        hub_logging.set_verbosity(hub_verbosity)
        if bars:
            transformers_logging.enable_progress_bar()


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
