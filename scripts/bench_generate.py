"""Generation speed of a [1024, 512] character LSTM: `model.generate` against the practical limit and the old way.

Rows, all with the same random weights and in one run (the machine is shared and noisy, so ratios are measured
side by side and every figure is the median of several repeats), for fp32 and int8 weights (`charlstm.quantize`):
- generate:  `model.generate(do_sample=True)`, the state carried as the cache.
- bare loop: the same arithmetic with no transformers machinery (embedding, one LSTM step per layer, projection,
             multinomial sampling): the practical limit for these weights. int8 runs the model's own compiled
             decoding step, which with one thread starts the next step's recurrent products on a second.
- IBM window: the IBM code pattern's algorithm: every new character re-runs the LSTM over the last 256 characters.
The IBM notebook's own Keras loop made 6.5 characters/s on this machine (measured once, by hand: Keras is not a
dependency); the last column compares against it. `--threads 1 2` measures every row with 1 and with 2 torch
threads: two threads split each matrix between the cores; one thread leaves the other core to the early products.

    python scripts/bench_generate.py --threads 1 2 --json bench_generate.json
"""

import argparse
import json
import statistics
import time

import torch

from charlstm import CharLSTMConfig, CharLSTMForCausalLM, quantize
from charlstm.modeling_charlstm import CharLSTMCache, lstm_step

WINDOW = 256
IBM_KERAS_CHARS_PER_S = 6.5


def build_model(vocab_size: int, embedding_dim: int, hidden_sizes: list[int]) -> CharLSTMForCausalLM:
    torch.manual_seed(0)
    config = CharLSTMConfig(vocab_size=vocab_size, embedding_dim=embedding_dim, hidden_sizes=hidden_sizes)
    return CharLSTMForCausalLM(config).eval()


def prompt(batch_size: int, length: int, vocab_size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(9, vocab_size, (batch_size, length), generator=generator)


@torch.no_grad()
def run_generate(model, ids, new_chars):
    # No EOS: every run makes exactly new_chars characters, without adding a logits processor to enforce it.
    model.generate(ids, do_sample=True, top_k=0, max_new_tokens=new_chars, eos_token_id=None)


@torch.no_grad()
def run_bare_loop(model, ids, new_chars):
    """int8 weights run the model's own compiled decoding step (`model.decoding_step`), as generate's steps do."""
    decoding_step = model.decoding_step
    cache = CharLSTMCache.zeros(model.config, ids.shape[0], torch.float32, torch.device("cpu"))
    token = None
    for step in range(ids.shape[1] + new_chars):
        current = ids[:, step] if step < ids.shape[1] else token
        logits = None
        if decoding_step is not None:
            logits = decoding_step(current[:, None], cache)[:, 0]
        else:
            x = model.model.embeddings(current)
            for index, lstm in enumerate(model.model.layers):
                cache.hidden[index], cache.cell[index] = lstm_step(lstm, x, cache.hidden[index], cache.cell[index])
                x = cache.hidden[index]
        if step >= ids.shape[1] - 1:
            logits = model.lm_head(x) if logits is None else logits
            token = torch.multinomial(torch.softmax(logits, dim=-1), 1)[:, 0]


@torch.no_grad()
def run_ibm_window(model, ids, new_chars):
    text = ids
    for _ in range(new_chars):
        logits = model(text[:, -WINDOW:], use_cache=False, logits_to_keep=1).logits[:, -1]
        token = torch.multinomial(torch.softmax(logits, dim=-1), 1)
        text = torch.cat([text, token], dim=1)


def rate(function, model, ids, new_chars) -> float:
    """Characters per second of one run (per row: a batch of 32 counts 32 characters a step)."""
    start = time.perf_counter()
    function(model, ids, new_chars)
    return ids.shape[0] * new_chars / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=[1024, 512])
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=100)
    parser.add_argument("--new-chars", type=int, default=300)
    parser.add_argument("--ibm-new-chars", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[torch.get_num_threads()],
        help="torch thread counts to measure, each a full set of rows (default: torch's own, %(default)s)",
    )
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    models = {"fp32": build_model(args.vocab_size, args.embedding_dim, args.hidden_sizes)}
    models["int8"] = quantize(models["fp32"])
    cases = []  # (row, function, model, ids, new_chars)
    for threads in args.threads:
        for precision, model in models.items():
            for batch_size in (1, 32):
                ids = prompt(batch_size, 20, args.vocab_size)
                for name, function in (("generate", run_generate), ("bare loop", run_bare_loop)):
                    row = {"method": name, "weights": precision, "batch": batch_size, "threads": threads}
                    cases.append((row, function, model, ids, args.new_chars))
    ibm_row = {"method": "IBM window (256)", "weights": "fp32", "batch": 1, "threads": args.threads[-1]}
    cases.append((ibm_row, run_ibm_window, models["fp32"], prompt(1, WINDOW, args.vocab_size), args.ibm_new_chars))
    # Repeats go round all rows in turn, so a slow spell of the (shared) machine hits every row alike.
    rates = [[] for _ in cases]
    for repeat in range(args.repeats):
        for (row, function, model, ids, new_chars), measured in zip(cases, rates):
            torch.set_num_threads(row["threads"])
            if repeat == 0:
                function(model, ids, min(new_chars, 5))  # warm-up
            measured.append(rate(function, model, ids, new_chars))
    rows = [{**row, "chars_per_s": statistics.median(measured)} for (row, *_), measured in zip(cases, rates)]

    def setting(row):
        return row["weights"], row["batch"], row["threads"]

    bare = {setting(row): row["chars_per_s"] for row in rows if row["method"] == "bare loop"}
    for row in rows:
        row["vs_bare_loop"] = row["chars_per_s"] / bare[setting(row)]
        row["vs_ibm_keras"] = row["chars_per_s"] / IBM_KERAS_CHARS_PER_S
    print(f"model hidden_sizes={args.hidden_sizes} embedding_dim={args.embedding_dim} vocab={args.vocab_size}, "
          f"medians of {args.repeats}")
    print(f"{'method':<18} {'weights':>7} {'batch':>5} {'threads':>7} {'chars/s':>10} {'vs bare':>8} {'vs Keras':>9}")
    for row in rows:
        print(
            f"{row['method']:<18} {row['weights']:>7} {row['batch']:>5} {row['threads']:>7} "
            f"{row['chars_per_s']:>10.1f} {row['vs_bare_loop']:>8.2f} {row['vs_ibm_keras']:>8.0f}x"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"settings": vars(args), "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
