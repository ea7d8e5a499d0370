"""`charlstm train` and `charlstm eval` on tiny data with a tiny model: what a user of the training command relies on.

Reviews are made from the suite's own sentences (the Yelp data is for benchmarks and the bundled model only).
"""

import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import datasets
import psutil
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from charlstm import star_token
from charlstm.cli import main
from charlstm.hub.model_card import render_model_card
from charlstm.runfiles import TRAINING_CURVES, TRAINING_LOG
from charlstm.training.data import IGNORE_INDEX, load_reviews, pack_reviews, star_offset
from tests.conftest import TINY_CORPUS

SENTENCES = [sentence.strip() + "." for review in TINY_CORPUS for sentence in review.split(".") if sentence.strip()]
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny model that still learns something in a few dozen steps of a few seconds.
TINY_RUN = ["--preset", "tiny", "--seq-len", "32", "--batch-size", "8", "--learning-rate", "1e-2",
            "--logging-steps", "5", "--validation-fraction", "0.2"]


def make_reviews(count: int = 150, seed: int = 0) -> list[dict]:
    generator = random.Random(seed)
    return [
        {"text": " ".join(generator.choices(SENTENCES, k=generator.randint(1, 3))), "stars": index % 5 + 1}
        for index in range(count)
    ]


def write_jsonl(path, rows) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return str(path)


def read_log(directory) -> dict:
    with open(os.path.join(directory, TRAINING_LOG), encoding="utf-8") as handle:
        return json.load(handle)


def held_out_curve(log: dict) -> list[float]:
    return [row["eval_bpc"] for row in log["history"] if "eval_bpc" in row]


def cli(*args, **kwargs) -> subprocess.CompletedProcess:
    """The `charlstm` command in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "charlstm.cli", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def reviews_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "reviews.jsonl", make_reviews())


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, reviews_file):
    """A star-conditioned tiny model trained from the local jsonl with `charlstm train`."""
    output = tmp_path_factory.mktemp("run") / "model"
    code = main(["train", "--dataset", reviews_file, "--condition-on-stars", *TINY_RUN,
                 "--max-steps", "60", "--eval-steps", "15", "--output-dir", str(output)])
    assert code == 0
    return output


def test_training_from_a_local_jsonl_lowers_held_out_bpc_and_saves_a_loadable_model(trained_dir):
    log = read_log(trained_dir)
    curve = held_out_curve(log)
    assert len(curve) == 4
    assert curve[-1] < curve[0] - 0.2, curve
    assert log["final"]["eval_bpc"] == pytest.approx(min(curve))  # the best checkpoint is the one saved
    assert log["steps"] == 60 and log["train_reviews"] == 120 and log["eval_reviews"] == 30
    for key in ("dataset", "text_column", "conditioned_on_stars", "hidden_sizes", "embedding_dim", "num_parameters",
                "seq_len", "batch_size", "max_steps", "train_characters", "train_minutes", "device"):
        assert key in log, key
    assert set(log["final"]["eval_bpc_per_star"]) == {"1", "2", "3", "4", "5"}

    model = AutoModelForCausalLM.from_pretrained(trained_dir)
    assert model.config.use_cache is True and model.config.conditioned_on_stars is True
    assert model.num_parameters() == log["num_parameters"]
    generation = GenerationConfig.from_pretrained(trained_dir)
    assert generation.do_sample and 0.5 <= generation.temperature <= 1.0
    assert generation.eos_token_id == model.config.eos_token_id
    for name in ("modeling_charlstm.py", "configuration_charlstm.py", "tokenization_charlstm.py", "vocab.json"):
        assert os.path.isfile(os.path.join(trained_dir, name)), name
    with open(os.path.join(trained_dir, TRAINING_CURVES), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_star_conditioning_puts_the_star_token_first_and_generate_accepts_it(trained_dir, reviews_file):
    tokenizer = AutoTokenizer.from_pretrained(trained_dir)
    rows = datasets.Dataset.from_list([{"text": "Great tacos.", "stars": 5}, {"text": "Cold fries.", "stars": 1}])
    blocks = pack_reviews(rows, tokenizer, seq_len=64, condition_on_stars=True)
    ids, labels = blocks[0]["input_ids"], blocks[0]["labels"]
    five, one = tokenizer.convert_tokens_to_ids([star_token(5), star_token(1)])
    second = len("Great tacos.") + 3  # <bos> <5star> text <eos>
    assert ids[:2] == [tokenizer.bos_token_id, five] and ids[second : second + 2] == [tokenizer.bos_token_id, one]
    # The rating is given, not predicted: no loss on <bos> or the star token; the text and <eos> are predicted.
    assert labels[second : second + 2] == [IGNORE_INDEX, IGNORE_INDEX]
    assert labels[2 : second] == ids[2 : second]

    model = AutoModelForCausalLM.from_pretrained(trained_dir)
    prompt = tokenizer(star_token(4), return_tensors="pt")
    assert prompt["input_ids"][0].tolist() == [tokenizer.bos_token_id, tokenizer.convert_tokens_to_ids(star_token(4))]
    torch.manual_seed(0)
    output = model.generate(**prompt, max_new_tokens=40)
    assert output[0, :2].tolist() == prompt["input_ids"][0].tolist()
    text = tokenizer.decode(output[0, 2:], skip_special_tokens=True)
    assert text and text.isprintable()


def test_eval_reports_the_training_runs_held_out_bpc_overall_and_per_star(trained_dir, reviews_file, tmp_path,
                                                                             capsys):
    report_path = tmp_path / "eval.json"
    assert main(["eval", "--model", str(trained_dir), "--dataset", reviews_file, "--json", str(report_path)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    log = read_log(trained_dir)
    # Same held-out reviews (taken from the training log), same model: the same figure.
    assert report["eval_reviews"] == log["eval_reviews"]
    assert report["eval_bpc"] == pytest.approx(log["final"]["eval_bpc"], abs=1e-4)
    assert set(report["eval_bpc_per_star"]) == {"1", "2", "3", "4", "5"}
    assert all(math.isfinite(value) and value > 0 for value in report["eval_bpc_per_star"].values())
    assert f"bits per character: {report['eval_bpc']:.4f}" in printed
    assert "5 stars:" in printed


def test_init_from_continues_a_saved_model_with_its_vocabulary_and_says_so_in_log_and_card(trained_dir,
                                                                                           reviews_file, tmp_path):
    output = tmp_path / "stage-2"
    code = main(["train", "--dataset", reviews_file, "--condition-on-stars", *TINY_RUN, "--batch-size", "4",
                 "--learning-rate", "1e-3", "--max-steps", "10", "--eval-steps", "5", "--init-from", str(trained_dir),
                 "--output-dir", str(output)])
    assert code == 0
    first, log = read_log(trained_dir), read_log(output)
    # Five small steps from the saved weights are worth far more than the first run's first fifteen from scratch.
    start, fresh = held_out_curve(log)[0], held_out_curve(first)[0]
    assert start < first["final"]["eval_bpc"] + 0.05 < fresh - 0.2, (start, first["final"]["eval_bpc"], fresh)
    assert AutoTokenizer.from_pretrained(output).get_vocab() == AutoTokenizer.from_pretrained(trained_dir).get_vocab()
    assert log["steps"] == 10 and log["batch_size"] == 4 and log["num_parameters"] == first["num_parameters"]
    assert log["initialised_from"] == {"model": trained_dir.name, **{
        key: first[key] for key in ("steps", "characters_seen", "epochs_done", "train_minutes", "device",
                                    "batch_size", "learning_rate", "lr_schedule")}}
    card = render_model_card(output, samples={})
    assert f"starting from {trained_dir.name} ({first['train_minutes']:,.1f} minutes on {first['device']}, " \
           f"60 steps of batch 8)" in card


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seed", "1"], "held out its reviews with --seed 0, not 1"),
        (["--validation-fraction", "0.3"], "--validation-fraction 0.2, not 0.3"),
        (["--hidden-sizes", "16"], "a warm start keeps its model's shape"),
        ([], "was trained with --condition-on-stars"),
    ],
    ids=["another seed", "another held-out share", "another shape", "no star conditioning"],
)
def test_init_from_refuses_a_start_that_would_skew_the_figures(trained_dir, reviews_file, tmp_path, capsys, extra,
                                                              message):
    stars = ["--condition-on-stars"] if extra else []
    code = main(["train", "--dataset", reviews_file, *stars, *TINY_RUN, *extra, "--max-steps", "2",
                 "--init-from", str(trained_dir), "--output-dir", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in error[-1] and "Traceback" not in "\n".join(error), error
    assert not (tmp_path / "out" / TRAINING_LOG).exists()


@pytest.mark.parametrize(
    ("values", "feature", "offset"),
    [
        ({1, 2, 3, 4, 5}, None, 0),
        ({1.0, 5.0}, None, 0),
        ({0, 1, 4}, None, 1),
        ({0, 4}, datasets.ClassLabel(names=["1 star", "2 stars", "3 stars", "4 stars", "5 stars"]), 1),
    ],
)
def test_star_mapping_rule(values, feature, offset):
    assert star_offset(feature, values) == offset


@pytest.mark.parametrize("values", [{0, 5}, {1, 7}, {-1, 2}, {2.5}, {True}])
def test_star_mapping_refuses_labels_outside_it(values):
    with pytest.raises(ValueError, match="outside the star mapping"):
        star_offset(None, values)


def bad_input_cases(tmp_path, reviews_file):
    """(extra arguments, expected message fragment) for each kind of bad input issue 3 names."""
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    blank = write_jsonl(tmp_path / "blank.jsonl", [{"text": "   ", "stars": 3}, {"text": "\n", "stars": 4}])
    bad_stars = write_jsonl(tmp_path / "bad-stars.jsonl", [{"text": "Fine.", "stars": 7}, {"text": "Ok.", "stars": 2}])
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / TRAINING_LOG).write_text("{}")
    return {
        "missing file": (["--dataset", str(tmp_path / "missing.jsonl")], "no such file"),
        "missing column": (["--dataset", reviews_file, "--text-column", "body"], "no column 'body'"),
        "missing label column": (["--dataset", reviews_file, "--label-column", "rating"], "no column 'rating'"),
        "empty data": (["--dataset", empty], "empty"),
        "all blank": (["--dataset", blank], "no non-blank text"),
        "labels outside the mapping": (["--dataset", bad_stars, "--condition-on-stars"], "outside the star mapping"),
        "output dir holds a run": (["--dataset", reviews_file, "--output-dir", str(taken)], "holds another run"),
        "nothing to resume": (["--dataset", reviews_file, "--output-dir", str(tmp_path / "new"), "--resume"],
                              "nothing to resume"),
        "bad size": (["--dataset", reviews_file, "--seq-len", "0"], "--seq-len must be at least 1"),
        "no threads": (["--dataset", reviews_file, "--threads", "0"], "--threads must be at least 1"),
        "rating loss without ratings": (["--dataset", reviews_file, "--rating-loss-weight", "1"],
                                        "--rating-loss-weight needs --condition-on-stars"),
        "negative rating loss": (["--dataset", reviews_file, "--condition-on-stars", "--rating-loss-weight", "-1"],
                                 "--rating-loss-weight must be a finite number >= 0"),
        "rating loss with carried state": (["--dataset", reviews_file, "--condition-on-stars", "--carry-state",
                                            "--rating-loss-weight", "1"], "cannot be used with --carry-state"),
    }


@pytest.mark.parametrize(
    "case",
    ["missing file", "missing column", "missing label column", "empty data", "all blank",
     "labels outside the mapping", "output dir holds a run", "nothing to resume", "bad size", "no threads",
     "rating loss without ratings", "negative rating loss", "rating loss with carried state"],
)
def test_bad_input_gives_a_one_line_error_and_exit_code_2(case, tmp_path, reviews_file, capsys):
    extra, message = bad_input_cases(tmp_path, reviews_file)[case]
    default_output = ["--output-dir", str(tmp_path / "out")] if "--output-dir" not in extra else []
    code = main(["train", *TINY_RUN, "--max-steps", "2", *default_output, *extra])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert error[-1].startswith("charlstm train: error: ") and message in error[-1], error
    assert "Traceback" not in "\n".join(error)


def test_threads_sets_the_torch_threads_training_runs_on(tmp_path, reviews_file):
    before = torch.get_num_threads()
    wanted = 1 if before > 1 else 2  # not the number it already runs on
    try:
        code = main(["train", "--dataset", reviews_file, *TINY_RUN, "--max-steps", "2", "--threads", str(wanted),
                     "--output-dir", str(tmp_path)])
        assert code == 0
        assert torch.get_num_threads() == wanted
        assert read_log(tmp_path)["device"] == f"CPU ({wanted} thread{'s' * (wanted > 1)})"
    finally:
        torch.set_num_threads(before)


def test_eval_of_a_missing_model_is_a_one_line_error(tmp_path, reviews_file, capsys):
    code = main(["eval", "--model", str(tmp_path / "no-model"), "--dataset", reviews_file])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("charlstm eval: error: model directory") and "does not exist" in error, error
    assert len(error.splitlines()) == 1


def test_a_time_budget_ends_training_and_a_resume_can_extend_it(tmp_path, reviews_file):
    # Without a step limit the run has 10,000 epochs to go: only the budget can end it.
    run = ["train", "--dataset", reviews_file, *TINY_RUN, "--eval-steps", "100000", "--output-dir", str(tmp_path)]
    assert main([*run, "--max-minutes", "0.05"]) == 0
    first = read_log(tmp_path)
    assert first["train_minutes"] >= 0.05 and first["steps"] > 1
    # It stopped at the first step past the budget: over it by about one of its own steps (the log rounds to 0.001).
    assert first["train_minutes"] - 0.05 <= 0.001 + 3 * first["train_minutes"] / first["steps"]
    assert len(held_out_curve(first)) == 1  # a last evaluation when the budget ran out

    assert main([*run, "--max-minutes", "0.1", "--resume"]) == 0
    second = read_log(tmp_path)
    assert second["resumed_from_step"] == first["steps"] < second["steps"]
    # The 3 s already spent count: this session trains for the remaining 3 s, not for a fresh 6 s.
    assert second["train_minutes"] >= 0.1 > second["session_minutes"]
    assert second["session_minutes"] >= second["train_minutes"] - first["train_minutes"] - 0.002


def last_complete_step(directory) -> int | None:
    steps = [int(name.split("-")[1]) for name in os.listdir(directory) if name.startswith("checkpoint-")
             and os.path.isfile(os.path.join(directory, name, "trainer_state.json"))]
    return max(steps, default=None)


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_checkpoint_and_ends_as_an_unbroken_run(tmp_path, reviews_file):
    run = ["train", "--dataset", reviews_file, *TINY_RUN, "--max-steps", "160", "--eval-steps", "20"]
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "charlstm.cli", *run, "--output-dir", str(killed)],
                               cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (killed.is_dir() and (last_complete_step(killed) or 0) >= 40):
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        process.kill()
    assert not (killed / TRAINING_LOG).exists()
    checkpoint = last_complete_step(killed)
    assert checkpoint < 160

    resumed = cli(*run, "--output-dir", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    unbroken = cli(*run, "--output-dir", str(tmp_path / "unbroken"))
    assert unbroken.returncode == 0, unbroken.stderr[-2000:]

    log, reference = read_log(killed), read_log(tmp_path / "unbroken")
    assert log["resumed_from_step"] == checkpoint and log["steps"] == 160
    # Same data order, optimizer and scheduler state: the resumed run ends where the unbroken one does.
    assert held_out_curve(log) == pytest.approx(held_out_curve(reference), abs=1e-3)
    resumed_model = AutoModelForCausalLM.from_pretrained(killed)
    reference_model = AutoModelForCausalLM.from_pretrained(tmp_path / "unbroken")
    for (name, value), other in zip(resumed_model.state_dict().items(), reference_model.state_dict().values()):
        assert torch.allclose(value, other, atol=1e-4), name


def run_under_torchrun(*cli_args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`charlstm CLI_ARGS` in two DDP processes on the CPU. A run still going after `timeout` fails the test instead of
    hanging it: torchrun's workers run in sessions of their own and outlive it, so they are ended one by one."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "charlstm.cli", *cli_args]
    # Files, not pipes: a worker left behind would hold a pipe open, and reading it to its end would never return.
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=stdout, stderr=stderr, text=True)
        hung = False
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            hung = True
            for survivor in [*psutil.Process(process.pid).children(recursive=True), psutil.Process(process.pid)]:
                survivor.kill()
            process.wait()
        stdout.seek(0)
        stderr.seek(0)
        finished = subprocess.CompletedProcess(command, process.returncode, stdout.read(), stderr.read())
    if hung:
        pytest.fail(f"two-process run still going after {timeout:.0f} s:\n{finished.stderr[-3000:]}")
    return finished


@pytest.mark.slow
def test_two_process_ddp_on_cpu_trains_and_saves_one_model(tmp_path, reviews_file):
    output = tmp_path / "ddp"
    finished = run_under_torchrun("train", "--dataset", reviews_file, "--condition-on-stars", *TINY_RUN,
                                  "--max-steps", "30", "--eval-steps", "10", "--output-dir", str(output))
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert finished.stdout.count("model saved to") == 1  # only the main process saves and reports
    log = read_log(output)
    assert log["world_size"] == 2 and log["steps"] == 30
    curve = held_out_curve(log)
    assert curve[-1] < curve[0]
    assert [name for name in os.listdir(output) if name.endswith(".safetensors")] == ["model.safetensors"]
    model = AutoModelForCausalLM.from_pretrained(output)
    assert model.config.conditioned_on_stars is True


def publish_yelp_like_dataset(hub_server, folder, repo_id: str) -> None:
    """A dataset repo shaped like the Hub's Yelp/yelp_review_full: train/test parquet, `label` 0-4 as ClassLabel."""
    features = datasets.Features({
        "label": datasets.ClassLabel(names=["1 star", "2 stars", "3 stars", "4 stars", "5 stars"]),
        "text": datasets.Value("string"),
    })
    (folder / "data").mkdir(parents=True)
    for split, seed, count in (("train", 0, 150), ("test", 1, 30)):
        rows = [{"label": row["stars"] - 1, "text": row["text"]} for row in make_reviews(count, seed)]
        datasets.Dataset.from_list(rows, features=features).to_parquet(folder / "data" / f"{split}.parquet")
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# Tiny review set for tests\n")
    hub_server.publish(folder, repo_id, repo_type="dataset")


def test_training_from_a_hub_dataset_lowers_held_out_bpc_and_saves_a_loadable_model(hub_server, tmp_path):
    publish_yelp_like_dataset(hub_server, tmp_path / "repo", "tester/tiny-reviews")
    reviews = load_reviews("tester/tiny-reviews", need_stars=True)
    assert len(reviews.train) == 150 and len(reviews.held_out) == 30  # the repo's own test split is held out
    assert reviews.label_column == "label" and set(reviews.train["stars"]) == {1, 2, 3, 4, 5}

    output = tmp_path / "model"
    code = main(["train", "--dataset", "tester/tiny-reviews", "--condition-on-stars", *TINY_RUN,
                 "--max-steps", "45", "--eval-steps", "15", "--output-dir", str(output)])
    assert code == 0
    log = read_log(output)
    curve = held_out_curve(log)
    assert curve[-1] < curve[0] - 0.2, curve
    assert log["dataset"] == "tester/tiny-reviews" and log["eval_reviews"] == 30
    assert AutoModelForCausalLM.from_pretrained(output).config.conditioned_on_stars is True


def test_an_unknown_hub_dataset_is_a_one_line_error(hub_server, tmp_path, capsys):
    code = main(["train", "--dataset", "tester/no-such-dataset", *TINY_RUN, "--output-dir", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert error[-1].startswith("charlstm train: error: unknown dataset 'tester/no-such-dataset'"), error
