"""Detectors side by side on the texts a `--frozen` detector was tested on (issue 29): per labelled set, per
generator family and, for the generator's own samples, per sampling temperature and per length, ROC-AUC and, at each
detector's own threshold, the share of human texts called machine and of machine texts caught.

The tested texts are those `charlstm detector train --frozen` held out of DATA (the same balanced selection and the
same group split, from `--per-side` and `--seed`), read whole by each detector as `charlstm detect` reads them. A
detector trained on other data may have trained on some of these texts (the fine-tuned detector on its three
labelled sets and the generator's held-out reviews): its figures there are in-distribution at best.

    python scripts/compare_detectors.py runs/detector-data-all --detector charlstm/bundled/charlstm-yelp-detector \
        --detector runs/detector-stacked --json compare_detectors.json
"""

import argparse
import math
import sys
from pathlib import Path

from charlstm.detection.data import load_detector_data
from charlstm.detection.detector import Detector
from charlstm.detection.families import HUMAN_FAMILY, OWN_FAMILY, balanced_selection, describe_set, group_split
from charlstm.detection.frozen import TEST_SHARE, rewrite_groups, row_families
from charlstm.detection.metrics import roc_auc, threshold_metrics
from charlstm.loading import model_source
from charlstm.runfiles import write_json
from charlstm.tokenization_charlstm import normalize_text

# The generator's own texts (both sides) by length as the detector reads them: the goal is >= 0.97 at 400+.
OWN_LENGTHS = (("100-199 characters", 100, 200), ("200-399 characters", 200, 400), ("400+ characters", 400, math.inf))


def tested_rows(data_dir: str, per_side: int, seed: int, own_source: str, balance_each_set: bool) -> list[dict]:
    """The rows `build_frozen_detector` tested on, with their generator family."""
    rows = balanced_selection([row for split in load_detector_data(data_dir).values() for row in split], per_side, seed,
                              balance_each_set)
    _, test = group_split(rewrite_groups(rows), TEST_SHARE, seed)
    families = row_families(rows, own_source)
    return [{**rows[i], "family": families[i]} for i in test]


def figures(rows: list[dict], scores: dict[int, float], threshold: float) -> dict | None:
    judged = [i for i, _ in enumerate(rows) if scores.get(i) is not None]
    labels = [int(rows[i]["label"]) for i in judged]
    if len(set(labels)) < 2:
        return None
    values = [scores[i] for i in judged]
    rates = threshold_metrics(labels, values, threshold)
    return {"roc_auc": round(roc_auc(labels, values), 3), "false_positive_rate": round(rates["false_positive_rate"], 3),
            "recall": round(rates["recall"], 3), "human": labels.count(0), "machine": labels.count(1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="directory written by `charlstm detector build-data`")
    parser.add_argument("--detector", action="append", required=True, help="detector directory (repeatable)")
    parser.add_argument("--per-side", type=int, default=400, help="as given to `detector train --frozen`")
    parser.add_argument("--seed", type=int, default=0, help="as given to `detector train --frozen`")
    parser.add_argument("--balance-each-set", action="store_true", help="as given to `detector train --frozen`")
    parser.add_argument("--generator", help="the generator DATA was built with (default: the bundled one)")
    parser.add_argument("--json", metavar="PATH")
    options = parser.parse_args()
    rows = tested_rows(options.data, options.per_side, options.seed, Path(model_source(options.generator)).name,
                       options.balance_each_set)
    groups = {("set", source): [] for source in sorted({row["source"] for row in rows})}
    for family in sorted({row["family"] for row in rows} - {HUMAN_FAMILY}):
        sources = {row["source"] for row in rows if row["family"] == family}
        groups[("family", family)] = []
        for index, row in enumerate(rows):
            if row["family"] == family or (not row["label"] and row["source"] in sources):
                groups[("family", family)].append(index)
    for index, row in enumerate(rows):
        groups[("set", row["source"])].append(index)
    own_source = next((row["source"] for row in rows if row["family"] == OWN_FAMILY), None)
    for temperature in sorted({row.get("temperature") for row in rows if row["family"] == OWN_FAMILY} - {None}):
        groups[("own samples at temperature", temperature)] = [
            index for index, row in enumerate(rows) if row["source"] == own_source
            and (not row["label"] or row.get("temperature") == temperature)]
    for name, shortest, longest in OWN_LENGTHS:
        groups[("own samples of", name)] = [
            index for index, row in enumerate(rows) if row["source"] == own_source
            and shortest <= len(normalize_text(row["text"])) < longest]
    report = {"data": options.data, "tested_texts": len(rows), "detectors": {}}
    for path in options.detector:
        detector = Detector(path)
        detections = detector.predict([row["text"] for row in rows])
        scores = {i: detection.machine_probability for i, detection in enumerate(detections)}
        threshold = detector.decision.threshold
        report["detectors"][path] = {
            "threshold": threshold,
            "rows": {f"{kind}: {describe_set(name) if kind == 'set' else name}":
                     figures([rows[i] for i in members], {k: scores[i] for k, i in enumerate(members)}, threshold)
                     for (kind, name), members in groups.items()},
        }
    names = list(report["detectors"])
    print(f"{len(rows)} tested texts; ROC-AUC (human called machine / machine caught at each detector's threshold)")
    print(f"{'':<62}" + "".join(f"{name[-30:]:>32}" for name in names))
    for key in report["detectors"][names[0]]["rows"]:
        cells = []
        for name in names:
            row = report["detectors"][name]["rows"][key]
            cells.append(f"{'-':>32}" if row is None else
                         f"{row['roc_auc']:.3f} ({row['false_positive_rate']:.2f}/{row['recall']:.2f})".rjust(32))
        print(f"{key[:62]:<62}" + "".join(cells))
    if options.json:
        write_json(options.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
