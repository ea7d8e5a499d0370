"""Which detector transfers to generators it never saw: heads on the frozen generator's features against the
character n-gram baseline, with whole generator families and whole labelled sets held out.

The data: every labelled set in `--labelled-dir` (rows: text, label, generator, domain, source), the generator's own
samples (temperatures 0.6-1.2, top-k and top-p variants) and human reviews it never trained on (its held-out split,
as its training_log.json names it). Each set is capped and balanced: at most `--per-side` human and machine texts,
the machine ones shared equally between its generators and drawn in the domain shares of its human texts, so that
no set, generator or domain dominates. Texts are normalised as a detector's tokenizer reads them
(`normalize_text`) and cut to equal-length crops (their first 100, 200, 400 characters; shorter texts are left out
of a length), so formatting and length cannot decide.

Features, computed once with the frozen generator and cached in `--cache`: the mean top-layer state (what
`charlstm detector train --frozen` ships), the mean state of every layer, and the generator's view of the text
(log-likelihood, entropy, ranks, Fast-DetectGPT's curvature: `charlstm.detection.probe`). Methods, each a logistic
regression: `ngram` (character 1-4-gram TF-IDF, scikit-learn), `words` (word 1-2-gram TF-IDF: a word is a run of
letters, digits and underscores, any other character but a space a word by itself, as the shipped detector's
`CharLSTMNgramScore` counts them), `likelihood` (the statistics and their squared distances from human texts'), `top`
(mean top-layer state), `layers` (every layer's mean), `layers+lik.` (both); and the combinations `ngram+top`,
`words+top`, `ngram+words+top`, `ngram+layers+lik.`, `ngram+lik.` and `ngram+top+lik.`, no further fit: the parts'
margins, each standardised over the scored texts, averaged.

Splits (`charlstm.detection.families`): leave-one-family-out (every text of a generator family is tested, none
trained on; half of the human texts of the sets it appears in are tested beside them), leave-one-set-out (a whole
file), and in-distribution (half of every set's groups tested). A text and its rewrites are always on one side. Each
AUC has a bootstrap interval (`auc_interval`). Shortcut checks: the AUC of raw length, newline count, curly quotes
and characters outside the generator's vocabulary alone, per set.

    python scripts/ablate_detectors.py --json runs/ablate_detectors.json
"""

import argparse
import hashlib
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression

from charlstm.detection.data import held_out_reviews, machine_rows, own_source
from charlstm.detection.families import (
    HUMAN_FAMILY,
    balanced_selection,
    describe_set,
    generator_family,
    group_split,
    held_out_split,
    text_groups,
)
from charlstm.detection.metrics import auc_interval, roc_auc
from charlstm.detection.probe import FrozenFeatures, LinearHead, frozen_features, normalised, quadratic
from charlstm.detection.settings import SamplingGrid
from charlstm.generation.sampling import load_generator

# Combinations: no further fit, each part's margins standardised over the scored texts (no labels), averaged.
COMBINED = {"ngram+top": ("ngram", "top"), "words+top": ("words", "top"), "ngram+words+top": ("ngram", "words", "top"),
            "ngram+layers+lik.": ("ngram", "layers+lik."), "ngram+lik.": ("ngram", "likelihood"),
            "ngram+top+lik.": ("ngram", "top", "likelihood")}
METHODS = ("ngram", "words", "likelihood", "top", "layers", "layers+lik.", *COMBINED)
OWN_GRID = SamplingGrid(temperatures=(0.6, 0.8, 1.0, 1.2), top_ks=(0, 20), top_ps=(1.0, 0.9), max_new_tokens=(600,))
CURLY = "\u2018\u2019\u201c\u201d"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", default="charlstm/bundled/charlstm-yelp", help="default: %(default)s")
    parser.add_argument("--labelled-dir", default="../shared/data/detection", help="default: %(default)s")
    parser.add_argument("--per-side", type=int, default=400,
                        help="most human and most machine texts per set (default: %(default)s)")
    parser.add_argument("--own-count", type=int, default=400,
                        help="the generator's own samples, and as many of its held-out reviews (default: %(default)s)")
    parser.add_argument("--lengths", default="100,200,400", help="crop lengths (default: %(default)s)")
    parser.add_argument("--methods", default=",".join(METHODS), help="of %(default)s")
    parser.add_argument("--l2", type=float, default=1e-2, help="L2 weight of the feature heads (default: %(default)s)")
    parser.add_argument("--resamples", type=int, default=200, help="bootstrap resamples per AUC (default: %(default)s)")
    parser.add_argument("--min-test", type=int, default=30, help="fewest texts of each kind a row needs")
    parser.add_argument("--cache", default="runs/ablation-cache", help="samples and features (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    args.lengths = tuple(int(part) for part in args.lengths.split(","))
    args.methods = tuple(args.methods.split(","))
    if set(args.methods) - set(METHODS):
        parser.error(f"--methods takes names from {', '.join(METHODS)}")
    return args


def cached_json(path: Path, make):
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    value = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")
    return value


def own_rows(args, generator) -> list[dict]:
    """The generator's held-out human reviews and its own samples, as labelled rows."""
    name = own_source(generator)

    def samples():
        rows = machine_rows(generator, args.own_count, OWN_GRID, min_chars=100, batch_size=32, seed=args.seed)
        return [{"text": row["text"], "temperature": row["temperature"], "top_k": row["top_k"],
                 "top_p": row["top_p"]} for row in rows]

    written = cached_json(Path(args.cache) / f"samples-{name}-{args.own_count}-{args.seed}.json", samples)
    reviews = held_out_reviews(generator.source)
    human = [text for text in reviews.held_out["text"] if len(text) >= 100]
    human = random.Random(args.seed).sample(human, args.own_count)
    rows = [{"text": text, "label": 0, "generator": "human", "domain": "yelp", "source": name} for text in human]
    rows += [{"text": row["text"], "label": 1, "generator": name, "domain": "yelp", "source": name,
              "temperature": row["temperature"]} for row in written]
    return rows


def labelled_rows(args, trained_on: frozenset[str]) -> list[dict]:
    """Every labelled set's rows of 100+ characters once normalised, less human ones the generator trained on."""
    rows = []
    for path in sorted(Path(args.labelled_dir).glob("*.jsonl")):
        for line in path.open(encoding="utf-8"):
            row = json.loads(line)
            if (isinstance(row.get("text"), str) and len(normalised([row["text"]])[0]) >= 100
                    and not (row["label"] == "human" and row["text"] in trained_on)):
                rows.append({**row, "source": path.name, "label": int(row["label"] == "machine")})
    return rows


def features_of(args, generator, texts: list[str]) -> FrozenFeatures:
    """The frozen features of `texts`, from the cache when the same texts and weights were seen before."""
    weights = Path(generator.source) / "model.safetensors"
    key = hashlib.sha256()
    key.update(f"{weights.stat().st_size}:{weights.stat().st_mtime_ns}:{args.lengths}".encode())
    for text in texts:
        key.update(text.encode() + b"\0")
    path = Path(args.cache) / f"features-{key.hexdigest()[:16]}.npz"
    if path.is_file():
        saved = np.load(path)
        return FrozenFeatures(*({k: saved[f"{kind}{k}"] for k in args.lengths} for kind in ("top", "layers", "lik")))
    started = time.perf_counter()
    features = frozen_features(generator.model, generator.tokenizer, texts, args.lengths)
    print(f"features of {len(texts)} texts: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"{kind}{k}": values[k] for kind, values in
                      (("top", features.top), ("layers", features.layers), ("lik", features.likelihood))
                      for k in args.lengths})
    return features


NGRAM_VIEWS = {  # method -> what it counts (hashed: nothing is fitted here, so every text's counts are computed once)
    "ngram": {"analyzer": "char", "ngram_range": (1, 4)},
    "words": {"analyzer": "word", "ngram_range": (1, 2), "token_pattern": r"(?u)\b\w+\b|[^\w\s]", "lowercase": False},
}


def ngram_counts(texts: list[str], length: int) -> dict:
    """Per n-gram method, the counts of each text's first `length` characters; the TF-IDF weights are fitted on each
    split's training texts."""
    return {method: HashingVectorizer(n_features=2**20, alternate_sign=False, norm=None, **view).transform(
        [text[:length] for text in texts]) for method, view in NGRAM_VIEWS.items()}


def scores_of(method: str, train: list[int], test: list[int], labels: np.ndarray, features: FrozenFeatures,
              counts, length: int, l2: float) -> np.ndarray:
    y = labels[train]
    if method in NGRAM_VIEWS:
        tfidf = TfidfTransformer(sublinear_tf=True).fit(counts[method][train])
        model = LogisticRegression(C=10.0, max_iter=1000).fit(tfidf.transform(counts[method][train]), y)
        return model.decision_function(tfidf.transform(counts[method][test]))
    humans = np.array(train)[y == 0]
    likelihood = features.likelihood[length]
    if method in ("likelihood", "layers+lik."):
        center = quadratic(likelihood, humans)  # centred on the training split's human texts only
    columns = {"likelihood": lambda: center, "top": lambda: features.top[length],
               "layers": lambda: features.layers[length],
               "layers+lik.": lambda: np.concatenate([features.layers[length], center], axis=1)}[method]()
    head = LinearHead.fit(columns[train], y.tolist(), l2=l2)
    return head.margins(columns[test])


def score(method, kind, train, test, in_distribution, labels, features, counts, length, args) -> np.ndarray:
    """`method`'s scores of the `test` texts; in distribution, one fit serves every set's rows."""
    if kind != "in distribution":
        return scores_of(method, train, test, labels, features, counts, length, args.l2)
    if method not in in_distribution:
        in_distribution[method] = scores_of(method, train, list(range(len(labels))), labels, features, counts,
                                            length, args.l2)
    return in_distribution[method][test]


def figure(labels: list[int], scores, resamples: int) -> dict:
    scores = [float(score) for score in scores]
    low, high = auc_interval(labels, scores, resamples=resamples)
    return {"roc_auc": roc_auc(labels, scores), "roc_auc_95ci": [low, high]}


def shortcut_checks(rows: list[dict], vocabulary: set[str]) -> list[dict]:
    """Per set, the AUC of one surface feature alone (machine above human when > 0.5)."""
    checks = []
    for source in sorted({row["source"] for row in rows}):
        mine = [row for row in rows if row["source"] == source]
        labels = [row["label"] for row in mine]
        surface = {
            "length": [len(row["text"]) for row in mine],
            "newlines": [row["text"].count("\n") for row in mine],
            "curly quotes": [sum(row["text"].count(char) for char in CURLY) for row in mine],
            "double spaces": [row["text"].count("  ") for row in mine],
            "outside vocabulary": [sum(char not in vocabulary for char in text) / len(text)
                                   for text in normalised([row["text"] for row in mine])],
            "normalised length": [len(text) for text in normalised([row["text"] for row in mine])],
        }
        checks.append({"set": source, **{name: roc_auc(labels, values) for name, values in surface.items()}})
    return checks


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    generator = load_generator(args.generator, int8=False)
    trained_on = frozenset(held_out_reviews(generator.source).train["text"])
    rows = balanced_selection(labelled_rows(args, trained_on), args.per_side, args.seed) + own_rows(args, generator)
    texts = normalised([row["text"] for row in rows])
    labels = np.array([row["label"] for row in rows])
    sources = [row["source"] for row in rows]
    own = frozenset({own_source(generator)})
    families = [HUMAN_FAMILY if row["label"] == 0 else generator_family(row["generator"], own) for row in rows]
    groups = text_groups(texts, [row.get("pair_id") for row in rows])
    print(f"{len(rows)} texts ({int(labels.sum())} machine) from {len(set(sources))} sets; "
          f"{len(set(groups))} groups, the largest {max(Counter(groups).values())} texts", file=sys.stderr)
    features = features_of(args, generator, texts)

    splits = []  # (kind, name, train, test)
    for family in sorted(set(families) - {HUMAN_FAMILY}):
        train, test = held_out_split([f == family for f in families], groups, labels.tolist(), sources,
                                     seed=args.seed)
        splits.append(("family out", family, train, test))
    for source in sorted(set(sources)):
        train, test = held_out_split([s == source for s in sources], groups, labels.tolist(), sources,
                                     seed=args.seed)
        splits.append(("set out", source, train, test))
    in_train, in_test = group_split(groups, 0.5, args.seed)
    for source in sorted(set(sources)):
        splits.append(("in distribution", source, in_train, [i for i in in_test if sources[i] == source]))

    results = []
    for length in args.lengths:
        counts = ngram_counts(texts, length)
        usable = ~np.isnan(features.top[length][:, 0])
        in_distribution = {}  # method -> scores of every text by the head fitted on the in-distribution train half
        for kind, name, train, test in splits:
            train = [i for i in train if usable[i]]
            test = [i for i in test if usable[i]]
            test_labels = labels[test].tolist()
            if min(test_labels.count(0), test_labels.count(1)) < args.min_test:
                continue
            row = {"split": kind, "held_out": name, "length": length, "human": test_labels.count(0),
                   "machine": test_labels.count(1), "train": len(train)}
            computed = {}
            for method in args.methods:
                if method in COMBINED:
                    parts = [computed[part] if part in computed else
                             score(part, kind, train, test, in_distribution, labels, features, counts, length, args)
                             for part in COMBINED[method]]
                    scores = sum((part - part.mean()) / (part.std() + 1e-12) for part in parts) / len(parts)
                else:
                    scores = score(method, kind, train, test, in_distribution, labels, features, counts, length, args)
                computed[method] = scores
                row[method] = figure(test_labels, scores, args.resamples)
            results.append(row)
            print_row(row, args.methods)
    checks = shortcut_checks(rows, set(generator.tokenizer.get_vocab()))
    print_checks(checks)
    report = {
        "generator": generator.source, "texts": len(rows), "machine_texts": int(labels.sum()),
        "per_set": {source: {"human": sum(1 for of, label in zip(sources, labels) if of == source and label == 0),
                             "machine": sum(1 for of, label in zip(sources, labels) if of == source and label == 1),
                             "description": describe_set(source)} for source in sorted(set(sources))},
        "per_family": dict(Counter(families)), "settings": {key: value for key, value in vars(args).items()
                                                             if key != "json"},
        "rows": results, "shortcuts": checks, "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"{report['seconds']:.0f} s", file=sys.stderr)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


HEADER_PRINTED = []


def print_row(row: dict, methods: tuple[str, ...]) -> None:
    if not HEADER_PRINTED:
        cells = " ".join(f"{method:>17}" for method in methods)
        print(f"{'split':<15} {'held out':<32} {'len':>4} {'hum.':>5} {'mach.':>5} {cells}")
        HEADER_PRINTED.append(True)
    cells = " ".join(f"{row[m]['roc_auc']:.3f} ({row[m]['roc_auc_95ci'][0]:.2f}-{row[m]['roc_auc_95ci'][1]:.2f})"
                     for m in methods)
    name = row["held_out"].removesuffix(".jsonl")
    print(f"{row['split']:<15} {name[:32]:<32} {row['length']:>4} {row['human']:>5} {row['machine']:>5} {cells}",
          flush=True)


def print_checks(checks: list[dict]) -> None:
    names = [key for key in checks[0] if key != "set"]
    print("\nshortcut checks: ROC-AUC of one surface feature alone, per set (raw text unless named normalised)")
    print(f"{'set':<32} " + " ".join(f"{name:>18}" for name in names))
    for check in checks:
        print(f"{check['set'].removesuffix('.jsonl')[:32]:<32} " + " ".join(f"{check[name]:>18.3f}" for name in names))


if __name__ == "__main__":
    sys.exit(main())
