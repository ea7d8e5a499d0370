"""Catching machine-written reviews: `charlstm detect` and `charlstm detector build-data / train / calibrate`.

A detector is a saved `CharLSTMForSequenceClassification` (labels `human`, `machine`), after calibration with a
lexicon of the generator's training words in its weights; it loads with `pipeline("text-classification")` like
any model, and `Detector` below is that pipeline plus the rules for empty and over-long text.
"""

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import torch
from transformers import AutoConfig, pipeline

from ..cli import UsageError
from ..configuration_charlstm import CLASSIFIER_POOLINGS
from .metrics import roc_auc, threshold_metrics
from .calibration import calibrate_detector
from .data import MACHINE, SamplingGrid, build_detector_data, held_out_reviews
from .training import TOKENIZER_KWARGS, train_detector
from ..generation.sampling import BUNDLED_MODEL, load_generator, model_or_bundled
from ..training.trainer import _write_json as write_json_atomically

# The detector the project ships, made by `charlstm detector train` from the bundled generator.
BUNDLED_DETECTOR = Path(__file__).resolve().parent.parent / "bundled" / "charlstm-yelp-detector"
DETECTOR_LOG = "detector_log.json"
THRESHOLD = 0.5  # machine when P(machine) >= 0.5: the classes were balanced in training


@dataclass
class Detection:
    """machine_probability: the detector's P(machine). truncated: only the first `characters_read` were judged."""

    machine_probability: float
    label: str
    characters_read: int
    truncated: bool


class Detector:
    """A saved detector (a local directory or a Hub id) behind `pipeline("text-classification")`."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = model_or_bundled(path, BUNDLED_DETECTOR, "charlstm detector train", "--detector")
        try:
            labels = sorted(AutoConfig.from_pretrained(self.path).label2id)
            if labels != ["human", "machine"]:
                raise ValueError(f"{self.path} is not a detector: its labels are {labels}, not human and machine")
            # float32 whatever the stored dtype: half-precision LSTM steps on a CPU are slow or unsupported.
            self.pipeline = pipeline("text-classification", model=self.path, device="cpu", dtype=torch.float32)
        except OSError as error:
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise FileNotFoundError(f"could not load the detector {self.path}: {first_line}") from None
        # <bos> takes one position of model_max_length.
        self.max_characters = self.pipeline.tokenizer.model_max_length - 1

    def predict(self, texts: list[str], batch_size: int = 32) -> list[Detection]:
        """
        One `Detection` per text. Empty text is a ValueError (there is nothing to judge); text longer than
        `max_characters` is judged on its first `max_characters` and marked `truncated`.
        """
        texts = check_texts(texts)
        outputs = self.pipeline(texts, top_k=None, batch_size=batch_size, **TOKENIZER_KWARGS)
        detections = []
        for text, scores in zip(texts, outputs):
            probability = next(score["score"] for score in scores if score["label"] == "machine")
            detections.append(
                Detection(
                    machine_probability=probability,
                    label="machine" if probability >= THRESHOLD else "human",
                    characters_read=min(len(text), self.max_characters),
                    truncated=len(text) > self.max_characters,
                )
            )
        return detections


def check_texts(texts) -> list[str]:
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text {index + 1} is empty: there is nothing to judge")
    return texts


def evaluate(detector: Detector, data: datasets.Dataset) -> dict[str, float]:
    """ROC-AUC, accuracy, precision and recall of `detector` on labelled texts, at the detector's threshold."""
    labels = [int(label == MACHINE) for label in data["label"]]
    scores = [detection.machine_probability for detection in detector.predict(data["text"])]
    return {"roc_auc": roc_auc(labels, scores), **threshold_metrics(labels, scores, THRESHOLD), "texts": len(labels)}


# --- the command line


def register(subparsers) -> None:
    detect = subparsers.add_parser(
        "detect",
        help="probability that a review was machine-written",
        description="Print the probability that each review was machine-written, by a trained detector. "
        "Text longer than the detector reads is judged on its beginning (and says so); empty text is an error.",
    )
    given = detect.add_mutually_exclusive_group(required=True)
    given.add_argument("text", nargs="?", help="the review to judge")
    given.add_argument("--file", help="a .jsonl file with one {'text': ...} per line, or any other file as one review")
    detect.add_argument("--detector", help="saved detector directory or Hub id (default: the bundled detector)")
    detect.add_argument("--json", action="store_true", help="print a JSON list, one object per review")
    detect.set_defaults(func=run_detect)

    detector = subparsers.add_parser("detector", help="build data for and train a detector")
    commands = detector.add_subparsers(dest="detector_command", required=True, metavar="COMMAND")

    build = commands.add_parser(
        "build-data",
        help="label real held-out reviews and reviews written by a generator",
        description="Write a labelled dataset (datasets.save_to_disk) of real reviews the generator never trained "
        "on and reviews the generator writes across sampling settings. The real reviews are the held-out part of "
        "the generator's training data, found from its training_log.json (dataset, split, fraction and seed); "
        "the options below override what the log says, or stand in for a generator without one.",
    )
    build.add_argument("output", help="directory to save the dataset to")
    build.add_argument("--generator", help="generator directory (default: the bundled model)")
    add_training_data_arguments(build)
    build.add_argument("--count", type=int, default=2000, help="reviews per class (default: %(default)s)")
    grid = SamplingGrid()
    build.add_argument("--temperatures", type=_floats, default=grid.temperatures, help="default: 0.5,0.7,0.8,1.0,1.2")
    build.add_argument("--top-ks", type=_ints, default=grid.top_ks, help="0 = off (default: 0,20)")
    build.add_argument("--top-ps", type=_floats, default=grid.top_ps, help="1.0 = off (default: 1.0,0.9)")
    build.add_argument("--max-new-tokens", type=_ints, default=grid.max_new_tokens, help="default: 300,600,1000")
    build.add_argument("--min-chars", type=int, default=50, help="shortest review kept, both classes (default: 50)")
    build.add_argument("--test-fraction", type=float, default=0.2, help="share held out for testing (default: 0.2)")
    build.add_argument("--batch-size", type=int, default=32, help="reviews per generate call (default: 32)")
    build.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    build.add_argument(
        "--exclude", action="append", default=[], metavar="DATA_DIR",
        help="leave out the human reviews of this earlier build-data output, for a set apart from it, such as "
        "calibration data for `charlstm detector calibrate` (repeatable); give a new --seed too, or the machine "
        "reviews repeat",
    )
    build.set_defaults(func=run_build_data)

    train = commands.add_parser(
        "train",
        help="train a detector from a generator's weights",
        description="Train a CharLSTMForSequenceClassification initialised from the generator's embedding and LSTM "
        "layers on data from `charlstm detector build-data`; save it with its tokenizer and detector_log.json. "
        "A rerun with the same output resumes from the last checkpoint.",
    )
    train.add_argument("data", help="directory written by `charlstm detector build-data`")
    train.add_argument("output", help="directory to save the detector to")
    train.add_argument("--generator", help="generator directory (default: the bundled model)")
    train.add_argument("--max-steps", type=int, default=1000, help="default: %(default)s")
    train.add_argument("--batch-size", type=int, default=32, help="default: %(default)s")
    train.add_argument("--learning-rate", type=float, default=1e-3, help="default: %(default)s")
    train.add_argument("--min-chars", type=int, default=40, help="shortest training crop (default: %(default)s)")
    train.add_argument("--max-chars", type=int, default=800, help="longest crop, and what the detector reads at most")
    train.add_argument("--layers", type=int, help="keep only the generator's first N LSTM layers (default: all)")
    train.add_argument(
        "--pooling", choices=CLASSIFIER_POOLINGS, default="mean",
        help="what the head reads: the mean state over all characters, or the last state (default: %(default)s)",
    )
    train.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    train.set_defaults(func=run_train)

    calibrate = commands.add_parser(
        "calibrate",
        help="give a trained detector a lexicon of the generator's training words",
        description="Save a copy of a trained detector whose head also reads the share of a text's words missing "
        "from the generator's training reviews (found from its training_log.json), calibrated on the train split "
        "of DATA: texts the detector never trained on, e.g. from `charlstm detector build-data --exclude`. "
        "The LSTM is unchanged; this takes one pass over the texts.",
    )
    calibrate.add_argument("detector", help="trained detector directory")
    calibrate.add_argument("data", help="`charlstm detector build-data` output apart from the detector's own data")
    calibrate.add_argument("output", help="directory to save the calibrated detector to (not the detector's own)")
    calibrate.add_argument("--generator", help="generator directory (default: the one in the detector's log)")
    calibrate.add_argument("--test-data", help="build-data directory whose test split the log reports (default: DATA)")
    add_training_data_arguments(calibrate)
    calibrate.set_defaults(func=run_calibrate)


def add_training_data_arguments(parser) -> None:
    """How to find the generator's training data and its held-out split, where its training_log.json cannot say."""
    parser.add_argument("--human-data", help="the generator's training data, file or Hub id (default: from its log)")
    parser.add_argument("--validation-fraction", type=float, help="held-out share, as in training (default: from log)")
    parser.add_argument("--data-seed", type=int, help="seed of the held-out split, as in training (default: from log)")


def _floats(value: str) -> tuple[float, ...]:
    return tuple(float(part) for part in value.split(","))


def _ints(value: str) -> tuple[int, ...]:
    return tuple(int(part) for part in value.split(","))


def read_reviews(args) -> list[str]:
    if args.file is None:
        return [args.text]
    with open(args.file, encoding="utf-8") as handle:
        if not args.file.endswith(".jsonl"):
            return [handle.read()]
        reviews = []
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                reviews.append(json.loads(line)["text"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UsageError(f"{args.file}, line {number}: expected a JSON object with a 'text' field") from None
        if not reviews:
            raise UsageError(f"{args.file} has no reviews")
        return reviews


def load_detector_data(path: str, needs: tuple[str, ...] = ()) -> datasets.DatasetDict:
    """
    A directory written by `charlstm detector build-data`, holding at least the splits in `needs`, or a UsageError
    that says what it is instead.
    """
    try:
        data = datasets.load_from_disk(path)
    except FileNotFoundError:
        raise UsageError(f"{path} is not a directory written by `charlstm detector build-data`") from None
    if not isinstance(data, datasets.DatasetDict) or not {"text", "label"} <= set(data[next(iter(data))].column_names):
        raise UsageError(f"{path} is not detector data: expected splits with 'text' and 'label' columns")
    missing = [name for name in needs if name not in data]
    if missing:
        raise UsageError(f"{path} has no {' or '.join(missing)} split (splits: {', '.join(data)})")
    return data


def run_detect(args) -> int:
    texts = check_texts(read_reviews(args))  # before the detector loads: bad input fails at once
    detections = Detector(args.detector).predict(texts)
    if args.json:
        print(json.dumps([asdict(detection) for detection in detections], indent=2))
        return 0
    for number, detection in enumerate(detections, start=1):
        prefix = f"review {number}: " if len(detections) > 1 else ""
        print(f"{prefix}{detection.label} (probability machine-written: {detection.machine_probability:.3f})")
        if detection.truncated:
            print(
                f"charlstm detect: note: {prefix}judged on its first {detection.characters_read} characters only",
                file=sys.stderr,
            )
    return 0


def run_build_data(args) -> int:
    # Full precision: the data should hold what the generator itself writes, the same on every CPU.
    generator = load_generator(args.generator, int8=False)
    reviews = held_out_reviews(generator.source, args.human_data, args.validation_fraction, args.data_seed)
    grid = SamplingGrid(args.temperatures, args.top_ks, args.top_ps, args.max_new_tokens)
    data = build_detector_data(
        generator,
        reviews.held_out,
        reviews.source,
        count=args.count,
        grid=grid,
        min_chars=args.min_chars,
        batch_size=args.batch_size,
        test_fraction=args.test_fraction,
        seed=args.seed,
        exclude=frozenset(text for path in args.exclude for split in load_detector_data(path).values()
                          for text in split["text"]),
    )
    data.save_to_disk(args.output)
    print(f"saved {len(data['train'])} training and {len(data['test'])} test reviews to {args.output}")
    return 0


def run_train(args) -> int:
    generator_dir = args.generator or BUNDLED_MODEL
    if not os.path.isfile(os.path.join(generator_dir, "config.json")):
        raise FileNotFoundError(f"{generator_dir} is not a saved generator directory (no config.json)")
    data = load_detector_data(args.data)
    log = train_detector(
        generator_dir,
        data,
        args.output,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        min_chars=args.min_chars,
        max_chars=args.max_chars,
        layers=args.layers,
        pooling=args.pooling,
        seed=args.seed,
    )
    if "test" in data:
        log["test"] = evaluate(Detector(args.output), data["test"])
    write_json_atomically(os.path.join(args.output, DETECTOR_LOG), log)
    print(json.dumps(log.get("test", {}), indent=2))
    return 0


def run_calibrate(args) -> int:
    if os.path.realpath(args.output) == os.path.realpath(args.detector):
        raise UsageError("give an output directory other than the detector's own: a failed run must not break it")
    if not os.path.isfile(os.path.join(args.detector, "config.json")):
        raise FileNotFoundError(f"{args.detector} is not a saved detector directory (no config.json)")
    log_path = Path(args.detector) / DETECTOR_LOG
    log = json.loads(log_path.read_text(encoding="utf-8")) if log_path.is_file() else {}
    generator_dir = args.generator or log.get("generator") or str(BUNDLED_MODEL)
    data = load_detector_data(args.data, needs=("train",))
    test = load_detector_data(args.test_data, needs=("test",))["test"] if args.test_data else data.get("test")
    reviews = held_out_reviews(generator_dir, args.human_data, args.validation_fraction, args.data_seed)
    lexicon_texts = reviews.train["text"]  # the words the generator learned from
    log["lexicon"] = {
        "generator": generator_dir,
        "data": args.data,
        **calibrate_detector(args.detector, lexicon_texts, data["train"], args.output),
    }
    if test is not None:
        log["test"] = evaluate(Detector(args.output), test)
    write_json_atomically(os.path.join(args.output, DETECTOR_LOG), log)
    print(json.dumps({"lexicon": log["lexicon"], "test": log.get("test", {})}, indent=2))
    return 0
