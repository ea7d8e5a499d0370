"""Throughput of `charlstm detect --file` (issue 29): reviews per second a user gets from the command, in a fresh
process, for one or more detectors side by side.

Each detector reads the same `--reviews` texts (the first of the generator's held-out Yelp reviews, whole, as
`charlstm detect --file` reads a .jsonl file), `--runs` times in fresh processes; the wall time includes starting
Python, importing and loading, as a user meets it. Reported: the median over runs, and reviews per second.

    python scripts/bench_detect.py --detector charlstm/bundled/charlstm-yelp-detector --detector runs/detector-stacked \
        --json bench_detect.json
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from charlstm.detection.data import held_out_reviews
from charlstm.loading import model_source
from charlstm.runfiles import write_json
from charlstm.training.report import cpu_name

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def held_out_texts(count: int) -> list[str]:
    """The bundled generator's first `count` held-out reviews, as its training log names them (a relative dataset
    path is relative to the repository)."""
    with contextlib.chdir(REPO_ROOT):
        return held_out_reviews(model_source(None)).held_out["text"][:count]


def timed_run(detector: str, path: str) -> float:
    command = [sys.executable, "-m", "charlstm.cli", "detect", "--file", path, "--detector", detector, "--quiet"]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detector", action="append", help="detector directory or Hub id (repeatable; default: "
                        "the bundled detector)")
    parser.add_argument("--reviews", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", metavar="PATH")
    options = parser.parse_args()
    detectors = options.detector or ["charlstm/bundled/charlstm-yelp-detector"]
    texts = held_out_texts(options.reviews)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "reviews.jsonl")
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps({"text": text}) + "\n" for text in texts)
        times = {detector: [] for detector in detectors}
        for _ in range(options.runs):  # interleaved, so that every detector sees the same load
            for detector in detectors:
                times[detector].append(timed_run(detector, path))
    for detector in detectors:
        median = statistics.median(times[detector])
        rows.append({"detector": detector, "seconds": [round(t, 2) for t in times[detector]],
                     "median_seconds": round(median, 2), "reviews_per_second": round(len(texts) / median, 1)})
    print(f"CPU: {cpu_name()}; {len(texts)} held-out reviews (mean {statistics.mean(map(len, texts)):.0f} characters), "
          f"{options.runs} fresh `charlstm detect --file` runs each")
    print(f"{'detector':<45} {'median s':>9} {'reviews/s':>10}")
    for row in rows:
        print(f"{row['detector'][-45:]:<45} {row['median_seconds']:>9.2f} {row['reviews_per_second']:>10.1f}")
    if options.json:
        write_json(options.json, {"cpu": cpu_name(), "reviews": len(texts), "runs": options.runs, "rows": rows})


if __name__ == "__main__":
    main()
