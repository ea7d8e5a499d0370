"""The detector: labelled data from a generator, a trained classifier, `charlstm detect`, the zero-shot baseline.

The generator is a tiny untrained model made confident (its output layer scaled up): what it writes is strings of
a few favourite characters, which it finds very likely and which a detector must tell apart from the review-like
human texts below after a few dozen steps.
"""

import json
import random
import re
import shutil
from collections import Counter

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline

from charlstm import CharLSTMConfig
from charlstm.cli import main
from charlstm.configuration_charlstm import NUM_SPECIAL_TOKENS
from charlstm.detection.calibration import calibrated_probability
from charlstm.detection.data import up_to_last_sentence_end
from charlstm.detection.decision import record_decision
from charlstm.detection.detector import Detector, evaluate
from charlstm.detection.families import (
    HUMAN_FAMILY,
    OWN_FAMILY,
    balanced_selection,
    generator_family,
    held_out_split,
    text_groups,
)
from charlstm.detection.frozen import frozen_detector_model
from charlstm.detection.metrics import (
    auc_interval,
    best_threshold,
    roc_auc,
    threshold_for_false_positive_rate,
    threshold_metrics,
)
from charlstm.detection.probe import (
    LikelihoodHead,
    LinearHead,
    NgramHead,
    OwnSampleHead,
    StackedHead,
    Views,
    frozen_features,
    ngram_counts,
    word_kinds,
)
from charlstm.detection.settings import MACHINE, DetectorTraining
from charlstm.detection.training import EqualLengthCrops, train_detector
from charlstm.detection.zero_shot import ZeroShotDetector, statistics_of_texts
from charlstm.errors import UsageError
from charlstm.hub.model_card import render_model_card
from charlstm.modeling_charlstm import CharLSTMForSequenceClassification, word_ngram_buckets
from charlstm.tokenization_charlstm import normalize_text
from charlstm.training.data import load_reviews
from charlstm.training.rundir import last_complete_checkpoint
from tests.conftest import make_tiny_model

MAX_CHARS = 120  # the longest training crop, and so what the tiny detector reads at most


def review_like_texts(count: int, seed: int) -> list[str]:
    """Our own review-shaped sentences, 1 to 8 per text."""
    rng = random.Random(seed)
    subjects = ["The tacos", "Our waiter", "The soup", "This place", "The pizza", "Parking", "The coffee", "Dessert"]
    verbs = ["was", "seemed", "is", "felt"]
    adjectives = ["great", "cold", "fresh", "slow", "lovely", "salty", "friendly", "noisy", "cheap", "perfect"]
    endings = ["and we will be back.", "but the line was long.", "so I left a big tip.", "as always!", "sadly."]
    return [
        " ".join(
            f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(adjectives)} {rng.choice(endings)}"
            for _ in range(rng.randint(1, 8))
        )
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def human_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("human") / "reviews.jsonl"
    rng = random.Random(1)
    with path.open("w", encoding="utf-8") as handle:
        for text in review_like_texts(120, seed=0):
            handle.write(json.dumps({"text": text, "stars": rng.randint(1, 5)}) + "\n")
    return path


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory, tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer, seed=0)
    with torch.no_grad():
        model.lm_head.weight *= 30  # sharp predictions: its own text scores ~4 bits per character, ours ~9
        model.lm_head.bias[:NUM_SPECIAL_TOKENS] = -1e4  # characters only ...
        model.lm_head.bias[tiny_tokenizer.eos_token_id] = 0.0  # ... or the end of the review
    path = tmp_path_factory.mktemp("confident-generator")
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def detector_data_dir(tmp_path_factory, generator_dir, human_file):
    path = tmp_path_factory.mktemp("detector-data") / "data"
    code = main([
        "detector", "build-data", str(path), "--generator", str(generator_dir), "--human-data", str(human_file),
        "--validation-fraction", "0.5", "--count", "40", "--max-new-tokens", "60,150", "--min-chars", "30",
        "--temperatures", "0.5,1.0", "--batch-size", "8", "--seed", "3",
    ])
    assert code == 0
    return path


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory, generator_dir, detector_data_dir):
    path = tmp_path_factory.mktemp("detector") / "detector"
    code = main([
        "detector", "train", str(detector_data_dir), str(path), "--generator", str(generator_dir),
        "--max-steps", "40", "--batch-size", "8", "--min-chars", "20", "--max-chars", str(MAX_CHARS),
    ])
    assert code == 0
    return path


@pytest.fixture(scope="module")
def calibration_data_dir(tmp_path_factory, generator_dir, human_file, detector_data_dir):
    path = tmp_path_factory.mktemp("calibration-data") / "data"
    code = main([
        "detector", "build-data", str(path), "--generator", str(generator_dir), "--human-data", str(human_file),
        "--validation-fraction", "0.5", "--count", "15", "--max-new-tokens", "60,150", "--min-chars", "30",
        "--temperatures", "0.5,1.0", "--batch-size", "8", "--seed", "4", "--exclude", str(detector_data_dir),
    ])
    assert code == 0
    return path


@pytest.fixture(scope="module")
def calibrated_dir(tmp_path_factory, detector_dir, calibration_data_dir):
    path = tmp_path_factory.mktemp("calibrated") / "detector"
    code = main(["detector", "calibrate", str(detector_dir), str(calibration_data_dir), str(path)])
    assert code == 0
    return path


def test_built_data_is_balanced_with_settings_as_columns(detector_data_dir, human_file):
    data = datasets.load_from_disk(str(detector_data_dir))
    assert set(data) == {"train", "test"}
    for split in data.values():
        labels = split["label"]
        assert labels.count(0) == labels.count(1) > 0
    everything = datasets.concatenate_datasets([data["train"], data["test"]])
    assert everything.features["label"].names == ["human", "machine"]
    machine = everything.filter(lambda row: row["label"] == 1)
    human = everything.filter(lambda row: row["label"] == 0)
    assert set(machine["temperature"]) == {0.5, 1.0}
    assert set(machine["max_new_tokens"]) <= {60, 150} and set(machine["top_k"]) <= {0, 20}
    assert set(human["temperature"]) == {None} and None not in set(human["stars"])
    assert all(row["length"] == len(row["text"]) >= 30 for row in everything)


def test_machine_reviews_are_shared_equally_between_temperatures(detector_data_dir):
    data = datasets.load_from_disk(str(detector_data_dir))
    temperatures = [row["temperature"] for split in data.values() for row in split if row["label"] == 1]
    assert temperatures.count(0.5) == temperatures.count(1.0) == 20


def test_a_review_cut_off_by_its_length_cap_ends_at_its_last_sentence():
    assert up_to_last_sentence_end("Good food. Nice staff! Would go ag") == "Good food. Nice staff!"
    assert up_to_last_sentence_end("Really? Yes") == "Really?"
    assert up_to_last_sentence_end("no sentence end at all") == "no sentence end at all"


def test_human_reviews_come_only_from_the_held_out_part(detector_data_dir, human_file):
    data = datasets.load_from_disk(str(detector_data_dir))
    reviews = load_reviews(str(human_file), validation_fraction=0.5, seed=0)  # as the generator's training split it
    human = {row["text"] for split in data.values() for row in split if row["label"] == 0}
    assert human <= set(reviews.held_out["text"])
    assert not human & (set(reviews.train["text"]) - set(reviews.held_out["text"]))


def test_trained_detector_is_a_complete_model_directory(detector_dir):
    names = {path.name for path in detector_dir.iterdir()}
    assert {"config.json", "model.safetensors", "modeling_charlstm.py", "configuration_charlstm.py",
            "tokenization_charlstm.py", "vocab.json", "tokenizer_config.json", "detector_log.json"} <= names
    assert "checkpoints" not in names and "training_args.bin" not in names
    config = json.loads((detector_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "human", "1": "machine"}
    classifier = config["auto_map"]["AutoModelForSequenceClassification"]
    assert classifier == "modeling_charlstm.CharLSTMForSequenceClassification"
    log = json.loads((detector_dir / "detector_log.json").read_text())
    assert log["max_steps"] == 40 and set(log["test"]) >= {"roc_auc", "accuracy", "precision", "recall"}


def test_detector_starts_from_the_generators_layers(generator_dir, detector_data_dir, tmp_path):
    # Trained at a learning rate of 0, the detector is what it started from: the generator's embedding and first
    # LSTM layer, bit for bit (`layers=1` leaves the second out), under a new head.
    data = datasets.load_from_disk(str(detector_data_dir))
    train_detector(str(generator_dir), data, str(tmp_path),
                   DetectorTraining(max_steps=1, batch_size=4, learning_rate=0.0, layers=1))
    detector = AutoModelForSequenceClassification.from_pretrained(str(tmp_path)).model.state_dict()
    generator = AutoModelForCausalLM.from_pretrained(str(generator_dir)).model.state_dict()
    assert len(AutoConfig.from_pretrained(str(tmp_path)).hidden_sizes) == 1
    assert detector.keys() < generator.keys() and any(".1." in name for name in generator.keys() - detector.keys())
    for name, weights in detector.items():
        assert torch.equal(weights, generator[name]), name


def test_detector_separates_machine_from_human_better_than_chance(detector_dir, detector_data_dir):
    data = datasets.load_from_disk(str(detector_data_dir))
    figures = evaluate(Detector(detector_dir), data["test"])
    assert figures["roc_auc"] >= 0.8
    assert figures["accuracy"] > 0.6


def test_pipeline_loads_the_detector(detector_dir):
    classifier = pipeline("text-classification", model=str(detector_dir))
    text = "The soup was salty but the waiter was lovely."
    scores = {row["label"]: row["score"] for row in classifier(text, top_k=None)}
    assert set(scores) == {"human", "machine"}
    assert sum(scores.values()) == pytest.approx(1.0)
    assert Detector(detector_dir).predict([text])[0].machine_probability == pytest.approx(scores["machine"], abs=1e-5)


def test_empty_text_is_refused(detector_dir):
    with pytest.raises(ValueError, match="empty"):
        Detector(detector_dir).predict(["fine text", "  "])


def test_over_long_text_is_judged_on_its_beginning(detector_dir):
    detector = Detector(detector_dir)
    text = " ".join(review_like_texts(3, seed=5)) * 3
    assert len(text) > MAX_CHARS
    long, beginning = detector.predict([text, text[:MAX_CHARS]])
    assert long.truncated and long.characters_read == MAX_CHARS
    assert not beginning.truncated
    assert long.machine_probability == pytest.approx(beginning.machine_probability, abs=1e-5)


def test_detect_command_prints_json(detector_dir, tmp_path, capsys):
    reviews = tmp_path / "reviews.jsonl"
    review = "Great tacos, and the waiter was kind to us."
    lines = [json.dumps({"text": text}) for text in (review, "x" * 500, "Great tacos.")]
    reviews.write_text(lines[0] + "\n\n" + "\n".join(lines[1:]) + "\n")
    assert main(["detect", "--file", str(reviews), "--detector", str(detector_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [row["truncated"] for row in out] == [False, True, False]
    assert out[0]["label"] == "human"  # a review, as the human half of the training data
    assert out[2]["verdict"] == "cannot judge" and "12 characters long" in out[2]["reason"]
    expected = Detector(detector_dir).predict([review, "x" * 500, "Great tacos."])
    assert [row["label"] for row in out] == [detection.label for detection in expected]
    assert [row["machine_probability"] for row in out] == pytest.approx(
        [detection.machine_probability for detection in expected], abs=1e-6
    )


def test_detect_command_notes_truncation(detector_dir, capsys):
    assert main(["detect", "y" * 300, "--detector", str(detector_dir)]) == 0
    captured = capsys.readouterr()
    assert "probability machine-written" in captured.out
    assert f"first {MAX_CHARS} characters" in captured.err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["detect", ""], "empty"),
        (["detect", "   \n"], "empty"),
        (["detect", "fine", "--detector", "{missing}"], "does not exist"),
        (["detect", "fine", "--detector", "{generator}"], "not a detector"),
        (["detect", "--file", "{missing}"], "no such file"),
        (["detect", "--file", "{bad_jsonl}"], "line 2"),
        (["detect", "--file", "{empty_jsonl}"], "no reviews"),
    ],
)
def test_detect_bad_input_exits_2_with_a_message(detector_dir, generator_dir, tmp_path, capsys, arguments, message):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n["not", "an", "object"]\n')
    (tmp_path / "empty.jsonl").write_text("\n")
    paths = {"missing": tmp_path / "missing", "bad_jsonl": tmp_path / "bad.jsonl",
             "empty_jsonl": tmp_path / "empty.jsonl", "generator": generator_dir}
    arguments = [argument.format(**paths) for argument in arguments]
    if "--detector" not in arguments:
        arguments += ["--detector", str(detector_dir)]
    assert main(arguments) == 2
    err = capsys.readouterr().err
    assert err.startswith("charlstm detect: error:") and message in err
    assert "Traceback" not in err


def test_detect_needs_exactly_one_of_text_and_file(detector_dir, tmp_path):
    for arguments in (["detect"], ["detect", "text", "--file", str(tmp_path / "f.txt")]):
        with pytest.raises(SystemExit) as exit_info:
            main(arguments + ["--detector", str(detector_dir)])
        assert exit_info.value.code == 2


def test_build_data_bad_input_exits_2(tiny_model_dir, human_file, tmp_path, capsys):
    base = ["detector", "build-data", str(tmp_path / "out"), "--generator", str(tiny_model_dir)]
    assert main(base) == 2
    assert "--human-data" in capsys.readouterr().err  # the tiny generator has no training log naming its data
    assert main(base + ["--human-data", str(human_file), "--count", "500"]) == 2
    assert "500 were asked for" in capsys.readouterr().err


def test_train_bad_input_exits_2(tiny_model_dir, detector_data_dir, tmp_path, capsys):
    assert main(["detector", "train", str(tmp_path / "nothing"), str(tmp_path / "out"),
                 "--generator", str(tiny_model_dir)]) == 2
    assert main(["detector", "train", str(detector_data_dir), str(tmp_path / "out"),
                 "--generator", str(tiny_model_dir), "--layers", "3"]) == 2
    assert "--layers must be from 1 to 2" in capsys.readouterr().err


def test_training_batches_are_equal_length_crops_without_padding(tiny_tokenizer):
    texts = review_like_texts(40, seed=7)
    rows = [{"text": text, "label": index % 2} for index, text in enumerate(texts)]
    collate = EqualLengthCrops(tiny_tokenizer, min_chars=20, max_chars=100, seed=0)
    lengths = set()
    for start in range(0, 40, 8):
        chunk = rows[start : start + 8]
        batch = collate(chunk)
        assert bool(batch["attention_mask"].all())
        length = batch["input_ids"].shape[1] - 1  # <bos> first
        assert 1 <= length <= min([100] + [len(row["text"]) for row in chunk])
        for ids, row in zip(batch["input_ids"], chunk):
            assert tiny_tokenizer.decode(ids[1:]) in row["text"]
        assert batch["labels"].tolist() == [row["label"] for row in chunk]
        lengths.add(length)
    assert len(lengths) > 1


def test_resume_skips_a_checkpoint_cut_off_mid_write(tmp_path):
    for step, state in ((10, "{}"), (20, "{}"), (30, None), (40, "")):  # 40: its state file cut off empty
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-20")
    assert last_complete_checkpoint(str(tmp_path / "none")) is None


def test_zero_shot_baseline_separates_the_generators_text(detector_data_dir, generator_dir):
    """The confident generator's own text is far more predictable to it than the human texts."""
    data = datasets.load_from_disk(str(detector_data_dir))
    model = AutoModelForCausalLM.from_pretrained(str(generator_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(generator_dir))

    def labelled(split):
        rows = list(split)
        return statistics_of_texts(model, tokenizer, [row["text"] for row in rows]), [row["label"] for row in rows]

    baseline = ZeroShotDetector.calibrate(*labelled(data["train"]))
    statistics, labels = labelled(data["test"])
    assert roc_auc(labels, [baseline.score(row) for row in statistics]) >= 0.9


def test_zero_shot_is_two_sided():
    """Machine text too predictable and too surprising, both against human text in the middle."""
    human = [{"bits_per_character": 3.0 + 0.1 * i, "top1_share": 0.5, "top3_share": 0.7, "top10_share": 0.9,
              "curvature": 0.0} for i in range(5)]
    machine = [dict(human[0], bits_per_character=value) for value in (1.0, 1.5, 5.0, 5.5)]
    baseline = ZeroShotDetector.calibrate(human + machine, [0] * 5 + [1] * 4)
    assert baseline.statistic == "bits_per_character" and baseline.center == pytest.approx(3.2)
    scores = [baseline.score(row) for row in human + machine]
    assert threshold_metrics([0] * 5 + [1] * 4, scores, baseline.threshold)["accuracy"] == 1.0


def test_roc_auc_counts_ties_as_half():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert roc_auc([0, 0, 1, 1], [0.1, 0.3, 0.3, 0.4]) == pytest.approx(0.875)
    with pytest.raises(ValueError):
        roc_auc([1, 1], [0.1, 0.2])


def test_auc_interval_brackets_the_auc_and_narrows_with_more_texts():
    rng = random.Random(0)
    labels = [0] * 200 + [1] * 200
    scores = [rng.gauss(0.0, 1.0) for _ in range(200)] + [rng.gauss(1.0, 1.0) for _ in range(200)]
    low, high = auc_interval(labels, scores)
    assert low < roc_auc(labels, scores) < high and auc_interval(labels, scores) == (low, high)  # seeded
    few_low, few_high = auc_interval(labels[180:220], scores[180:220])
    assert few_high - few_low > 1.5 * (high - low)
    assert auc_interval([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == (1.0, 1.0)  # separated in every resample
    with pytest.raises(ValueError, match="level"):
        auc_interval(labels, scores, level=95)


def test_threshold_metrics_and_best_threshold():
    labels, scores = [0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.6, 0.5, 0.7, 0.9]
    assert threshold_metrics(labels, scores, 0.55) == {
        "accuracy": pytest.approx(4 / 6), "precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3),
        "false_positive_rate": pytest.approx(1 / 3),
    }
    best = best_threshold(labels, scores)
    assert threshold_metrics(labels, scores, best)["accuracy"] == pytest.approx(5 / 6)


def test_the_false_positive_threshold_holds_for_every_source():
    yelp = [0.1] * 18 + [0.8, 0.9]  # 20 human texts: at 5%, one may be called machine
    amazon = [0.2] * 9 + [0.6]  # 10: none may
    threshold = threshold_for_false_positive_rate({"yelp": yelp, "amazon": amazon}, 0.05)
    assert threshold == pytest.approx(0.801)
    for scores in (yelp, amazon):
        assert threshold_metrics([0] * len(scores), scores, threshold)["false_positive_rate"] <= 0.05
    # Human texts that all look human keep the balanced classes' 0.5; one that no threshold clears gives 1.0.
    assert threshold_for_false_positive_rate({"yelp": [0.1] * 20}, 0.05) == 0.5
    assert threshold_for_false_positive_rate({"yelp": [0.9999] * 3}, 0.05) == 1.0
    with pytest.raises(ValueError, match="no human texts"):
        threshold_for_false_positive_rate({"yelp": []}, 0.05)


def test_a_detector_calls_machine_at_the_threshold_its_config_names(detector_dir, tmp_path):
    text = "The tacos were great and the staff were kind."
    probability = Detector(detector_dir).predict([text])[0].machine_probability
    strict = tmp_path / "detector"
    shutil.copytree(detector_dir, strict)
    tested_on = ({"name": "own samples", "roc_auc": 0.9, "human": 10, "machine": 10},)
    for threshold, label in ((probability / 2, "machine"), ((1 + probability) / 2, "human")):
        record_decision(strict, tested_on=tested_on, threshold=threshold)
        detector = Detector(strict)
        assert detector.predict([text])[0].label == label
        assert f"It calls a text machine-written at P(machine) >= {threshold:.3g}." in detector.caveat()
    config = json.loads((strict / "config.json").read_text())
    for detection, complaint in (({"threshold": 2}, "threshold 2: expected a probability"),
                                 ({"uncertain_band": [0.4]}, r"uncertain_band \[0.4\]: expected two probabilities"),
                                 ({"uncertain_band": ["a", "b"]}, "expected two probabilities"),
                                 ({"tested_on": [{"name": "x"}]}, "tested_on row .* expected a name and an roc_auc"),
                                 ({"colour": "red"}, "unknown fields")):
        (strict / "config.json").write_text(json.dumps({**config, "detection": detection}))
        with pytest.raises(UsageError, match=complaint):
            Detector(strict)


def test_calibration_data_leaves_out_the_detectors_human_reviews(calibration_data_dir, detector_data_dir):
    def human(path):
        data = datasets.load_from_disk(str(path))
        return {row["text"] for split in data.values() for row in split if row["label"] == 0}

    assert len(human(calibration_data_dir)) == 15
    assert not human(calibration_data_dir) & human(detector_data_dir)


def test_pipeline_loads_the_calibrated_detector_alone(calibrated_dir):
    # The calibration is folded into the head's weights, so the plain pipeline gives `charlstm detect`'s probability.
    classifier = pipeline("text-classification", model=str(calibrated_dir))
    text = "The suop wsa lvoely, and teh bread was fresh."
    scores = {row["label"]: row["score"] for row in classifier(text, top_k=None)}
    assert Detector(calibrated_dir).predict([text])[0].machine_probability == pytest.approx(scores["machine"], abs=1e-5)


def test_calibrating_probabilities_alone_flags_the_same_texts_and_matches_the_share_of_machine_text(
        detector_dir, detector_data_dir, tmp_path):
    # The detector as eval_detector.py --record leaves it: with a threshold and an uncertain band.
    recorded = tmp_path / "recorded"
    shutil.copytree(detector_dir, recorded)
    tested_on = ({"name": "own samples", "roc_auc": 0.9, "human": 10, "machine": 10},)
    record_decision(recorded, tested_on=tested_on, threshold=0.45, uncertain_band=(0.3, 0.7))
    output = tmp_path / "calibrated"
    assert main(["detector", "calibrate", str(recorded), str(detector_data_dir), str(output), "--split", "test"]) == 0
    calibration = json.loads((output / "config.json").read_text())["detection"]["calibration"]
    test = datasets.load_from_disk(str(detector_data_dir))["test"]
    before, after = Detector(recorded), Detector(output)
    old, new = before.predict(list(test["text"])), after.predict(list(test["text"]))
    machine_share = sum(label == MACHINE for label in test["label"]) / len(test)
    # A logistic regression with a bias matches its texts' share of machine text on average.
    assert sum(d.machine_probability for d in new) / len(new) == pytest.approx(machine_share, abs=0.01)
    for was, now in zip(old, new):
        mapped = calibrated_probability(was.machine_probability, calibration["margin_scale"], calibration["bias"])
        assert now.machine_probability == pytest.approx(mapped, abs=1e-4)
        assert (now.label, now.uncertain) == (was.label, was.uncertain)
    assert calibration["calibration_texts"] == len(test) and 0 <= calibration["calibration_error_after"] <= 1
    assert f"calibrated on held-out texts of which {machine_share:.0%} were machine-written" in after.caveat()
    assert "calibrated" not in before.caveat()
    card = render_model_card(output)
    assert f"calibrated (Platt scaling of the head) on {len(test):,} labelled texts" in card
    assert "as the classifier trained: not calibrated" in render_model_card(recorded)


def test_calibrate_bad_input_exits_2(detector_dir, calibration_data_dir, tmp_path, capsys):
    assert main(["detector", "calibrate", str(detector_dir), str(calibration_data_dir), str(detector_dir)]) == 2
    assert "other than the detector's own" in capsys.readouterr().err
    assert main(["detector", "calibrate", str(detector_dir), str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "not a directory written by" in capsys.readouterr().err
    only_test = tmp_path / "only-test"
    test_split = datasets.Dataset.from_dict({"text": ["Fine."], "label": [0]})
    datasets.DatasetDict({"test": test_split}).save_to_disk(only_test)
    assert main(["detector", "calibrate", str(detector_dir), str(only_test), str(tmp_path / "out")]) == 2
    assert "has no train split (splits: test)" in capsys.readouterr().err


def llm_like_texts(count: int, seed: int) -> list[str]:
    """Our own stand-in for another generator's reviews: polished, formulaic sentences unlike review_like_texts."""
    rng = random.Random(seed)
    openings = ["I recently visited this establishment", "My experience at this restaurant", "Upon arrival"]
    middles = ["the ambiance was delightful", "the staff were exceptionally attentive",
               "every dish exceeded expectations"]
    return [
        " ".join(f"{rng.choice(openings)}, and {rng.choice(middles)}." for _ in range(rng.randint(1, 4)))
        + " Overall, I would highly recommend it."
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def trained_on_texts(human_file):
    """The human reviews the tiny generator "trained on": the train part of its data, as build-data splits it."""
    return load_reviews(str(human_file), validation_fraction=0.5, seed=0).train["text"]


@pytest.fixture(scope="module")
def labelled_file(tmp_path_factory, trained_on_texts):
    """Another generator's reviews (label CG) beside human ones (label OR), three of which the generator trained on."""
    path = tmp_path_factory.mktemp("labelled") / "other-generator.jsonl"
    rows = [{"review": text, "kind": "CG", "generator": "formulaic-lm", "domain": "restaurants"}
            for text in llm_like_texts(40, seed=5)]
    rows += [{"review": text, "kind": "OR"} for text in review_like_texts(37, seed=6) + trained_on_texts[:3]]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def mixed_data_dir(tmp_path_factory, generator_dir, human_file, labelled_file):
    path = tmp_path_factory.mktemp("mixed-data") / "data"
    code = main([
        "detector", "build-data", str(path), "--generator", str(generator_dir), "--human-data", str(human_file),
        "--validation-fraction", "0.5", "--count", "30", "--max-new-tokens", "60,150", "--min-chars", "30",
        "--temperatures", "0.5,1.0", "--batch-size", "8", "--seed", "3", "--labelled", str(labelled_file),
        "--labelled-text-column", "review", "--labelled-label-column", "kind", "--label-map", "OR=human,CG=machine",
    ])
    assert code == 0
    return path


def test_a_frozen_detector_refuses_a_domain_its_data_does_not_have(mixed_data_dir, generator_dir, tmp_path, capsys):
    assert main(["detector", "train", str(mixed_data_dir), str(tmp_path / "out"), "--generator", str(generator_dir),
                 "--frozen", "--ngram-buckets", "4099", "--own-domain", "hotels"]) == 2
    err = capsys.readouterr().err
    assert "no rows of domain 'hotels'" in err and "Traceback" not in err and not (tmp_path / "out").exists()


def test_labelled_rows_keep_their_provenance_and_leave_out_what_the_generator_trained_on(
    mixed_data_dir, trained_on_texts, generator_dir
):
    data = datasets.load_from_disk(str(mixed_data_dir))
    everything = datasets.concatenate_datasets([data["train"], data["test"]])
    labelled = everything.filter(lambda row: row["source"] == "other-generator.jsonl")
    assert labelled["label"].count(1) == 40 and labelled["label"].count(0) == 37  # 3 trained-on rows left out
    assert not set(labelled["text"]) & set(trained_on_texts)
    assert set(labelled.filter(lambda row: row["label"] == 1)["generator"]) == {"formulaic-lm"}
    assert set(labelled.filter(lambda row: row["label"] == 0)["generator"]) == {"human"}
    own = everything.filter(lambda row: row["source"] == generator_dir.name)
    assert own["label"].count(0) == own["label"].count(1) == 30
    assert set(own.filter(lambda row: row["label"] == 1)["generator"]) == {generator_dir.name}
    for split in data.values():  # every source is in both splits
        assert set(split["source"]) == {"other-generator.jsonl", generator_dir.name}


def test_build_data_says_how_many_trained_on_rows_it_left_out(
    generator_dir, human_file, labelled_file, tmp_path, capsys
):
    code = main([
        "detector", "build-data", str(tmp_path / "data"), "--generator", str(generator_dir), "--human-data",
        str(human_file), "--validation-fraction", "0.5", "--count", "0", "--min-chars", "30",
        "--labelled", str(labelled_file), "--labelled-text-column", "review", "--labelled-label-column", "kind",
        "--label-map", "OR=human,CG=machine",
    ])
    assert code == 0
    assert "left out 3 human rows the generator trained on" in capsys.readouterr().err


def test_detector_trained_on_both_kinds_of_machine_text_separates_each(
    tmp_path_factory, mixed_data_dir, generator_dir
):
    path = tmp_path_factory.mktemp("mixed-detector") / "detector"
    assert main([
        "detector", "train", str(mixed_data_dir), str(path), "--generator", str(generator_dir),
        "--max-steps", "150", "--batch-size", "8", "--min-chars", "20", "--max-chars", str(MAX_CHARS),
    ]) == 0
    test = datasets.load_from_disk(str(mixed_data_dir))["test"]
    detector = Detector(path)
    for source in set(test["source"]):
        figures = evaluate(detector, test.filter(lambda row, source=source: row["source"] == source))
        assert figures["roc_auc"] >= 0.8, (source, figures)


def test_a_detector_trained_without_a_source_never_saw_it(tmp_path, mixed_data_dir, generator_dir, capsys):
    path = tmp_path / "detector"
    base = ["detector", "train", str(mixed_data_dir), str(path), "--generator", str(generator_dir),
            "--max-steps", "4", "--batch-size", "8", "--min-chars", "20", "--max-chars", str(MAX_CHARS)]
    assert main(base + ["--leave-out-source", "no-such-source.jsonl"]) == 2
    error = capsys.readouterr().err
    assert "the data has no source 'no-such-source.jsonl' (sources: " in error and not path.exists()
    assert main(base + ["--leave-out-source", "other-generator.jsonl"]) == 0
    log = json.loads((path / "detector_log.json").read_text())
    own_train = datasets.load_from_disk(str(mixed_data_dir))["train"].filter(
        lambda row: row["source"] == generator_dir.name
    )
    assert log["left_out_sources"] == ["other-generator.jsonl"] and log["train_texts"] == len(own_train)
    [counted] = log["train_sources"]  # what the detector card lists
    assert counted["source"] == generator_dir.name and counted["generators"] == [generator_dir.name]
    assert counted["human"] + counted["machine"] == len(own_train) and counted["human"] == own_train["label"].count(0)
    assert log["test"]["texts"] < len(datasets.load_from_disk(str(mixed_data_dir))["test"])


@pytest.mark.parametrize(
    "rows, options, message",
    [
        ([{"body": "Nice.", "label": "human"}], [], "has no column 'text'"),
        ([{"text": "Nice place.", "label": "human"}, {"text": "Lovely food.", "label": "human"}], [],
         "has only human rows"),
        ([{"text": "Nice place.", "label": "human"}, {"text": "Lovely food.", "label": "fake"}], [],
         "labels no --label-map covers: 'fake'"),
        ([{"text": "Nice place.", "label": "human"}], ["--label-map", "fake"], "LABEL=human or LABEL=machine"),
    ],
)
def test_labelled_data_is_checked_with_a_one_line_error(
    generator_dir, human_file, tmp_path, capsys, rows, options, message
):
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    code = main([
        "detector", "build-data", str(tmp_path / "out"), "--generator", str(generator_dir), "--human-data",
        str(human_file), "--validation-fraction", "0.5", "--count", "0", "--labelled", str(labelled), *options,
    ])
    error = capsys.readouterr().err
    assert code == 2 and message in error and "Traceback" not in error, error
    assert [line for line in error.splitlines() if "error" in line] == [error.strip().splitlines()[-1]]
    assert not (tmp_path / "out").exists()


def test_detect_says_what_the_detector_was_tested_on_and_where_it_is_unsure(detector_dir, tmp_path, capsys):
    unsure = tmp_path / "detector"
    shutil.copytree(detector_dir, unsure)
    tested_on = ({"name": "gpt-3 yelp (machine text by gpt-3)", "roc_auc": 0.61, "human": 10, "machine": 10},
                 {"name": "own samples", "roc_auc": 0.99, "human": 10, "machine": 10})
    record_decision(unsure, tested_on=tested_on, uncertain_band=(0.0, 1.0))
    review = "The tacos were great and the salsa was fresh."
    assert main(["detect", "--detector", str(unsure), "--json", review]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)[0]["uncertain"] is True
    assert "gpt-3 yelp (machine text by gpt-3) AUC 0.61; own samples AUC 0.99" in captured.err
    assert "Its verdict says little on: gpt-3 yelp" in captured.err
    assert main(["detect", "--detector", str(unsure), review]) == 0
    assert capsys.readouterr().out.startswith("uncertain, leaning human-written (probability machine-written: ")
    assert main(["detect", "--detector", str(unsure), "Great tacos."]) == 0
    assert capsys.readouterr().out.startswith("cannot judge: it is 12 characters long; the detector judges texts of "
                                              "at least 40")
    assert main(["detect", "--detector", str(detector_dir), "--json", review]) == 0
    captured = capsys.readouterr()
    detection = json.loads(captured.out)[0]  # no uncertain band: a plain verdict, and the right one
    assert detection["label"] == "human" and detection["uncertain"] is False
    assert detection["verdict"] == "human-written"
    assert "records no test against labelled machine-written text" in captured.err


def test_the_caveat_leads_with_what_it_catches_and_how_often_it_is_wrong(detector_dir, tmp_path):
    described = tmp_path / "detector"
    shutil.copytree(detector_dir, described)
    tested_on = ({"name": "gambetti2023_yelp_gpt3_val.jsonl (machine text by gpt-3)", "roc_auc": 0.95,
                  "false_positive_rate": 0.04, "recall": 0.7, "human": 10, "machine": 10},
                 {"name": "machine text by Anthropic Claude", "kind": "family", "roc_auc": 0.9, "unseen_roc_auc": 0.8,
                  "recall": 0.6, "human": 10, "machine": 10})
    record_decision(described, tested_on=tested_on)
    caveat = Detector(described).caveat()
    assert caveat.startswith("On the kinds of text it was tested on, it caught 70% of the machine-written ones and "
                             "wrongly called 4% of the real ones machine-written: a verdict is a reason to look "
                             "closer, never proof.")
    assert "Yelp reviews by GPT-3 AUC 0.95" in caveat and ".jsonl" not in caveat
    assert "Trained without one family of generators and tested on it, as on a generator it never saw: AUC 0.80" in (
        caveat)


def test_human_count_adds_human_reviews_beside_the_generators(generator_dir, human_file, tmp_path, capsys):
    def build(human_count: str) -> int:
        return main([
            "detector", "build-data", str(tmp_path / "data"), "--generator", str(generator_dir), "--human-data",
            str(human_file), "--validation-fraction", "0.5", "--count", "6", "--human-count", human_count,
            "--max-new-tokens", "60", "--min-chars", "30", "--temperatures", "0.5", "--batch-size", "8",
        ])

    assert build("12") == 0
    data = datasets.load_from_disk(str(tmp_path / "data"))
    labels = list(data["train"]["label"]) + list(data["test"]["label"])
    assert (labels.count(0), labels.count(1)) == (12, 6)
    test_labels = list(data["test"]["label"])
    assert test_labels.count(0) > test_labels.count(1) > 0  # the test split keeps the proportion, roughly
    assert build("1") == 2
    assert "--human-count must be at least 2" in capsys.readouterr().err


def test_generator_names_map_to_their_families():
    assert generator_family("gpt-4o:polish") == generator_family("gpt-3.5-turbo-0613+dipper-paraphrase")
    assert generator_family("text-davinci-003") == generator_family("ada") == "OpenAI GPT-3"
    assert generator_family("gpt-neox-20b") == generator_family("opt-2.7b") == generator_family("gpt2-xl")
    assert generator_family("charlstm-yelp", frozenset({"charlstm-yelp"})) == OWN_FAMILY
    assert generator_family("human") == HUMAN_FAMILY


def test_leave_one_family_out_never_trains_on_the_family_it_tests():
    # Three sets; set "b" holds rewrites (by two families) of its own human texts, with which they share runs of words.
    rng = random.Random(0)
    words = "soup bread lunch friends sunny table waiter library essay student value public city park".split()

    def unique_text(n: int) -> str:
        return f"text {n}: " + " ".join(rng.choice(words) for _ in range(16))

    originals = [unique_text(n) for n in range(20)]
    rows = [("a", "human", unique_text(100 + n)) for n in range(20)]
    rows += [("a", "gpt-4o", unique_text(200 + n)) for n in range(20)]
    rows += [("b", "human", text) for text in originals]
    rows += [("b", "claude-3-opus", "In short, " + text) for text in originals[:10]]
    rows += [("b", "gpt-3.5-turbo:paraphrase", text + ", truly.") for text in originals[10:]]
    rows += [("c", "human", unique_text(300 + n)) for n in range(20)]
    rows += [("c", "flan-t5-xxl", unique_text(400 + n)) for n in range(20)]
    sources = [source for source, _, _ in rows]
    labels = [int(generator != "human") for _, generator, _ in rows]
    families = [generator_family(generator) for _, generator, _ in rows]
    groups = text_groups([text for _, _, text in rows])
    assert groups[40] == groups[60] and groups[50] == groups[70]  # a rewrite is grouped with its original
    for family in set(families) - {HUMAN_FAMILY}:
        train, test = held_out_split([f == family for f in families], groups, labels, sources)
        assert not {families[i] for i in train} & {family}
        assert {i for i, f in enumerate(families) if f == family} <= set(test)
        assert {labels[i] for i in test} == {0, 1} and {families[i] for i in test if labels[i]} == {family}
        assert not {groups[i] for i in train} & {groups[i] for i in test}  # no rewrite of a tested text trained on
        assert not set(train) & set(test)


def test_balance_each_set_takes_no_more_machine_texts_from_a_set_than_its_human_ones():
    # Set "few" has 4 human texts and 12 machine ones: taking 8 of those would let the set itself read as machine.
    def rows(source, humans, machines, domain):
        return ([{"source": source, "label": 0, "generator": "human", "domain": domain, "n": n} for n in range(humans)]
                + [{"source": source, "label": 1, "generator": ("gpt-4o", "llama-3-8b")[n % 2], "domain": domain,
                    "n": n} for n in range(machines)])

    both = rows("few", 4, 12, "news") + rows("many", 20, 20, "reviews")
    chosen = balanced_selection(both, per_side=8, balance_each_set=True)
    counts = Counter((row["source"], row["label"]) for row in chosen)
    assert counts == {("few", 0): 4, ("few", 1): 4, ("many", 0): 8, ("many", 1): 8}
    assert Counter((row["source"], row["label"]) for row in balanced_selection(both, per_side=8))[("few", 1)] == 8
    assert {row["generator"] for row in chosen if row["source"] == "many" and row["label"]} == {"gpt-4o", "llama-3-8b"}


def test_frozen_features_of_a_generator_with_a_rating_input(tiny_tokenizer):
    # The bundled generator feeds a rating embedding beside each character's: every layer's mean includes it.
    model = make_tiny_model(tiny_tokenizer, conditioned_on_stars=True, star_embedding_dim=4)
    texts = ["The tacos were great and the salsa was fresh. " * 3, "Too short to crop."]
    features = frozen_features(model, tiny_tokenizer, texts, lengths=(40, 100))
    assert features.layers[40].shape == (2, 16 + 4 + 32 + 24) and features.top[40].shape == (2, 24)
    assert np.isfinite(features.layers[40][0]).all() and np.isfinite(features.likelihood[40][0]).all()
    assert np.isfinite(features.top[100][0]).all() and np.isnan(features.top[40][1]).all()  # shorter than 40


def test_a_frozen_detector_on_a_tiny_mix_separates_its_sources(tmp_path, generator_dir, human_file, capsys):
    # Another generator's texts beside human ones, each its own (no long run of words shared with another, unlike
    # llm_like_texts and review_like_texts, which the group split would keep together on one side).
    rng = random.Random(8)
    words = "Furthermore the establishment offers an exquisite culinary journey with impeccable service".split()
    labelled = tmp_path / "other-generator.jsonl"
    rows = [{"text": " ".join(rng.choice(words) for _ in range(rng.randint(18, 40))) + ".", "label": "machine",
             "generator": "gpt-4o"} for _ in range(40)]
    casual = "so we got the tacos lol and honestly the salsa was kinda mid but our server was sweet".split()
    rows += [{"text": " ".join(rng.choice(casual) for _ in range(rng.randint(25, 40))) + "!", "label": "human"}
             for _ in range(40)]
    labelled.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    mixed_data_dir = tmp_path / "data"
    assert main([
        "detector", "build-data", str(mixed_data_dir), "--generator", str(generator_dir), "--human-data",
        str(human_file), "--validation-fraction", "0.5", "--count", "30", "--max-new-tokens", "150",
        "--min-chars", "100", "--temperatures", "0.5,1.0", "--batch-size", "8", "--labelled", str(labelled),
    ]) == 0
    path = tmp_path / "frozen"
    assert main(["detector", "train", str(mixed_data_dir), str(path), "--generator", str(generator_dir),
                 "--frozen", "--max-chars", "120"]) == 0
    generator = load_file(generator_dir / "model.safetensors")
    detector_weights = load_file(path / "model.safetensors")
    for name, tensor in generator.items():  # the LSTM is the generator's, untouched
        if name.startswith("model."):
            assert torch.equal(detector_weights[name], tensor), name
    detector = Detector(path)
    assert detector.pipeline.tokenizer.normalize_text is True and detector.decision.min_characters == 100
    assert {row["kind"] for row in detector.tested_on} == {"set", "family"}
    # Sets and families named in words, as the card, the Space and scripts/left_out_baselines.py name them.
    assert {"machine text by our own generator", "machine text by OpenAI GPT-3.5/4/4o",
            "Yelp reviews by our own generator"} <= {row["name"] for row in detector.tested_on}
    # Its P(machine) is calibrated on the texts it was tested on, and its card says so.
    log = json.loads((path / "detector_log.json").read_text())
    calibration = detector.decision.calibration
    assert calibration["split"] == "test"
    assert calibration["calibration_texts"] == log["test_texts"] - log["cannot_judge"]
    assert "the held-out texts of the results below" in render_model_card(path)
    data = datasets.load_from_disk(str(mixed_data_dir))
    everything = datasets.concatenate_datasets([data["train"], data["test"]])
    for source in set(everything["source"]):
        figures = evaluate(detector, everything.filter(lambda row, source=source: row["source"] == source))
        assert figures["roc_auc"] >= 0.8, (source, figures)
    # Normalised the same way in training (features of normalize_text's output) and at inference (its tokenizer).
    curly = "\u201cThe tacos\u201d were great \u2014 the salsa\u2019s fresh,\n\nand the staff  were kind to us."
    straight = "\"The tacos\" were great - the salsa's fresh, and the staff were kind to us."
    [as_read], [as_trained] = detector.predict([curly]), detector.predict([normalize_text(curly)])
    assert as_read.machine_probability == pytest.approx(as_trained.machine_probability, abs=1e-6)
    assert as_read.machine_probability == pytest.approx(detector.predict([straight])[0].machine_probability, abs=1e-6)
    short, foreign = detector.predict(["Great tacos.", "美味しいラーメンでした。" * 10])
    assert short.verdict == foreign.verdict == "cannot judge" and short.machine_probability is None
    assert "12 characters long" in short.reason and "does not know" in foreign.reason

    # The same with the text's character n-grams and the generator's likelihood view averaged in, and the head for
    # its own samples (its domain: the human reviews' file), read by the saved model itself.
    stacked_path = tmp_path / "frozen-ngrams"
    assert main(["detector", "train", str(mixed_data_dir), str(stacked_path), "--generator", str(generator_dir),
                 "--frozen", "--max-chars", "120", "--ngram-buckets", "4099", "--ngram-words", "2", "--likelihood",
                 "--own-domain", human_file.stem]) == 0
    stacked = Detector(stacked_path)
    config = stacked.pipeline.model.config
    assert config.ngram_buckets == 4099 and config.likelihood_features and config.own_sample_score
    assert config.ngram_max_n == 4 and config.ngram_word_max_n == 2
    weights = load_file(stacked_path / "model.safetensors")
    assert weights["ngrams.weight"].abs().sum() > 0
    # Both n-gram heads know the words of the tokenizer's characters, on every loading path (saved with the weights).
    assert torch.equal(weights["ngrams.word_kinds"], word_kinds(stacked.pipeline.tokenizer))
    assert torch.equal(weights["own_samples.gate.word_kinds"], weights["ngrams.word_kinds"])
    for source in set(everything["source"]):
        figures = evaluate(stacked, everything.filter(lambda row, source=source: row["source"] == source))
        assert figures["roc_auc"] >= 0.8, (source, figures)
    card = render_model_card(stacked_path)  # says what the head reads and what it trained on
    assert "character 1-4-grams and word 1-2-grams" in card and "fitted on its own samples" in card
    assert "other-generator" in card
    # A plain pipeline (no tokenizer options, as the Hub widget calls it) reads what `charlstm detect` reads: the first
    # 120 characters of a long text, a literal "<5star>" as characters.
    texts = [*everything["text"][:6], " ".join(everything["text"][:4]), "A <5star> place. " + everything["text"][0]]
    by_pipeline = pipeline("text-classification", model=str(stacked_path), top_k=None)(texts)
    for detection, labels in zip(stacked.predict(texts), by_pipeline):
        if detection.machine_probability is not None:
            machine = next(label["score"] for label in labels if label["label"] == "machine")
            assert detection.machine_probability == pytest.approx(machine, abs=1e-5)
    # Calibrated, every part of its head moves with the margin: each probability maps as calibrated_probability
    # says, and the same texts are flagged.
    calibrated_path = tmp_path / "frozen-calibrated"
    assert main(["detector", "calibrate", str(stacked_path), str(mixed_data_dir), str(calibrated_path),
                 "--split", "test"]) == 0
    calibration = json.loads((calibrated_path / "config.json").read_text())["detection"]["calibration"]
    assert abs(calibration["margin_scale"] - 1) > 0.05  # or the test would not tell scaled parts from unscaled ones
    texts = everything["text"][:30]
    for was, now in zip(stacked.predict(texts), Detector(calibrated_path).predict(texts)):
        if was.machine_probability is not None:
            mapped = calibrated_probability(was.machine_probability, calibration["margin_scale"], calibration["bias"])
            assert now.machine_probability == pytest.approx(mapped, abs=1e-4)
            assert (now.label, now.uncertain) == (was.label, was.uncertain)
    # Texts whose labels it gets backwards would turn its verdicts around: refused.
    flipped = tmp_path / "flipped"
    data = datasets.load_from_disk(str(mixed_data_dir))
    datasets.DatasetDict({"test": data["test"].map(lambda row: {"label": 1 - row["label"]})}).save_to_disk(flipped)
    assert main(["detector", "calibrate", str(stacked_path), str(flipped), str(tmp_path / "backwards"),
                 "--split", "test"]) == 2
    assert "no better than chance" in capsys.readouterr().err and not (tmp_path / "backwards").exists()


def test_the_models_likelihood_score_is_the_fitted_likelihood_heads_margin(tiny_tokenizer, tiny_model, tiny_model_dir):
    # Training reads the statistics from the generator's pass (frozen_features); the model computes them in forward.
    texts = ["The tacos were great and the salsa was fresh.", "Cold fries, slow waiter. We waited forty minutes.",
             "Decent pizza for the price; the crust was thin.", "Meh. The soup was salty and the bread was stale."]
    statistics = frozen_features(tiny_model, tiny_tokenizer, texts, lengths=(30,)).likelihood[30]
    head = StackedHead(LinearHead(np.zeros(24), 0.0), likelihood=LikelihoodHead.fit(statistics, [1, 0, 1, 0]))
    model = frozen_detector_model(str(tiny_model_dir), head)
    batch = tiny_tokenizer([text[:30] for text in texts], padding=True, padding_side="left", return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    in_model = (logits[:, MACHINE] - logits[:, 1 - MACHINE]).numpy()
    # Within float32's rounding of the large bias a near-constant statistic of this untrained model gives its head.
    assert np.allclose(in_model, head.likelihood.margins(statistics), atol=0.02)
    assert len(set(np.round(in_model, 4))) == 4


def test_the_models_own_sample_score_takes_over_where_the_fitted_head_does(tiny_tokenizer, tmp_path):
    # The own-sample head overrules the others only on texts its gate takes for the generator's domain, and there
    # only where it says machine more strongly; the saved model does what StackedHead.margins does, the rating gain
    # of a rated generator included.
    generator = make_tiny_model(tiny_tokenizer, conditioned_on_stars=True, star_embedding_dim=4)
    generator.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    texts = ["The tacos were great and the salsa was fresh.", "Cold fries, slow waiter. We waited forty minutes.",
             "Decent pizza for the price; the crust was thin.", "Meh. The soup was salty and the bread was stale.",
             "Quarterly revenue rose four percent on strong demand.", "The committee adjourned without a vote today.",
             "Photosynthesis converts light into chemical energy.", "The treaty was signed in the spring of 1648."]
    features = frozen_features(generator, tiny_tokenizer, texts, lengths=(30,), rated=range(len(texts)))
    gain = features.gain[30]
    assert np.isfinite(gain).all() and len(set(np.round(gain[:, 0], 6))) == 8
    counts = ngram_counts(tiny_tokenizer, texts, 30, 4, 4099)
    views = Views(features.top[30], counts, statistics=features.likelihood[30], gain=gain)
    labels = np.array([1, 0, 1, 0, 1, 0, 1, 0])
    in_domain, own = np.arange(8) < 4, np.arange(8) < 4
    top = LinearHead(np.random.default_rng(0).normal(size=24), -0.5)
    head = StackedHead(top, ngrams=NgramHead.fit(counts, labels.tolist()),
                       own=OwnSampleHead.fit(counts, views.own_statistics, labels, in_domain, own))
    head = head.standardised_on(views)
    gated, margins, averaged = head.own.gated(views), head.margins(views), head.averaged(views)
    assert gated.any() and not gated.all()  # both kinds of text, or the test would not test the gate
    assert np.allclose(margins[~gated], averaged[~gated], atol=1e-5)
    overruled = margins > averaged + 1e-3
    assert overruled.any() and (margins >= averaged - 1e-5).all() and not (overruled & ~gated).any()
    model = frozen_detector_model(str(tmp_path), head)
    assert model.config.own_sample_score and model.own_samples.reads_rating_gain
    batch = tiny_tokenizer([text[:30] for text in texts], padding=True, padding_side="left", return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert np.allclose((logits[:, MACHINE] - logits[:, 1 - MACHINE]).numpy(), margins, atol=0.02)


@pytest.mark.parametrize(("max_n", "word_max_n"), [(3, 0), (0, 2), (3, 2)])
def test_the_models_ngram_score_is_the_fitted_n_gram_heads_margin(tiny_tokenizer, max_n, word_max_n):
    # Training counts n-grams from the tokenizer's ids (ngram_counts); the model counts them in forward, padded.
    texts = ["The tacos were great and fresh.", "Cold fries, slow waiter!", "Decent pizza; thin crust.", "Meh."] * 2
    labels = [1, 0, 1, 0, 0, 1, 1, 0]
    counts = ngram_counts(tiny_tokenizer, texts, length=20, max_n=max_n, buckets=211, word_max_n=word_max_n)
    head = NgramHead.fit(counts, labels)
    config = CharLSTMConfig(vocab_size=len(tiny_tokenizer), embedding_dim=8, hidden_sizes=[8], num_labels=2,
                            ngram_buckets=211, ngram_max_n=max_n, ngram_word_max_n=word_max_n)
    model = CharLSTMForSequenceClassification(config).eval()
    with torch.no_grad():
        model.ngrams.idf.copy_(torch.from_numpy(head.idf))
        model.ngrams.weight[MACHINE] = torch.from_numpy(head.weights).float()
        if word_max_n:
            model.ngrams.word_kinds.copy_(word_kinds(tiny_tokenizer))
    batch = tiny_tokenizer([text[:20] for text in texts], padding=True, padding_side="left", return_tensors="pt")
    with torch.no_grad():
        in_model = model.ngrams(batch["input_ids"], batch["attention_mask"])[:, MACHINE].numpy()
    assert np.allclose(in_model + head.bias, head.margins(counts), atol=1e-5)
    assert len(set(np.round(in_model, 4))) > 2  # the texts differ


def test_word_ngrams_are_words_and_punctuation_as_a_regular_expression_reads_them(tiny_tokenizer):
    # A word is a run of letters and digits: "great" is the same word before a full stop and before a space, the full
    # stop a word of its own, "Great" another word; the <bos> before a text and padding break words.
    def words(text: str, max_n: int = 1) -> list[int]:
        ids = torch.tensor([[tiny_tokenizer.bos_token_id] + tiny_tokenizer.convert_tokens_to_ids(list(text))])
        return sorted(word_ngram_buckets(ids, None, word_kinds(tiny_tokenizer), max_n, 2**40)[0].tolist())

    assert len(words("It was great. Great tacos, 10 of them!")) == len(
        re.findall(r"\b\w+\b|[^\w\s]", "It was great. Great tacos, 10 of them!")) == 11
    assert set(words("great")) < set(words("great.")) and len(words("great.")) == 2
    assert words("great") != words("Great") and words("great  tacos") == words("great tacos")
    pairs, swapped = set(words("great tacos", max_n=2)), set(words("tacos great", max_n=2))
    assert len(pairs) == 3 and len(pairs & swapped) == 2  # the same two words, not the same pair
    batch = tiny_tokenizer(["great tacos", "tacos"], padding=True, padding_side="left", return_tensors="pt")
    padded = word_ngram_buckets(batch["input_ids"], batch["attention_mask"], word_kinds(tiny_tokenizer), 2, 2**40)
    assert sorted(padded[1].tolist()) == words("tacos", 2) and sorted(padded[0].tolist()) == words("great tacos", 2)
