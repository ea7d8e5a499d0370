"""The trained detector against the zero-shot baseline, side by side, on the held-out part of the detector data.

Rows: text length x sampling temperature. Lengths: the first 100 and the first 200 characters of every text that
long, and whole texts of 400 characters or more ("400+"; each method reads what it reads in use: the detector up
to its model_max_length, the generator up to its own). Per temperature: that temperature's machine reviews
against all human reviews of the length (the human side is the same in every temperature row, so accuracy and
precision there are on unbalanced sets; the counts are printed). "all" pools every temperature and "<=1.0" those
up to 1.0, the range the detector's goal is set for.

The trained detector calls a text machine-written at P(machine) >= 0.5. The zero-shot baseline
(`charlstm.detection.zero_shot`) is calibrated, per length, on texts of the detector data's train split cut the same
way.
Each AUC comes with a 95% bootstrap interval (`charlstm.detection.metrics.auc_interval`): a temperature row of a
few dozen machine texts says little more than its interval does.

    python scripts/eval_detector.py --data runs/detector-data --json runs/eval_detector.json
"""

import argparse
import json
import random
import sys
import time

import datasets

from charlstm.detection.data import MACHINE
from charlstm.detection.detector import THRESHOLD, Detector
from charlstm.detection.metrics import auc_interval, roc_auc, threshold_metrics
from charlstm.detection.scoring import score_texts
from charlstm.detection.zero_shot import ZeroShotDetector, text_statistics
from charlstm.generation.loading import load_generator

# Name -> characters kept from the start of each text (None: the whole text); texts shorter than the bound are left
# out of that row.
LENGTHS = {"100": 100, "200": 200, "400+": None}
MIN_WHOLE_LENGTH = 400
POOLED_UP_TO = 1.0  # a row pooling the machine reviews written at temperatures up to this


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="directory written by `charlstm detector build-data`")
    parser.add_argument("--detector", help="detector directory (default: the bundled detector)")
    parser.add_argument("--generator", help="generator for the zero-shot baseline (default: the bundled model)")
    parser.add_argument("--calibration-texts", type=int, default=1000,
                        help="training texts the zero-shot baseline is calibrated on (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    return parser.parse_args()


def cut(texts: list[str], length: int | None) -> list[int]:
    """Indices of the texts that belong to a length row."""
    bound = MIN_WHOLE_LENGTH if length is None else length
    return [index for index, text in enumerate(texts) if len(text) >= bound]


def crop(text: str, length: int | None) -> str:
    return text if length is None else text[:length]


def zero_shot_statistics(scores, length: int | None) -> dict[str, float]:
    """Scores of a prefix are the prefix of the scores, so each text is scored by the generator only once."""
    return text_statistics(scores if length is None else scores.head(length))


def metrics(labels: list[int], scores: list[float], threshold: float) -> dict:
    return {
        "roc_auc": roc_auc(labels, scores),
        "roc_auc_95ci": list(auc_interval(labels, scores)),
        **threshold_metrics(labels, scores, threshold),
    }


def main() -> int:
    args = parse_args()
    started = time.perf_counter()
    data = datasets.load_from_disk(args.data)
    test, train = data["test"], data["train"]
    detector = Detector(args.detector)
    generator = load_generator(args.generator, int8=False)  # the generator's exact probabilities

    # The calibration texts: a seeded sample of the train split, both classes.
    chosen = random.Random(0).sample(range(len(train)), min(args.calibration_texts, len(train)))
    calibration = train.select(chosen)
    calibration_texts = list(calibration["text"])
    calibration_labels = [int(label == MACHINE) for label in calibration["label"]]
    calibration_scores = score_texts(generator.model, generator.tokenizer, calibration_texts, args.batch_size)
    test_texts = list(test["text"])
    test_scores = score_texts(generator.model, generator.tokenizer, test_texts, args.batch_size)
    test_labels = [int(label == MACHINE) for label in test["label"]]
    test_temperatures = list(test["temperature"])
    temperatures = sorted({t for t in test_temperatures if t is not None})

    rows, calibrations = [], {}
    for name, length in LENGTHS.items():
        kept = cut(calibration_texts, length)
        kept_labels = [calibration_labels[i] for i in kept]
        if len(set(kept_labels)) < 2:
            print(f"length {name}: skipped, the calibration texts that long are not of both classes", file=sys.stderr)
            continue
        zero_shot = ZeroShotDetector.calibrate(
            [zero_shot_statistics(calibration_scores[i], length) for i in kept], kept_labels
        )
        calibrations[name] = zero_shot.to_dict()
        indices = cut(test_texts, length)
        detected = detector.predict([crop(test_texts[i], length) for i in indices], batch_size=args.batch_size)
        detector_score = {i: d.machine_probability for i, d in zip(indices, detected)}
        zero_shot_score = {i: zero_shot.score(zero_shot_statistics(test_scores[i], length)) for i in indices}
        groups = [("all", lambda t: True), (f"<={POOLED_UP_TO}", lambda t: t <= POOLED_UP_TO)]
        groups += [(temperature, lambda t, chosen=temperature: t == chosen) for temperature in temperatures]
        for temperature, written_at in groups:
            group = [i for i in indices if test_labels[i] != 1 or written_at(test_temperatures[i])]
            labels = [test_labels[i] for i in group]
            if len(set(labels)) < 2:
                continue
            rows.append({
                "length": name,
                "temperature": temperature,
                "human": labels.count(0),
                "machine": labels.count(1),
                "detector": metrics(labels, [detector_score[i] for i in group], THRESHOLD),
                "zero_shot": metrics(labels, [zero_shot_score[i] for i in group], zero_shot.threshold),
            })

    print_table(rows, calibrations)
    report = {
        "data": args.data,
        "detector": detector.path,
        "detector_threshold": THRESHOLD,
        "generator": generator.source,
        "zero_shot_calibration": calibrations,
        "calibration_texts": len(calibration),
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
            handle.write("\n")
    return 0


def print_table(rows: list[dict], calibrations: dict) -> None:
    header = (
        f"{'length':>6} {'temp':>5} {'human':>6} {'mach.':>6} | "
        f"{'detector: AUC':>13} {'95% CI':>11} {'acc':>5} {'P':>5} {'R':>5} | "
        f"{'zero-shot: AUC':>14} {'95% CI':>11} {'acc':>5} {'P':>5} {'R':>5}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        temperature = row["temperature"] if isinstance(row["temperature"], str) else f"{row['temperature']:.2f}"
        print(
            f"{row['length']:>6} {temperature:>5} {row['human']:>6} {row['machine']:>6} | "
            f"{method_cells(row['detector'], 13)} | {method_cells(row['zero_shot'], 14)}"
        )
    print()
    for name, calibration in calibrations.items():
        print(
            f"zero-shot at {name}: machine when |{calibration['statistic']} - {calibration['center']:.3f}| "
            f">= {calibration['threshold']:.3f}"
        )


def method_cells(figures: dict, auc_width: int) -> str:
    low, high = figures["roc_auc_95ci"]
    return (
        f"{figures['roc_auc']:{auc_width}.3f} {low:5.3f}-{high:5.3f} {figures['accuracy']:5.3f} "
        f"{figures['precision']:5.3f} {figures['recall']:5.3f}"
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (FileNotFoundError, ValueError) as error:
        print(f"eval_detector: error: {error}", file=sys.stderr)
        sys.exit(2)
