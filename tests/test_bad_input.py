"""Bad input, run as a user runs it (issue 18): the `charlstm` console script in a subprocess, and the Space through
`gradio_client`. Every case must end in exit status 2 with one short line on stderr and no traceback, and write or
upload nothing; the Space answers a plain sentence and logs one line per rejected request."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client
from huggingface_hub import HfApi

from charlstm import CharLSTMConfig, CharLSTMForSequenceClassification
from tests.conftest import TINY_CORPUS
from tests.test_space import launch_space

CHARLSTM = str(Path(sys.executable).parent / "charlstm")
NO_HUB = "http://127.0.0.1:9"  # the discard port: nothing listens there, so the connection is refused at once
MAX_MESSAGE = 400  # characters: one line a person reads
# Progress bars (datasets preparing a file) are not messages: they are left out before counting lines.
PROGRESS_BAR = re.compile(r"\d+%\||examples/s|it/s\]")


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_model_dir, tiny_tokenizer) -> dict[str, Path]:
    """A good generator and detector, and broken copies of the generator, by name."""
    root = tmp_path_factory.mktemp("models")
    made = {"generator": Path(tiny_model_dir)}
    detector = root / "detector"
    config = CharLSTMConfig(vocab_size=len(tiny_tokenizer), embedding_dim=16, hidden_sizes=[24],
                            id2label={0: "human", 1: "machine"}, label2id={"human": 0, "machine": 1})
    CharLSTMForSequenceClassification(config).eval().save_pretrained(detector)
    tiny_tokenizer.save_pretrained(detector)
    made["detector"] = detector

    def broken(name, change, source=tiny_model_dir):
        path = root / name
        shutil.copytree(source, path)
        change(path)
        made[name] = path

    def edit_config(path, edit):
        config = json.loads((path / "config.json").read_text())
        edit(config)
        (path / "config.json").write_text(json.dumps(config))

    def truncate(path):
        weights = path / "model.safetensors"
        with open(weights, "r+b") as handle:
            handle.truncate(weights.stat().st_size // 2)

    (root / "empty").mkdir()
    made["empty"] = root / "empty"
    broken("bad-json", lambda path: (path / "config.json").write_text('{"model_type": "charlstm", '))
    broken("list-config", lambda path: (path / "config.json").write_text("[1, 2]"))
    broken("wrong-sizes", lambda path: edit_config(path, lambda c: c.update(hidden_sizes=[64, 48])))
    broken("truncated", truncate)
    broken("truncated-detector", truncate, source=detector)
    broken("no-auto-map", lambda path: edit_config(path, lambda c: c.pop("auto_map")))
    broken("no-vocab", lambda path: (path / "vocab.json").unlink())
    return made


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("files")
    rows = [{"text": text, "stars": 4} for text in TINY_CORPUS * 20]
    for index in range(0, len(rows), 3):
        rows[index]["text"] = None if index % 2 else index
    (root / "mixed.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (root / "number.jsonl").write_text('{"text": "fine"}\n{"text": 5}\n')
    (root / "not-json.jsonl").write_text('{"text": "fine"}\nnot json\n')
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (root / "a-directory").mkdir()
    return {name: root / name for name in ("mixed.jsonl", "number.jsonl", "not-json.jsonl", "latin1.txt",
                                            "a-directory")}


# (case id, argv with {model names} and {file names} to fill in, extra environment, what stderr must say)
CASES = [
    ("generate-with-detector", "generate --model {detector}", {}, "is a detector, not a generator"),
    ("eval-with-detector", "eval --model {detector} --dataset {mixed.jsonl}", {}, "is a detector, not a generator"),
    ("detect-with-generator", "detect text --detector {generator}", {}, "is a generator, not a detector"),
    ("generate-empty-dir", "generate --model {empty}", {}, "no config.json"),
    ("generate-bad-json", "generate --model {bad-json}", {}, "not valid JSON"),
    ("generate-list-config", "generate --model {list-config}", {}, "not a charlstm config"),
    ("generate-wrong-sizes", "generate --model {wrong-sizes}", {}, "does not match its weights"),
    ("generate-truncated", "generate --model {truncated}", {}, "model.safetensors"),
    ("generate-no-vocab", "generate --model {no-vocab}", {}, "tokenizer"),
    ("generate-missing-dir", "generate --model ./no/such/model", {}, "does not exist"),
    ("generate-bad-stars", "generate --model {generator} --stars 9", {}, "stars"),
    ("generate-zero-reviews", "generate --model {generator} --num 0", {}, "num"),
    ("eval-wrong-sizes", "eval --model {wrong-sizes}", {}, "does not match its weights"),
    ("eval-json-is-dir", "eval --model {generator} --json {a-directory}", {}, "is a directory"),
    ("eval-json-no-folder", "eval --model {generator} --json no/such/folder/out.json", {}, "does not exist"),
    ("detect-file-is-dir", "detect --file {a-directory}", {}, "is a directory"),
    ("detect-file-missing", "detect --file no-such-file.jsonl", {}, "no such file"),
    ("detect-file-number", "detect --file {number.jsonl} --detector {detector}", {}, "not a string"),
    ("detect-file-not-json", "detect --file {not-json.jsonl} --detector {detector}", {}, "line 2"),
    ("detect-file-not-utf8", "detect --file {latin1.txt} --detector {detector}", {}, "not UTF-8"),
    ("detect-empty-text", "detect --detector {detector} ' '", {}, "empty"),
    ("detect-truncated-detector", "detect text --detector {truncated-detector}", {}, "model.safetensors"),
    ("detector-train-with-detector", "detector train {a-directory} out --generator {detector}", {},
     "is a detector, not a generator"),
    ("detector-train-negative-buckets", "detector train {a-directory} out --frozen --ngram-buckets -5", {},
     "--ngram-buckets"),
    ("detector-train-no-ngrams-counted",
     "detector train {a-directory} out --frozen --ngram-buckets 101 --ngram-chars 0", {}, "counts no n-grams"),
    ("detector-train-heads-not-frozen", "detector train {a-directory} out --likelihood", {}, "add --frozen"),
    ("detector-train-own-domain-not-frozen", "detector train {a-directory} out --own-domain yelp", {}, "add --frozen"),
    ("detector-train-own-domain-no-ngrams", "detector train {a-directory} out --frozen --own-domain yelp", {},
     "add --ngram-buckets"),
    ("calibrate-with-generator", "detector calibrate {generator} {a-directory} out", {},
     "is a generator, not a detector"),
    ("model-card-bad-json", "model-card {bad-json}", {}, "not valid JSON"),
    ("model-card-list-config", "model-card {list-config}", {}, "not a charlstm config"),
    ("model-card-empty-dir", "model-card {empty}", {}, "no config.json"),
    ("model-card-wrong-sizes", "model-card {wrong-sizes}", {}, "does not match its weights"),
    ("train-numbers-and-nulls", "train --dataset {mixed.jsonl} --output-dir run --preset tiny --max-steps 1", {},
     "34 of 100 rows have no text"),
    ("train-missing-data", "train --dataset no-such.jsonl --output-dir run", {}, "no-such.jsonl"),
    ("push-truncated", "push {truncated} --repo-id test/corrupt", {}, "model.safetensors"),
    ("push-wrong-sizes", "push {wrong-sizes} --repo-id test/mismatch", {}, "does not match its weights"),
    ("push-no-auto-map", "push {no-auto-map} --repo-id test/no-auto-map", {}, "no auto_map"),
    ("push-bad-json", "push {bad-json} --repo-id test/bad-json", {}, "not valid JSON"),
    ("push-missing-dir", "push ./missing --repo-id test/missing", {}, "does not exist"),
    ("push-bare-repo-id", "push {generator} --repo-id corrupt", {}, "NAMESPACE/NAME"),
    ("push-offline", "push {generator} --repo-id test/offline", {"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE"),
    ("push-hub-unreachable", "push {detector} --repo-id test/unreachable", {"HF_ENDPOINT": NO_HUB},
     "could not reach the Hub"),
    ("push-space-offline", "push-space --repo-id test/space --model-id test/model", {"HF_HUB_OFFLINE": "1"},
     "HF_HUB_OFFLINE"),
]


def run_charlstm(argv: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CHARLSTM, *argv], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, message: str, program: str = "charlstm ") -> None:
    """Exit status 2 and one short line on stderr, from `program`, that says `message`; no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not PROGRESS_BAR.search(line)]
    assert len(lines) == 1 and len(lines[0]) <= MAX_MESSAGE, result.stderr
    assert lines[0].startswith(program) and message in lines[0], lines[0]


@pytest.mark.parametrize(("argv", "env", "message"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_and_exit_2(argv, env, message, models, files, hub_server, tmp_path):
    names = {name: str(path) for name, path in {**models, **files}.items()}
    arguments = [names[part[1:-1]] if part.startswith("{") else part for part in shlex.split(argv)]
    result = run_charlstm(arguments, tmp_path, env)
    assert_one_line_error(result, message)
    assert list(tmp_path.iterdir()) == []  # nothing written where it ran
    repo_id = arguments[arguments.index("--repo-id") + 1] if "--repo-id" in arguments else ""
    if "/" in repo_id:
        assert not HfApi().repo_exists(repo_id, repo_type="space" if argv.startswith("push-space") else "model")


def test_push_of_a_truncated_model_leaves_no_commit(models, hub_server, tmp_path):
    api = HfApi()
    repo = "test/already-there"
    api.create_repo(repo, exist_ok=True)
    before = [commit.commit_id for commit in api.list_repo_commits(repo)]
    result = run_charlstm(["push", str(models["truncated"]), "--repo-id", repo], tmp_path)
    assert result.returncode == 2 and "model.safetensors" in result.stderr
    assert [commit.commit_id for commit in api.list_repo_commits(repo)] == before
    assert "model.safetensors" not in api.list_repo_files(repo)


def test_stream_into_a_closed_pipe_ends_quietly(star_model_dir, tmp_path):
    # The star model never ends a review: 6,000 characters written one at a time, long after `head` has gone.
    shell = f"{CHARLSTM} generate --model {star_model_dir} --stream --num 3 --max-new-tokens 2000 --seed 1"
    result = subprocess.run(f"set -o pipefail; {shell} | head -c 20", shell=True, executable="/bin/bash",
                            capture_output=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == 20
    assert result.stderr == b""  # no BrokenPipeError, no "terminate called"; the seed is given, so nothing to note


def test_detect_file_counts_the_blank_lines_it_skips(models, tmp_path):
    reviews = tmp_path / "reviews.jsonl"
    reviews.write_text('{"text": "Great tacos."}\n\n   \n{"text": "Cold fries."}\n')
    result = run_charlstm(["detect", "--file", str(reviews), "--detector", str(models["detector"])], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "skipped 2 blank lines" in result.stderr
    assert result.stdout.count("line ") == 2  # each verdict names its line of the file


# --- the Space: one served app for every case, with a detector that cannot load -----------------------------------


@pytest.fixture(scope="module")
def space(models, tmp_path_factory):
    log = tmp_path_factory.mktemp("space") / "app.log"
    process, url = launch_space(models["generator"], str(models["truncated-detector"]), log)
    client = Client(url, verbose=False, analytics_enabled=False)
    yield url, client, log
    client.close()
    process.terminate()
    process.wait(timeout=30)


GENERATE = dict(prompt="The tacos", stars=0, temperature=0.8, top_k=0, top_p=1.0, max_new_characters=30,
                num_reviews=1, seed=3)
SPACE_CASES = [
    ("generate-stars-unconditioned", "/generate", dict(GENERATE, stars=5), "not trained with star ratings"),
    ("generate-unknown-alphabet", "/generate", dict(GENERATE, prompt="中文中文"), "alphabet"),
    ("score-empty", "/score", {"text": "", "stars": 0}, "Paste a review"),
    ("score-too-long", "/score", {"text": "a" * 5000, "stars": 0}, "limit is"),
    # Values the page's sliders, number box and radios would never send, sent through the API.
    ("generate-too-many-reviews", "/generate", dict(GENERATE, num_reviews=9), "number of reviews must be from 1 to 4"),
    ("generate-too-long", "/generate", dict(GENERATE, max_new_characters=100000), "max_new_tokens must be from 1 to"),
    ("generate-hot", "/generate", dict(GENERATE, temperature=50.0), "temperature must be above 0 and at most 2.0"),
    ("generate-text-for-a-number", "/generate", dict(GENERATE, top_k="ten"), "top_k must be a number, got 'ten'"),
    ("generate-negative-seed", "/generate", dict(GENERATE, seed=-1), "seed must be from 0 to"),
    ("generate-guidance-below-one", "/generate", dict(GENERATE, guidance=0), "guidance must be from 1 to 8.0"),
    ("score-unknown-rating", "/score", {"text": "Great tacos.", "stars": 9}, "stars must be"),
]


@pytest.mark.parametrize(("api", "inputs", "message"), [case[1:] for case in SPACE_CASES],
                         ids=[case[0] for case in SPACE_CASES])
def test_space_rejects_with_a_plain_sentence_and_one_log_line(space, api, inputs, message):
    url, client, log = space
    lines_before = log.read_text().count("\n")
    with pytest.raises(Exception) as raised:
        client.predict(*inputs.values(), api_name=api)
    text = str(raised.value)
    assert message in text and "Traceback" not in text and len(text) <= MAX_MESSAGE, text
    new_lines = log.read_text().splitlines()[lines_before:]
    rejected = [line for line in new_lines if "rejected a request" in line]
    assert len(rejected) == 1 and message in rejected[0], new_lines
    assert not any("Traceback" in line for line in new_lines), new_lines


def test_space_shows_names_not_paths_and_a_broken_detector_as_a_sentence(space, models):
    url, client, log = space
    label, ranks, summary, details = client.predict("Great tacos.", 0, api_name="/score")
    assert details["detector_available"] is False
    assert "could not be loaded" in summary and "Traceback" not in summary and len(summary) < 1000
    assert str(models["truncated-detector"].parent) not in summary
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    page_config = opener.open(url + "config", timeout=10).read().decode()
    assert models["generator"].name in page_config
    assert str(models["generator"]) not in page_config and str(models["generator"].parent) not in page_config
    log_text = log.read_text()
    assert "app.py\", line" not in log_text and "charlstm/" not in log_text  # no traceback through our code
    assert sum("runs without the detector" in line for line in log_text.splitlines()) == 1
