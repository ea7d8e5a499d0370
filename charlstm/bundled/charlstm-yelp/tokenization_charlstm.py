"""A character tokenizer: one token per Unicode character, plus pad/bos/eos/unk and one token per star rating.

This file travels to the Hub next to the weights, so it imports nothing from the `charlstm` package.
"""

import json
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

from transformers import PreTrainedTokenizer

VOCAB_FILES_NAMES = {"vocab_file": "vocab.json"}

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
STAR_TOKENS = tuple(f"<{stars}star>" for stars in range(1, 6))
# The order fixes the ids: pad=0, bos=1, eos=2, unk=3, <1star>..<5star> = 4..8, then the characters.
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, *STAR_TOKENS)


# What a detector should not read as writing style: typography and layout that differ between collections of text
# rather than between writers (curly or straight quotes, dash characters, line breaks, runs of spaces).
_TYPOGRAPHY = str.maketrans({
    **dict.fromkeys("\u2018\u2019\u201a\u201b\u2032\u00b4\u0060", "'"),
    **dict.fromkeys("\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb", '"'),
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", "-"),
    **dict.fromkeys("\u200b\u200c\u200d\u2060\ufeff\u00ad"),  # invisible characters are dropped
})
_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """
    The text with what is not writing style made uniform: Unicode compatibility forms (NFKC: non-breaking spaces,
    the ellipsis character, full-width letters), one quote, apostrophe and dash character each, no invisible
    characters, and every run of whitespace (line breaks included) one space, none at either end.
    """
    text = unicodedata.normalize("NFKC", text).translate(_TYPOGRAPHY)
    return _WHITESPACE.sub(" ", text).strip()


def star_token(stars: int) -> str:
    """The token that asks for a review with `stars` stars (1-5)."""
    if not isinstance(stars, int) or isinstance(stars, bool) or not 1 <= stars <= 5:
        raise ValueError(f"stars must be an integer from 1 to 5, got {stars!r}")
    return STAR_TOKENS[stars - 1]


class CharLSTMTokenizer(PreTrainedTokenizer):
    """
    Splits text into single characters. `decode(encode(text), skip_special_tokens=True) == text` for any text whose
    characters are in the vocabulary; other characters become `<unk>`. A star token written into the text
    (`"<5star>Great tacos"`) is read as that token, which is how a plain text prompt asks for a rating.

    Encoding adds `<bos>` in front (`add_bos=True`), as every training review starts with it. With
    `normalize_text=True` (a detector's tokenizer; saved in tokenizer_config.json) text passes through
    `normalize_text` before it is split, so quotes, dashes and whitespace read the same in training and wherever the
    tokenizer is loaded. With `truncate_by_default=True` (a detector's tokenizer, which also keeps
    `split_special_tokens=True`) a text longer than `model_max_length` is cut to it unless a call passes
    `truncation=False`: a plain `pipeline` or the Hub widget then reads what the detector was measured on.
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str | None = None,
        characters: Iterable[str] | None = None,
        add_bos: bool = True,
        model_max_length: int = 4096,
        padding_side: str = "left",
        normalize_text: bool = False,
        truncate_by_default: bool = False,
        **kwargs,
    ):
        if (vocab_file is None) == (characters is None):
            raise ValueError("CharLSTMTokenizer needs exactly one of vocab_file or characters")
        if vocab_file is not None:
            self.vocab = _read_vocab(vocab_file)
        else:
            self.vocab = _build_vocab(characters)
        _check_max_length(model_max_length)
        self.ids_to_tokens = {index: token for token, index in self.vocab.items()}
        self.add_bos = add_bos
        self.normalize_text = normalize_text
        self.truncate_by_default = truncate_by_default
        # Fixed by the vocabulary layout and by add_bos; the copies a saved tokenizer_config.json holds are ignored.
        for key in (
            "pad_token", "bos_token", "eos_token", "unk_token", "extra_special_tokens",
            "special_tokens_pattern", "clean_up_tokenization_spaces",
        ):
            kwargs.pop(key, None)
        super().__init__(
            pad_token=PAD,
            bos_token=BOS,
            eos_token=EOS,
            unk_token=UNK,
            extra_special_tokens=list(STAR_TOKENS),
            add_bos=add_bos,
            normalize_text=normalize_text,
            truncate_by_default=truncate_by_default,
            model_max_length=model_max_length,
            padding_side=padding_side,
            clean_up_tokenization_spaces=False,
            special_tokens_pattern="bos" if add_bos else "none",
            **kwargs,
        )

    @classmethod
    def from_corpus(
        cls,
        texts: Iterable[str],
        coverage: float = 0.9999,
        min_count: int = 1,
        extra_characters: str = "",
        **kwargs,
    ) -> "CharLSTMTokenizer":
        """
        Builds the vocabulary from a corpus: the most frequent characters that together make up `coverage` of all
        characters, each seen at least `min_count` times, plus `extra_characters`. Ties and order are resolved by
        code point, so the same corpus always gives the same ids.
        """
        if not 0.0 < coverage <= 1.0:
            raise ValueError(f"coverage must be in (0, 1], got {coverage!r}")
        counts = Counter()
        for text in texts:
            counts.update(text)
        total = sum(counts.values())
        if total == 0:
            raise ValueError("cannot build a vocabulary from an empty corpus")
        kept, covered = set(), 0
        for char, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            if covered >= coverage * total or count < min_count:
                break
            kept.add(char)
            covered += count
        return cls(characters=kept | set(extra_characters), **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def prepare_for_tokenization(self, text: str, is_split_into_words: bool = False, **kwargs):
        return (normalize_text(text) if self.normalize_text else text), kwargs

    def _get_padding_truncation_strategies(self, padding=False, truncation=None, max_length=None, **kwargs):
        if truncation is None and self.truncate_by_default:
            truncation = True
        return super()._get_padding_truncation_strategies(padding, truncation, max_length, **kwargs)

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return list(text)

    def _convert_token_to_id(self, token: str) -> int:
        return self.vocab.get(token, self.vocab[UNK])

    def _convert_id_to_token(self, index: int) -> str:
        return self.ids_to_tokens.get(index, UNK)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        # The base class joins with spaces; characters join with nothing.
        return "".join(tokens)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        name = (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILES_NAMES["vocab_file"]
        path = os.path.join(save_directory, name)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.vocab, handle, ensure_ascii=False, indent=0)
        return (path,)

    def characters(self) -> list[str]:
        """The plain characters of the vocabulary, in id order."""
        return [token for token, _ in sorted(self.vocab.items(), key=lambda item: item[1])][len(SPECIAL_TOKENS) :]


def _build_vocab(characters: Iterable[str]) -> dict[str, int]:
    chars = sorted(set(characters))
    bad = [char for char in chars if len(char) != 1]
    if bad:
        raise ValueError(f"characters must be single characters, got {bad[:5]!r}")
    return {token: index for index, token in enumerate([*SPECIAL_TOKENS, *chars])}


def _read_vocab(vocab_file: str) -> dict[str, int]:
    """The token -> id map of a vocab.json, or a ValueError naming the file (the loader reports it in one line)."""
    try:
        with open(vocab_file, encoding="utf-8") as handle:
            vocab = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{vocab_file} is not valid JSON ({error})") from None
    if not isinstance(vocab, dict) or not all(type(index) is int for index in vocab.values()):
        raise ValueError(f"{vocab_file} must map each token to its id, like {{\"<pad>\": 0, ...}}")
    _check_vocab(vocab, vocab_file)
    return vocab


def _check_max_length(model_max_length) -> None:
    """
    tokenizer_config.json's model_max_length: text is cut to it, so a string would fail deep inside padding and
    a length below 2 (`<bos>` and one character) would leave nothing to read.
    """
    if isinstance(model_max_length, bool) or not isinstance(model_max_length, int) or model_max_length < 2:
        raise ValueError(
            f"model_max_length (tokenizer_config.json) must be a whole number of at least 2, got {model_max_length!r}"
        )


def _check_vocab(vocab: dict, source: str) -> None:
    """A vocab.json that does not start with the special tokens in order would silently shift every id."""
    for index, token in enumerate(SPECIAL_TOKENS):
        if vocab.get(token) != index:
            raise ValueError(f"{source}: expected special token {token!r} at id {index}, got {vocab.get(token)!r}")
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise ValueError(f"{source}: token ids must be 0..{len(vocab) - 1} without gaps")
