"""The rating conditions every character (issue 28): the rating input, its data, its warm start, and what a user of a
star-conditioned model sees: the word a rating asks for, reviews that start like reviews, `charlstm rate`.

The synthetic reviews say a rating word ("awful" for 1 star, "lovely" for 5) at random places among shared filler
words, and are several training blocks long: most blocks hold neither the star token nor, at their start, any
rating word, so only a rating that reaches every character tells the model which word to write.
"""

import json
import math
import random
import shutil

import datasets
import pytest
import torch

from charlstm import CharLSTMConfig, CharLSTMForCausalLM, star_token
from charlstm.cli import main
from charlstm.generation.rating import rating_prior, star_probabilities
from charlstm.generation.sampling import load_generator
from charlstm.generation.settings import GenerationSettings, check_settings
from charlstm.hub.endpoint_handler import EndpointHandler
from charlstm.loading import BUNDLED_MODEL, load_model
from charlstm.modeling_charlstm import ratings_in_force, star_ratings, star_token_ids
from charlstm.training.data import framed_stream, pack_reviews
from charlstm.training.trainer import language_and_rating_losses
from charlstm.training.warm_start import add_rating_input
from tests.conftest import make_tiny_model

RATING_WORDS = {1: "awful", 5: "lovely"}
FILLER = ["food", "staff", "menu", "table", "wine", "bread", "soup", "room"]
SEQ_LEN = 32


def synthetic_review(stars: int, generator: random.Random) -> str:
    words = [RATING_WORDS[stars] if generator.random() < 0.3 else generator.choice(FILLER) for _ in range(40)]
    return "The " + " ".join(words) + "."


def rating_word_counts(text: str) -> dict[int, int]:
    words = text.replace(".", " ").split()
    return {stars: words.count(word) for stars, word in RATING_WORDS.items()}


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    """A tiny model with a rating input trained with `charlstm train` on the synthetic reviews."""
    return train_on_synthetic_reviews(tmp_path_factory.mktemp("stars"))


def train_on_synthetic_reviews(folder, *options: str):
    generator = random.Random(0)
    with open(folder / "reviews.jsonl", "w", encoding="utf-8") as handle:
        for index in range(240):
            stars = 1 if index % 2 else 5
            handle.write(json.dumps({"text": synthetic_review(stars, generator), "stars": stars}) + "\n")
    output = folder / "model"
    code = main(["train", "--dataset", str(folder / "reviews.jsonl"), "--condition-on-stars", "--preset", "tiny",
                 "--hidden-sizes", "96", "--seq-len", str(SEQ_LEN), "--batch-size", "16", "--learning-rate", "1e-2",
                 "--max-steps", "250", "--eval-steps", "1000", "--logging-steps", "50",
                 "--validation-fraction", "0.1", "--output-dir", str(output), *options])
    assert code == 0
    return output


def test_the_rating_at_each_position_is_the_last_star_token_seen():
    bos, one, five = 1, 4, 8
    ids = torch.tensor([[bos, one, 20, 21, bos, 22, five, 23], [30, 31, five, 32, 33, 34, 35, 36]])
    ratings = ratings_in_force(ids, torch.tensor([0, 3]), bos_token_id=bos)
    assert ratings.tolist() == [[0, 1, 1, 1, 0, 0, 5, 5], [3, 3, 5, 5, 5, 5, 5, 5]]


def test_the_model_reads_each_rating_from_the_tokenizers_star_token(tiny_tokenizer):
    # The model knows the star tokens' ids without a tokenizer: they must be the ones the tokenizer writes.
    ids = torch.tensor([tiny_tokenizer.convert_tokens_to_ids(star_token(stars)) for stars in range(1, 6)])
    assert star_ratings(ids).tolist() == [1, 2, 3, 4, 5]
    assert star_token_ids(torch.arange(1, 6)).tolist() == ids.tolist()
    assert star_ratings(torch.tensor(tiny_tokenizer.encode("ab", add_special_tokens=False))).tolist() == [0, 0]


def test_packed_blocks_give_every_character_its_reviews_rating(tiny_tokenizer):
    rows = datasets.Dataset.from_list([{"text": "a" * 50, "stars": 2}, {"text": "b" * 50, "stars": 4}])
    blocks = pack_reviews(rows, tiny_tokenizer, seq_len=16, condition_on_stars=True)
    letters = {tiny_tokenizer.convert_tokens_to_ids(letter): stars for letter, stars in (("a", 2), ("b", 4))}
    star_tokens = {tiny_tokenizer.convert_tokens_to_ids(star_token(stars)): stars for stars in (2, 4)}
    for ids, stars in zip(blocks["input_ids"], blocks["star_ids"]):
        for token, rating in zip(ids, stars):
            if token in letters or token in star_tokens:
                assert rating == {**letters, **star_tokens}[token]
            elif token == tiny_tokenizer.bos_token_id:
                assert rating == 0
    assert sum(1 for ids in blocks["input_ids"] if not set(ids) & set(star_tokens)) >= 4  # most hold no star token


def test_an_unrated_share_of_training_reviews_goes_without_star_token_or_rating(tiny_tokenizer):
    rows = datasets.Dataset.from_list([{"text": f"review {index} " + "x" * 20, "stars": 3} for index in range(200)])
    three = tiny_tokenizer.convert_tokens_to_ids(star_token(3))
    for share in (0.0, 0.3):
        ids, _, stars = framed_stream(rows, tiny_tokenizer, condition_on_stars=True, unrated_share=share)
        starts = [index for index, token in enumerate(ids.tolist()) if token == tiny_tokenizer.bos_token_id]
        rated = 0
        for start, end in zip(starts, [*starts[1:], len(ids)]):
            # Each review: <bos> with rating 0, then its star token and rating 3 on every position, or neither.
            has_token = ids[start + 1] == three
            assert stars[start] == 0 and set(stars[start + 1 : end].tolist()) == ({3} if has_token else {0})
            rated += int(has_token)
        assert len(starts) == 200
        if share == 0.0:
            assert rated == 200
        else:
            assert 40 <= 200 - rated <= 80  # about 30% unrated, chosen by the text
    blocks = [pack_reviews(rows, tiny_tokenizer, 64, condition_on_stars=True, unrated_share=0.3) for _ in range(2)]
    assert blocks[0]["input_ids"] == blocks[1]["input_ids"]  # the same reviews every time


def test_star_ids_override_what_the_tokens_say_and_agree_where_they_are_the_same(tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer, conditioned_on_stars=True, star_embedding_dim=4)
    ids = tiny_tokenizer(["<2star>Great tacos"], return_tensors="pt")["input_ids"]
    read = ratings_in_force(ids, torch.zeros(1, dtype=torch.long), tiny_tokenizer.bos_token_id)
    with torch.no_grad():
        plain = model(ids).logits
        same = model(ids, star_ids=read).logits
        other = model(ids, star_ids=torch.full_like(ids, 5)).logits
    assert torch.equal(plain, same)
    assert (plain - other).abs().max() > 1e-3


def test_the_cache_carries_the_rating_through_single_character_steps_and_beams(tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer, conditioned_on_stars=True, star_embedding_dim=4)
    ids = tiny_tokenizer(["<1star>Great tacos", "<5star>Great tacos"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        whole = model(ids).logits[:, -1]
        cache = model(ids[:, :3], use_cache=True).cache
        assert cache.stars.tolist() == [1, 5]
        for position in range(3, ids.shape[1]):
            stepped = model(ids[:, position : position + 1], cache=cache).logits[:, -1]
    assert (stepped - whole).abs().max() < 1e-5
    cache.reorder_cache(torch.tensor([1, 1]))
    assert cache.stars.tolist() == [5, 5]


def test_a_config_saved_without_the_field_loads_without_a_rating_input(tiny_model_dir, tmp_path):
    older = tmp_path / "older"
    shutil.copytree(tiny_model_dir, older)
    config = json.loads((older / "config.json").read_text())
    config.pop("star_embedding_dim", None)  # as models saved before the rating input were
    (older / "config.json").write_text(json.dumps(config))
    model, _, _ = load_model(older, "generator")
    assert model.config.star_embedding_dim == 0 and model.model.star_embeddings is None
    bundled, _, _ = load_model(BUNDLED_MODEL, "generator")  # retrained with the rating input
    assert bundled.config.star_embedding_dim == 16 and bundled.model.star_embeddings is not None


def test_a_warm_start_keeps_the_old_models_numbers_for_every_rating(tiny_tokenizer):
    old = make_tiny_model(tiny_tokenizer, conditioned_on_stars=True)
    new = make_tiny_model(tiny_tokenizer, conditioned_on_stars=True)
    add_rating_input(new, 8)
    assert new.config.star_embedding_dim == 8 and new.model.layers[0].input_size == 16 + 8
    ids = tiny_tokenizer(["<1star>Great tacos", "<4star>Slow servic"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(old(ids).logits, new(ids).logits)
    reloaded = CharLSTMForCausalLM(CharLSTMConfig.from_dict(new.config.to_dict()))
    reloaded.load_state_dict(new.state_dict())  # the widened model is a plain model of the new shape


def block_tensors(blocks, index: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(torch.tensor([blocks[index][name]]) for name in ("input_ids", "labels", "star_ids"))


def test_the_rating_loss_is_how_badly_rate_picks_the_reviews_own_rating(tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer, conditioned_on_stars=True, star_embedding_dim=4,
                            star_shares=[0.1, 0.1, 0.2, 0.2, 0.4])
    prior = torch.tensor(rating_prior(model, "training")).log()
    text = "Great tacos, slow service."
    for stars in (2, 5):
        blocks = pack_reviews(datasets.Dataset.from_list([{"text": text, "stars": stars}]), tiny_tokenizer, 64,
                              condition_on_stars=True)
        ids, labels, star_ids = block_tensors(blocks)
        with torch.no_grad():
            language, rating = language_and_rating_losses(model, ids, labels, star_ids, tiny_tokenizer.bos_token_id,
                                                          prior)
            plain = model(input_ids=ids, star_ids=star_ids, labels=labels).loss
        assert torch.allclose(language, plain, atol=1e-6)  # the language-model loss is the plain one
        by_rate = star_probabilities(model, tiny_tokenizer, text, prior="training")[stars - 1]
        assert abs(float(rating) - -math.log(by_rate)) < 1e-4  # float32 sums of different lengths
    # A review framed without its rating asks nothing of the rating loss.
    unrated = pack_reviews(datasets.Dataset.from_list([{"text": text, "stars": 3}]), tiny_tokenizer, 64,
                           condition_on_stars=True, unrated_share=0.999)
    with torch.no_grad():
        _, rating = language_and_rating_losses(model, *block_tensors(unrated), tiny_tokenizer.bos_token_id)
    assert float(rating) == 0.0


def held_out_rating_loss(model_dir, reviews: list[tuple[str, int]]) -> float:
    model, tokenizer, _ = load_model(model_dir, "generator")
    return sum(-math.log(star_probabilities(model, tokenizer, text)[stars - 1]) for text, stars in reviews) / len(
        reviews)


def test_the_rating_loss_teaches_the_likelihood_to_tell_ratings_apart_sooner(tmp_path):
    """Trained briefly, before the language-model loss alone has found what the rating changes, the run with the
    rating loss rates held-out reviews by likelihood better, and its log keeps the two losses apart."""
    generator = random.Random(11)
    held_out = [(synthetic_review(stars, generator), stars) for stars in (1, 5) for _ in range(10)]
    brief = ("--max-steps", "8", "--logging-steps", "4", "--seed", "11")
    for name in ("plain", "rated"):
        (tmp_path / name).mkdir()
    plain = train_on_synthetic_reviews(tmp_path / "plain", *brief)
    rated = train_on_synthetic_reviews(tmp_path / "rated", *brief, "--rating-loss-weight", "2")
    assert held_out_rating_loss(rated, held_out) < 0.1 * held_out_rating_loss(plain, held_out)
    history = json.loads((rated / "training_log.json").read_text())["history"]
    logged = [row for row in history if "rating_loss" in row]
    assert logged and all(abs(row["loss"] - row["language_loss"] - 2 * row["rating_loss"]) < 1e-3 for row in logged)


def test_after_training_each_rating_writes_its_own_word(trained_dir):
    generator = load_generator(trained_dir)
    for stars in RATING_WORDS:
        reviews = generator.generate(check_settings(GenerationSettings(
            stars=stars, num_reviews=4, max_new_tokens=200, temperature=0.8, seed=stars)))
        counts = rating_word_counts(" ".join(reviews))
        other = 6 - stars
        assert counts[stars] >= 10 and counts[stars] >= 9 * counts[other], (stars, counts, reviews)


def test_guidance_keeps_a_hot_sample_to_its_rating(trained_dir):
    # Sampled hot, the reviews lose their rating's word; guidance towards the rating asked for brings it back.
    generator = load_generator(trained_dir)
    own, other = {}, {}
    for guidance in (1.0, 4.0):
        counts = [rating_word_counts(" ".join(generator.generate(check_settings(GenerationSettings(
            stars=stars, num_reviews=4, max_new_tokens=200, temperature=2.0, guidance=guidance, seed=stars)))))
            for stars in RATING_WORDS]
        own[guidance] = sum(count[stars] for stars, count in zip(RATING_WORDS, counts))
        other[guidance] = sum(count[6 - stars] for stars, count in zip(RATING_WORDS, counts))
    assert own[4.0] >= 3 * own[1.0] and other[4.0] <= other[1.0], (own, other)


def test_the_endpoint_guides_a_hot_sample_to_its_rating_too(trained_dir):
    handler = EndpointHandler(str(trained_dir))
    counts = {}
    for guidance in (1.0, 4.0):
        texts = handler({"inputs": "The", "parameters": {"stars": 1, "guidance": guidance, "temperature": 2.0,
                                                         "max_new_tokens": 200, "seed": 1, "num_return_sequences": 4}})
        counts[guidance] = rating_word_counts(" ".join(text["generated_text"] for text in texts))[1]
    assert counts[4.0] >= 3 * counts[1.0] > 0, counts


def test_an_unconditioned_sample_starts_like_a_review_and_is_cut_at_a_word_end(trained_dir):
    generator = load_generator(trained_dir)
    # Low temperature: this briefly trained model still gives the first character some doubt.
    chosen = GenerationSettings(num_reviews=6, max_new_tokens=60, temperature=0.5, seed=3)
    reviews = generator.write(check_settings(chosen))
    for review in reviews:
        assert review.text.startswith("The "), review.text
        assert review.stars in RATING_WORDS
        if not review.cut:  # the model ended it
            assert review.text.endswith(".") and len(review.text) <= 60 + 15 + 16 + 16, review.text
            continue
        assert 60 <= len(review.text) <= 60 + 15 + 16 + 16, review.text  # near the length asked for
        assert review.text.replace(".", "").split()[-1] in FILLER + list(RATING_WORDS.values()), review.text
    assert any(review.cut for review in reviews)


def test_from_bos_alone_the_model_starts_a_review_too(trained_dir):
    # `model.generate` or `pipeline` given no star token: the reviews trained without theirs taught it this.
    generator = load_generator(trained_dir, int8=False)
    ids = torch.tensor([[generator.tokenizer.bos_token_id]])
    out = generator.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
    assert generator.tokenizer.decode(out[0], skip_special_tokens=True) == "The "


def test_rating_a_review_by_likelihood_finds_its_rating(trained_dir, capsys):
    generator = load_generator(trained_dir, int8=False)
    generator_rng = random.Random(5)
    for stars in RATING_WORDS:
        text = synthetic_review(stars, generator_rng)
        probabilities = star_probabilities(generator.model, generator.tokenizer, text)
        assert probabilities[stars - 1] > 0.9, (stars, probabilities)
    assert main(["rate", synthetic_review(1, generator_rng), "--model", str(trained_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["stars"] == 1 and abs(sum(report["probabilities"].values()) - 1) < 1e-6
