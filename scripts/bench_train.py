"""Training speed: characters/second through `charlstm train` (its Trainer) against a bare PyTorch loop.

Both sides train the same model from the same initial weights on the same packed blocks, with the same batch size,
AdamW, gradient clipping and cosine schedule. They alternate in rounds (the machine is shared and noisy, so the
ratio is measured side by side); a step's time is the wall time between two consecutive step ends, so it holds
everything the loop does (batching, forward, backward, clipping, optimiser, schedule, logging). The first
`--warmup` steps of each round are dropped; figures are medians over all rounds.

    python scripts/bench_train.py --json bench_train.json
"""

import argparse
import json
import math
import statistics
import tempfile
import time

import torch
from torch.utils.data import DataLoader
from transformers import TrainerCallback

from charlstm import CharLSTMForCausalLM
from charlstm.training.config import TrainConfig
from charlstm.training.run import prepare_run
from charlstm.training.trainer import make_trainer


class StepClock(TrainerCallback):
    """Seconds between consecutive step ends of the Trainer."""

    def __init__(self):
        self.times, self._last = [], None

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now


def trainer_round(run, initial_state: dict, steps: int) -> list[float]:
    model = CharLSTMForCausalLM(run.model.config)
    model.load_state_dict(initial_state)
    run.training_args.max_steps = steps
    clock = StepClock()
    make_trainer(model, run.tokenizer, run.training_args, run.train_blocks, run.eval_blocks,
                 callbacks=[clock]).train()
    return clock.times


def bare_round(run, initial_state: dict, steps: int, seed: int) -> list[float]:
    """The loop one writes by hand: DataLoader, forward, backward, clip, AdamW, cosine schedule."""
    settings = run.training_args
    model = CharLSTMForCausalLM(run.model.config)
    model.load_state_dict(initial_state)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    loader = DataLoader(run.train_blocks.with_format("torch"), batch_size=settings.per_device_train_batch_size,
                        shuffle=True, generator=torch.Generator().manual_seed(seed))
    times, last = [], None
    for step, batch in enumerate(loader):
        if step == steps:
            break
        loss = model(input_ids=batch["input_ids"].long(), labels=batch["labels"].long(), use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        now = time.perf_counter()
        if last is not None:
            times.append(now - last)
        last = now
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="../shared/data/yelp_reviews.jsonl")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12, help="steps per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2, help="step times dropped at the start of each round")
    parser.add_argument("--json", metavar="PATH")
    options = parser.parse_args()

    output = tempfile.mkdtemp(prefix="bench-train-")
    config = TrainConfig(
        dataset=options.dataset, condition_on_stars=True, validation_fraction=0.02, preset=options.preset,
        seq_len=options.seq_len, batch_size=options.batch_size, max_steps=options.steps, eval_steps=10**9,
        logging_steps=10, output_dir=output, overwrite=True,
    )
    run = prepare_run(config)
    run.training_args.disable_tqdm = True
    # No evaluation or checkpoint when a round ends: they are not among the measured steps, only time lost.
    run.training_args.eval_strategy = run.training_args.save_strategy = "no"
    run.training_args.load_best_model_at_end = False
    initial_state = {name: value.clone() for name, value in run.model.state_dict().items()}

    times = {"charlstm train (Trainer)": [], "bare PyTorch loop": []}
    for round_index in range(options.rounds):
        # Alternate which side goes first, so drift in the machine's load does not favour one.
        order = list(times) if round_index % 2 == 0 else list(reversed(times))
        for side in order:
            if side == "bare PyTorch loop":
                measured = bare_round(run, initial_state, options.steps, seed=round_index)
            else:
                measured = trainer_round(run, initial_state, options.steps)
            times[side] += measured[options.warmup - 1 :] if options.warmup else measured

    characters_per_step = options.batch_size * options.seq_len
    rows = {}
    for side, values in times.items():
        median = statistics.median(values)
        rows[side] = {"median_step_ms": round(1000 * median, 1), "characters_per_second": round(characters_per_step
                      / median, 1), "steps_measured": len(values)}
    bare = rows["bare PyTorch loop"]["characters_per_second"]
    for row in rows.values():
        row["ratio_to_bare"] = round(row["characters_per_second"] / bare, 3)

    params = run.model.num_parameters()
    print(f"training speed, {options.preset} {run.model.config.hidden_sizes} ({params:,} parameters), batch "
          f"{options.batch_size} x {options.seq_len} characters, {torch.get_num_threads()} CPU thread(s), "
          f"{options.rounds} rounds x {options.steps} steps per side")
    print(f"{'side':<28}{'step ms':>10}{'chars/s':>12}{'vs bare':>10}")
    for side, row in rows.items():
        print(f"{side:<28}{row['median_step_ms']:>10.1f}{row['characters_per_second']:>12.0f}"
              f"{row['ratio_to_bare']:>10.3f}")
    if options.json:
        report = {"settings": {**vars(options), "hidden_sizes": run.model.config.hidden_sizes,
                               "num_parameters": params, "threads": torch.get_num_threads(),
                               "device": "cpu"}, "results": rows}
        with open(options.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
