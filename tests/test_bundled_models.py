"""The models the project ships in charlstm/bundled/: they load like any Hub model and do their jobs."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

import charlstm
from charlstm.detection.detector import Detector
from charlstm.generation.sampling import load_generator
from charlstm.generation.settings import GenerationSettings, check_settings
from charlstm.loading import BUNDLED_DETECTOR, BUNDLED_MODEL

charlstm.register()  # the bundled directories load through the Auto classes below


def test_bundled_generator_writes_a_star_conditioned_review():
    model = AutoModelForCausalLM.from_pretrained(BUNDLED_MODEL).eval()
    tokenizer = AutoTokenizer.from_pretrained(BUNDLED_MODEL)
    assert model.config.conditioned_on_stars
    inputs = tokenizer("<5star>The tacos", return_tensors="pt")
    torch.manual_seed(0)
    out = model.generate(**inputs, do_sample=True, temperature=0.8, max_new_tokens=120)
    review = tokenizer.decode(out[0], skip_special_tokens=True)
    assert review.startswith("The tacos")
    assert len(review) > len("The tacos") + 20
    assert all(char.isprintable() or char == "\n" for char in review)
    assert sum(char.isalpha() for char in review) > 0.6 * len(review)  # words, not noise


def test_bundled_generator_is_better_than_chance_on_review_text():
    model = AutoModelForCausalLM.from_pretrained(BUNDLED_MODEL).eval()
    tokenizer = AutoTokenizer.from_pretrained(BUNDLED_MODEL)
    # Our own sentence; the held-out Yelp figures come from `charlstm eval` (see the README).
    batch = tokenizer("<4star>The service was friendly and the food came out hot.", return_tensors="pt")
    with torch.no_grad():
        loss = model(**batch, labels=batch["input_ids"]).loss.item()
    assert loss / torch.log(torch.tensor(2.0)).item() < 3.5  # bits per character; uniform would be ~6.6


def test_bundled_detector_scores_the_bundled_generators_reviews_above_a_human_one():
    # Its own generator's samples are among what it catches least well (the README has the held-out figures):
    # one sample can pass as human, but on average they score well above a person's review.
    model = AutoModelForCausalLM.from_pretrained(BUNDLED_MODEL).eval()
    tokenizer = AutoTokenizer.from_pretrained(BUNDLED_MODEL)
    machine = []
    for seed in range(6):
        torch.manual_seed(seed)
        out = model.generate(**tokenizer("<5star>The tacos", return_tensors="pt"), do_sample=True, max_new_tokens=300)
        machine.append(tokenizer.decode(out[0], skip_special_tokens=True))
    human = (  # our own, written by a person for this test
        "Parking was a nightmare on a Friday night, so plan ahead. Once inside, our server Maria walked us through "
        "the menu and recommended the short rib, which was tender and rich. Desserts were just okay."
    )
    detector = pipeline("text-classification", model=str(BUNDLED_DETECTOR), top_k=None)
    p_machine = [next(s["score"] for s in scores if s["label"] == "machine") for scores in detector([human, *machine])]
    assert p_machine[0] < 0.5 and sum(p_machine[1:]) / len(machine) > p_machine[0] + 0.2, p_machine


def test_a_plain_pipeline_reads_what_charlstm_detect_reads(tmp_path):
    # The Hub widget and a user's pipeline pass no tokenizer options: the detector's tokenizer cuts a long review to
    # the 400 characters it was measured on and reads a literal "<5star>" as characters, as `charlstm detect` does.
    review = ("We came on a Tuesday and the place was packed, but the host sat us quickly and brought water and bread. "
              "The short rib was tender, the fries were crisp and the salad was fresh. ") * 5
    texts = [review, "Honestly a <5star> experience from start to finish: " + review]
    by_pipeline = pipeline("text-classification", model=str(BUNDLED_DETECTOR), top_k=None)(texts)
    for detection, scores in zip(Detector().predict(texts), by_pipeline):
        machine = next(score["score"] for score in scores if score["label"] == "machine")
        assert detection.machine_probability == pytest.approx(machine, abs=1e-5)
    assert len(review) > 600


@pytest.mark.parametrize("model_dir", [BUNDLED_MODEL, BUNDLED_DETECTOR], ids=["generator", "detector"])
def test_bundled_models_carry_the_packages_current_code(model_dir):
    # Loaded with trust_remote_code (or pushed to the Hub), a bundled model runs the code files beside its weights:
    # they must be the package's own, or such users get older behaviour than `pip install charlstm` gives.
    package = Path(charlstm.__file__).parent
    for name in ("configuration_charlstm.py", "modeling_charlstm.py", "tokenization_charlstm.py"):
        assert (Path(model_dir) / name).read_text() == (package / name).read_text(), f"{model_dir}/{name} is stale"


# What the bundled models give for fixed settings, recorded when they were bundled (the generator's review when it was
# retrained with the rating input): a change of code that is meant to keep behaviour (a refactor, a faster path) must
# keep these; retraining a model is the one reason to record anew.
RECORDED_REVIEW = "The tacos a medium well flavor to the dish which was so good to taste had to sit. Fell in"
RECORDED_GUIDED_REVIEW = "The tacos a medium will fill out something I am in this location."  # ended by <eos>
RECORDED_P_MACHINE = {
    "Parking was a nightmare on a Friday night, so plan ahead. Once inside, our server Maria walked us through the "
    "menu and recommended the short rib.": 0.365589,
    "The food was amazing and the staff was so friendly! I will definitely be back again soon. Highly recommend this "
    "place to everyone.": 0.90829,
}


def test_bundled_models_give_the_recorded_outputs_for_fixed_settings():
    generator = load_generator(int8=False)
    settings = check_settings(GenerationSettings(prompt="The tacos", stars=5, seed=7, max_new_tokens=80, guidance=1))
    # Its first 80 new characters: past the length asked for, a review now runs on to a sentence or word end.
    [review] = generator.generate(settings)
    assert review.startswith(RECORDED_REVIEW)
    assert generator.generate(replace(settings, guidance=GenerationSettings.guidance)) == [RECORDED_GUIDED_REVIEW]
    detections = Detector().predict(list(RECORDED_P_MACHINE))
    assert [round(d.machine_probability, 6) for d in detections] == list(RECORDED_P_MACHINE.values())
    assert [(d.label, d.uncertain) for d in detections] == [("human", True), ("machine", False)]
