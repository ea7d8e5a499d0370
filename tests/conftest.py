"""Shared fixtures: a tiny tokenizer and a tiny, untrained model saved as a Hub-style directory."""

import string

import pytest
import torch

from charlstm import CharLSTMConfig, CharLSTMForCausalLM, CharLSTMTokenizer

# Our own sentences, review-shaped; the real Yelp data is for benchmarks and the bundled model only.
TINY_CORPUS = [
    "The tacos were great and the salsa was fresh. Friendly staff, quick service!",
    "Cold fries, slow waiter. We waited forty minutes for a burger. Never again.",
    "Decent pizza for the price; the crust was thin and crispy.\nParking is hard.",
    "Best brunch in town: fluffy pancakes, strong coffee, and a view of the park.",
    "Meh. The soup was salty and the bread was stale, but the dessert was lovely.",
]
TINY_CHARACTERS = string.printable + "éèàü€😀"


@pytest.fixture(scope="session")
def tiny_tokenizer() -> CharLSTMTokenizer:
    return CharLSTMTokenizer.from_corpus(TINY_CORPUS, extra_characters=TINY_CHARACTERS)


def make_tiny_model(tokenizer: CharLSTMTokenizer, seed: int = 0, **config) -> CharLSTMForCausalLM:
    torch.manual_seed(seed)
    settings = dict(vocab_size=len(tokenizer), embedding_dim=16, hidden_sizes=[32, 24])
    return CharLSTMForCausalLM(CharLSTMConfig(**{**settings, **config})).eval()


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer) -> CharLSTMForCausalLM:
    return make_tiny_model(tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_model, tiny_tokenizer):
    """A saved model directory as `save_pretrained` writes it: weights, tokenizer and the three code files."""
    path = tmp_path_factory.mktemp("tiny-model")
    tiny_model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path
