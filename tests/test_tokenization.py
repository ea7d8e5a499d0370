"""The character tokenizer: ids, round trips, unknown characters, saving and loading."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from charlstm import CharLSTMTokenizer, star_token
from charlstm.tokenization_charlstm import SPECIAL_TOKENS, normalize_text
from tests.conftest import TINY_CHARACTERS, TINY_CORPUS


def test_special_tokens_come_first_with_fixed_ids(tiny_tokenizer):
    assert [tiny_tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS] == list(range(9))
    assert (tiny_tokenizer.pad_token_id, tiny_tokenizer.bos_token_id, tiny_tokenizer.eos_token_id) == (0, 1, 2)
    assert tiny_tokenizer.unk_token_id == 3
    assert len(tiny_tokenizer) == tiny_tokenizer.vocab_size  # the star tokens are part of the base vocab


def test_from_corpus_is_deterministic_and_sorted():
    first = CharLSTMTokenizer.from_corpus(TINY_CORPUS)
    second = CharLSTMTokenizer.from_corpus(list(reversed(TINY_CORPUS)))
    assert first.get_vocab() == second.get_vocab()
    assert first.characters() == sorted(set("".join(TINY_CORPUS)))


def test_coverage_and_min_count_drop_rare_characters():
    texts = ["a" * 90 + "b" * 9 + "z"]
    assert CharLSTMTokenizer.from_corpus(texts, coverage=1.0).characters() == ["a", "b", "z"]
    assert CharLSTMTokenizer.from_corpus(texts, coverage=0.95).characters() == ["a", "b"]
    assert CharLSTMTokenizer.from_corpus(texts, min_count=10).characters() == ["a"]


def test_encode_adds_bos_and_one_token_per_character(tiny_tokenizer):
    ids = tiny_tokenizer("Nice 😀\n")["input_ids"]
    assert ids[0] == tiny_tokenizer.bos_token_id
    assert len(ids) == 1 + len("Nice 😀\n")


def test_star_token_in_text_is_one_token(tiny_tokenizer):
    ids = tiny_tokenizer(star_token(5) + "Great")["input_ids"]
    assert ids[:2] == [tiny_tokenizer.bos_token_id, tiny_tokenizer.convert_tokens_to_ids("<5star>")]
    with pytest.raises(ValueError, match="stars must be an integer from 1 to 5"):
        star_token(6)


def test_unknown_characters_become_unk_without_error(tiny_tokenizer):
    ids = tiny_tokenizer("a\u4e2db", add_special_tokens=False)["input_ids"]
    assert ids[1] == tiny_tokenizer.unk_token_id
    assert tiny_tokenizer.decode(ids) == "a<unk>b"
    assert tiny_tokenizer.decode(ids, skip_special_tokens=True) == "ab"


# Characters the tiny vocabulary knows; text made of them must survive exactly (whitespace, accents, emoji).
in_vocabulary_text = st.text(alphabet=sorted(set(TINY_CHARACTERS) | set("".join(TINY_CORPUS))), max_size=200)


@settings(max_examples=200, deadline=None)
@given(in_vocabulary_text)
def test_round_trip_is_exact_for_in_vocabulary_text(tiny_tokenizer, text):
    # A special token's literal text ("<eos>") is read as that token by design (see test_star_token_in_text...).
    if any(token in text for token in SPECIAL_TOKENS):
        return
    ids = tiny_tokenizer(text)["input_ids"]
    assert tiny_tokenizer.decode(ids, skip_special_tokens=True) == text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_unicode_string_encodes_one_token_per_character(tiny_tokenizer, text):
    ids = tiny_tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert len(ids) == len(text)
    assert all(0 <= index < len(tiny_tokenizer) for index in ids)
    known = set(tiny_tokenizer.characters())
    expected = "".join(char for char in text if char in known)
    assert tiny_tokenizer.decode(ids, skip_special_tokens=True) == expected


def test_save_and_load_through_auto_tokenizer(tmp_path, tiny_tokenizer):
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, CharLSTMTokenizer)
    assert loaded.get_vocab() == tiny_tokenizer.get_vocab()
    assert loaded.model_max_length == 4096
    assert loaded("Tacos 😀")["input_ids"] == tiny_tokenizer("Tacos 😀")["input_ids"]


def test_batch_padding_is_on_the_left_with_a_mask(tiny_tokenizer):
    batch = tiny_tokenizer(["a", "abc"], padding=True)
    assert batch["input_ids"][0][:2] == [tiny_tokenizer.pad_token_id] * 2
    assert batch["attention_mask"][0] == [0, 0, 1, 1]


def test_a_vocab_file_with_shifted_special_tokens_is_refused(tmp_path, tiny_tokenizer):
    tiny_tokenizer.save_pretrained(tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    vocab["<pad>"], vocab["<bos>"] = vocab["<bos>"], vocab["<pad>"]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ValueError, match="expected special token '<pad>' at id 0"):
        CharLSTMTokenizer.from_pretrained(tmp_path)


def test_empty_corpus_is_refused():
    with pytest.raises(ValueError, match="empty corpus"):
        CharLSTMTokenizer.from_corpus(["", ""])


def test_a_normalising_tokenizer_reads_typography_and_layout_alike_after_saving(tmp_path, tiny_tokenizer):
    # A detector's tokenizer (normalize_text=True) must not tell texts apart by their quote, dash or whitespace
    # characters, wherever it is loaded; a generator's tokenizer keeps every character as it is.
    detector_tokenizer = CharLSTMTokenizer(characters=tiny_tokenizer.characters(), normalize_text=True)
    detector_tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.normalize_text is True
    curly = "\u201cGreat\u201d tacos \u2014 it\u2019s  worth\u00a0it\u2026\n\nParking:\t hard. "
    straight = "\"Great\" tacos - it's worth it... Parking: hard."
    assert reloaded(curly)["input_ids"] == reloaded(straight)["input_ids"] == detector_tokenizer(curly)["input_ids"]
    assert normalize_text(curly) == straight
    assert tiny_tokenizer(curly)["input_ids"] != tiny_tokenizer(straight)["input_ids"]
    assert tiny_tokenizer.normalize_text is False


def test_a_truncating_tokenizer_cuts_long_text_unless_told_not_to_after_saving(tmp_path, tiny_tokenizer):
    # A detector's tokenizer reads at most what the detector was measured on, though a caller passes no options.
    detector_tokenizer = CharLSTMTokenizer(characters=tiny_tokenizer.characters(), model_max_length=11,
                                           truncate_by_default=True)
    detector_tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "the tacos were great"
    assert reloaded(text)["input_ids"] == reloaded(text, truncation=True)["input_ids"]
    assert len(reloaded(text)["input_ids"]) == 11 and len(reloaded([text, "ok"], padding=True)["input_ids"][0]) == 11
    assert len(reloaded(text, truncation=False)["input_ids"]) == len(text) + 1
    assert len(tiny_tokenizer(text)["input_ids"]) == len(text) + 1  # a generator's tokenizer cuts nothing
