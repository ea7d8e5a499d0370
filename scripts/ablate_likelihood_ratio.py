"""Ablation: does the likelihood ratio of two fine-tuned copies of the generator tell machine from human text?

The idea (issue 15): a second model learns what the fakes look like through the first. Two copies of the generator
are fine-tuned as language models for the same number of steps, one on the machine-written texts of the detector
data's train split and one on its human texts (so both see the same domains, and the ratio cannot learn "Amazon" or
"Yelp" instead of style). A text's score is how much likelier the machine copy finds it than the human copy, per
character. No classifier is trained on top, so it is a generative classifier with two parameters' worth of fitting:
the question is whether it transfers better than the fine-tuned detector to a generator it never saw.

Folds: "all" trains the copies on every source; "without SOURCE" trains them without that labelled source and tests
on its test texts (leave-one-source-out, beside the detector's figure for the same fold in the README). On the "all"
fold the table also has the detector, the generator's own bits per character, and the detector's logit and the ratio
stacked in one out-of-fold logistic regression on the test texts (5 folds, stratified by source and label).
Fine-tuned copies are saved under `--output-dir` and reused by a rerun.

    python scripts/ablate_likelihood_ratio.py --data runs/detector-data --json runs/ratio.json
"""

import argparse
import math
import sys
import time
from pathlib import Path

import datasets
import torch
from eval_detector import out_of_fold_probabilities  # scripts/ is on the path of a script run from it
from transformers import TrainingArguments

from charlstm.detection.data import load_detector_data, without_sources
from charlstm.detection.detector import Detector
from charlstm.detection.metrics import auc_interval, roc_auc
from charlstm.detection.scoring import score_texts
from charlstm.detection.settings import MACHINE
from charlstm.loading import GENERATOR, load_model, model_source
from charlstm.runfiles import write_json
from charlstm.training.data import pack_reviews
from charlstm.training.trainer import make_trainer

CROP = 400  # also scored on each text's first CROP characters, so length cannot decide


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="directory written by `charlstm detector build-data`")
    parser.add_argument("--generator", help="the generator the copies start from (default: the bundled model)")
    parser.add_argument("--detector", help="detector for the comparison rows (default: the bundled detector)")
    parser.add_argument("--output-dir", default="runs/ratio", help="where the fine-tuned copies are kept")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per copy (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--folds", default="all,sources",
                        help="'all', 'sources' (one left-out fold per labelled source), or both (default)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    return parser.parse_args()


def fine_tuned_copy(generator: str, texts: list[str], output_dir: Path, args):
    """The generator fine-tuned as a language model on `texts` (loaded from `output_dir` when a rerun finds it)."""
    if (output_dir / "config.json").is_file():
        model, tokenizer, _ = load_model(str(output_dir), GENERATOR)
        return model, tokenizer
    model, tokenizer, _ = load_model(generator, GENERATOR)
    model.train()
    # Unconditioned framing: most labelled texts have no star rating. The copies are only ever compared with each
    # other, so both pay the same for starting from <bos> instead of a star token.
    blocks = pack_reviews(datasets.Dataset.from_dict({"text": texts}), tokenizer, args.seq_len,
                          condition_on_stars=False)
    training_args = TrainingArguments(
        output_dir=str(output_dir / "checkpoints"), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, lr_scheduler_type="cosine", warmup_steps=max(1, args.steps // 20),
        max_grad_norm=1.0, logging_steps=max(1, args.steps // 10), save_strategy="no", report_to="none",
        use_cpu=not torch.cuda.is_available(), disable_tqdm=True, seed=0,
    )
    started = time.perf_counter()
    make_trainer(model, tokenizer, training_args, blocks, None).train()
    print(f"  {output_dir.name}: {len(texts)} texts, {args.steps} steps in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return model.eval(), tokenizer


def mean_log_probs(model, tokenizer, texts: list[str]) -> tuple[list[float], list[float | None]]:
    """Per text, the mean natural-log probability per character: whole, and on its first CROP characters."""
    whole, cropped = [], []
    for scores in score_texts(model, tokenizer, texts):
        whole.append(sum(scores.log_probs) / len(scores.log_probs))
        head = scores.log_probs[:CROP]
        cropped.append(sum(head) / CROP if len(head) == CROP else None)
    return whole, cropped


def ratio_scores(generator: str, train, test, output_dir: Path, args) -> tuple[list[float], list[float | None]]:
    """The machine copy's mean log-probability minus the human copy's, for each test text (whole, cropped)."""
    scores = []
    for name, label in (("machine", MACHINE), ("human", 1 - MACHINE)):
        texts = [text for text, row_label in zip(train["text"], train["label"]) if row_label == label]
        model, tokenizer = fine_tuned_copy(generator, texts, output_dir / name, args)
        scores.append(mean_log_probs(model, tokenizer, test["text"]))
    (machine_whole, machine_crop), (human_whole, human_crop) = scores
    whole = [m - h for m, h in zip(machine_whole, human_whole)]
    crop = [None if m is None else m - h for m, h in zip(machine_crop, human_crop)]
    return whole, crop


def auc_row(labels: list[int], scores: list[float | None]) -> dict | None:
    kept = [(label, score) for label, score in zip(labels, scores) if score is not None]
    if len({label for label, _ in kept}) < 2:
        return None
    labels, scores = zip(*kept)
    low, high = auc_interval(labels, scores)
    return {"roc_auc": roc_auc(labels, scores), "interval": [low, high], "texts": len(labels)}


def all_sources_fold(data, args) -> list[dict]:
    test = data["test"]
    labels, sources = test["label"], test["source"]
    ratio, ratio_crop = ratio_scores(args.generator, data["train"], test, Path(args.output_dir) / "all", args)
    detections = Detector(args.detector).predict(test["text"])
    probabilities = [min(max(detection.machine_probability, 1e-6), 1 - 1e-6) for detection in detections]
    detector_logit = [math.log(p / (1 - p)) for p in probabilities]
    model, tokenizer, _ = load_model(args.generator, GENERATOR)
    # Lower bits per character = likelier = more machine-like (the one-sided zero-shot signal).
    generator_view = mean_log_probs(model, tokenizer, test["text"])[0]
    strata = [f"{source}/{label}" for source, label in zip(sources, labels)]
    stack = out_of_fold_probabilities([detector_logit, ratio], labels, strata)
    methods = {"ratio": ratio, f"ratio_{CROP}": ratio_crop, "generator_log_prob": generator_view,
               "detector": detector_logit, "detector_plus_ratio": stack}
    rows = []
    for source in ["all", *sorted(set(sources))]:
        keep = [i for i, name in enumerate(sources) if source in ("all", name)]
        kept_labels = [labels[i] for i in keep]
        rows.append({"fold": "all", "source": source,
                     **{name: auc_row(kept_labels, [scores[i] for i in keep]) for name, scores in methods.items()}})
    return rows


def left_out_fold(data, source: str, args) -> dict:
    kept = without_sources(data, [source])
    test = data["test"].filter(lambda row: row["source"] == source)
    folder = Path(args.output_dir) / f"without-{source.split('.')[0]}"
    ratio, ratio_crop = ratio_scores(args.generator, kept["train"], test, folder, args)
    return {"fold": f"without {source}", "source": source, "ratio": auc_row(test["label"], ratio),
            f"ratio_{CROP}": auc_row(test["label"], ratio_crop)}


def main() -> int:
    args = parse_args()
    torch.manual_seed(0)
    data = load_detector_data(args.data, needs=("train", "test"))
    args.generator = model_source(args.generator, GENERATOR)
    folds = args.folds.split(",")
    rows = all_sources_fold(data, args) if "all" in folds else []
    if "sources" in folds:
        own = Path(args.generator.rstrip("/")).name  # the `source` of the generator's own rows
        for source in sorted(set(data["test"]["source"]) - {own}):
            rows.append(left_out_fold(data, source, args))
    print_table(rows)
    if args.json:
        write_json(args.json, {"steps": args.steps, "batch_size": args.batch_size, "seq_len": args.seq_len,
                               "learning_rate": args.learning_rate, "rows": rows})
    return 0


def print_table(rows: list[dict]) -> None:
    methods = ["ratio", f"ratio_{CROP}", "generator_log_prob", "detector", "detector_plus_ratio"]
    print(f"{'fold':<44} {'source':<36} " + " ".join(f"{name:>19}" for name in methods))
    for row in rows:
        cells = []
        for name in methods:
            figure = row.get(name)
            cells.append(f"{figure['roc_auc']:>19.3f}" if figure else f"{'':>19}")
        print(f"{row['fold']:<44} {row['source']:<36} " + " ".join(cells))


if __name__ == "__main__":
    sys.exit(main())
