"""How much better the generator explains a text once told its rating (issue 29): a probe for the detector's weak
spot, the generator's own samples at temperature 1.0 and above.

The generator writes a review for a rating, with rating guidance by default; a person's review is one the generator
learned to expect under its rating too, but less sharply. Per text of the generator's own source in DATA (its samples
and its held-out human reviews), each crop of `--lengths` characters is read six times: without a rating and after
each star token of `--ratings` (as `generate` reads a rated prompt; `charlstm.modeling_charlstm.rating_gain`, what
the detector's own-sample head reads, takes the best of GAIN_RATINGS). Reported, as ROC-AUC of machine against human
per set of ratings and crop length, overall and per sampling temperature: the mean log-probability without a rating
(`unrated`), the best rating's gain over it (`gain`), and a logistic regression on both and their squares, scored
out-of-fold (5 folds).

    python scripts/probe_rating_gain.py runs/detector-data-all --ratings 1,2,3,4,5 --ratings 1,3,5 --json F
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler
from transformers import AutoModelForCausalLM, AutoTokenizer

from charlstm.detection.data import load_detector_data
from charlstm.detection.metrics import roc_auc
from charlstm.detection.probe import frozen_features, normalised
from charlstm.modeling_charlstm import GAIN_RATINGS, LIKELIHOOD_STATISTICS
from charlstm.runfiles import write_json
from charlstm.training.report import cpu_name


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="directory written by `charlstm detector build-data`")
    parser.add_argument("--generator", default="charlstm/bundled/charlstm-yelp", help="default: %(default)s")
    parser.add_argument("--lengths", default="100,200,400", help="crop lengths (default: %(default)s)")
    parser.add_argument("--ratings", action="append", metavar="R,R,...",
                        help="ratings whose best is the gain, e.g. 1,3,5; repeatable, side by side (default: "
                        f"{','.join(map(str, GAIN_RATINGS))})")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    args.lengths = tuple(int(length) for length in args.lengths.split(","))
    args.ratings = [tuple(int(rating) for rating in chosen.split(",")) for chosen in args.ratings or ()]
    args.ratings = args.ratings or [GAIN_RATINGS]
    if any(not chosen or not set(chosen) <= {1, 2, 3, 4, 5} for chosen in args.ratings):
        parser.error(f"--ratings: ratings from 1 to 5, got {args.ratings}")
    return args


def main() -> int:
    args = parse_args()
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.generator, dtype=torch.float32).eval()
    if not model.config.conditioned_on_stars:
        print(f"{args.generator} is not conditioned on a rating", file=sys.stderr)
        return 2
    tokenizer = AutoTokenizer.from_pretrained(args.generator)
    own = Path(args.generator.rstrip("/")).name
    rows = [row for split in load_detector_data(args.data).values() for row in split if row["source"] == own]
    if not rows:
        print(f"{args.data} has no rows of the generator's own source {own!r}", file=sys.stderr)
        return 2
    texts = normalised([row["text"] for row in rows])
    labels = np.array([int(row["label"]) for row in rows])
    temperatures = np.array([row["temperature"] or 0.0 for row in rows])
    print(f"CPU: {cpu_name()}; {len(rows)} texts of {own}; ROC-AUC")
    print(f"{'ratings':>10s} {'crop':>5s} {'texts':18s} {'human':>6s} {'machine':>8s} {'unrated':>8s} {'gain':>8s} "
          f"{'both':>8s}")
    results = []
    for ratings in args.ratings:
        features = frozen_features(model, tokenizer, texts, args.lengths, args.batch_size, rated=range(len(texts)),
                                   gain_ratings=ratings)
        unrated, gains = features.likelihood, features.gain
        named = ",".join(map(str, ratings))
        for k in args.lengths:
            usable = np.isfinite(gains[k][:, 0])
            views = np.stack([unrated[k][:, LIKELIHOOD_STATISTICS.index("log_prob_mean")], gains[k][:, 0]], axis=1)
            regression = make_pipeline(StandardScaler(), PolynomialFeatures(2), LogisticRegression(max_iter=2000))
            both = np.full(len(rows), np.nan)
            both[usable] = cross_val_predict(regression, views[usable], labels[usable], cv=5,
                                             method="decision_function")
            groups = [("all", usable)] + [(f"temperature {t:g}", usable & ((labels == 0) | (temperatures == t)))
                                          for t in sorted(set(temperatures[labels == 1].tolist()))]
            for name, chosen in groups:
                row = {"ratings": list(ratings), "crop": k, "texts": name, "human": int((labels[chosen] == 0).sum()),
                       "machine": int((labels[chosen] == 1).sum()),
                       **{feature: roc_auc(labels[chosen].tolist(), values[chosen].tolist()) for feature, values in
                          (("unrated", views[:, 0]), ("gain", views[:, 1]), ("both", both))}}
                results.append(row)
                print(f"{named:>10s} {k:5d} {name:18s} {row['human']:6d} {row['machine']:8d} {row['unrated']:8.3f} "
                      f"{row['gain']:8.3f} {row['both']:8.3f}")
    if args.json:
        write_json(args.json, {"generator": args.generator, "data": args.data, "cpu": cpu_name(),
                               "seconds": round(time.perf_counter() - started, 1), "rows": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
