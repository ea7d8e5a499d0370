"""Quality at equal budget: `charlstm train`'s packed blocks against the IBM code pattern's training recipe.

- packed blocks (charlstm train): reviews framed `<bos> <Nstar> text <eos>`, cut into blocks of seq_len + 1
  characters; every character of a block is predicted from the ones before it.
- IBM windows: windows of 256 characters taken every 3 characters of the same framed text; only the character
  after each window is predicted (the X/y arrays of the IBM "generate fake reviews" notebook).

Same model (`small` preset, same initial weights), same batch size, optimiser and learning-rate schedule (which
follows the budget), same Trainer, same wall-clock budget; both are then measured on the same held-out reviews
(2% of the train split, seed 0: the bundled model's held-out part) with the same bits-per-character evaluation.

    python scripts/compare_ibm_recipe.py --minutes 5 --json compare_ibm_recipe.json
"""

import argparse
import json
import tempfile

import numpy as np
import torch

from charlstm.cli import build_parser
from charlstm.training.data import IGNORE_INDEX, framed_stream
from charlstm.training.trainer import make_trainer, prepare_run

WINDOW, STEP = 256, 3


class NextCharacterWindows(torch.utils.data.Dataset):
    """Window i: characters [3i, 3i + 256) as input, labelled only with the character that follows."""

    def __init__(self, ids: np.ndarray, labels: np.ndarray, window: int = WINDOW, step: int = STEP):
        self.ids, self.labels, self.window, self.step = ids, labels, window, step

    def __len__(self) -> int:
        return (len(self.ids) - self.window - 1) // self.step + 1

    def __getitem__(self, index: int) -> dict:
        start = index * self.step
        # window + 1 ids: the model shifts labels, so the label at position `window` is read from the logits
        # after the first `window` characters.
        input_ids = torch.from_numpy(self.ids[start : start + self.window + 1].astype(np.int64))
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        labels[-1] = int(self.labels[start + self.window])
        return {"input_ids": input_ids, "labels": labels}


def train_for_budget(run, train_data, predicted_per_example: int, minutes: float) -> dict:
    trainer = make_trainer(run.model, run.tokenizer, run.training_args, train_data, run.eval_blocks,
                           max_minutes=minutes)
    result = trainer.train()
    # The budget ends with an evaluation of the held-out blocks: the weights the budget bought.
    final = next(entry for entry in reversed(trainer.state.log_history) if "eval_bpc" in entry)
    steps = trainer.state.global_step
    return {
        "held_out_bpc": round(final["eval_bpc"], 4),
        "steps": steps,
        "train_minutes": round(result.metrics["train_runtime"] / 60, 2),
        "characters_predicted_in_training": steps * run.training_args.per_device_train_batch_size
        * predicted_per_example,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="../shared/data/yelp_reviews.jsonl")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-clock training budget of each side")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", metavar="PATH")
    options = parser.parse_args()

    results = {}
    for recipe in ("packed blocks (charlstm train)", "IBM windows (256, step 3)"):
        args = build_parser().parse_args([
            "train", "--dataset", options.dataset, "--condition-on-stars", "--validation-fraction", "0.02",
            "--preset", "small", "--seq-len", str(WINDOW), "--batch-size", str(options.batch_size),
            "--max-minutes", str(options.minutes), "--eval-steps", str(10**9), "--logging-steps", "10",
            "--output-dir", tempfile.mkdtemp(prefix="compare-ibm-"), "--overwrite",
        ])
        run = prepare_run(args)  # same seed: the same initial weights and held-out part on both sides
        run.training_args.disable_tqdm = True
        if recipe.startswith("packed"):
            results[recipe] = train_for_budget(run, run.train_blocks, WINDOW, options.minutes)
        else:
            windows = NextCharacterWindows(*framed_stream(run.reviews.train, run.tokenizer, True))
            results[recipe] = train_for_budget(run, windows, 1, options.minutes)

    print(f"held-out bpc after {options.minutes:g} minutes of training, small preset "
          f"{run.model.config.hidden_sizes}, batch {options.batch_size}, {torch.get_num_threads()} CPU thread(s)")
    print(f"{'recipe':<34}{'held-out bpc':>14}{'steps':>8}{'chars predicted':>18}")
    for recipe, row in results.items():
        characters = row["characters_predicted_in_training"]
        print(f"{recipe:<34}{row['held_out_bpc']:>14.4f}{row['steps']:>8}{characters:>18,}")
    if options.json:
        with open(options.json, "w", encoding="utf-8") as handle:
            json.dump({"settings": vars(options), "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
