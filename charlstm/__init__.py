"""charlstm: a character-level LSTM review generator and fake-review detector for the Hugging Face stack.

Importing the package registers the classes with the Auto classes, so a saved directory loads with
`AutoModelForCausalLM.from_pretrained(path)` without `trust_remote_code`.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from .configuration_charlstm import CharLSTMConfig
from .modeling_charlstm import (
    CharLSTMCache,
    CharLSTMForCausalLM,
    CharLSTMForSequenceClassification,
    CharLSTMModel,
    CharLSTMPreTrainedModel,
)
from .quantization import quantize
from .tokenization_charlstm import CharLSTMTokenizer, star_token

AutoConfig.register(CharLSTMConfig.model_type, CharLSTMConfig, exist_ok=True)
AutoModel.register(CharLSTMConfig, CharLSTMModel, exist_ok=True)
AutoModelForCausalLM.register(CharLSTMConfig, CharLSTMForCausalLM, exist_ok=True)
AutoModelForSequenceClassification.register(CharLSTMConfig, CharLSTMForSequenceClassification, exist_ok=True)
AutoTokenizer.register(CharLSTMConfig, slow_tokenizer_class=CharLSTMTokenizer, exist_ok=True)

# `save_pretrained` copies the three code files and writes `auto_map`, so a Hub repo loads with
# `trust_remote_code=True` where this package is not installed.
CharLSTMConfig.register_for_auto_class()
CharLSTMModel.register_for_auto_class("AutoModel")
CharLSTMForCausalLM.register_for_auto_class("AutoModelForCausalLM")
CharLSTMForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
CharLSTMTokenizer.register_for_auto_class("AutoTokenizer")

__version__ = "0.1.0"

__all__ = [
    "CharLSTMCache",
    "CharLSTMConfig",
    "CharLSTMForCausalLM",
    "CharLSTMForSequenceClassification",
    "CharLSTMModel",
    "CharLSTMPreTrainedModel",
    "CharLSTMTokenizer",
    "quantize",
    "star_token",
]
