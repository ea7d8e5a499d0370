"""`charlstm rate`: its options, and a thin caller of `charlstm.generation.rating`."""

import json
import sys


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "rate",
        help="the star rating a star-conditioned generator gives a review, P(stars | text)",
        description="The star rating a star-conditioned generator gives a review: P(stars | text) by Bayes' rule, "
        "from how likely the model finds the text after each of <1star>..<5star>.",
    )
    parser.add_argument("text", help="the review to rate (a whole review: its end counts too)")
    parser.add_argument("--model", help="saved model directory or Hub id (default: the bundled model)")
    parser.add_argument("--prior", choices=["uniform", "training"], default="uniform",
                        help="P(stars) before reading the text: uniform, or the shares of the model's training "
                        "reviews (default: %(default)s)")
    parser.add_argument("--fp32", action="store_true", help="keep fp32 weights (default: int8 weights)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run_rate)


def run_rate(args) -> int:
    from ..errors import UsageError
    from ..generation.rating import RATINGS, star_probabilities
    from ..generation.sampling import load_generator

    if not args.text.strip():
        raise UsageError("the text is empty: give a review to rate")
    generator = load_generator(args.model, int8=not args.fp32)
    probabilities = star_probabilities(generator.model, generator.tokenizer, args.text, args.prior)
    best = RATINGS[max(range(len(RATINGS)), key=probabilities.__getitem__)]
    expected = sum(stars * p for stars, p in zip(RATINGS, probabilities))
    if args.json:
        print(json.dumps({"stars": best, "expected_stars": round(expected, 3), "prior": args.prior,
                          "probabilities": {str(stars): round(p, 6) for stars, p in zip(RATINGS, probabilities)}}))
    else:
        bars = "  ".join(f"{stars}*: {p:.2f}" for stars, p in zip(RATINGS, probabilities))
        print(f"{best} stars (expected {expected:.2f}; {bars})")
    sys.stdout.flush()
    return 0
