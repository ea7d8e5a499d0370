"""A `--frozen` detector's recipe with each set and generator family left out, beside the n-gram baselines on the
same splits (issue 29): what ships must beat the n-gram baseline on generators it never saw.

For each labelled set and each generator family, the split a detector's recorded "left out" figure
(`unseen_roc_auc`) comes from (`held_out_split`: the same rows, groups and seed): the detector's heads fitted again
without those texts (its recipe read from its `detector_log.json`: `frozen_heads`, `FrozenHeads.fit`), a logistic
regression on TF-IDF of the character 1-4-grams and one on the word 1-2-grams (counted as the detector counts them,
`ngram_counts`), all fitted on every crop length and tested on each: ROC-AUC with a 95% bootstrap interval per length.
At the longest crops the detector's figures are those its config records. Beside them, the detector's heads without
the own-sample head (its other heads' average alone): what that head costs on other generators' texts.

    python scripts/left_out_baselines.py runs/detector-data-all --detector charlstm/bundled/charlstm-yelp-detector \
        --json runs/left_out_baselines.json
"""

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch
from scipy.sparse import vstack
from transformers import AutoTokenizer

from charlstm.detection.data import load_detector_data
from charlstm.detection.families import HUMAN_FAMILY, balanced_selection, held_out_split
from charlstm.detection.frozen import family_row_name, frozen_heads, rewrite_groups, row_families, set_row_name
from charlstm.detection.metrics import auc_interval, roc_auc
from charlstm.detection.probe import NgramHead, ngram_counts, normalised
from charlstm.loading import model_source
from charlstm.runfiles import DETECTOR_LOG, write_json

BASELINES = {"characters 1-4": (4, 0), "words 1-2": (0, 2)}  # (character n, word n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="directory written by `charlstm detector build-data`")
    parser.add_argument("--detector", required=True, help="a detector built by `detector train --frozen` on DATA")
    parser.add_argument("--per-side", type=int, default=400, help="as given to `detector train --frozen`")
    parser.add_argument("--seed", type=int, default=0, help="as given to `detector train --frozen`")
    parser.add_argument("--balance-each-set", action="store_true", help="as given to `detector train --frozen`")
    parser.add_argument("--resamples", type=int, default=200, help="bootstrap resamples per AUC (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", metavar="PATH")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)

    recipe = json.loads((Path(options.detector) / DETECTOR_LOG).read_text(encoding="utf-8"))
    generator = model_source(recipe["generator"])
    own_source = Path(generator).name
    lengths = tuple(recipe["lengths"])
    rows = balanced_selection([row for split in load_detector_data(options.data).values() for row in split],
                              options.per_side, options.seed, options.balance_each_set)
    heads = frozen_heads(generator, rows, lengths, recipe["l2"], 32, recipe["ngram_buckets"], recipe["ngram_max_n"],
                         recipe["ngram_word_max_n"], recipe["likelihood"], recipe["own_domain"])
    labels, sources, families = heads.labels, [row["source"] for row in rows], row_families(rows, own_source)
    groups = rewrite_groups(rows)
    texts, tokenizer = normalised([row["text"] for row in rows]), AutoTokenizer.from_pretrained(generator)
    counts = {name: {k: ngram_counts(tokenizer, texts, k, chars, recipe["ngram_buckets"], words) for k in lengths}
              for name, (chars, words) in BASELINES.items()}
    methods = ("detector", "no own-sample head", *BASELINES)

    def figures(held_out: list[bool]) -> dict[int, dict]:
        train, test = held_out_split(held_out, groups, labels.tolist(), sources, seed=options.seed)
        detector = heads.fit(train, test)
        fitted_on = {k: heads.usable(k, train) for k in lengths}
        baselines = {name: NgramHead.fit(vstack([by_length[k][fitted_on[k]] for k in lengths]),
                                         [int(labels[i]) for k in lengths for i in fitted_on[k]])
                     for name, by_length in counts.items()}
        by_length = {}
        for k in lengths:
            tested = heads.usable(k, test)
            truth = labels[tested].tolist()
            margins = {"detector": detector.margins(heads.views[k][tested]),
                       "no own-sample head": replace(detector, own=None).margins(heads.views[k][tested]),
                       **{name: head.margins(counts[name][k][tested]) for name, head in baselines.items()}}
            by_length[k] = {"human": truth.count(0), "machine": truth.count(1), **{
                method: {"roc_auc": roc_auc(truth, margins[method].tolist()),
                         "interval": auc_interval(truth, margins[method].tolist(), resamples=options.resamples)}
                for method in methods}}
        return by_length

    splits = [(set_row_name(source, own_source), [of == source for of in sources]) for source in sorted(set(sources))]
    splits += [(family_row_name(family), [of == family for of in families])
               for family in sorted(set(families) - {HUMAN_FAMILY})]
    report = {"data": options.data, "detector": options.detector, "recipe": recipe["generator"], "rows": []}
    print(f"{'left out':<64}{'len':>5}{'hum.':>6}{'mach.':>6}" + "".join(f"{name:>22}" for name in methods), flush=True)
    for name, held_out in splits:
        row = {"name": name, "by_length": figures(held_out)}
        report["rows"].append(row)
        for k, cells in row["by_length"].items():
            shown = "".join(f"{cells[m]['roc_auc']:.3f} ({cells[m]['interval'][0]:.2f}-{cells[m]['interval'][1]:.2f})"
                            .rjust(22) for m in methods)
            print(f"{name[:64]:<64}{k:>5}{cells['human']:>6}{cells['machine']:>6}{shown}", flush=True)
    if options.json:
        write_json(options.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
