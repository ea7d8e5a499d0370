"""Recipes for the generator at equal training time: held-out bpc of each after the same wall-clock budget.

Every recipe is `TrainConfig` fields on top of the `yelp` recipe (scripts/train_yelp.sh), trained one after another in
this process with the command's own preparation and Trainer (`prepare_run`, `make_trainer`), so what is measured
is what ships. The one exception is the IBM code pattern's recipe, which is not a `charlstm train` option: windows
of 256 characters taken every 3 characters of the same framed reviews, each labelled only with the character that
follows (the X/y arrays of the IBM "generate fake reviews" notebook), with today's model and optimiser.

Each recipe trains for the last `--report-minutes` of training time, its learning-rate schedule spanning that budget
(how `--max-minutes` works), and is evaluated when its clock passes each report time: the earlier figures are
points on the way, not what a shorter budget would give. Evaluations stop the clock. All recipes are measured on the
same held-out reviews (the first `--eval-reviews` of the 20% train_yelp.sh holds out), framed and cut into
256-character blocks that each start from zeros, as `charlstm eval` measures. chars/s counts the characters the loss
is taken on (one per window for the IBM recipe) per second of training.

    python scripts/compare_recipes.py --report-minutes 15 30 60 --json compare_recipes.json
"""

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import TrainerCallback

from charlstm.training.config import recipe_config
from charlstm.training.data import IGNORE_INDEX, framed_stream, pack_reviews
from charlstm.training.report import cpu_name
from charlstm.training.run import prepare_run
from charlstm.training.trainer import make_trainer

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASET = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data", "yelp_reviews.jsonl"))

# The recipe of the bundled model (scripts/train_yelp.sh), less its budget, threads and evaluation schedule, which
# this script sets.
TODAY = "yelp"
EVAL_SEQ_LEN = 256
IBM_WINDOW, IBM_STEP = 256, 3


@dataclass
class Recipe:
    name: str
    options: dict = field(default_factory=dict)  # TrainConfig fields set on top of TODAY
    threads: int = 1
    ibm_windows: bool = False


RECIPES = [
    Recipe("today"),
    Recipe("ibm-windows", ibm_windows=True),
    Recipe("carry-state", {"carry_state": True}),
    Recipe("batch-16", {"batch_size": 16}),
    Recipe("batch-64-seq-128", {"batch_size": 64, "seq_len": 128}),
    Recipe("linear-decay", {"lr_schedule": "linear"}),
    Recipe("wide-1x800", {"hidden_sizes": [800]}),
    Recipe("deep-3x384", {"hidden_sizes": [384, 384, 384]}),
    Recipe("two-threads", threads=2),
]


class NextCharacterWindows(torch.utils.data.Dataset):
    """Window i: characters [3i, 3i + 256) as input, labelled only with the character that follows."""

    def __init__(self, ids: np.ndarray, labels: np.ndarray, window: int = IBM_WINDOW, step: int = IBM_STEP):
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


class ReportTimes(TrainerCallback):
    """Asks for a held-out evaluation when the training clock passes each report time, and keeps what it measured."""

    def __init__(self, clock, minutes: list[float]):
        self.clock, self.pending, self.due, self.reports = clock, list(minutes), [], {}

    def on_step_end(self, args, state, control, **kwargs):
        passed = [minutes for minutes in self.pending if self.clock.elapsed_seconds >= 60.0 * minutes]
        if passed:
            self.pending = self.pending[len(passed):]
            self.due += passed
            control.should_evaluate = True

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        for minutes in self.due:
            self.reports[minutes] = {"bpc": round(metrics["eval_bpc"], 4), "step": state.global_step,
                                     "train_minutes": round(self.clock.elapsed_seconds / 60.0, 2)}
        self.due = []


def train_recipe(recipe: Recipe, options) -> dict:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix=f"compare-{recipe.name}-") as output:
        config = recipe_config(TODAY, dataset=options.dataset, **recipe.options, threads=recipe.threads,
                               max_minutes=options.report_minutes[-1], eval_steps=10**9, output_dir=output)
        run = prepare_run(config)
        run.training_args.disable_tqdm = True
        held_out = run.reviews.held_out.select(range(min(options.eval_reviews, len(run.reviews.held_out))))
        eval_blocks = pack_reviews(held_out, run.tokenizer, EVAL_SEQ_LEN, condition_on_stars=True,
                                   desc="packing held-out subset")
        train_data, predicted_per_example = run.train_blocks, config.seq_len
        if recipe.ibm_windows:
            train_data = NextCharacterWindows(*framed_stream(run.reviews.train, run.tokenizer, True)[:2])
            predicted_per_example = 1
        trainer = make_trainer(run.model, run.tokenizer, run.training_args, train_data, eval_blocks,
                               max_minutes=config.max_minutes)
        reports = ReportTimes(trainer.clock, options.report_minutes)
        trainer.add_callback(reports)
        # With the loss at a window's last character only, the gradients fade back along the window into denormal
        # floats, which a CPU handles very slowly (as in detector training): unflushed, one IBM step took ~20x
        # today's. Flushing them measures the recipe, not the CPU's denormal path; the other recipes run as shipped.
        torch.set_flush_denormal(recipe.ibm_windows)
        try:
            trainer.train()
        finally:
            torch.set_flush_denormal(False)
    steps, seconds = trainer.state.global_step, trainer.clock.elapsed_seconds
    return {
        "recipe": recipe.name,
        "options": recipe.options if not recipe.ibm_windows else [f"IBM windows {IBM_WINDOW}, step {IBM_STEP}"],
        "threads": recipe.threads,
        "num_parameters": run.model.num_parameters(),
        "characters_per_second": round(steps * config.batch_size * predicted_per_example / seconds, 1),
        "steps": steps,
        "train_minutes": round(seconds / 60.0, 2),
        # The machine's 1-minute load before and after: other processes slow a recipe down.
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "held_out_bpc": {f"{minutes:g}": reports.reports.get(minutes, {}).get("bpc")
                         for minutes in options.report_minutes},
        "reports": {f"{minutes:g}": report for minutes, report in reports.reports.items()},
    }


def print_table(results: list[dict], report_minutes: list[float]) -> None:
    times = [f"{minutes:g}" for minutes in report_minutes]
    print(f"{'recipe':<18}{'params':>10}{'threads':>8}{'chars/s':>9}{'steps':>7}"
          + "".join(f"{'bpc@' + time_ + 'min':>12}" for time_ in times))
    for row in results:
        bpc = "".join(f"{row['held_out_bpc'][time_]:>12.4f}" if row["held_out_bpc"][time_] is not None
                      else f"{'-':>12}" for time_ in times)
        print(f"{row['recipe']:<18}{row['num_parameters']:>10,}{row['threads']:>8}"
              f"{row['characters_per_second']:>9,.0f}{row['steps']:>7}{bpc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default=DATASET)
    parser.add_argument("--report-minutes", type=float, nargs="+", default=[15.0, 30.0, 60.0],
                        help="training minutes at which each recipe is evaluated; the last is its budget")
    parser.add_argument("--eval-reviews", type=int, default=500, help="held-out reviews evaluated (the first N)")
    parser.add_argument("--recipes", nargs="+", choices=[recipe.name for recipe in RECIPES],
                        default=[recipe.name for recipe in RECIPES])
    parser.add_argument("--json", metavar="PATH")
    options = parser.parse_args()
    if sorted(set(options.report_minutes)) != options.report_minutes or options.report_minutes[0] <= 0:
        parser.error("--report-minutes must be positive and increasing")

    settings = {"dataset": options.dataset, "report_minutes": options.report_minutes,
                "eval_reviews": options.eval_reviews, "eval_seq_len": EVAL_SEQ_LEN, "today": TODAY, "cpu": cpu_name(),
                "torch": torch.__version__, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    results = []
    for recipe in (recipe for recipe in RECIPES if recipe.name in options.recipes):
        results.append(train_recipe(recipe, options))
        print(f"--- {recipe.name}: {' '.join(results[-1]['options']) or 'scripts/train_yelp.sh settings'}, "
              f"{recipe.threads} thread(s)", flush=True)
        print_table(results, options.report_minutes)
        if options.json:  # after every recipe, so a long contest cut short keeps what it measured
            with open(options.json, "w", encoding="utf-8") as handle:
                json.dump({"settings": settings, "results": results}, handle, indent=2)
    print(f"\nheld-out bpc of the first {options.eval_reviews} held-out reviews at each training time, "
          f"{settings['cpu']}")
    print_table(results, options.report_minutes)


if __name__ == "__main__":
    main()
