"""How much better the generator explains a text once told its rating (issue 29): a probe for the detector's weak
spot, the generator's own samples at temperature 1.0 and above.

The generator writes a review for a rating, with rating guidance by default; a person's review is one the generator
learned to expect under its rating too, but less sharply. Per text of the generator's own source in DATA (its samples
and its held-out human reviews), each text's first `--max-chars` characters are read six times: without a rating
and after each star token `<1star>`..`<5star>` (as `generate` reads a rated prompt). Reported, as ROC-AUC of machine
against human, overall and per sampling temperature: the mean log-probability without a rating (`unrated`), the best
rating's gain over it (`gain`), and a logistic regression on both and their squares, scored out-of-fold (5 folds).

    python scripts/probe_rating_gain.py runs/detector-data-all --json runs/probe_rating_gain.json
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

from charlstm.configuration_charlstm import NUM_RATINGS
from charlstm.detection.data import load_detector_data
from charlstm.detection.metrics import roc_auc
from charlstm.detection.probe import normalised
from charlstm.runfiles import write_json
from charlstm.tokenization_charlstm import star_token
from charlstm.training.report import cpu_name


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="directory written by `charlstm detector build-data`")
    parser.add_argument("--generator", default="charlstm/bundled/charlstm-yelp", help="default: %(default)s")
    parser.add_argument("--max-chars", type=int, default=400, help="characters read per text (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", metavar="PATH")
    return parser.parse_args()


@torch.no_grad()
def mean_log_probs(model, tokenizer, texts: list[str], rating: int, batch_size: int) -> np.ndarray:
    """Per text, the mean log-probability of its characters after `<bos>` and, for `rating` 1-5, its star token."""
    prefix = [tokenizer.bos_token_id] + ([tokenizer.convert_tokens_to_ids(star_token(rating))] if rating else [])
    means = np.zeros(len(texts))
    order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        rows = [prefix + tokenizer.convert_tokens_to_ids(list(texts[index])) for index in chunk]
        batch = tokenizer.pad({"input_ids": rows}, padding_side="left", return_tensors="pt")
        log_probs = model(**batch).logits[:, :-1].log_softmax(-1)
        per_character = log_probs.gather(-1, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)
        for row, index in enumerate(chunk):
            means[index] = per_character[row, -len(texts[index]) :].mean().item()
    return means


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
    texts = [text[: args.max_chars] for text in normalised([row["text"] for row in rows])]
    labels = np.array([int(row["label"]) for row in rows])
    temperatures = np.array([row["temperature"] or 0.0 for row in rows])
    by_rating = np.stack([mean_log_probs(model, tokenizer, texts, rating, args.batch_size)
                          for rating in range(NUM_RATINGS)], axis=1)  # rating 0: none
    unrated, gain = by_rating[:, 0], by_rating[:, 1:].max(1) - by_rating[:, 0]
    regression = make_pipeline(StandardScaler(), PolynomialFeatures(2), LogisticRegression(max_iter=2000))
    both = cross_val_predict(regression, np.stack([unrated, gain], axis=1), labels, cv=5, method="decision_function")

    rows_out = []
    groups = [("all", np.ones(len(rows), dtype=bool))]
    groups += [(f"temperature {t:g}", (labels == 0) | (temperatures == t))
               for t in sorted(set(temperatures[labels == 1].tolist()))]
    for name, chosen in groups:
        rows_out.append({"texts": name, "human": int((labels[chosen] == 0).sum()),
                         "machine": int((labels[chosen] == 1).sum()),
                         **{feature: roc_auc(labels[chosen].tolist(), values[chosen].tolist())
                            for feature, values in (("unrated", unrated), ("gain", gain), ("both", both))}})
    print(f"CPU: {cpu_name()}; {len(rows)} texts of {own}, first {args.max_chars} characters; ROC-AUC")
    print(f"{'texts':18s} {'human':>6s} {'machine':>8s} {'unrated':>8s} {'gain':>8s} {'both':>8s}")
    for row in rows_out:
        print(f"{row['texts']:18s} {row['human']:6d} {row['machine']:8d} {row['unrated']:8.3f} {row['gain']:8.3f} "
              f"{row['both']:8.3f}")
    if args.json:
        write_json(args.json, {"generator": args.generator, "data": args.data, "max_chars": args.max_chars,
                               "cpu": cpu_name(), "seconds": round(time.perf_counter() - started, 1),
                               "rows": rows_out})
    return 0


if __name__ == "__main__":
    sys.exit(main())
