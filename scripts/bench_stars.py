"""Does the rating a user asks for show? Star fidelity of a star-conditioned generator (issue 28), side by side with
real reviews, and what else a user meets at the start of a review.

- star fidelity: a word n-gram sentiment classifier (TF-IDF of words and word pairs, logistic regression; positive =
  4-5 stars, negative = 1-2) trained on the model's own training reviews scores `--num` generated reviews per
  requested rating and the same number of real held-out reviews of that rating cut to the same length: the share
  called negative and positive, and the mean P(positive); for each `--guidance` (classifier-free guidance towards
  the rating, 1 = none), with the share of the written words that occur in the training reviews beside it (what
  a strong guidance costs in spelling).
- rating by likelihood: the generator's P(stars | review) by Bayes' rule (uniform prior, `charlstm rate`) on
  `--rate-reviews` held-out reviews per rating: accuracy on 1 vs 5 stars and over all five, beside a word n-gram
  rating classifier (five classes) trained on the same training reviews; and the cross-entropy of the true rating.
- review starts: the share of `--unconditioned` samples written with no prompt and no rating that start like a
  review (a capital letter or a digit, no leading space), and the share of them cut for length; beside them the
  same from `<bos>` alone, with no star token: what `charlstm generate` did before it drew a rating, and what
  `pipeline` or `model.generate` given no star token still do.
- held-out bits per character, overall and per rating, on the first `--eval-reviews` held-out reviews
  (`charlstm eval --max-reviews`).

`--parts` picks some of them (e.g. `--parts rating,bpc` for a run whose sampling is not in question).

The held-out reviews are those the model's training_log.json names (dataset, validation_fraction, seed), as
`charlstm.training.data.load_reviews` reproduces them. Needs scikit-learn (the `bench` extra).

    python scripts/bench_stars.py --model charlstm/bundled/charlstm-yelp --num 100 --json bench_stars.json
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import torch

from charlstm.generation.rating import RATINGS, star_probabilities
from charlstm.generation.sampling import load_generator
from charlstm.generation.settings import GenerationSettings, check_settings
from charlstm.loading import model_source
from charlstm.runfiles import TRAINING_LOG, write_json
from charlstm.training.data import load_reviews

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 10  # reviews written per generate call


def ngram_classifier(texts: list[str], labels: list[int]):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    classifier = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=200_000, sublinear_tf=True),
        LogisticRegression(max_iter=2000, C=4.0),
    )
    return classifier.fit(texts, labels)


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def sentiment_row(classifier, texts: list[str], known_words: set[str]) -> dict:
    positive = classifier.predict_proba(texts)[:, list(classifier.classes_).index(1)]
    words = [word for text in texts for word in words_of(text)]
    return {"negative": round(float(np.mean(positive < 0.5)), 3),
            "positive": round(float(np.mean(positive >= 0.5)), 3),
            "mean_p_positive": round(float(np.mean(positive)), 3),
            "known_words": round(float(np.mean([word in known_words for word in words])), 3), "count": len(texts)}


def generated_reviews(generator, stars, count: int, options, guidance: float = 1.0) -> list:
    reviews = []
    for start in range(0, count, BATCH):
        settings = check_settings(GenerationSettings(
            stars=stars, num_reviews=min(BATCH, count - start), temperature=options.temperature,
            max_new_tokens=options.max_new_tokens, seed=options.seed + start + 1000 * (stars or 0), guidance=guidance,
        ))
        reviews += generator.write(settings)
    return reviews


def by_rating(dataset, per_rating: int) -> dict[int, list[str]]:
    stars = np.asarray(dataset["stars"])
    return {rating: [dataset[int(index)]["text"] for index in np.flatnonzero(stars == rating)[:per_rating]]
            for rating in RATINGS}


def rating_by_likelihood(generator, ngram_rating, held_out: dict[int, list[str]]) -> dict:
    truth, likelihood, ngram = [], [], []
    for rating, texts in held_out.items():
        for text in texts:
            truth.append(rating)
            likelihood.append(star_probabilities(generator.model, generator.tokenizer, text))
            ngram.append(ngram_rating.predict_proba([text])[0])
    truth, likelihood, ngram = np.array(truth), np.array(likelihood), np.array(ngram)
    ngram_columns = [list(ngram_rating.classes_).index(rating) for rating in RATINGS]
    ngram = ngram[:, ngram_columns]
    extremes = (truth == 1) | (truth == 5)

    def accuracy(probabilities):
        five_way = float(np.mean(probabilities.argmax(axis=1) + 1 == truth))
        one_vs_five = probabilities[extremes][:, [0, 4]].argmax(axis=1) * 4 + 1
        cross_entropy = float(-np.mean(np.log(np.maximum(probabilities[np.arange(len(truth)), truth - 1], 1e-12))))
        return {"five_way": round(five_way, 3), "one_vs_five": round(float(np.mean(one_vs_five == truth[extremes])), 3),
                "cross_entropy": round(cross_entropy, 3)}

    return {"reviews": int(len(truth)), "generator_likelihood": accuracy(likelihood),
            "ngram_classifier": accuracy(ngram)}


def starts_like_a_review(text: str) -> bool:
    return bool(text) and (text[0].isupper() or text[0].isdigit())


def bos_only_reviews(generator, count: int, options) -> tuple[list[str], list[bool]]:
    """Samples from `<bos>` alone, no rating drawn (the generator's own sampling on a one-token prompt); cut or not."""
    texts, cut = [], []
    for start in range(0, count, BATCH):
        settings = check_settings(GenerationSettings(num_reviews=min(BATCH, count - start), seed=options.seed + start,
                                                     temperature=options.temperature,
                                                     max_new_tokens=options.max_new_tokens))
        ids = torch.tensor([[generator.tokenizer.bos_token_id]], device=generator.model.device)
        output = generator._run(ids, settings, threading.Event())[:, 1:]
        texts += generator.tokenizer.batch_decode(output, skip_special_tokens=True)
        cut += [bool((row != generator.tokenizer.eos_token_id).all()) for row in output]
    return texts, cut


def start_figures(texts: list[str], cut: list[bool]) -> dict:
    return {
        "samples": len(texts),
        "start_like_a_review": round(float(np.mean([starts_like_a_review(text) for text in texts])), 3),
        "start_with_a_space": round(float(np.mean([text[:1].isspace() for text in texts])), 3),
        "cut_for_length": round(float(np.mean(cut)), 3),
        "examples": [text[:80] for text in texts[:5]],
    }


def held_out_bpc(model: str, options) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "eval.json")
        command = [sys.executable, "-m", "charlstm.cli", "eval", "--model", model, "--max-reviews",
                   str(options.eval_reviews), "--json", path, "--dataset", options.dataset]
        # Run from this checkout: `python -m` imports the package of its working directory first.
        subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True)
        with open(path, encoding="utf-8") as handle:
            report = json.load(handle)
    return {"reviews": report["eval_reviews"], "overall": round(report["eval_bpc"], 4),
            "per_rating": {rating: round(value, 4) for rating, value in (report["eval_bpc_per_star"] or {}).items()}}


PARTS = ("fidelity", "starts", "rating", "bpc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a star-conditioned generator directory (default: the bundled model)")
    parser.add_argument("--dataset", help="its dataset (default: the one its training_log.json names)")
    parser.add_argument("--data-root", default=REPO_ROOT,
                        help="directory a relative dataset path in the training log is relative to")
    parser.add_argument("--num", type=int, default=100, help="generated reviews per requested rating")
    parser.add_argument("--max-new-tokens", type=int, default=300)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--guidance", default=f"1,{GenerationSettings().guidance:g}",
                        help="guidance values compared, comma-separated (default: none and the package's default)")
    parser.add_argument("--rate-reviews", type=int, default=60, help="held-out reviews per rating rated by likelihood")
    parser.add_argument("--unconditioned", type=int, default=40, help="samples with no prompt and no rating")
    parser.add_argument("--eval-reviews", type=int, default=500, help="held-out reviews for bits per character")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"what to measure, comma-separated ({', '.join(PARTS)})")
    parser.add_argument("--json", metavar="PATH")
    options = parser.parse_args()
    parts = set(options.parts.split(","))
    if not parts <= set(PARTS):
        parser.error(f"--parts: unknown {', '.join(sorted(parts - set(PARTS)))} (choose from {', '.join(PARTS)})")
    torch.set_num_threads(1)
    started = time.time()

    model = model_source(options.model)
    with open(os.path.join(model, TRAINING_LOG), encoding="utf-8") as handle:
        log = json.load(handle)
    dataset = options.dataset or log["dataset"]
    if not os.path.isabs(dataset) and not os.path.exists(dataset):
        dataset = os.path.join(options.data_root, dataset)
    options.dataset = dataset = os.path.abspath(dataset) if os.path.exists(dataset) else dataset
    reviews = load_reviews(dataset, log.get("text_column", "text"), log.get("label_column"), need_stars=True,
                           held_out_split=log.get("eval_split"), validation_fraction=log["validation_fraction"],
                           seed=log["seed"])
    train_texts, train_stars = reviews.train["text"], reviews.train["stars"]
    fidelity, starts, rating, bpc = {}, None, None, None
    length = options.max_new_tokens
    if parts & {"fidelity", "starts"}:
        generator = load_generator(model)
    if "fidelity" in parts:
        polar = [index for index, stars in enumerate(train_stars) if stars != 3]
        sentiment = ngram_classifier([train_texts[i] for i in polar], [int(train_stars[i] >= 4) for i in polar])
        real = by_rating(reviews.held_out, options.num)
        known_words = {word for text in train_texts for word in words_of(text)}
        real_rows = {stars: sentiment_row(sentiment, [text[:length] for text in real[stars]], known_words)
                     for stars in RATINGS}
        for guidance in sorted({float(value) for value in options.guidance.split(",")}):
            fidelity[f"{guidance:g}"] = rows = {}
            for stars in RATINGS:
                written = generated_reviews(generator, stars, options.num, options, guidance)
                rows[str(stars)] = {"generated": sentiment_row(sentiment, [review.text for review in written],
                                                               known_words), "real": real_rows[stars]}
                print(f"guidance {guidance:g}, {stars}*: {rows[str(stars)]}", flush=True)
    if "starts" in parts:
        unconditioned = generated_reviews(generator, None, options.unconditioned, options)
        starts = start_figures([review.text for review in unconditioned], [review.cut for review in unconditioned])
        starts["from_bos_alone"] = start_figures(*bos_only_reviews(generator, options.unconditioned, options))
        print(f"unconditioned: {starts}", flush=True)
    if "rating" in parts:
        ngram_rating = ngram_classifier(train_texts, list(train_stars))
        rating = rating_by_likelihood(load_generator(model, int8=False), ngram_rating,
                                      by_rating(reviews.held_out, options.rate_reviews))
        print(f"rating by likelihood: {rating}", flush=True)
    if "bpc" in parts:
        bpc = held_out_bpc(model, options)
    report = {
        "model": model, "dataset": dataset, "held_out_reviews": len(reviews.held_out),
        "settings": {"num": options.num, "max_new_tokens": length, "temperature": options.temperature,
                     "guidance": sorted(fidelity), "parts": sorted(parts),
                     "rate_reviews_per_rating": options.rate_reviews, "seed": options.seed},
        "star_fidelity": fidelity, "rating_by_likelihood": rating, "unconditioned_starts": starts,
        "held_out_bpc": bpc, "minutes": round((time.time() - started) / 60, 1),
    }
    if fidelity:
        print(f"\n{'guidance':>8} {'rating':>6} | {'generated: neg':>14} {'pos':>5} {'P(pos)':>6} {'words':>5} | "
              f"{'real: neg':>9} {'pos':>5} {'P(pos)':>6} {'words':>5}")
    for guidance, rows in fidelity.items():
        for stars, row in rows.items():
            g, r = row["generated"], row["real"]
            print(f"{guidance:>8} {stars:>6} | {g['negative']:14.2f} {g['positive']:5.2f} {g['mean_p_positive']:6.2f} "
                  f"{g['known_words']:5.3f} | {r['negative']:9.2f} {r['positive']:5.2f} {r['mean_p_positive']:6.2f} "
                  f"{r['known_words']:5.3f}")
    for name in ("generator_likelihood", "ngram_classifier") if rating else ():
        row = rating[name]
        print(f"rating accuracy, {name}: 1 vs 5 {row['one_vs_five']:.3f}, 5-way {row['five_way']:.3f}, "
              f"cross-entropy {row['cross_entropy']:.3f}")
    sampled = (("with a drawn rating", starts), ("from <bos> alone", starts["from_bos_alone"])) if starts else ()
    for name, row in sampled:
        print(f"unconditioned samples {name}: start like a review {row['start_like_a_review']:.2f}, "
              f"with a space {row['start_with_a_space']:.2f}; cut for length {row['cut_for_length']:.2f}")
    if bpc:
        print(f"held-out bpc ({bpc['reviews']} reviews): {bpc['overall']}; per rating {bpc['per_rating']}")
    if options.json:
        write_json(options.json, report)


if __name__ == "__main__":
    main()
