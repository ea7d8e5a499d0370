"""Load check of the Space: many `gradio_client` clients at once, each sending several /generate requests.

Start the Space first (`make demo`, or `python space/app.py --port 7860`), then:

    python scripts/load_space.py --clients 16 --requests 5 --json load.json

Prints one table: requests sent, completed and failed, and the latency (submit to final reviews) and the time to
the first streamed update, as median (p50) and 95th percentile. Every request must complete with no error.
"""

import argparse
import json
import math
import os
import statistics
import sys
import threading
import time

# gradio_client sends telemetry unless this variable says otherwise (its analytics_enabled=False alone does not).
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

from gradio_client import Client  # noqa: E402 - after the telemetry switches

PROMPTS = ["The tacos here are", "We waited forty minutes and", "Decent place for a quick lunch,", "I love this"]


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile: the smallest value with at least `share` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def run_client(url: str, index: int, args, results: list[dict]) -> None:
    """One user: its own client, `args.requests` generate requests one after another."""
    try:
        client = Client(url, verbose=False, analytics_enabled=False)
    except Exception as error:  # counted, not raised: the table reports every failure
        results.extend({"ok": False, "error": f"connect: {error}"} for _ in range(args.requests))
        return
    for number in range(args.requests):
        started = time.perf_counter()
        first_update = None
        try:
            job = client.submit(
                PROMPTS[(index + number) % len(PROMPTS)], args.stars, 0.8, 0, 1.0, args.max_new_characters,
                1, index * 1000 + number, api_name="/generate",
            )
            for _ in job:
                if first_update is None:
                    first_update = time.perf_counter() - started
            reviews = job.result()[1]["reviews"]
            results.append({
                "ok": True,
                "latency_s": time.perf_counter() - started,
                "first_update_s": first_update,
                "characters": sum(len(review) for review in reviews),
            })
        except Exception as error:  # noqa: BLE001 - see above
            results.append({"ok": False, "error": f"{type(error).__name__}: {error}"})
    client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:7860/")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=5, help="requests per client, one after another")
    parser.add_argument("--max-new-characters", type=int, default=200)
    parser.add_argument("--stars", type=int, default=0, help="0 = any (works with a model trained without ratings)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    results: list[dict] = []
    threads = [
        threading.Thread(target=run_client, args=(args.url, index, args, results)) for index in range(args.clients)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started

    done = [result for result in results if result["ok"]]
    errors = [result["error"] for result in results if not result["ok"]]
    latencies = [result["latency_s"] for result in done]
    firsts = [result["first_update_s"] for result in done if result["first_update_s"] is not None]
    summary = {
        "url": args.url,
        "clients": args.clients,
        "requests_per_client": args.requests,
        "max_new_characters": args.max_new_characters,
        "requests": len(results),
        "completed": len(done),
        "errors": len(errors),
        "error_messages": sorted(set(errors))[:10],
        "latency_p50_s": statistics.median(latencies) if latencies else None,
        "latency_p95_s": percentile(latencies, 0.95) if latencies else None,
        "latency_max_s": max(latencies) if latencies else None,
        "first_update_p50_s": statistics.median(firsts) if firsts else None,
        "first_update_p95_s": percentile(firsts, 0.95) if firsts else None,
        "wall_s": wall,
        "characters_per_s": sum(result["characters"] for result in done) / wall,
    }
    print(f"{'measure':<22}{'value':>12}")
    for key, value in summary.items():
        if key not in ("url", "error_messages"):
            print(f"{key:<22}{value:>12.3f}" if isinstance(value, float) else f"{key:<22}{value!s:>12}")
    for message in summary["error_messages"]:
        print(f"error: {message}", file=sys.stderr)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
    return 0 if not errors and len(done) == args.clients * args.requests else 1


if __name__ == "__main__":
    sys.exit(main())
