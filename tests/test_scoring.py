"""The generator's view of a text: ranks and log-probabilities per character, one by one or batched."""

import math

import pytest
import torch

from charlstm import CharLSTMTokenizer
from charlstm.configuration_charlstm import NUM_SPECIAL_TOKENS
from charlstm.detection.scoring import score_text, score_texts
from tests.conftest import make_tiny_model

TEXTS = ["Great tacos!", "Slow service, cold fries.", "Ok", "The soup was salty but the bread was fresh and warm."]


@pytest.fixture(scope="module")
def characters_only_model(tiny_tokenizer):
    """A tiny model that never prefers a special token, so its greedy output is plain text."""
    model = make_tiny_model(tiny_tokenizer, seed=3)
    with torch.no_grad():
        model.lm_head.bias[:NUM_SPECIAL_TOKENS] = -1e4
    return model


def test_greedy_text_is_all_top_choices(characters_only_model, tiny_tokenizer):
    prompt = torch.tensor([[tiny_tokenizer.bos_token_id]])
    generated = characters_only_model.generate(prompt, do_sample=False, max_new_tokens=60, min_new_tokens=60)
    text = tiny_tokenizer.decode(generated[0, 1:])
    assert len(text) == 60

    scores = score_text(characters_only_model, tiny_tokenizer, text)

    assert scores.ranks == [1] * 60
    assert scores.top1_share == 1.0
    assert set(scores.rank_buckets()) == {"top1"}
    assert "".join(scores.characters) == text


def test_log_probs_agree_with_the_models_own_loss(tiny_model, tiny_tokenizer):
    text = TEXTS[1]
    ids = tiny_tokenizer(text, return_tensors="pt")["input_ids"]
    loss = tiny_model(input_ids=ids, labels=ids).loss.item()  # mean nats per predicted character

    scores = score_text(tiny_model, tiny_tokenizer, text)

    assert len(scores.log_probs) == len(text)
    assert -sum(scores.log_probs) / len(text) == pytest.approx(loss, rel=1e-5)
    assert scores.bits_per_character == pytest.approx(loss / math.log(2), rel=1e-5)
    assert all(rank >= 1 for rank in scores.ranks)
    # An untrained model over ~100 tokens rarely ranks the right character first.
    assert scores.top1_share < 0.5
    assert scores.rank_buckets().count("beyond") > 0


def test_curvature_is_the_text_against_what_the_model_would_write_there(tiny_model, tiny_tokenizer):
    """Fast-DetectGPT's analytic criterion, from the model's full distribution at each position."""
    text = TEXTS[1]
    ids = tiny_tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        log_q = torch.log_softmax(tiny_model(input_ids=ids).logits[0, :-1].double(), dim=-1)
    observed = log_q.gather(-1, ids[0, 1:, None]).sum()
    mean = (log_q.exp() * log_q).sum(-1)
    variance = (log_q.exp() * log_q**2).sum(-1) - mean**2

    scores = score_text(tiny_model, tiny_tokenizer, text)

    assert scores.curvature == pytest.approx(((observed - mean.sum()) / variance.sum().sqrt()).item(), rel=1e-4)


def test_greedy_text_is_likelier_than_the_models_own_samples_would_be(characters_only_model, tiny_tokenizer):
    prompt = torch.tensor([[tiny_tokenizer.bos_token_id]])
    greedy = characters_only_model.generate(prompt, do_sample=False, max_new_tokens=60, min_new_tokens=60)
    # Its top choice at every step is at least as likely as its average choice there, so the criterion is positive.
    assert score_text(characters_only_model, tiny_tokenizer, tiny_tokenizer.decode(greedy[0, 1:])).curvature > 1
    assert score_text(characters_only_model, tiny_tokenizer, "zqxj" * 15).curvature < 0


def test_batched_equals_one_by_one_and_keeps_order(tiny_model, tiny_tokenizer):
    batched = score_texts(tiny_model, tiny_tokenizer, TEXTS, batch_size=3)
    for text, scores in zip(TEXTS, batched):
        alone = score_text(tiny_model, tiny_tokenizer, text)
        assert scores.text == text
        assert scores.ranks == alone.ranks
        assert scores.curvature == pytest.approx(alone.curvature, abs=1e-3)
        assert scores.log_probs == pytest.approx(alone.log_probs, abs=1e-5)


def test_star_prompt_conditions_the_first_character(tiny_model, tiny_tokenizer):
    text = TEXTS[0]
    plain = score_text(tiny_model, tiny_tokenizer, text)
    starred = score_text(tiny_model, tiny_tokenizer, text, stars=5)
    ids = tiny_tokenizer("<5star>" + text, return_tensors="pt")["input_ids"]
    expected = torch.log_softmax(tiny_model(input_ids=ids).logits[0, 1:-1], dim=-1)
    expected = expected.gather(-1, ids[0, 2:, None]).squeeze(-1)

    assert len(starred.log_probs) == len(text)
    assert starred.log_probs == pytest.approx(expected.tolist(), abs=1e-5)
    assert starred.log_probs[0] != pytest.approx(plain.log_probs[0])


def test_characters_outside_the_vocabulary_are_scored_as_unk(tiny_model, tiny_tokenizer):
    text = "snow ☃ day"
    scores = score_text(tiny_model, tiny_tokenizer, text)
    with_unk = score_text(tiny_model, tiny_tokenizer, "snow \x00 day")  # NUL is not in the vocabulary either

    assert scores.characters[5] == "☃"
    assert scores.unknown == [False] * 5 + [True] + [False] * 4
    assert scores.log_probs == pytest.approx(with_unk.log_probs, abs=1e-6)


def test_a_literal_star_token_in_the_text_is_scored_as_characters(tiny_model, tiny_tokenizer):
    scores = score_text(tiny_model, tiny_tokenizer, "<5star> yum")
    assert len(scores.ranks) == len("<5star> yum")
    assert not any(scores.unknown)


def test_empty_text_is_a_clear_error(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="empty"):
        score_text(tiny_model, tiny_tokenizer, "")
    with pytest.raises(ValueError, match="empty"):
        score_texts(tiny_model, tiny_tokenizer, ["fine", ""])


def test_over_long_text_is_cut_to_model_max_length(tiny_model, tiny_tokenizer):
    short_tokenizer = CharLSTMTokenizer(characters=tiny_tokenizer.characters(), model_max_length=20)
    text = TEXTS[3]

    scores = score_text(tiny_model, short_tokenizer, text)
    starred = score_text(tiny_model, short_tokenizer, text, stars=2)

    assert scores.truncated and scores.text == text[:19]  # <bos> + 19 characters = 20 tokens
    assert len(scores.ranks) == len(scores.log_probs) == 19
    assert starred.truncated and starred.text == text[:18]
    assert scores.log_probs == pytest.approx(score_text(tiny_model, tiny_tokenizer, text[:19]).log_probs, abs=1e-6)
    assert not score_text(tiny_model, short_tokenizer, "short").truncated


def test_a_model_in_training_mode_is_refused(tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer, dropout=0.5).train()
    with pytest.raises(ValueError, match="eval"):
        score_text(model, tiny_tokenizer, "dropout would make this random")


def test_head_equals_scoring_the_prefix_alone(tiny_model, tiny_tokenizer):
    text = TEXTS[3]
    head = score_text(tiny_model, tiny_tokenizer, text).head(12)
    prefix = score_text(tiny_model, tiny_tokenizer, text[:12])

    assert head.text == prefix.text == text[:12]
    assert head.ranks == prefix.ranks
    assert head.log_probs == pytest.approx(prefix.log_probs, abs=1e-5)
    assert head.bits_per_character == pytest.approx(prefix.bits_per_character, abs=1e-5)
    assert head.curvature == pytest.approx(prefix.curvature, abs=1e-4)
