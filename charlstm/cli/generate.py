"""`charlstm generate`: its options, and a thin caller of `charlstm.generation`."""

import json
import os
import sys
from contextlib import closing

from ..errors import UsageError
from ..generation.settings import GenerationSettings, check_settings
from .numbers import integer, number


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="write reviews with a trained model (the bundled Yelp model by default)",
        description="Write reviews with a trained model. Uses the bundled Yelp model unless --model is given.",
    )
    defaults = GenerationSettings()
    parser.add_argument("prompt", nargs="?", default="", help="the start of the review (default: start from nothing)")
    parser.add_argument("--model", help="saved model directory or Hub id (default: the bundled model)")
    parser.add_argument("--stars", type=integer, help="star rating to ask for, 1-5 (star-conditioned models only)")
    parser.add_argument("--num", type=integer, default=defaults.num_reviews,
                        help="reviews to write (default: %(default)s)")
    parser.add_argument("--temperature", type=number, default=defaults.temperature, help="default: %(default)s")
    parser.add_argument("--top-k", type=integer, default=defaults.top_k, help="0 = off (default: %(default)s)")
    parser.add_argument("--top-p", type=number, default=defaults.top_p, help="1.0 = off (default: %(default)s)")
    parser.add_argument("--guidance", type=number, default=defaults.guidance,
                        help="how strongly a review keeps to its rating: 1 = as the model learned it, higher = "
                        "more clearly that rating, at twice the work per character (default: %(default)s)")
    parser.add_argument(
        "--max-new-tokens", type=integer, default=defaults.max_new_tokens,
        help="characters to add at most (default: %(default)s)",
    )
    parser.add_argument("--seed", type=integer, help="the same seed gives the same reviews (default: random, printed)")
    parser.add_argument("--stream", action="store_true", help="print characters as they are generated")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list, one object per review: its text, rating, whether it was cut, and the "
                        "settings and seed that reproduce it")
    parser.add_argument(
        "--fp32", action="store_true", help="keep fp32 weights (default: int8 weights, faster on a CPU)"
    )
    parser.set_defaults(func=run_generate)


def run_generate(args) -> int:
    if args.stream and args.json:
        raise UsageError("--stream and --json go separately: a JSON list is printed once every review is written")
    from ..generation.sampling import load_generator
    from ..generation.streaming import REVIEW_SEPARATOR

    settings = check_settings(
        GenerationSettings(
            prompt=args.prompt,
            stars=args.stars,
            num_reviews=args.num,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            guidance=args.guidance,
            seed=args.seed,
        )
    )
    generator = load_generator(args.model, int8=not args.fp32)
    generator.prompt_ids(settings)  # reports a bad prompt or stars before anything is printed
    unknown = generator.unknown_characters(settings.prompt)
    if unknown:
        note = f"the model does not know {''.join(unknown)!r}; they are read as <unk>"
        print(f"charlstm generate: note: {note}", file=sys.stderr)
    if args.seed is None:
        print(f"charlstm generate: seed {settings.seed}", file=sys.stderr)
    try:
        if args.json:
            reviews = generator.write(settings)
            shared = {"seed": settings.seed, "temperature": settings.temperature, "top_k": settings.top_k,
                      "top_p": settings.top_p, "max_new_tokens": settings.max_new_tokens,
                      "guidance": settings.guidance}
            print(json.dumps([{"text": review.text, "stars": review.stars, "cut": review.cut, **shared}
                              for review in reviews], indent=2, ensure_ascii=False))
            return 0
        if args.stream:
            with closing(generator.stream(settings)) as updates:  # a closed pipe stops the generation thread too
                cut = _print_stream(updates, settings.num_reviews, REVIEW_SEPARATOR)
        else:
            reviews = generator.write(settings)
            print(REVIEW_SEPARATOR.join(review.text for review in reviews))
            sys.stdout.flush()
            cut = [review.cut for review in reviews]
            if settings.stars is None and reviews[0].stars is not None:
                drawn = ", ".join(str(review.stars) for review in reviews)
                unit = "star" if [review.stars for review in reviews] == [1] else "stars"
                print(f"charlstm generate: no rating asked; written for {drawn} {unit} (drawn with the seed)",
                      file=sys.stderr)
        _note_cut(cut, settings.max_new_tokens)
    except BrokenPipeError:
        # The reader has gone (`| head`): end quietly, as the Python docs advise for SIGPIPE. Later writes (the
        # interpreter's own flush at exit) go to /dev/null instead of raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _note_cut(cut: list[bool], max_new_tokens: int) -> None:
    """Says which reviews the length limit ended (on stderr: stdout holds only the reviews)."""
    if any(cut):
        which = ", ".join(str(index + 1) for index, was_cut in enumerate(cut) if was_cut)
        print(f"charlstm generate: note: review {which} of {len(cut)} cut near --max-new-tokens {max_new_tokens} "
              "(at a sentence or word end) before the model ended it", file=sys.stderr)


def _print_stream(updates, num_reviews: int, separator: str) -> list[bool]:
    """
    Follows one review at a time: the reviews grow side by side, so when one ends, the next is printed as far as it
    has got and then followed live. The terminal shows the same text the non-streaming command prints.
    """
    current, shown, cut = 0, 0, []
    for update in updates:
        cut = list(update.cut)
        while current < num_reviews:
            text = update.texts[current]
            sys.stdout.write(text[shown:])
            shown = len(text)
            if not update.finished[current]:
                break
            current, shown = current + 1, 0
            if current < num_reviews:
                sys.stdout.write(separator)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return cut
