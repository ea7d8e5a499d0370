"""`charlstm detect` and `charlstm detector build-data / train / calibrate`: their options, and thin callers of
`charlstm.detection`.
"""

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from ..detection.settings import POOLINGS, DetectorTraining, SamplingGrid
from ..errors import MissingFileError, UsageError
from .numbers import integer, number, whole_number


def add_commands(subparsers) -> None:
    detect = subparsers.add_parser(
        "detect",
        help="probability that a review was machine-written",
        description="Print the probability that each review was machine-written, by a trained detector. "
        "Text longer than the detector reads is judged on its beginning (and says so); empty text is an error.",
    )
    given = detect.add_mutually_exclusive_group(required=True)
    given.add_argument("text", nargs="?", help="the review to judge")
    given.add_argument("--file", help="a .jsonl file with one {'text': ...} per line, or any other file as one review "
                       "(with --lines: one review per line)")
    detect.add_argument("--lines", action="store_true", help="with --file: each non-blank line is a review")
    detect.add_argument("--detector", help="saved detector directory or Hub id (default: the bundled detector)")
    detect.add_argument("--json", action="store_true",
                        help="print a JSON list, one object per review: its line in --file, its text and the verdict")
    detect.add_argument("--quiet", action="store_true", help="leave out the note on what the detector was tested on")
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
    build.add_argument("--count", type=integer, default=2000, help="reviews the generator writes, and human reviews "
                       "from its held-out data unless --human-count says otherwise (default: %(default)s)")
    build.add_argument("--human-count", type=integer, help="human reviews from the generator's held-out data "
                       "(default: --count); more balance labelled sets that are mostly machine text of that domain")
    grid = SamplingGrid()
    build.add_argument("--temperatures", type=_floats, default=grid.temperatures,
                       help=f"default: {_listed(grid.temperatures)}")
    build.add_argument("--top-ks", type=_ints, default=grid.top_ks, help=f"0 = off (default: {_listed(grid.top_ks)})")
    build.add_argument("--top-ps", type=_floats, default=grid.top_ps,
                       help=f"1.0 = off (default: {_listed(grid.top_ps)})")
    build.add_argument("--max-new-tokens", type=_ints, default=grid.max_new_tokens,
                       help=f"default: {_listed(grid.max_new_tokens)}")
    build.add_argument("--min-chars", type=integer, default=50, help="shortest review kept, both classes (default: 50)")
    build.add_argument("--test-fraction", type=number, default=0.2, help="share held out for testing (default: 0.2)")
    build.add_argument("--batch-size", type=integer, default=32, help="reviews per generate call (default: 32)")
    build.add_argument("--seed", type=integer, default=0, help="default: %(default)s")
    build.add_argument(
        "--exclude", action="append", default=[], metavar="DATA_DIR",
        help="leave out the human reviews of this earlier build-data output, for a set apart from it, such as "
        "calibration data for `charlstm detector calibrate` (repeatable); give a new --seed too, or the machine "
        "reviews repeat",
    )
    build.add_argument(
        "--labelled", action="append", default=[], metavar="PATH_OR_ID",
        help="also take the rows of this labelled file or Hub dataset (a text and a human/machine label per row; "
        "generator and domain columns are kept when present); repeatable. Human rows the generator trained on "
        "are left out, and counted",
    )
    build.add_argument("--labelled-text-column", default="text", help="text column of --labelled (default: text)")
    build.add_argument("--labelled-label-column", default="label", help="label column of --labelled (default: label)")
    build.add_argument(
        "--label-map", metavar="LABEL=CLASS,...",
        help="how --labelled labels map to human/machine, e.g. OR=human,CG=machine (default: human, machine, 0, 1)",
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
    training = DetectorTraining()
    train.add_argument("--max-steps", type=integer, default=training.max_steps, help="default: %(default)s")
    train.add_argument("--batch-size", type=integer, default=training.batch_size, help="default: %(default)s")
    train.add_argument("--learning-rate", type=number, default=training.learning_rate, help="default: %(default)s")
    train.add_argument("--min-chars", type=integer, default=training.min_chars,
                       help="shortest training crop (default: %(default)s)")
    train.add_argument("--max-chars", type=integer, default=training.max_chars,
                       help="longest crop, and what the detector reads at most (default: %(default)s)")
    train.add_argument("--layers", type=integer, help="keep only the generator's first N LSTM layers (default: all)")
    train.add_argument(
        "--pooling", choices=POOLINGS, default=training.pooling,
        help="what the head reads: the mean state over all characters, or the last state (default: %(default)s)",
    )
    train.add_argument("--seed", type=integer, default=training.seed, help="default: %(default)s")
    train.add_argument(
        "--leave-out-source", action="append", default=[], metavar="SOURCE",
        help="train without this source's rows (the data's `source` column), for a leave-one-source-out figure "
        "with scripts/eval_detector.py --held-out-detector; repeatable",
    )
    train.add_argument(
        "--frozen", action="store_true",
        help="keep the generator's LSTM as it is and fit only a logistic-regression head on its mean top-layer state "
        "(one pass per text, minutes on a CPU); with --ngram-buckets, averaged with one on the text's n-grams, what "
        "transferred best to generator families it never saw (scripts/ablate_detectors.py). Uses both splits of "
        "DATA, split again so that rewrites of a tested text are never trained on, and records the threshold, band "
        "and per-set and per-family figures in the config",
    )
    train.add_argument("--ngram-buckets", type=whole_number(0), default=0,
                       help="--frozen: average in a logistic regression on the text's n-grams (--ngram-chars, "
                       "--ngram-words) hashed into this many buckets, read by the model itself (0 = none; default: "
                       "%(default)s)")
    train.add_argument("--ngram-chars", type=whole_number(0, 6), default=4, metavar="N",
                       help="--ngram-buckets counts character n-grams of 1 to N characters (0 = none; default: "
                       "%(default)s)")
    train.add_argument("--ngram-words", type=whole_number(0, 3), default=0, metavar="N",
                       help="--ngram-buckets also counts word n-grams of 1 to N words (0 = none; default: %(default)s)")
    train.add_argument("--likelihood", action="store_true",
                       help="--frozen: average in a logistic regression on how the generator itself finds the text "
                       "(log-probabilities, entropy, ranks, curvature), which catches its own samples best")
    train.add_argument("--own-domain", metavar="DOMAIN",
                       help="--frozen: add a head for the generator's own samples (its likelihood view against human "
                       "texts of its domain), trusted where a text's n-grams read as that domain (so it needs "
                       "--ngram-buckets): the generator's own rows and DATA's rows whose `domain` is DOMAIN "
                       "(e.g. yelp)")
    train.add_argument("--per-side", type=int, default=400,
                       help="--frozen: most human and most machine texts per source of DATA (default: %(default)s)")
    train.add_argument("--balance-each-set", action="store_true",
                       help="--frozen: no more machine texts from a source than its human ones (default: up to "
                       "--per-side of each)")
    train.set_defaults(func=run_train_detector)

    calibrate = commands.add_parser(
        "calibrate",
        help="calibrate a trained detector's probabilities",
        description="Save a copy of a trained detector whose P(machine) is calibrated (Platt scaling of its head) on "
        "a split of DATA: texts the detector never trained on, e.g. from `charlstm detector build-data --exclude`, "
        "or its own data's test split. The LSTM is unchanged and no ranking changes, so the threshold and uncertain "
        "band the detector carries are carried through the same map; this takes one pass over the texts.",
    )
    calibrate.add_argument("detector", help="trained detector directory")
    calibrate.add_argument("data", help="`charlstm detector build-data` output with texts the detector never trained "
                           "on")
    calibrate.add_argument("output", help="directory to save the calibrated detector to (not the detector's own)")
    calibrate.add_argument("--split", choices=["train", "test"], default="train",
                           help="the split of DATA to calibrate on (default: %(default)s)")
    calibrate.set_defaults(func=run_calibrate)


def add_training_data_arguments(parser) -> None:
    """How to find the generator's training data and its held-out split, where its training_log.json cannot say."""
    parser.add_argument("--human-data", help="the generator's training data, file or Hub id (default: from its log)")
    parser.add_argument("--validation-fraction", type=number, help="held-out share, as in training (default: from log)")
    parser.add_argument("--data-seed", type=integer,
                        help="seed of the held-out split, as in training (default: from log)")


def _listed(values) -> str:
    return ",".join(str(value) for value in values)


def _floats(value: str) -> tuple[float, ...]:
    return tuple(float(part) for part in value.split(","))


def _ints(value: str) -> tuple[int, ...]:
    return tuple(int(part) for part in value.split(","))


def read_reviews(args) -> list[tuple[int | None, str]]:
    """
    (line number, review) for the review given on the command line (no line), or those of --file: one per line of a
    .jsonl or, with --lines, of any file; else the whole file as one review (line 1).
    """
    if args.file is None:
        if args.lines:
            raise UsageError("--lines goes with --file: it says how to read the file")
        return [(None, args.text)]
    if os.path.isdir(args.file):
        raise UsageError(f"--file {args.file} is a directory: give a .jsonl file or a text file")
    if not os.path.isfile(args.file):
        raise MissingFileError(f"no such file: {args.file}")
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{args.file} is not UTF-8 text") from None
    except OSError as error:
        raise MissingFileError(f"cannot read {args.file}: {error.strerror}") from None
    if not args.file.endswith(".jsonl") and not args.lines:
        return [(1, text)]
    reviews, blank = [], 0
    # "\n" only: a review may hold other line separators (U+2028) that splitlines() would cut at.
    for line_number, line in enumerate(text.removesuffix("\n").split("\n"), start=1):
        if not line.strip():
            blank += 1
            continue
        if args.lines and not args.file.endswith(".jsonl"):
            reviews.append((line_number, line))
            continue
        try:
            review = json.loads(line)["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UsageError(f"{args.file}, line {line_number}: expected a JSON object with a 'text' field") from None
        if not isinstance(review, str):
            raise UsageError(f"{args.file}, line {line_number}: 'text' is {json.dumps(review)}, not a string")
        reviews.append((line_number, review))
    if not reviews:
        raise UsageError(f"{args.file} has no reviews")
    if blank:
        print(f"charlstm detect: note: skipped {blank} blank line{'s' * (blank > 1)} of {args.file}", file=sys.stderr)
    return reviews


def run_detect(args) -> int:
    from ..detection.detector import Detector, check_texts

    lines, texts = zip(*read_reviews(args))
    texts = check_texts(texts)  # before the detector loads: bad input fails at once
    detector = Detector(args.detector)
    detections = detector.predict(texts)
    if not args.quiet:
        print(f"charlstm detect: note: {detector.caveat()}", file=sys.stderr)
    if args.json:
        rows = [{"line": line, "text": text, **asdict(detection)}
                for line, text, detection in zip(lines, texts, detections)]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for line, detection in zip(lines, detections):
        prefix = f"line {line}: " if len(detections) > 1 else ""
        if detection.machine_probability is None:
            print(f"{prefix}{detection.verdict}: {detection.reason}")
            continue
        print(f"{prefix}{detection.verdict} (probability machine-written: {detection.machine_probability:.3f})")
        if detection.truncated:
            print(
                f"charlstm detect: note: {prefix}judged on its first {detection.characters_read} characters only",
                file=sys.stderr,
            )
    return 0


def run_build_data(args) -> int:
    from ..detection.data import build_detector_data, held_out_reviews, load_detector_data
    from ..detection.labelled import load_labelled, parse_label_map
    from ..generation.sampling import load_generator

    label_map = parse_label_map(args.label_map)
    # Labelled data first: its mistakes show at once, before the generator loads.
    loaded = {source: load_labelled(source, args.labelled_text_column, args.labelled_label_column, label_map,
                                    args.min_chars) for source in args.labelled}
    # Full precision: the data should hold what the generator itself writes, the same on every CPU.
    generator = load_generator(args.generator, int8=False)
    reviews = held_out_reviews(generator.source, args.human_data, args.validation_fraction, args.data_seed)
    trained_on = frozenset(reviews.train["text"])
    labelled = []
    for source, rows in loaded.items():
        rows = rows.without(trained_on)
        labelled += rows.rows
        print(f"{source}: {len(rows.rows)} rows; left out {rows.left_out_trained_on} human rows the generator "
              f"trained on and {rows.left_out_unusable} without a text of {args.min_chars}+ characters",
              file=sys.stderr)
    grid = SamplingGrid(args.temperatures, args.top_ks, args.top_ps, args.max_new_tokens)
    data = build_detector_data(
        generator,
        reviews.held_out,
        reviews.source,
        count=args.count,
        human_count=args.human_count,
        grid=grid,
        min_chars=args.min_chars,
        batch_size=args.batch_size,
        test_fraction=args.test_fraction,
        seed=args.seed,
        exclude=frozenset(text for path in args.exclude for split in load_detector_data(path).values()
                          for text in split["text"]),
        labelled=labelled,
    )
    data.save_to_disk(args.output)
    print(f"saved {len(data['train'])} training and {len(data['test'])} test reviews to {args.output}")
    return 0


def run_train_detector(args) -> int:
    from ..detection.data import load_detector_data, without_sources
    from ..detection.training import train_detector
    from ..loading import GENERATOR, check_kind

    if not args.frozen and (args.ngram_buckets or args.likelihood or args.own_domain):
        raise UsageError("--ngram-buckets, --likelihood and --own-domain are heads of a --frozen detector: "
                         "add --frozen")
    if args.ngram_buckets and not args.ngram_chars and not args.ngram_words:
        raise UsageError("--ngram-buckets with --ngram-chars 0 and --ngram-words 0 counts no n-grams: raise one")
    if args.own_domain and not args.ngram_buckets:
        raise UsageError("--own-domain: the own-sample head's gate reads the text's n-grams: add "
                         "--ngram-buckets")
    generator_dir = check_kind(args.generator, GENERATOR)  # a wrong generator fails before the data loads
    data = without_sources(load_detector_data(args.data), args.leave_out_source)
    if args.frozen:
        return run_train_frozen(args, generator_dir, data)
    training = DetectorTraining(**{name: getattr(args, name) for name in DetectorTraining.__dataclass_fields__})
    log = train_detector(generator_dir, data, args.output, training, left_out_sources=tuple(args.leave_out_source))
    print(json.dumps(log.get("test", {}), indent=2))
    return 0


def run_train_frozen(args, generator_dir: str, data) -> int:
    from ..detection.families import balanced_selection
    from ..detection.frozen import build_frozen_detector
    from ..runfiles import DETECTOR_LOG, write_json

    rows = [row for split in data.values() for row in split]
    rows = balanced_selection(rows, args.per_side, args.seed, args.balance_each_set)
    lengths = tuple(length for length in (100, 200, 400) if length <= args.max_chars) or (args.max_chars,)
    log = build_frozen_detector(generator_dir, rows, args.output, lengths=lengths, seed=args.seed,
                                ngram_buckets=args.ngram_buckets, ngram_max_n=args.ngram_chars,
                                ngram_word_max_n=args.ngram_words, likelihood=args.likelihood,
                                own_domain=args.own_domain)
    write_json(Path(args.output) / DETECTOR_LOG, {**log, "left_out_sources": list(args.leave_out_source)})
    print(json.dumps({key: log[key] for key in ("threshold", "uncertain_band", "tested_on")}, indent=2))
    return 0


def run_calibrate(args) -> int:
    from ..detection.calibration import calibrate_detector
    from ..detection.data import load_detector_data
    from ..loading import DETECTOR, check_kind

    if os.path.realpath(args.output) == os.path.realpath(args.detector):
        raise UsageError("give an output directory other than the detector's own: a failed run must not break it")
    check_kind(args.detector, DETECTOR)  # a wrong detector fails before the data loads
    data = load_detector_data(args.data, needs=(args.split,))
    decision = calibrate_detector(args.detector, data[args.split], args.output,
                                  about={"data": args.data, "split": args.split})
    print(json.dumps(asdict(decision)["calibration"], indent=2))
    return 0
