"""charlstm: a character-level LSTM review generator and fake-review detector for the Hugging Face stack.

`import charlstm` is light (no torch, no transformers), so the `charlstm` command starts at once. It registers the
classes with the Auto classes where transformers is already imported; otherwise the first use of a public name below
(they load on first use, PEP 562) or `charlstm.register()` does, and then a saved directory loads with
`AutoModelForCausalLM.from_pretrained(path)` without `trust_remote_code`:

    import charlstm
    charlstm.register()
"""

import importlib
import sys

__version__ = "0.1.0"

# Public name -> the module that defines it.
_PUBLIC = {
    "CharLSTMConfig": "configuration_charlstm",
    "CharLSTMCache": "modeling_charlstm",
    "CharLSTMForCausalLM": "modeling_charlstm",
    "CharLSTMForSequenceClassification": "modeling_charlstm",
    "CharLSTMModel": "modeling_charlstm",
    "CharLSTMPreTrainedModel": "modeling_charlstm",
    "CharLSTMTokenizer": "tokenization_charlstm",
    "star_token": "tokenization_charlstm",
    "quantize": "quantization",
}

__all__ = sorted(_PUBLIC) + ["register"]

_registered = False


def register() -> None:
    """
    Registers the classes with the Auto classes (a saved directory then loads without `trust_remote_code`) and for
    their auto classes, so that `save_pretrained` copies the three code files and writes `auto_map`: a Hub repo then
    loads with `trust_remote_code=True` where this package is not installed. Runs once; later calls do nothing.
    """
    global _registered
    if _registered:
        return
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    from .configuration_charlstm import CharLSTMConfig
    from .modeling_charlstm import CharLSTMForCausalLM, CharLSTMForSequenceClassification, CharLSTMModel
    from .tokenization_charlstm import CharLSTMTokenizer

    AutoConfig.register(CharLSTMConfig.model_type, CharLSTMConfig, exist_ok=True)
    AutoModel.register(CharLSTMConfig, CharLSTMModel, exist_ok=True)
    AutoModelForCausalLM.register(CharLSTMConfig, CharLSTMForCausalLM, exist_ok=True)
    AutoModelForSequenceClassification.register(CharLSTMConfig, CharLSTMForSequenceClassification, exist_ok=True)
    AutoTokenizer.register(CharLSTMConfig, slow_tokenizer_class=CharLSTMTokenizer, exist_ok=True)
    CharLSTMConfig.register_for_auto_class()
    CharLSTMModel.register_for_auto_class("AutoModel")
    CharLSTMForCausalLM.register_for_auto_class("AutoModelForCausalLM")
    CharLSTMForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
    CharLSTMTokenizer.register_for_auto_class("AutoTokenizer")
    _registered = True


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    register()
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


# Imported after transformers (`from transformers import ...; import charlstm`), registering costs nothing more.
if "transformers" in sys.modules:
    register()
