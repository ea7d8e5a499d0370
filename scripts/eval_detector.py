"""The trained detector against the zero-shot baseline, side by side, on the held-out part of the detector data.

Rows: text length x group. Lengths: the first 100, 200 and 400 characters of every text that long (equal-length
crops, so length itself cannot decide), and "whole" texts as each method reads them in use (the detector up to its
model_max_length, the generator up to its own). Per temperature: that temperature's machine reviews against all
human reviews of the length (accuracy and precision there are on unbalanced sets; the counts are printed). "all"
pools everything and "temp<=1.0" our generator's texts up to 1.0, the range the detector's goal is set for.

The trained detector calls a text machine-written at the threshold this evaluation sets for it: the lowest (never
below 0.5) at which each source calls at most `--max-false-positive-rate` of its whole human texts machine, chosen
on these same test texts, so that figure is met here by construction and the others show what it costs. The
zero-shot baseline
(`charlstm.detection.zero_shot`) is calibrated, per length, on texts of the detector data's train split cut the same
way.
Data with several sources (`build-data --labelled`) gets a row per source and per generator within it (its machine
texts against the same source's human texts), and two kinds of transfer figure: `--held-out-detector SOURCE=DIR`
rows, a detector trained without that source (leave-one-source-out, the only estimate of how a detector does on a
generator it never saw), and the plain baseline, a character n-gram logistic regression (scikit-learn) trained on
the same train split cut the same way, in-distribution and with each source left out.
The "stacked" column is an ablation: the detector's score and the generator's own statistics together in one
logistic regression (`stacked_scores`), to measure what a head that also read the generator's view would add.

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
import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from charlstm.detection.decision import BAND_PRECISION, choose_decision, record_decision
from charlstm.detection.detector import Detector
from charlstm.detection.metrics import auc_interval, roc_auc, threshold_metrics
from charlstm.detection.scoring import score_texts
from charlstm.detection.settings import MACHINE
from charlstm.detection.zero_shot import STATISTICS, ZeroShotDetector, text_statistics
from charlstm.generation.sampling import load_generator

# Name -> characters kept from the start of each text, on equal-length crops so that length itself cannot decide
# (texts shorter than the bound are left out of that row); "whole": every text as each method reads it in use.
LENGTHS = {"100": 100, "200": 200, "400": 400, "whole": None}
POOLED_UP_TO = 1.0  # a row pooling the machine reviews written at temperatures up to this


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="directory written by `charlstm detector build-data`")
    parser.add_argument("--detector", help="detector directory (default: the bundled detector)")
    parser.add_argument("--generator", help="generator for the zero-shot baseline (default: the bundled model)")
    parser.add_argument("--calibration-texts", type=int, default=1000,
                        help="training texts the zero-shot baseline is calibrated on (default: %(default)s)")
    parser.add_argument("--held-out-detector", action="append", default=[], metavar="SOURCE=DIR",
                        help="a detector trained without SOURCE, tested on SOURCE's test texts (repeatable)")
    parser.add_argument("--max-false-positive-rate", type=float, default=0.05,
                        help="the share of each source's human texts the detector may call machine at the threshold "
                        "it is given (default: %(default)s)")
    parser.add_argument("--record", action="store_true",
                        help="write what the detector was tested on, its threshold and its uncertain band into its "
                        "detector_log.json")
    parser.add_argument("--lengths", default=",".join(LENGTHS),
                        help="the rows' lengths, of %(default)s (each costs a pass of every method over the texts)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    args.lengths = args.lengths.split(",")
    unknown = sorted(set(args.lengths) - set(LENGTHS))
    if unknown or not args.lengths:
        parser.error(f"--lengths takes names from {', '.join(LENGTHS)}; got {args.lengths}")
    if "whole" not in args.lengths:  # the uncertain band and what --record writes are measured on whole texts
        parser.error("--lengths must include whole")
    return args


def cut(texts: list[str], length: int | None) -> list[int]:
    """Indices of the texts that belong to a length row."""
    bound = length or 1
    return [index for index, text in enumerate(texts) if len(text) >= bound]


def crop(text: str, length: int | None) -> str:
    return text if length is None else text[:length]


def zero_shot_statistics(scores, length: int | None) -> dict[str, float]:
    """Scores of a prefix are the prefix of the scores, so each text is scored by the generator only once."""
    return text_statistics(scores if length is None else scores.head(length))


def ngram_baseline(texts: list[str], labels: list[int]):
    """The plain baseline: character 1-4-gram TF-IDF and a logistic regression; returns P(machine) for texts."""
    model = make_pipeline(
        TfidfVectorizer(analyzer="char", ngram_range=(1, 4), min_df=2, sublinear_tf=True, max_features=200_000),
        LogisticRegression(C=10.0, max_iter=2000),
    )
    model.fit(texts, labels)
    return lambda texts: model.predict_proba(texts)[:, 1].tolist()


def stacked_scores(detector_scores: list[float], statistics: list[dict], human_centers: dict, labels: list[int],
                   strata: list[str]) -> list[float]:
    """
    The ablation "does the generator's own view add to the detector?": a logistic regression on the detector's
    logit and the zero-shot statistics (each raw and as its squared distance from real reviews' median, since
    sampling moves them both ways). Its scores are out-of-fold predictions of a 5-fold split of these test texts,
    stratified by source and label: the train split cannot serve, as the detector has seen it and is overconfident
    there.
    """
    probability = np.clip(np.array(detector_scores), 1e-6, 1 - 1e-6)
    columns = [np.log(probability / (1 - probability))]
    for name in STATISTICS:
        values = np.array([row[name] for row in statistics])
        columns += [values, (values - human_centers[name]) ** 2]
    return out_of_fold_probabilities(columns, labels, strata)


def out_of_fold_probabilities(columns: list, labels: list[int], strata: list[str]) -> list[float]:
    """P(machine) of a logistic regression on `columns` (one value per text each), every text predicted by the
    model fitted on the other four of five folds, stratified by `strata`."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0).split(columns[0], strata)
    return cross_val_predict(model, np.stack(columns, axis=1), labels, cv=list(folds),
                             method="predict_proba")[:, 1].tolist()


def groups_of(test) -> list[tuple[str, callable]]:
    """(name, predicate over a test row) for every row of the table: all, per source, per generator, per temperature."""
    sources = sorted(set(test["source"])) if "source" in test.column_names else []
    groups = [("all", lambda row: True), (f"temp<={POOLED_UP_TO}", lambda row: row["label"] != MACHINE or (
        row["temperature"] is not None and row["temperature"] <= POOLED_UP_TO))]
    for temperature in sorted({t for t in test["temperature"] if t is not None}):
        groups.append((f"temp={temperature}",
                       lambda row, t=temperature: row["label"] != MACHINE or row["temperature"] == t))
    if len(sources) > 1:
        for source in sources:
            rows = test.filter(lambda row, s=source: row["source"] == s)
            groups.append((f"source={source}", lambda row, s=source: row["source"] == s))
            generators = sorted(set(rows.filter(lambda row: row["label"] == MACHINE)["generator"]))
            for generator in generators if len(generators) > 1 else []:
                groups.append((f"{source}:{generator}", lambda row, s=source, g=generator: row["source"] == s and (
                    row["label"] != MACHINE or row["generator"] == g)))
    return groups


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
    test_rows = list(test)
    groups = groups_of(test)
    train_texts, train_labels = list(train["text"]), [int(label == MACHINE) for label in train["label"]]
    train_sources = list(train["source"]) if "source" in train.column_names else [None] * len(train)
    held_out = dict(pair.split("=", 1) for pair in args.held_out_detector)

    # Whole texts, as `charlstm detect --file` reads them (in batches): they set the threshold and the band.
    predict_started = time.perf_counter()
    whole = [d.machine_probability for d in detector.predict(test_texts, batch_size=args.batch_size)]
    throughput = len(test_texts) / (time.perf_counter() - predict_started)
    sources = [row.get("source") or "all" for row in test_rows]
    threshold, band = choose_decision(test_labels, whole, sources, args.max_false_positive_rate)

    rows, calibrations = [], {}
    for name, length in ((name, LENGTHS[name]) for name in args.lengths):
        kept = cut(calibration_texts, length)
        kept_labels = [calibration_labels[i] for i in kept]
        if len(set(kept_labels)) < 2:
            print(f"length {name}: skipped, the calibration texts that long are not of both classes", file=sys.stderr)
            continue
        calibration_statistics = [zero_shot_statistics(calibration_scores[i], length) for i in kept]
        zero_shot = ZeroShotDetector.calibrate(calibration_statistics, kept_labels)
        calibrations[name] = zero_shot.to_dict()
        indices = cut(test_texts, length)
        detector_score = ({i: whole[i] for i in indices} if length is None else {
            i: d.machine_probability for i, d in
            zip(indices, detector.predict([crop(test_texts[i], length) for i in indices], batch_size=args.batch_size))
        })
        statistics = {i: zero_shot_statistics(test_scores[i], length) for i in indices}
        zero_shot_score = {i: zero_shot.score(statistics[i]) for i in indices}
        human_centers = {statistic: float(np.median([row[statistic] for row, label in
                                                     zip(calibration_statistics, kept_labels) if label == 0]))
                         for statistic in STATISTICS}
        stacked_score = dict(zip(indices, stacked_scores(
            [detector_score[i] for i in indices], [statistics[i] for i in indices], human_centers,
            [test_labels[i] for i in indices], [f"{sources[i]}:{test_labels[i]}" for i in indices])))
        training = cut(train_texts, length)
        baseline = ngram_baseline([crop(train_texts[i], length) for i in training], [train_labels[i] for i in training])
        baseline_score = dict(zip(indices, baseline([crop(test_texts[i], length) for i in indices])))
        for group_name, belongs in groups:
            group = [i for i in indices if belongs(test_rows[i])]
            labels = [test_labels[i] for i in group]
            if len(set(labels)) < 2:
                continue
            rows.append({
                "length": name,
                "group": group_name,
                "human": labels.count(0),
                "machine": labels.count(1),
                "detector": metrics(labels, [detector_score[i] for i in group], threshold),
                "zero_shot": metrics(labels, [zero_shot_score[i] for i in group], zero_shot.threshold),
                "ngram": metrics(labels, [baseline_score[i] for i in group], 0.5),
                "stacked": metrics(labels, [stacked_score[i] for i in group], 0.5),
            })
        rows += leave_one_source_out(name, length, indices, test_rows, test_texts, test_labels, train_texts,
                                     train_labels, train_sources, held_out, args.batch_size)

    print_table(rows, calibrations)
    tested_on = [tested_on_entry(row, rows, test)
                 for row in rows if row["length"] == "whole" and row["group"].startswith("source=")]
    print(f"threshold: machine at P(machine) >= {threshold:.3f} (at most {args.max_false_positive_rate:.0%} of each "
          "source's human texts called machine)")
    print(f"uncertain band (fewer than {BAND_PRECISION:.0%} of calls right): "
          f"P(machine) in [{band[0]:.2f}, {band[1]:.2f})")
    print(f"detector throughput on whole reviews: {throughput:.1f} reviews/s (batch {args.batch_size}, "
          f"{torch.get_num_threads()} torch threads)")
    if args.record:
        record_decision(detector.path, tested_on=tuple(tested_on), threshold=threshold, uncertain_band=band,
                        threshold_false_positive_rate=args.max_false_positive_rate)
    report = {
        "data": args.data,
        "detector": detector.path,
        "detector_threshold": threshold,
        "max_false_positive_rate": args.max_false_positive_rate,
        "generator": generator.source,
        "zero_shot_calibration": calibrations,
        "calibration_texts": len(calibration),
        "rows": rows,
        "tested_on": tested_on,
        "uncertain_band": list(band),
        "detector_reviews_per_second": round(throughput, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
            handle.write("\n")
    return 0


def tested_on_entry(row: dict, rows: list[dict], test) -> dict:
    """What `Detector.caveat` tells a user about one source: its AUC and, when measured, that of a detector that
    never saw the source (`--held-out-detector`), the figure to expect on a generator like none trained on."""
    source = row["group"].removeprefix("source=")
    unseen = next((other["detector"]["roc_auc"] for other in rows if other["length"] == row["length"]
                   and other["group"] == f"without {source}" and "detector" in other), None)
    return {"name": describe(row["group"], test), "roc_auc": row["detector"]["roc_auc"], "unseen_roc_auc": unseen,
            "false_positive_rate": row["detector"]["false_positive_rate"], "human": row["human"],
            "machine": row["machine"]}


def describe(group: str, test) -> str:
    """'source=NAME' -> 'NAME (written by GENERATORS)', for a user who never saw the data."""
    source = group.removeprefix("source=")
    generators = sorted(set(test.filter(lambda row: row["source"] == source and row["label"] == MACHINE)["generator"]))
    return f"{source} (machine text by {', '.join(generators)})"


def leave_one_source_out(name, length, indices, test_rows, test_texts, test_labels, train_texts, train_labels,
                         train_sources, held_out, batch_size) -> list[dict]:
    """Per source: the n-gram baseline trained without it and, where given, a detector trained without it."""
    rows = []
    for source in sorted(set(train_sources) - {None}) if len(set(train_sources)) > 1 else []:
        group = [i for i in indices if test_rows[i]["source"] == source]
        labels = [test_labels[i] for i in group]
        if len(set(labels)) < 2:
            continue
        training = [i for i in cut(train_texts, length) if train_sources[i] != source]
        baseline = ngram_baseline([crop(train_texts[i], length) for i in training], [train_labels[i] for i in training])
        row = {"length": name, "group": f"without {source}", "human": labels.count(0), "machine": labels.count(1),
               "ngram": metrics(labels, baseline([crop(test_texts[i], length) for i in group]), 0.5)}
        if source in held_out:
            left_out = Detector(held_out[source])
            detected = left_out.predict([crop(test_texts[i], length) for i in group], batch_size)
            row["detector"] = metrics(labels, [d.machine_probability for d in detected], left_out.threshold)
        rows.append(row)
    return rows


def print_table(rows: list[dict], calibrations: dict) -> None:
    header = (
        f"{'length':>6} {'group':<34} {'human':>6} {'mach.':>6} | "
        f"{'detector: AUC':>13} {'95% CI':>11} {'acc':>5} {'P':>5} {'R':>5} | "
        f"{'zero-shot: AUC':>14} {'95% CI':>11} {'acc':>5} {'P':>5} {'R':>5} | "
        f"{'n-gram: AUC':>11} {'95% CI':>11} {'acc':>5} {'P':>5} {'R':>5} | "
        f"{'stacked: AUC':>12} {'95% CI':>11} {'acc':>5} {'P':>5} {'R':>5}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = [method_cells(row.get(method), width) for method, width in
                 (("detector", 13), ("zero_shot", 14), ("ngram", 11), ("stacked", 12))]
        counts = f"{row['length']:>6} {row['group'][:34]:<34} {row['human']:>6} {row['machine']:>6}"
        print(f"{counts} | " + " | ".join(cells))
    print()
    for name, calibration in calibrations.items():
        print(
            f"zero-shot at {name}: machine when |{calibration['statistic']} - {calibration['center']:.3f}| "
            f">= {calibration['threshold']:.3f}"
        )


def method_cells(figures: dict | None, auc_width: int) -> str:
    if figures is None:
        return f"{'-':>{auc_width}} {'':11} {'':5} {'':5} {'':5}"
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
