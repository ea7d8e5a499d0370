"""The one place that turns what a user names (a local directory, a Hub id, or nothing: the bundled model) into a
model source, and a generator loaded from it.
"""

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .. import register
from ..errors import MissingFileError
from ..quantization import quantize
from .sampling import ReviewGenerator

# The models the project ships, as package data: used whenever no model is named. The generator is made by
# `charlstm train` (scripts/train_yelp.sh), the detector by `charlstm detector train` (scripts/build_detector.sh).
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"
BUNDLED_MODEL = BUNDLED_DIR / "charlstm-yelp"
BUNDLED_DETECTOR = BUNDLED_DIR / "charlstm-yelp-detector"

# A saved directory loads through the Auto classes without trust_remote_code.
register()


def model_or_bundled(model: str | os.PathLike | None, bundled: Path, made_by: str, option: str) -> str:
    """
    `model` as `require_model_source` gives it, or with None the bundled model at `bundled`; a missing bundled model
    is a MissingFileError (a FileNotFoundError) that says which command makes it and which option names another.
    """
    if model is None:
        if not (bundled / "config.json").is_file():
            raise MissingFileError(
                f"the bundled {bundled.name} is missing: {bundled} has no config.json. It is made by `{made_by}` "
                f"(see the README); or pass a model directory or Hub id with {option}"
            )
        model = bundled
    return require_model_source(model)


def require_model_source(model: str | os.PathLike) -> str:
    """
    `model` as a string, after refusing a local path that does not exist (a FileNotFoundError naming it) rather
    than letting it be looked up on the Hub. Anything else that is not a directory is taken for a Hub id.
    """
    source = str(model)
    looks_local = isinstance(model, Path) or os.path.isabs(source) or source.startswith(".") or os.path.exists(source)
    if looks_local and not os.path.isdir(source):
        raise MissingFileError(f"model directory {source} does not exist: give a saved model directory or a Hub id")
    return source


def load_generator(model: str | os.PathLike | None = None, int8: bool = True) -> ReviewGenerator:
    """
    Loads a causal LM and its tokenizer through the Auto classes from a local directory or a Hub id; None means the
    bundled model. A missing directory or an unreachable Hub id is a MissingFileError that says what to do.
    `int8` quantizes the LSTM and linear weights for CPU inference (`charlstm.quantize`), several times faster at
    batch 1; where int8 cannot run, the model stays fp32 with a warning.
    """
    source = model_or_bundled(model, BUNDLED_MODEL, "charlstm train", "--model / MODEL_ID")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        # float32 whatever the stored dtype: half-precision LSTM steps on a CPU are slow or unsupported.
        causal_lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    except OSError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MissingFileError(f"could not load the model {source}: {first_line}") from error
    if int8:
        causal_lm = quantize(causal_lm, inplace=True)
    return ReviewGenerator(causal_lm, tokenizer, source)
