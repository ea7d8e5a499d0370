"""Cold-start latency of `charlstm generate`, int8 against fp32 (issue 28): what a user meets, not the steady state.

- fresh processes: `charlstm generate PROMPT --seed S` run `--runs` times each with int8 weights (the default) and
  with `--fp32`, interleaved so that both see the same load on a shared machine; wall time of the whole command
  (imports, loading, quantizing, writing), median and worst.
- first calls: one process per weight type loads the generator as the command does and times its first `--calls`
  requests, each the command's request with the next seed, so a slow first call or a slow warm-up shows.

    python scripts/bench_cold_start.py --json bench_cold_start.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from charlstm.runfiles import write_json
from charlstm.training.report import cpu_name

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fresh_command(options, fp32: bool) -> float:
    command = [sys.executable, "-m", "charlstm.cli", "generate", options.prompt, "--seed", str(options.seed)]
    command += ["--fp32"] if fp32 else []
    command += ["--model", options.model] if options.model else []
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def first_calls_child(options) -> None:
    """Runs in its own process: load as `charlstm generate` does, then time the first requests."""
    start = time.perf_counter()
    from charlstm.generation.sampling import load_generator
    from charlstm.generation.settings import GenerationSettings, check_settings

    imported = time.perf_counter()
    generator = load_generator(options.model, int8=options.child == "int8")
    loaded = time.perf_counter()
    calls = []
    for index in range(options.calls):
        settings = check_settings(GenerationSettings(prompt=options.prompt, seed=options.seed + index))
        begin = time.perf_counter()
        generator.generate(settings)
        calls.append(time.perf_counter() - begin)
    print(json.dumps({"import_s": imported - start, "load_s": loaded - imported, "calls_s": calls}))


def first_calls(options, weights: str) -> dict:
    command = [sys.executable, __file__, "--child", weights, "--calls", str(options.calls), "--prompt",
               options.prompt, "--seed", str(options.seed)] + (["--model", options.model] if options.model else [])
    output = subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def summary(times: list[float]) -> dict:
    return {"median_s": round(statistics.median(times), 3), "worst_s": round(max(times), 3),
            "runs_s": [round(value, 3) for value in times]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="fresh processes per weight type")
    parser.add_argument("--calls", type=int, default=10, help="requests timed in one process")
    parser.add_argument("--prompt", default="The tacos")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--model", help="model directory (default: the bundled model)")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--child", choices=["int8", "fp32"], help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        first_calls_child(options)
        return

    fresh = {"int8": [], "fp32": []}
    for _ in range(options.runs):
        for weights in fresh:
            fresh[weights].append(fresh_command(options, fp32=weights == "fp32"))
    in_process = {weights: first_calls(options, weights) for weights in ("int8", "fp32")}
    report = {
        "cpu": cpu_name(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "command": f"charlstm generate {options.prompt!r} --seed {options.seed} [--fp32]",
        "fresh_processes": {weights: summary(times) for weights, times in fresh.items()},
        "first_calls_in_one_process": in_process,
    }
    print(f"CPU: {report['cpu']} (1-minute load average at the end: {report['load_average_1min']})")
    print(f"{report['command']}, {options.runs} fresh processes each, interleaved:")
    print(f"{'weights':8} {'median s':>9} {'worst s':>8}")
    for weights, row in report["fresh_processes"].items():
        print(f"{weights:8} {row['median_s']:9.2f} {row['worst_s']:8.2f}")
    print(f"first {options.calls} requests in one process (seconds each, after import and load):")
    for weights, row in in_process.items():
        calls = " ".join(f"{value:.2f}" for value in row["calls_s"])
        print(f"{weights:8} load {row['load_s']:.2f}  calls {calls}")
    if options.json:
        write_json(options.json, report)


if __name__ == "__main__":
    main()
