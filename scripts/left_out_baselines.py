"""A `--frozen` detector's "left out" figures beside the n-gram baselines' on the same splits (issue 29): what ships
must beat the n-gram baseline on generators it never saw.

For each labelled set and each generator family, the detector's recorded `unseen_roc_auc` (its heads fitted again
without those texts, `build_frozen_detector`) beside two baselines fitted and tested on exactly that split
(`held_out_split`, the same rows, groups and seed): a logistic regression on TF-IDF of the character 1-4-grams, and one
on the word 1-2-grams, counted as the detector counts them (`ngram_counts`, hashed), fitted on crops of 100, 200 and
400 characters and tested on the 400-character crops, as the detector's heads are.

    python scripts/left_out_baselines.py runs/detector-data-all --detector charlstm/bundled/charlstm-yelp-detector \
        --json runs/left_out_baselines.json
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.sparse import vstack
from transformers import AutoConfig, AutoTokenizer

from charlstm.detection.data import load_detector_data
from charlstm.detection.families import HUMAN_FAMILY, balanced_selection, held_out_split
from charlstm.detection.frozen import family_row_name, rewrite_groups, row_families, set_row_name
from charlstm.detection.metrics import roc_auc
from charlstm.detection.probe import NgramHead, ngram_counts, normalised
from charlstm.loading import model_source
from charlstm.runfiles import write_json

LENGTHS = (100, 200, 400)
BASELINES = {"characters 1-4": (4, 0), "words 1-2": (0, 2)}  # (character n, word n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="directory written by `charlstm detector build-data`")
    parser.add_argument("--detector", required=True, help="a detector built by `detector train --frozen` on DATA")
    parser.add_argument("--per-side", type=int, default=400, help="as given to `detector train --frozen`")
    parser.add_argument("--seed", type=int, default=0, help="as given to `detector train --frozen`")
    parser.add_argument("--balance-each-set", action="store_true", help="as given to `detector train --frozen`")
    parser.add_argument("--generator", help="the generator DATA was built with (default: the bundled one)")
    parser.add_argument("--buckets", type=int, default=262139, help="hashed n-gram buckets (default: %(default)s)")
    parser.add_argument("--json", metavar="PATH")
    options = parser.parse_args()

    generator = model_source(options.generator)
    own_source = Path(generator).name
    rows = balanced_selection([row for split in load_detector_data(options.data).values() for row in split],
                              options.per_side, options.seed, options.balance_each_set)
    texts = normalised([row["text"] for row in rows])
    labels = np.array([int(row["label"]) for row in rows])
    sources = [row["source"] for row in rows]
    families = row_families(rows, own_source)
    groups = rewrite_groups(rows)
    tokenizer = AutoTokenizer.from_pretrained(generator)
    counts = {name: {k: ngram_counts(tokenizer, texts, k, chars, options.buckets, words) for k in LENGTHS}
              for name, (chars, words) in BASELINES.items()}
    recorded = {row["name"]: row for row in AutoConfig.from_pretrained(options.detector).detection["tested_on"]}

    def baseline_aucs(held_out: list[bool]) -> dict[str, float]:
        train, test = held_out_split(held_out, groups, labels.tolist(), sources, seed=options.seed)
        fitted_on = {k: [i for i in train if len(texts[i][:max(LENGTHS)]) >= k] for k in LENGTHS}
        tested = [i for i in test if len(texts[i]) >= max(LENGTHS)]
        fit_labels = [int(labels[i]) for k in LENGTHS for i in fitted_on[k]]
        aucs = {}
        for name, by_length in counts.items():
            head = NgramHead.fit(vstack([by_length[k][fitted_on[k]] for k in LENGTHS]), fit_labels)
            aucs[name] = roc_auc(labels[tested].tolist(), head.margins(by_length[max(LENGTHS)][tested]).tolist())
        return aucs

    splits = [(set_row_name(source, own_source), [of == source for of in sources]) for source in sorted(set(sources))]
    splits += [(family_row_name(family), [of == family for of in families])
               for family in sorted(set(families) - {HUMAN_FAMILY})]
    report = {"data": options.data, "detector": options.detector, "rows": []}
    print(f"{'left out':<72}{'detector':>10}" + "".join(f"{name:>16}" for name in BASELINES), flush=True)
    for name, held_out in splits:
        detector = recorded.get(name, {}).get("unseen_roc_auc")
        row = {"name": name, "detector": detector, **baseline_aucs(held_out)}
        report["rows"].append(row)
        cells = "".join(f"{row[baseline]:>16.3f}" for baseline in BASELINES)
        print(f"{name[:72]:<72}{'-' if detector is None else f'{detector:.3f}':>10}{cells}", flush=True)
    if options.json:
        write_json(options.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
