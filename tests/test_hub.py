"""Publishing: `charlstm push` / `push-space` against the Hub-protocol server, checked by the real clients.

The decisive checks run in a fresh Python process with an empty HF_HOME and no way to import `charlstm`, as a
person who only knows the repo id would: transformers' Auto classes with trust_remote_code, the text-classification
pipeline, the endpoint's handler.py and the code snippet printed in the model card.
"""

import json
import os
import re
import shutil
import site
import subprocess
import sys

import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from transformers import pipeline

from charlstm import CharLSTMConfig, CharLSTMForSequenceClassification
from charlstm.cli import main
from charlstm.detection.decision import record_decision
from charlstm.detection.detector import Detector
from charlstm.hub.push import push_space, push_to_hub
from tests.conftest import TINY_CORPUS, make_tiny_model

PROMPT = "The tacos"
NEW_TOKENS = 24
DETECTOR_TEXTS = ["The tacos were great and the salsa was fresh.", "Cold fries, slow waiter. Never again."]
TRAINING_LOG = {
    "dataset": "tester/reviews", "conditioned_on_stars": False, "hidden_sizes": [32, 24], "embedding_dim": 16,
    "num_parameters": 12345, "seq_len": 64, "batch_size": 4, "train_characters": 380, "train_reviews": 5,
    "eval_reviews": 2, "train_minutes": 0.1, "device": "CPU (2 threads)", "history": [],
    "final": {"eval_bpc": 6.5432, "eval_bpc_per_star": None},
}

# Runs in the fresh process: `charlstm` cannot be imported there (no site processing, so no editable install).
REMOTE_SCRIPT = r"""
import contextlib, importlib.util, io, json, os, re, sys
assert importlib.util.find_spec("charlstm") is None, "charlstm is importable in the fresh process"
from huggingface_hub import hf_hub_download, snapshot_download
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

job = json.loads(sys.argv[1])
result = {}
tokenizer = AutoTokenizer.from_pretrained(job["model"], revision=job["revision"], trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained(job["model"], revision=job["revision"], trust_remote_code=True)
output = model.generate(**tokenizer(job["prompt"], return_tensors="pt"), do_sample=False,
                        max_new_tokens=job["new_tokens"])
result["greedy"] = tokenizer.decode(output[0], skip_special_tokens=True)
result["model_module"] = type(model).__module__

# Inference Endpoints: load handler.py from the repo snapshot and call it with a request body.
path = snapshot_download(job["model"], revision=job["revision"])
spec = importlib.util.spec_from_file_location("handler", os.path.join(path, "handler.py"))
handler_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(handler_module)
handler = handler_module.EndpointHandler(path)
result["handler"] = handler({"inputs": job["prompt"],
                             "parameters": {"do_sample": False, "max_new_tokens": job["new_tokens"]}})

# The loading code the model card shows, run as printed.
card = open(hf_hub_download(job["model"], "README.md")).read()
snippet = re.search(r"```python\n(.*?)```", card, re.DOTALL).group(1)
printed = io.StringIO()
with contextlib.redirect_stdout(printed):
    exec(snippet, {})
result["card_snippet_output"] = printed.getvalue()

detector = pipeline("text-classification", model=job["detector"], revision=job["detector_revision"],
                    trust_remote_code=True)
result["detector"] = detector(job["texts"], top_k=None)
print("RESULT " + json.dumps(result))
"""


# The smallest `charlstm train` run that saves a model: a few steps of the tiny preset on the suite's sentences.
TINY_TRAINING = ["--preset", "tiny", "--seq-len", "32", "--batch-size", "8", "--validation-fraction", "0.2"]


def write_reviews(path, copies: int):
    rows = [{"text": text, "stars": index % 5 + 1} for index, text in enumerate(TINY_CORPUS * copies)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def make_detector_dir(path, tokenizer):
    torch.manual_seed(3)
    config = CharLSTMConfig(vocab_size=len(tokenizer), embedding_dim=16, hidden_sizes=[24], num_labels=2,
                            id2label={0: "human", 1: "machine"}, label2id={"human": 0, "machine": 1})
    CharLSTMForSequenceClassification(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    log = {"generator": "charlstm/bundled/charlstm-yelp", "train_texts": 40,
           "test": {"roc_auc": 0.75, "accuracy": 0.7, "texts": 20}}
    (path / "detector_log.json").write_text(json.dumps(log))
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model_dir):
    """The tiny model with what a training run adds, and clutter that must not be published."""
    path = tmp_path_factory.mktemp("push-model") / "tiny-charlstm"
    shutil.copytree(tiny_model_dir, path)
    (path / "training_log.json").write_text(json.dumps(TRAINING_LOG))
    (path / "training_curves.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a picture")
    (path / "training_args.bin").write_bytes(b"pickle")
    (path / "checkpoint-10").mkdir()
    (path / "checkpoint-10" / "model.safetensors").write_bytes(b"old")
    return path


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory, tiny_tokenizer):
    return make_detector_dir(tmp_path_factory.mktemp("push-detector"), tiny_tokenizer)


@pytest.fixture(scope="module")
def pushed(hub_server, model_dir, detector_dir):
    model = push_to_hub(model_dir, "tester/tiny-charlstm", detector_id="tester/tiny-detector")
    detector = push_to_hub(detector_dir, "tester/tiny-detector")
    return {"model": model, "detector": detector}


@pytest.fixture(scope="module")
def remote(pushed, tmp_path_factory):
    """What a fresh machine without charlstm gets from the pushed repos."""
    fresh_home = tmp_path_factory.mktemp("fresh-hf-home")
    job = {"model": "tester/tiny-charlstm", "revision": pushed["model"].pinned_revision, "prompt": PROMPT,
           "new_tokens": NEW_TOKENS, "detector": "tester/tiny-detector",
           "detector_revision": pushed["detector"].pinned_revision, "texts": DETECTOR_TEXTS}
    prelude = f"import sys; sys.path.extend({site.getsitepackages()!r})\n"
    completed = subprocess.run(
        [sys.executable, "-I", "-S", "-c", prelude + REMOTE_SCRIPT, json.dumps(job)],
        env={**os.environ, "HF_HOME": str(fresh_home)}, cwd=fresh_home, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def local_greedy(model, tokenizer) -> str:
    output = model.generate(**tokenizer(PROMPT, return_tensors="pt"), do_sample=False, max_new_tokens=NEW_TOKENS)
    return tokenizer.decode(output[0], skip_special_tokens=True)


def test_fresh_machine_generates_the_local_greedy_text(remote, tiny_model, tiny_tokenizer):
    expected = local_greedy(tiny_model, tiny_tokenizer)
    assert len(expected) > len(PROMPT)
    assert remote["greedy"] == expected
    assert remote["model_module"].startswith("transformers_modules.")  # the repo's code, not an installed package


def test_endpoint_handler_returns_generated_text(remote, tiny_model, tiny_tokenizer):
    assert remote["handler"] == [{"generated_text": local_greedy(tiny_model, tiny_tokenizer)}]


def test_model_card_snippet_runs_as_printed(remote):
    assert remote["card_snippet_output"].startswith("The tacos were")


def test_detector_round_trip_through_the_pipeline(remote, detector_dir):
    local = pipeline("text-classification", model=str(detector_dir))(DETECTOR_TEXTS, top_k=None)
    for remote_scores, local_scores in zip(remote["detector"], local):
        assert {item["label"] for item in remote_scores} == {"human", "machine"}
        assert sorted((s["label"], round(s["score"], 5)) for s in remote_scores) == sorted(
            (s["label"], round(s["score"], 5)) for s in local_scores)


def test_model_repo_holds_what_a_user_needs_and_nothing_else(pushed, model_dir):
    files = set(HfApi().list_repo_files("tester/tiny-charlstm"))
    assert files == {
        ".gitattributes", "README.md", "config.json", "generation_config.json", "model.safetensors",
        "vocab.json", "tokenizer_config.json", "configuration_charlstm.py", "modeling_charlstm.py",
        "tokenization_charlstm.py", "training_log.json", "training_curves.png", "handler.py", "requirements.txt",
    } | ({"special_tokens_map.json"} & {path.name for path in model_dir.iterdir()})
    requirements = open(hf_hub_download("tester/tiny-charlstm", "requirements.txt")).read()
    assert re.search(r"^transformers\b", requirements, re.MULTILINE)


def test_model_card_metadata_and_pinned_revision(pushed):
    pinned = pushed["model"].pinned_revision
    card = ModelCard.load("tester/tiny-charlstm")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert "custom_code" in data["tags"] and data["datasets"] == ["tester/reviews"]
    assert all(example["output"]["text"] for example in data["widget"])
    assert data["model-index"][0]["results"][0]["metrics"][0]["value"] == 6.5432
    assert f'"tester/tiny-charlstm", "{pinned}"' in card.text
    assert "tester/tiny-detector" in card.text  # the misuse section points to the detector
    weights_commit = HfApi().get_paths_info("tester/tiny-charlstm", ["model.safetensors"], expand=True)[0]
    assert weights_commit.last_commit.oid == pinned


def test_detector_card_says_text_classification(pushed):
    files = set(HfApi().list_repo_files("tester/tiny-detector"))
    assert "handler.py" not in files and "detector_log.json" in files
    data = ModelCard.load("tester/tiny-detector").data.to_dict()
    assert data["pipeline_tag"] == "text-classification"
    assert {item["label"] for item in data["widget"][0]["output"]} == {"human", "machine"}


def test_pushing_again_commits_nothing(pushed, model_dir):
    again = push_to_hub(model_dir, "tester/tiny-charlstm", detector_id="tester/tiny-detector")
    assert (again.commit, again.pinned_revision) == (pushed["model"].commit, pushed["model"].pinned_revision)


def test_new_weights_move_the_pin_and_the_old_pin_still_loads_the_old_weights(hub_server, tmp_path, model_dir,
                                                                               tiny_tokenizer):
    first = push_to_hub(model_dir, "tester/moving-pin")
    retrained = tmp_path / "retrained"
    shutil.copytree(model_dir, retrained)
    make_tiny_model(tiny_tokenizer, seed=7).save_pretrained(retrained)
    second = push_to_hub(retrained, "tester/moving-pin")

    assert second.pinned_revision != first.pinned_revision
    old = hf_hub_download("tester/moving-pin", "model.safetensors", revision=first.pinned_revision)
    assert open(old, "rb").read() == (model_dir / "model.safetensors").read_bytes()
    assert second.pinned_revision in ModelCard.load("tester/moving-pin").text


def test_push_to_a_branch_leaves_main_alone(hub_server, model_dir):
    result = push_to_hub(model_dir, "tester/branched", revision="experiment", private=True)
    api = HfApi()
    assert "model.safetensors" in api.list_repo_files("tester/branched", revision="experiment")
    assert api.list_repo_files("tester/branched") == [".gitattributes"]
    assert api.model_info("tester/branched").private
    card = open(hf_hub_download("tester/branched", "README.md", revision="experiment")).read()
    assert result.pinned_revision in card


def test_cli_push_prints_where_but_never_the_token(hub_server, model_dir, capsys):
    assert main(["push", str(model_dir), "--repo-id", "tester/cli-push"]) == 0
    output = capsys.readouterr()
    assert "tester/cli-push" in output.out
    assert hub_server.token not in output.out + output.err


def test_space_push_lands_a_configured_gradio_space_and_is_idempotent(pushed):
    first = push_space("tester/charlstm-space", "tester/tiny-charlstm", detector_id="tester/tiny-detector")
    api = HfApi()
    files = set(api.list_repo_files("tester/charlstm-space", repo_type="space"))
    assert {"app.py", "README.md", "requirements.txt", "charlstm/__init__.py", "charlstm/cli/__init__.py"} <= files
    # The Space loads its models by id, and its app is at the top, not a second time inside the package.
    assert not any(name.startswith(("charlstm/bundled/", "charlstm/hub/space/")) for name in files)
    readme = open(hf_hub_download("tester/charlstm-space", "README.md", repo_type="space")).read()
    metadata = yaml.safe_load(readme.split("---")[1])
    assert metadata["sdk"] == "gradio" and metadata["app_file"] == "app.py"
    assert metadata["models"] == ["tester/tiny-charlstm", "tester/tiny-detector"]
    variables = api.get_space_variables("tester/charlstm-space")
    assert (variables["MODEL_ID"].value, variables["DETECTOR_ID"].value) == ("tester/tiny-charlstm",
                                                                             "tester/tiny-detector")

    again = push_space("tester/charlstm-space", "tester/tiny-charlstm", detector_id="tester/tiny-detector")
    assert again.commit == first.commit

    without_detector = push_space("tester/charlstm-space", "tester/tiny-charlstm")
    assert without_detector.commit != first.commit
    assert "DETECTOR_ID" not in api.get_space_variables("tester/charlstm-space")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["push", "{model}", "--repo-id", "no-namespace"], "--repo-id must look like NAMESPACE/NAME"),
        (["push", "{model}", "--repo-id", "a/b/c"], "--repo-id must look like NAMESPACE/NAME"),
        (["push", "{model}", "--repo-id", "bad name/x"], "--repo-id must look like NAMESPACE/NAME"),
        (["push", "{missing}", "--repo-id", "tester/x"], "does not exist"),
        (["push", "{no_weights}", "--repo-id", "tester/x"], "has no safetensors weights"),
        (["push", "{no_code}", "--repo-id", "tester/x"], "is missing modeling_charlstm.py"),
        (["push-space", "--repo-id", "tester/s", "--model-id", "nope"], "--model-id must look like NAMESPACE/NAME"),
        (["push-space", "--repo-id", "tester/s", "--model-id", "tester/m", "--space-dir", "{model}"], "has no app.py"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(hub_server, model_dir, tmp_path, capsys, arguments, message):
    no_weights, no_code = tmp_path / "no-weights", tmp_path / "no-code"
    for broken in (no_weights, no_code):
        shutil.copytree(model_dir, broken)
    (no_weights / "model.safetensors").unlink()
    (no_code / "modeling_charlstm.py").unlink()
    paths = {"model": model_dir, "missing": tmp_path / "missing", "no_weights": no_weights, "no_code": no_code}
    assert main([argument.format(**paths) for argument in arguments]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1 and "Traceback" not in error


def test_no_token_is_a_clear_error(hub_server, model_dir, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN")  # and the suite's fresh HF_HOME holds no saved login
    assert main(["push", str(model_dir), "--repo-id", "tester/x"]) == 2
    assert "no Hugging Face token: set HF_TOKEN" in capsys.readouterr().err


def test_a_refused_token_is_a_clear_error(hub_server, model_dir, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_not_the_right_one")
    assert main(["push", str(model_dir), "--repo-id", "tester/x"]) == 2
    error = capsys.readouterr().err
    assert "the Hub refused the request (401)" in error and "hf_not_the_right_one" not in error


def test_train_push_to_hub_publishes_the_trained_model(hub_server, tmp_path):
    reviews = write_reviews(tmp_path / "reviews.jsonl", copies=12)
    output = tmp_path / "model"
    assert main(["train", "--dataset", reviews, "--condition-on-stars", *TINY_TRAINING, "--max-steps", "3",
                 "--eval-steps", "3", "--output-dir", str(output),
                 "--push-to-hub", "--hub-model-id", "tester/trained-and-pushed"]) == 0
    files = set(HfApi().list_repo_files("tester/trained-and-pushed"))
    assert {"model.safetensors", "training_log.json", "training_curves.png", "handler.py", "README.md"} <= files
    log = json.loads((output / "training_log.json").read_text())
    card = ModelCard.load("tester/trained-and-pushed")
    assert f"| all | {log['final']['eval_bpc']:.4f} |" in card.text and card.data.pipeline_tag == "text-generation"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--push-to-hub"], "--push-to-hub and --hub-model-id NAMESPACE/NAME go together"),
        (["--hub-model-id", "tester/x"], "--push-to-hub and --hub-model-id NAMESPACE/NAME go together"),
        (["--push-to-hub", "--hub-model-id", "x"], "--hub-model-id must look like NAMESPACE/NAME"),
        (["--push-to-hub", "--hub-model-id", "tester/x", "--no-token"], "no Hugging Face token"),
    ],
)
def test_train_refuses_a_push_it_could_not_do_before_training(tmp_path, monkeypatch, capsys, flags, message):
    if "--no-token" in flags:
        monkeypatch.delenv("HF_TOKEN")
        flags = [flag for flag in flags if flag != "--no-token"]
    reviews = write_reviews(tmp_path / "reviews.jsonl", copies=4)
    output = tmp_path / "model"
    assert main(["train", "--dataset", reviews, *TINY_TRAINING, "--max-steps", "1", "--output-dir", str(output),
                 *flags]) == 2
    assert message in capsys.readouterr().err
    assert not output.exists()  # refused before any training


def test_a_detector_loaded_by_hub_id_keeps_its_threshold_band_and_caveat(hub_server, detector_dir, tmp_path):
    # The decision travels in config.json, which from_pretrained always reads: a Hub id gives the verdicts, the
    # uncertain band and the caveat a local directory gives (they once lived in a log only local loads read).
    decided = tmp_path / "decided"
    shutil.copytree(detector_dir, decided)
    texts = ["The tacos were great and the salsa was fresh, we will be back.",
             "Cold fries and a slow waiter; the soup was salty and the bread stale."]
    local_probabilities = [d.machine_probability for d in Detector(decided).predict(texts)]
    record_decision(decided, threshold=min(local_probabilities) + 1e-6, uncertain_band=(0.0, 0.01),
                    tested_on=({"name": "own samples", "roc_auc": 0.91, "false_positive_rate": 0.04,
                                "human": 10, "machine": 10},))
    push_to_hub(decided, "tester/decided-detector")
    local, remote = Detector(decided), Detector("tester/decided-detector")
    assert remote.decision == local.decision and remote.caveat() == local.caveat()
    assert [d.verdict for d in remote.predict(texts)] == [d.verdict for d in local.predict(texts)]
    assert {d.verdict for d in remote.predict(texts)} == {"human-written", "machine-written"}
