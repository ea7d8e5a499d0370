"""Faults of issue 30, run as a user runs them: malformed dataset files and model files, weights that are not finite,
output that cannot be written, an upload that breaks off, a port in use, numbers no command can use, and what the
Space and the model card show. Bad input ends in exit status 2 and one line, and nothing is lost or half-written."""

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from gradio_client import Client
from huggingface_hub import HfApi
from safetensors.torch import load_file, save_file

import charlstm
from tests import test_bad_input
from tests.test_bad_input import CHARLSTM, assert_one_line_error, run_charlstm
from tests.test_space import ROOT, launch_space

models = test_bad_input.models  # the fixture: a tiny generator and detector, and broken copies

# A file the user names, by name: its bytes.
DATA_FILES = {
    "blank-lines.jsonl": b"\n\n   \n",
    "header-only.csv": b"text,stars\n",
    "corrupt.parquet": b"PAR1" + bytes(range(200)),
    "latin-1.jsonl": '{"text": "caf\xe9 au lait"}\n'.encode("latin-1"),
    "strings.jsonl": b'"a review"\n"another"\n',
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fault-files")
    for name, data in DATA_FILES.items():
        (root / name).write_bytes(data)
    (root / "not-a-dataset-dict").mkdir()
    (root / "not-a-dataset-dict" / "dataset_dict.json").write_text('{"names": ["train"]}')
    return {name: root / name for name in [*DATA_FILES, "not-a-dataset-dict"]}


def copy_with(source: Path, path: Path, change) -> Path:
    shutil.copytree(source, path)
    change(path)
    return path


def edit_json(name: str, edit):
    def change(path: Path):
        value = json.loads((path / name).read_text())
        (path / name).write_text(json.dumps(edit(value)))
    return change


def with_model_max_length(length):
    return edit_json("tokenizer_config.json", lambda config: {**config, "model_max_length": length})


def with_a_nan_weight(path: Path):
    weights = load_file(path / "model.safetensors")
    name = next(name for name in sorted(weights) if "weight_hh" in name)
    weights[name].view(-1)[0] = float("nan")
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})


def with_weights_never_pushed(path: Path):
    """One weight changed to a value of its own, so the upload cannot be skipped as a blob the Hub already holds."""
    weights = load_file(path / "model.safetensors")
    weights[sorted(weights)[0]].view(-1)[0] = uuid.uuid4().int % 10**6 / 1e6
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})


def with_training_log(text: str):
    return lambda path: (path / "training_log.json").write_text(text)


@pytest.fixture(scope="module")
def broken(models, tmp_path_factory) -> dict[str, Path]:
    """Copies of the good generator and detector, each with one fault, by name."""
    root = tmp_path_factory.mktemp("broken")
    generator, detector = models["generator"], models["detector"]
    made = {
        "vocab-list": (generator, edit_json("vocab.json", list)),
        "max-length-string": (generator, with_model_max_length("4096")),
        "max-length-0": (generator, with_model_max_length(0)),
        "detector-max-length-0": (detector, with_model_max_length(0)),
        "detector-max-length-negative": (detector, with_model_max_length(-5)),
        "nan-weights": (generator, with_a_nan_weight),
        "nan-detector": (detector, with_a_nan_weight),
        "corrupt-log": (generator, with_training_log('{"dataset": "reviews.jsonl", "final": ')),
        "log-final-list": (generator, with_training_log('{"final": [1.9]}')),
    }
    return {name: copy_with(source, root / name, change) for name, (source, change) in made.items()}


# (case id, argv with {names} of `files` and `broken` to fill in, what the one line must say)
CASES = [
    ("eval-blank-lines", "eval --model {generator} --dataset {blank-lines.jsonl}", "holds no reviews"),
    ("eval-header-only-csv", "eval --model {generator} --dataset {header-only.csv}", "holds no reviews"),
    ("eval-corrupt-parquet", "eval --model {generator} --dataset {corrupt.parquet}", "cannot read"),
    ("eval-not-utf8", "eval --model {generator} --dataset {latin-1.jsonl}", "is not UTF-8 text (line 1)"),
    ("eval-strings-not-objects", "eval --model {generator} --dataset {strings.jsonl}", "one JSON object per line"),
    ("eval-bad-dataset-dict", "eval --model {generator} --dataset {not-a-dataset-dict}", "no 'splits' entry"),
    ("train-blank-lines", "train --dataset {blank-lines.jsonl} --output-dir run --preset tiny", "holds no reviews"),
    ("generate-vocab-list", "generate --model {vocab-list}", "vocab.json must map each token to its id"),
    ("generate-max-length-string", "generate --model {max-length-string}", "model_max_length"),
    ("generate-max-length-0", "generate --model {max-length-0}", "at least 2, got 0"),
    ("detect-max-length-0", "detect text --detector {detector-max-length-0}", "at least 2, got 0"),
    ("detect-max-length-negative", "detect text --detector {detector-max-length-negative}", "got -5"),
    ("generate-nan-weights-int8", "generate --model {nan-weights}", "NaN or infinite values"),
    ("model-card-corrupt-log", "model-card {corrupt-log}", "training_log.json cannot be read as JSON"),
    ("model-card-log-final-list", "model-card {log-final-list}", "'final' is a list"),
    ("push-corrupt-log", "push {corrupt-log} --repo-id test/corrupt-log", "training_log.json cannot be read"),
    ("space-port-nan", "space --port nan", "argument --port: 'nan' is not a whole number"),
    ("space-port-0", "space --port 0", "must be from 1 to 65535, got 0"),
    ("space-port-huge", "space --port 9" + "9" * 400, "must be from 1 to 65535"),
]


def fill_in(argv: str, names: dict[str, Path]) -> list[str]:
    return [str(names[part[1:-1]]) if part.startswith("{") else part for part in shlex.split(argv)]


@pytest.mark.parametrize(("argv", "message"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_fault_is_one_line_and_exit_2(argv, message, models, files, broken, hub_server, tmp_path):
    result = run_charlstm(fill_in(argv, {**models, **files, **broken}), tmp_path)
    assert_one_line_error(result, message)
    assert list(tmp_path.iterdir()) == []
    if "--repo-id" in argv:
        assert not HfApi().repo_exists(argv.split("--repo-id ")[1])


@pytest.mark.parametrize("argv", [
    pytest.param("generate --model {nan-weights} --fp32", id="generate-fp32"),
    pytest.param("detect text --detector {nan-detector}", id="detect"),
])
def test_weights_that_are_not_finite_are_refused_where_they_load(argv, broken, tmp_path):
    assert_one_line_error(run_charlstm(fill_in(argv, broken), tmp_path), "NaN or infinite values")


def test_option_errors_are_one_line_and_version_is_the_packages(tmp_path):
    result = run_charlstm(["generate", "--num", "lots"], tmp_path)
    assert_one_line_error(result, "charlstm generate: error: argument --num: 'lots' is not a whole number")
    result = run_charlstm(["--version"], tmp_path)
    assert (result.returncode, result.stdout) == (0, f"charlstm {charlstm.__version__}\n")


# --- output that cannot be written ---------------------------------------------------------------------------------

# Mounts a tmpfs in a mount namespace of its own (no root needed, nothing mounted outside the command), optionally
# fills it, runs the command and lists what it left in the tmpfs.
ON_TMPFS = """
mount -t tmpfs -o "$1" none "$2" || exit 97
[ "$3" = full ] && head -c 1048576 /dev/zero > "$2/filler" 2>/dev/null
folder=$2; shift 3
"$@"; status=$?
echo "left: $(ls -A "$folder" | tr '\\n' ' ')"
exit $status
"""


@pytest.fixture(scope="module")
def namespaces():
    if subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode:
        pytest.skip("no user namespaces here (unshare -rm), so no tmpfs for a test of a full or read-only disk")


@pytest.mark.parametrize(("mount", "message"), [
    ("ro,size=64k", "--json out/report.json: cannot write there"),  # refused before the evaluation
    ("size=4k", "could not write out/report.json: No space left on device"),  # the disk fills as it is written
], ids=["read-only", "full"])
def test_eval_json_that_cannot_be_written_is_one_line_and_leaves_no_file(mount, message, namespaces, models,
                                                                        tmp_path):
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps({"text": f"Review {index}: tasty tacos."}) + "\n" for index in range(10)))
    (tmp_path / "out").mkdir()
    argv = [CHARLSTM, "eval", "--model", str(models["generator"]), "--dataset", str(data), "--json", "out/report.json"]
    fill = "full" if "ro" not in mount.split(",") else "empty"
    result = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", ON_TMPFS, "sh", mount,
                             "out", fill, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert_one_line_error(result, message)
    assert result.stdout.splitlines()[-1].split() == ["left:"] + (["filler"] if fill == "full" else [])


def test_detect_json_to_a_full_disk_is_one_line(models, tmp_path):
    with open("/dev/full", "w") as full:
        result = subprocess.run([CHARLSTM, "detect", "--json", "--detector", str(models["detector"]), "Great tacos."],
                                stdout=full, stderr=subprocess.PIPE, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    *notes, error = result.stderr.strip().splitlines()  # a note on what the detector was tested on may come first
    assert all(note.startswith("charlstm detect: note:") for note in notes), notes
    assert error == "charlstm detect: error: could not write the standard output: No space left on device"


# --- the Hub -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [
    400,  # the storage refuses the upload (not retried)
    pytest.param("hang up", marks=pytest.mark.slow, id="hang-up"),  # huggingface_hub retries for about a minute
])
def test_push_whose_upload_breaks_off_commits_nothing_and_a_second_push_says_which_revision_to_pin(
    failure, models, hub_server, tmp_path
):
    repo = f"test/upload-breaks-{failure}".replace(" ", "-")
    model = copy_with(models["generator"], tmp_path / "model", with_weights_never_pushed)
    with hub_server.uploads_failing(failure):
        result = run_charlstm(["push", str(model), "--repo-id", repo], tmp_path)
    assert_one_line_error(result, "Error while uploading 'model.safetensors' to the Hub")
    assert "Nothing was committed; run the same command again" in result.stderr
    api = HfApi()
    assert "model.safetensors" not in (api.list_repo_files(repo) if api.repo_exists(repo) else [])

    result = run_charlstm(["push", str(model), "--repo-id", repo], tmp_path)
    assert result.returncode == 0, result.stderr
    pinned = next(info.last_commit.oid for info in api.get_paths_info(repo, ["model.safetensors"], expand=True))
    assert result.stdout.splitlines() == [
        f"pushed {model} to {hub_server.endpoint}/{repo}: load it with revision=\"{pinned}\" and "
        "trust_remote_code=True"
    ]


def test_card_of_a_model_trained_on_other_reviews_says_so(models, tmp_path):
    model = copy_with(models["generator"], tmp_path / "pizza-model",
                      with_training_log('{"dataset": "my_pizza_reviews.jsonl", "final": {"eval_bpc": 2.5}}'))
    result = run_charlstm(["model-card", str(model)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "writes reviews like those of `my_pizza_reviews.jsonl` one character" in result.stdout
    assert "Yelp" not in result.stdout.split("## Misuse")[0].split("---", 2)[2]
    assert "trained against its Yelp generator, not against this one" in result.stdout


# --- the Space -----------------------------------------------------------------------------------------------------


def test_a_port_in_use_is_one_line_from_the_command_and_from_the_app(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = run_charlstm(["space", "--port", port], tmp_path)
        assert_one_line_error(result, f"cannot serve on 127.0.0.1:{port} (Address already in use)")
        app = subprocess.run([sys.executable, str(ROOT / "space" / "app.py")], env={**os.environ, "PORT": port},
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)  # what `make demo` runs
        assert_one_line_error(app, f"cannot serve on 127.0.0.1:{port}", program="space/app.py: ")


@pytest.fixture(scope="module")
def sure_detector(models, tmp_path_factory) -> Path:
    """A detector that calls every text machine-written with P = sigmoid(8) = 99.966%: short of certain."""
    path = tmp_path_factory.mktemp("sure") / "detector"
    shutil.copytree(models["detector"], path)
    weights = load_file(path / "model.safetensors")
    weights["score.weight"].zero_()
    weights["score.bias"].copy_(torch.tensor([0.0, 8.0]))
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    return path


@pytest.fixture(scope="module")
def space_client(models, sure_detector, tmp_path_factory):
    process, url = launch_space(models["generator"], str(sure_detector), tmp_path_factory.mktemp("space") / "app.log")
    client = Client(url, verbose=False, analytics_enabled=False)
    yield client
    client.close()
    process.terminate()
    process.wait(timeout=30)


def test_space_writes_from_an_empty_prompt_as_the_command_line_does(space_client):
    text, details, status = space_client.predict("", 0, 0.8, 0, 1.0, 20, 1, 3, api_name="/generate")
    assert details["finished"] and len(details["reviews"]) == 1 and "Seed 3" in status


def test_space_never_shows_a_probability_short_of_certain_as_100_percent(space_client):
    text = "Great tacos, friendly staff and a quiet patio out back."  # long enough to judge
    label, ranks, summary, details = space_client.predict(text, 0, api_name="/score")
    assert details["p_machine"] == pytest.approx(torch.sigmoid(torch.tensor(8.0)).item(), rel=1e-5)
    verdict = summary.split("\n\n")[0]
    assert verdict == "Detector: **machine-written** (probability machine-written: above 99.9%).", verdict
    assert label["label"] == "machine-written"  # the verdict in words, as `charlstm detect` says it


# --- training and evaluation: nothing lost, nothing that runs for ever ----------------------------------------------

REVIEWS = [{"text": f"Review {index}: the tacos were {'great' if index % 2 else 'cold'} and the staff kind.",
            "stars": 1 + index % 5} for index in range(60)]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> tuple[Path, Path]:
    """A finished tiny training run with checkpoints left in it, and the reviews file it trained on."""
    root = tmp_path_factory.mktemp("trained-run")
    data = root / "reviews.jsonl"
    data.write_text("".join(json.dumps(review) + "\n" for review in REVIEWS))
    result = run_charlstm(["train", "--dataset", str(data), "--preset", "tiny", "--seq-len", "32", "--batch-size", "4",
                           "--max-steps", "4", "--eval-steps", "2", "--save-total-limit", "3", "--validation-fraction",
                           "0.2", "--output-dir", str(root / "run")], root)
    assert result.returncode == 0, result.stderr[-2000:]
    return root / "run", data


def test_an_overwrite_that_fails_leaves_the_earlier_model_as_it_was(trained_run, tmp_path):
    run, data = trained_run
    before = {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()}
    for bad in (["--dataset", str(tmp_path / "typo.jsonl")], ["--dataset", str(data), "--init-from", str(tmp_path)]):
        result = run_charlstm(["train", "--output-dir", str(run), "--overwrite", "--preset", "tiny", *bad], tmp_path)
        assert result.returncode == 2, result.stderr[-2000:]
        assert {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()} == before


def test_resume_goes_past_a_checkpoint_cut_off_while_it_was_saved(trained_run, tmp_path):
    run, data = trained_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    newest = max(copy.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    cut_off = copy / "checkpoint-9999"
    shutil.copytree(newest, cut_off)
    (cut_off / "trainer_state.json").write_text("")  # the disk filled while it was written
    result = run_charlstm(["train", "--dataset", str(data), "--preset", "tiny", "--seq-len", "32", "--batch-size", "4",
                           "--max-steps", "6", "--eval-steps", "2", "--validation-fraction", "0.2", "--resume",
                           "--output-dir", str(copy)], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming from {newest.name}; checkpoint-9999 is incomplete" in result.stdout + result.stderr
    assert json.loads((copy / "training_log.json").read_text())["steps"] == 6


@pytest.mark.parametrize("argv", [
    "train --output-dir out --max-minutes nan",
    "train --output-dir out --learning-rate nan",
    "train --output-dir out --epochs inf",
    "train --output-dir out --seed " + "9" * 400,
    "generate --top-k " + "9" * 400,
    "generate --seed " + "9" * 400,
    "generate --num " + "9" * 400,
    "generate --temperature nan",
    "eval --model m --batch-size 1e3",
], ids=["max-minutes-nan", "lr-nan", "epochs-inf", "seed-huge", "top-k-huge", "generate-seed-huge", "num-huge",
        "temperature-nan", "batch-float"])
def test_numbers_no_command_can_use_are_refused_as_the_options_are_read(argv, tmp_path):
    result = run_charlstm(argv.split(), tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    assert "error: argument --" in result.stderr


def test_eval_names_a_corrupt_training_log_in_one_line(trained_run, tmp_path):
    run, data = trained_run
    broken = copy_with(run, tmp_path / "broken", lambda path: (path / "training_log.json").write_text("{not json"))
    assert_one_line_error(run_charlstm(["eval", "--model", str(broken)], tmp_path), "training_log.json cannot be read")


def test_eval_of_a_dataset_the_model_never_saw_reads_all_of_it(trained_run, tmp_path):
    run, _ = trained_run
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"text": f"Other review {index}, fine food.", "stars": 3}) + "\n"
                             for index in range(10)))
    result = run_charlstm(["eval", "--model", str(run), "--dataset", str(other), "--json", str(tmp_path / "r.json")],
                          tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["eval_reviews"] == 10 and report["split"].startswith("every review")


def test_generate_json_gives_each_review_with_what_reproduces_it(star_model_dir, tmp_path):
    argv = ["generate", "The tacos", "--model", str(star_model_dir), "--num", "2", "--seed", "5", "--stars", "4",
            "--max-new-tokens", "30", "--json"]
    result = run_charlstm(argv, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)
    assert len(rows) == 2 and all(row["text"].startswith("The tacos") and row["stars"] == 4 for row in rows)
    assert {row["seed"] for row in rows} == {5}
    assert run_charlstm(argv, tmp_path).stdout == result.stdout  # the same seed, the same reviews


def test_detect_reads_a_file_of_one_review_per_line_and_says_which_line_each_verdict_is(models, tmp_path):
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("Great tacos and a friendly waiter, we will come back.\n\n"
                       "Cold fries, slow service, never again.\n")
    argv = ["detect", "--file", str(reviews), "--lines", "--detector", str(models["detector"])]
    result = run_charlstm([*argv, "--json", "--quiet"], tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(row["line"], row["text"]) for row in rows] == [
        (1, "Great tacos and a friendly waiter, we will come back."), (3, "Cold fries, slow service, never again.")]
    assert "tested" not in result.stderr  # --quiet: no note on what the detector was tested on
    plain = run_charlstm(argv, tmp_path)
    assert [line.split(":")[0] for line in plain.stdout.splitlines()] == ["line 1", "line 3"]
    assert "note:" in plain.stderr
    assert_one_line_error(run_charlstm(["detect", "some text", "--lines"], tmp_path), "--lines goes with --file")
