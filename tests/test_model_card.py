"""The model card: metadata the Hub reads, the run's real figures, samples, and "not measured" for what is missing."""

import json
import shutil

import pytest
import yaml
from huggingface_hub import ModelCard

from charlstm.cli import main
from charlstm.detection.decision import record_decision
from charlstm.hub.model_card import NOT_MEASURED, generate_samples, render_model_card, sampling_defaults
from tests.test_hub import make_detector_dir

FULL_LOG = {
    "dataset": "../shared/data/yelp_reviews.jsonl", "conditioned_on_stars": True, "hidden_sizes": [32, 24],
    "embedding_dim": 16, "num_parameters": 23456, "seq_len": 128, "batch_size": 8, "train_characters": 1234567,
    "train_reviews": 900, "eval_reviews": 100, "train_minutes": 12.5, "device": "CPU (2 threads)", "history": [],
    "final": {"eval_bpc": 1.8765, "eval_bpc_per_star": {"1": 1.91, "2": 1.92, "3": 1.9, "5": 1.85}},
}


def metadata(card: str) -> dict:
    return yaml.safe_load(card.split("---")[1])


@pytest.fixture()
def star_dir(tmp_path, star_model_dir):
    path = tmp_path / "star-model"
    shutil.copytree(star_model_dir, path)
    (path / "training_log.json").write_text(json.dumps(FULL_LOG))
    return path


def test_generator_card_carries_the_runs_figures(star_dir):
    card = render_model_card(star_dir, "alice/charlstm-yelp", "0123456789abcdef0123456789abcdef01234567")
    data = metadata(card)
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert "custom_code" in data["tags"] and data["license"] and data["metrics"] == ["bpc"]
    assert "datasets" not in data  # a local file is not a Hub dataset; the body names it instead
    assert [example["text"] for example in data["widget"]] == ["<5star>The tacos here are",
                                                               "<1star>We waited forty minutes and"]
    assert data["widget"][1]["output"]["text"].startswith("We waited forty minutes and")
    assert data["model-index"][0]["results"][0]["metrics"][0]["value"] == 1.8765
    for figure in ("1.8765", "1,234,567", "900", "100", "23,456", "32 x 24", "12.5 minutes on CPU (2 threads)",
                   "| 2 stars | 1.9200 |", "yelp_reviews.jsonl", "Yelp Dataset Terms of Use"):
        assert figure in card
    assert "| 4 stars | not measured |" in card
    for stars in range(1, 6):
        assert f"**{stars} star" in card
    assert '"alice/charlstm-yelp", "0123456789abcdef0123456789abcdef01234567"' in card
    assert ModelCard(card).data.pipeline_tag == "text-generation"  # huggingface_hub parses it back


def test_card_without_a_training_log_says_not_measured(tmp_path, tiny_model_dir):
    path = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, path)
    card = render_model_card(path)
    data = metadata(card)
    assert "model-index" not in data and data["pipeline_tag"] == "text-generation"
    assert f"| all | {NOT_MEASURED} |" in card and f"Parameters | {NOT_MEASURED}" in card
    assert '"NAMESPACE/NAME", "COMMIT_ID"' in card and "take the commit id from the repo's history" in card


def test_given_samples_are_used_and_fenced_safely(star_dir):
    tricky = "Great ```code``` fences and a --- line\n---\nstill the review"
    card = render_model_card(star_dir, samples={5: tricky})
    assert "````text\n" + tricky + "\n````" in card
    assert ModelCard(card).data.license  # the review's own "---" did not end the metadata


def test_samples_are_what_charlstm_generate_prints_for_the_same_seed(star_dir, capsys):
    sample = generate_samples(star_dir, [(3, "")], max_new_tokens=40)[0]
    sampling = sampling_defaults(star_dir)
    assert main(["generate", "--model", str(star_dir), "--stars", "3", "--seed", "0", "--max-new-tokens", "40",
                 "--temperature", str(sampling["temperature"]), "--top-k", str(sampling["top_k"]),
                 "--top-p", str(sampling["top_p"])]) == 0
    assert capsys.readouterr().out.rstrip("\n") == sample


def test_detector_card(tmp_path, tiny_tokenizer):
    path = make_detector_dir(tmp_path, tiny_tokenizer)
    card = render_model_card(path, "alice/detector")
    data = metadata(card)
    assert data["pipeline_tag"] == "text-classification" and "custom_code" in data["tags"]
    assert {item["label"] for item in data["widget"][0]["output"]} == {"human", "machine"}
    assert "| ROC-AUC | 0.7500 |" in card and f"| Recall (machine) | {NOT_MEASURED} |" in card
    assert "charlstm-yelp" in card and 'pipeline("text-classification", model="alice/detector"' in card

    assert "does not list its training sources" in card and "records no test per source" in card

    (path / "detector_log.json").unlink()
    assert f"| ROC-AUC | {NOT_MEASURED} |" in render_model_card(path)


def test_detector_card_lists_every_training_source_and_its_figures(tmp_path, tiny_tokenizer):
    path = make_detector_dir(tmp_path, tiny_tokenizer)
    log = json.loads((path / "detector_log.json").read_text())
    log["train_sources"] = [
        {"source": "gpt3.jsonl", "domain": "yelp", "generators": ["gpt-3"], "human": 1273, "machine": 1279},
        {"source": "gpt2.jsonl", "domain": "amazon", "generators": ["gpt-2"], "human": 2709, "machine": 2720},
        {"source": "mine.jsonl", "domain": "hotels", "generators": ["llama"], "human": 5, "machine": 6},
    ]
    (path / "detector_log.json").write_text(json.dumps(log))
    record_decision(path, tested_on=(
        {"name": "gpt3.jsonl (machine text by gpt-3)", "roc_auc": 0.9712, "unseen_roc_auc": 0.8021,
         "false_positive_rate": 0.0314, "human": 318, "machine": 320},
        {"name": "gpt2.jsonl (machine text by gpt-2)", "roc_auc": 0.95, "human": 678, "machine": 680},
    ), uncertain_band=(0.3, 0.71), threshold=0.734, threshold_false_positive_rate=0.05)
    card = render_model_card(path, "alice/detector")
    assert ("P(machine) >= 0.734, the lowest at which each source's held-out human texts were called machine at most "
            "5% of the time") in card
    assert "| gpt3.jsonl | yelp | gpt-3 | 1,273 | 1,279 | the Yelp Dataset Terms of Use" in card
    assert "| gpt2.jsonl | amazon | gpt-2 | 2,709 | 2,720 | Amazon's conditions" in card
    assert "| mine.jsonl | hotels | llama | 5 | 6 | see the source's own licence |" in card
    assert "| gpt3.jsonl (machine text by gpt-3) | 0.971 | 0.802 | 3.1% | 318 | 320 |" in card
    assert f"| gpt2.jsonl (machine text by gpt-2) | 0.950 | {NOT_MEASURED} | {NOT_MEASURED} | 678 | 680 |" in card
    assert "P(machine) from 0.30 to 0.71" in card
    # A pipeline or widget user, whose label flips at 0.5, is told how the package reads the score.
    assert ('`charlstm detect` and the Space call a text machine-written at P(machine) >= 0.734, and say "uncertain" '
            "from 0.30 to 0.71") in " ".join(card.split())
    table = card[card.index("| Source | Domain"):].split("\n\n")[0].splitlines()
    assert len(table) == 2 + 3  # header, rule, one row per source: no blank line breaks the table


def test_model_card_command_writes_readme(star_dir, capsys):
    assert main(["model-card", str(star_dir), "--repo-id", "alice/charlstm-yelp", "--write"]) == 0
    assert metadata((star_dir / "README.md").read_text())["pipeline_tag"] == "text-generation"
    assert main(["model-card", str(star_dir / "missing")]) == 2
    assert "no config.json" in capsys.readouterr().err
